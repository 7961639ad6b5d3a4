# SPDX-License-Identifier: Apache-2.0
"""The node's two root slots (IMGA, IMGB) and its boot loader: EVE's zboot, for systemd-boot.

The node image (images/node/build.sh) boots systemd-boot from its ESP, mounted at ``/boot/efi``.
Each slot has a kernel and initramfs on the ESP (``EFI/eve/a/``, ``EFI/eve/b/``) and a loader
entry (``loader/entries/eve-a.conf``, ``eve-b.conf``) whose command line names its root by
partition name (``root=PARTLABEL=IMGA``).  ``loader/loader.conf``'s ``default`` is the
committed slot.  A new slot is tried exactly once through systemd-boot's one-shot EFI variable
(``LoaderEntryOneShot``, which the boot loader deletes as it reads it): whatever happens to that
boot (a panic with ``panic=``, a hang ended by the trial guard, a power cut), the next boot is the
committed slot again, until :meth:`BootSlots.make_default` commits the new one.

The partition states (EVE's ``active``/``unused``/``updating``/``inprogress``), versions and the
update record are a small JSON document on the ESP (``EFI/eve/slots.json``), which both slots
read and the update manager (:mod:`agent.reconcile.baseos`) owns; this module only stores it.
``EFI/eve/trial.env`` tells the trial guard (a shell unit of the image, independent of the agent)
which slot is on trial and for how long.

An update image is a raw ext4 root file system (optionally gzip-compressed) holding the system,
its ``/etc/eve-release`` (the version) and ``/boot/vmlinuz-*`` with ``/boot/initrd.img-*``.  It
is read without mounting (``debugfs`` of e2fsprogs).

Every path is a field of :class:`SlotPaths`, so the real code runs against files in a
directory in the tests.  Blocking: call from a worker thread.  Errors: :class:`SlotError`
(permanent: the image or the disk is not what it must be) or ``TemporaryError`` (I/O).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shlex
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.drivers import runner
from agent.drivers.errors import PermanentError, TemporaryError

SLOTS = ("IMGA", "IMGB")
#: systemd-boot's vendor GUID for its EFI variables.
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
#: EFI variable attributes: non-volatile, boot service and runtime access.
_EFI_ATTRS = (0x1 | 0x2 | 0x4).to_bytes(4, "little")
_CHUNK = 4 * 1024 * 1024
#: An update image's version string: printable, one line, bounded.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~:-]{0,127}$")
_KERNEL = re.compile(r"^vmlinuz-([A-Za-z0-9._+-]{1,100})$")

Progress = Callable[[int, int], None]


class SlotError(PermanentError):
    """The image or the slot layout is unusable (not retried until something changes)."""


def other(label: str) -> str:
    """The slot that is not ``label``."""
    return SLOTS[1] if label == SLOTS[0] else SLOTS[0]


def entry_id(label: str) -> str:
    """The systemd-boot entry id of a slot (``eve-a.conf``)."""
    return f"eve-{label[-1].lower()}.conf"


@dataclass(frozen=True)
class SlotPaths:
    """Where the slots, the boot loader and the running system's facts are."""

    esp: Path = Path("/boot/efi")
    efivars: Path = Path("/sys/firmware/efi/efivars")
    partitions: Path = Path("/dev/disk/by-partlabel")
    cmdline: Path = Path("/proc/cmdline")
    release: Path = Path("/etc/eve-release")

    @property
    def state(self) -> Path:
        return self.esp / "EFI" / "eve" / "slots.json"

    @property
    def trial(self) -> Path:
        return self.esp / "EFI" / "eve" / "trial.env"

    @property
    def guard_report(self) -> Path:
        return self.esp / "EFI" / "eve" / "trial-expired"

    @property
    def loader_conf(self) -> Path:
        return self.esp / "loader" / "loader.conf"

    def entry(self, label: str) -> Path:
        return self.esp / "loader" / "entries" / entry_id(label)

    def kernel_dir(self, label: str) -> Path:
        return self.esp / "EFI" / "eve" / label[-1].lower()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write, fsync, rename over ``path`` (vfat included), fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise TemporaryError(f"cannot write {path}: {exc.strerror or exc}") from exc


class BootSlots:
    """The real slots of a node booted from the node image.  See the module docstring."""

    def __init__(self, paths: SlotPaths | None = None) -> None:
        self.paths = paths or SlotPaths()

    # --- the running system --------------------------------------------------------------------

    def current(self) -> str | None:
        """The slot the running system booted from (``root=PARTLABEL=IMGx`` on the kernel's
        command line), or None when this is not an A/B node (an emulated node, a plain host)."""
        try:
            words = shlex.split(self.paths.cmdline.read_text())
        except (OSError, ValueError):
            return None
        for word in words:
            if word.startswith("root=PARTLABEL="):
                label = word.split("=", 2)[2]
                return label if label in SLOTS else None
        return None

    def supported(self) -> bool:
        """Both partitions, the ESP's loader and the EFI variables are there."""
        p = self.paths
        return (
            self.current() is not None
            and all((p.partitions / s).exists() for s in SLOTS)
            and p.loader_conf.is_file()
            and p.efivars.is_dir()
        )

    def running_version(self) -> str:
        """The running system's version (its ``/etc/eve-release``), "" when it has none."""
        try:
            text = self.paths.release.read_text().strip()
        except OSError:
            return ""
        return text if _VERSION.match(text) else ""

    # --- the state document --------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The state document, ``{}`` when there is none or it is unreadable (logged by the
        caller, which rebuilds it from what it sees)."""
        try:
            data = json.loads(self.paths.state.read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, state: dict[str, Any]) -> None:
        """Replace the state document atomically.  TemporaryError when the ESP refuses."""
        self.paths.state.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.paths.state, json.dumps(state, indent=1, sort_keys=True).encode())

    # --- installing an image -------------------------------------------------------------------

    def partition_size(self, label: str) -> int:
        try:
            with open(self.paths.partitions / label, "rb") as f:
                return f.seek(0, os.SEEK_END)
        except OSError as exc:
            raise SlotError(f"cannot open partition {label}: {exc.strerror or exc}") from exc

    def install(self, label: str, image: Path, progress: Progress | None = None) -> str:
        """Write ``image`` (raw ext4, or gzip of it) over slot ``label``, then its kernel and
        initramfs to the ESP and its loader entry; returns the image's version.

        The running slot is refused.  Not atomic (a slot being written is ``updating`` in the
        state document, never booted); idempotent (it writes everything again).  Raises
        SlotError for an image that is too big, not ext4, without a version or a kernel.
        """
        if label not in SLOTS:
            raise SlotError(f"no slot {label!r}")
        if label == self.current():
            raise SlotError(f"refusing to write {label}: the running system is on it")
        target = self.paths.partitions / label
        capacity = self.partition_size(label)
        written = self._copy(image, target, capacity, progress)
        if written < 1024 * 1024:
            raise SlotError(f"the image is {written} bytes: not a root file system")
        version = self._read_version(target)
        self._install_kernel(label, target)
        return version

    def _copy(self, image: Path, target: Path, capacity: int, progress: Progress | None) -> int:
        total = image.stat().st_size
        try:
            with open(image, "rb") as raw:
                compressed = raw.read(2) == b"\x1f\x8b"
                raw.seek(0)
                src: IO[bytes] = gzip.GzipFile(fileobj=raw) if compressed else raw  # type: ignore[assignment]
                with open(target, "r+b") as out:
                    written = 0
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > capacity:
                            raise SlotError(
                                f"the image is larger than slot {target.name} ({capacity} bytes)"
                            )
                        out.write(chunk)
                        if progress is not None:
                            progress(raw.tell(), total)
                    out.flush()
                    os.fsync(out.fileno())
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise SlotError(f"the image is not a valid gzip stream: {exc}") from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EIO, errno.EROFS):
                raise SlotError(f"cannot write slot {target.name}: {exc.strerror}") from exc
            raise TemporaryError(f"writing slot {target.name}: {exc.strerror or exc}") from exc
        return written

    def _debugfs(self, device: Path, request: str) -> bytes:
        try:
            done = runner.run_sync(
                ["debugfs", "-R", request, str(device)], timeout=120, max_output=16 * 1024 * 1024
            )
        except runner.CommandFailed as exc:
            raise SlotError(f"the image in {device.name} is not ext4: {exc}") from exc
        return done.stdout

    def _read_version(self, device: Path) -> str:
        text = self._debugfs(device, "cat /etc/eve-release").decode(errors="replace").strip()
        if not _VERSION.match(text):
            raise SlotError("the image has no valid /etc/eve-release (its version)")
        return text

    def _install_kernel(self, label: str, device: Path) -> None:
        listing = self._debugfs(device, "ls -p /boot").decode(errors="replace")
        # ls -p prints /inode/mode/uid/gid/name/size/ per entry.
        names = [f.split("/")[5] for f in listing.splitlines() if f.count("/") >= 6]
        kernels = sorted(
            (m.group(1) for n in names if (m := _KERNEL.match(n))),
            key=lambda v: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)],
        )
        kernels = [k for k in kernels if f"initrd.img-{k}" in names]
        if not kernels:
            raise SlotError("the image has no /boot/vmlinuz-* with its initrd.img")
        kver = kernels[-1]
        kdir = self.paths.kernel_dir(label)
        kdir.mkdir(parents=True, exist_ok=True)
        for src, name in ((f"vmlinuz-{kver}", "vmlinuz"), (f"initrd.img-{kver}", "initrd.img")):
            tmp = kdir / f".{name}.tmp"
            tmp.unlink(missing_ok=True)
            self._debugfs(device, f"dump /boot/{src} {tmp}")
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise SlotError(f"cannot extract /boot/{src} from the image")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, kdir / name)
        options = self._options_for(label)
        rel = f"/EFI/eve/{label[-1].lower()}"
        entry = (
            f"title   eve-agent node, slot {label[-1]}\n"
            f"linux   {rel}/vmlinuz\ninitrd  {rel}/initrd.img\noptions {options}\n"
        )
        self.paths.entry(label).parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.paths.entry(label), entry.encode())

    def _options_for(self, label: str) -> str:
        """The running entry's command line with the root of ``label``."""
        try:
            words = shlex.split(self.paths.cmdline.read_text())
        except (OSError, ValueError):
            words = []
        # The boot loader adds nothing we want to copy (initrd= is the loader's own).
        kept = [w for w in words if not w.startswith(("root=", "initrd=", "BOOT_IMAGE="))]
        return " ".join([f"root=PARTLABEL={label}", *kept])

    # --- the boot loader -----------------------------------------------------------------------

    def boot_once(self, label: str) -> None:
        """The next boot (only the next) starts ``label``: systemd-boot's LoaderEntryOneShot."""
        if not self.paths.entry(label).is_file():
            raise SlotError(f"slot {label} has no boot entry")
        var = self.paths.efivars / f"LoaderEntryOneShot-{LOADER_GUID}"
        value = (entry_id(label) + "\0").encode("utf-16-le")
        try:
            # efivarfs marks variables immutable; a new one can be written at once, an old one
            # is replaced by removing it first.
            if var.exists():
                var.unlink()
            with open(var, "wb") as f:
                f.write(_EFI_ATTRS + value)
        except OSError as exc:
            raise TemporaryError(f"cannot set the one-shot boot entry: {exc.strerror}") from exc

    def cancel_once(self) -> None:
        """No one-shot entry (idempotent)."""
        var = self.paths.efivars / f"LoaderEntryOneShot-{LOADER_GUID}"
        try:
            var.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TemporaryError(f"cannot clear the one-shot boot entry: {exc.strerror}") from exc

    def default(self) -> str | None:
        """The slot ``loader.conf`` boots by default."""
        try:
            lines = self.paths.loader_conf.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "default":
                return next((s for s in SLOTS if entry_id(s) == parts[1]), None)
        return None

    def make_default(self, label: str) -> None:
        """``label`` is the slot booted from now on (``loader.conf``'s default).  Idempotent."""
        if not self.paths.entry(label).is_file():
            raise SlotError(f"slot {label} has no boot entry")
        try:
            lines = self.paths.loader_conf.read_text().splitlines()
        except OSError as exc:
            raise TemporaryError(f"cannot read loader.conf: {exc.strerror}") from exc
        kept = [ln for ln in lines if ln.split()[:1] != ["default"]]
        text = "\n".join([f"default {entry_id(label)}", *kept]) + "\n"
        _atomic_write(self.paths.loader_conf, text.encode())

    # --- the trial guard -----------------------------------------------------------------------

    def start_trial(self, label: str, seconds: int) -> None:
        """Tell the trial guard: if ``label`` boots and is not committed within ``seconds``,
        reboot (into the default slot)."""
        text = f"TRIAL_SLOT={label}\nTRIAL_SECONDS={int(seconds)}\n"
        self.paths.trial.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.paths.trial, text.encode())

    def trial(self) -> str | None:
        """The slot on trial, None when none is."""
        try:
            text = self.paths.trial.read_text()
        except OSError:
            return None
        m = re.search(r"^TRIAL_SLOT=(IMG[AB])$", text, re.M)
        return m.group(1) if m else None

    def guard_report(self) -> str:
        """What the trial guard wrote when it ended a trial ("" when it did not)."""
        try:
            text = self.paths.guard_report.read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text.split())[:512]

    def end_trial(self) -> None:
        """No slot on trial, no guard report (idempotent)."""
        for path in (self.paths.trial, self.paths.guard_report):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise TemporaryError(f"cannot end the trial: {exc.strerror}") from exc
