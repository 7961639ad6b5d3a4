"""The node's volume store: the read-write volumes of apps (the file part of EVE's volumemgr).

A volume is one entry in the store's root directory (inside the node's vault), named as EVE
names its volume files::

    <uuid>#<generation>.qcow2    a disk for a VM (always qcow2, whatever the source's format)
    <uuid>#<generation>.dir      a directory for a container (0700, empty when made)
    .tmp-...                     a create or delete under way; removed by open()

API (all coroutines except :meth:`VolumeStore.path`)::

    store = VolumeStore(root, qemu_img="qemu-img", op_timeout=600.0, info_timeout=60.0,
                        prlimit="prlimit")
    await store.open()                                   # mkdir root, drop leftovers
    store.path(volume_id, generation, kind) -> Path      # where that volume is (or would be)
    await store.create(VolumeSpec(...)) -> VolumeInfo    # idempotent, crash-safe
    await store.delete(volume_id, generation)            # absent = success
    await store.list() -> list[VolumeInfo]               # every complete volume
    await store.info(volume_id, generation) -> VolumeInfo    # NotFoundError when absent
    await store.usage(volume_id, generation) -> (max_bytes, used_bytes)   # cheap, for metrics

How a disk is made from its :class:`VolumeSpec`:

- **blank** (no ``source``): ``qemu-img create`` of ``size`` bytes (rounded up to 512);
- **overlay** (``source``, ``copy=False``): a qcow2 whose backing file is the source, referenced
  by absolute path with its format pinned (``-F``), so QEMU never probes it.  The source must
  stay where it is while the volume exists: the caller keeps its blob referenced;
- **copy** (``source``, ``copy=True``): ``qemu-img convert -O qcow2``, after checking that the
  file system has the room ``qemu-img measure`` says it needs.

Then, when ``size`` is larger than the virtual size so far, ``qemu-img resize`` grows it; a
smaller ``size`` is never applied (shrinking would cut the guest's file system): it is logged.

- **Crash-safe.**  A volume is built under ``.tmp-<name>``, fsync'd, renamed to its final name
  and the directory fsync'd: a kill at any point leaves either no volume or a complete one
  under the final name.  A delete renames the volume to a temporary name first, for the same
  reason: a tree half removed is never mistaken for a volume.
- **Untrusted sources.**  A source is a verified blob, but its content is the controller's (or
  an image author's).  It is inspected with ``qemu-img info`` (its format pinned when the spec
  gives one, probed otherwise), under a timeout and, like nova does, under ``prlimit`` limits of
  address space and CPU time.  A source that is not qcow2 or raw, or a qcow2 that refers to
  other files (a backing file or an external data file, which could name ``/etc/shadow``), is
  refused.
- **Serial per volume.**  Creates and deletes of one id and generation are serialised; other
  volumes proceed in parallel.
- **Never on the loop.**  File work (fsync, rmtree, walks) runs in worker threads.

Errors (:mod:`agent.drivers.errors`): bad input (an invalid id or generation, a blank disk of
size 0, a missing, unreadable or refused source, a name taken by another kind of volume) and
``qemu-img`` failing are :class:`PermanentError`, naming the volume and quoting the end of
qemu-img's stderr; a full file system (ENOSPC or EDQUOT, from qemu-img or our own writes, or too
little room before a copy) is :class:`TemporaryError`, as are qemu-img timeouts.  Other
``OSError`` s propagate as they are (the engine treats them as temporary).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import enum
import errno
import json
import logging
import os
import re
import shutil
import stat
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.drivers import runner
from agent.drivers.domainxml import DiskFormat
from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError
from agent.util.atomicfile import fsync_dir

log = logging.getLogger(__name__)

#: Prefix of the names of volumes being created or deleted: never listed, removed by open().
TEMP_PREFIX = ".tmp-"
_NAME = re.compile(
    r"^(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"#(?P<gen>[0-9]+)\.(?P<ext>qcow2|dir)$"
)
#: When the volume was made (wall clock, decimal text): mtime and ctime change with every write.
_CREATED_XATTR = "user.eve-agent.created"
#: Limits for qemu-img reading an untrusted image (nova's QEMU_IMG_LIMITS): a crafted image
#: must not make it eat the node's memory or a core for ever.
_UNTRUSTED_ADDRESS_SPACE = 1 << 30
_UNTRUSTED_CPU_SECONDS = 30
_QCOW2_MAGIC = b"QFI\xfb"
_SECTOR = 512


class VolumeKind(enum.StrEnum):
    DISK = "disk"  # a qcow2 file for a VM
    DIR = "dir"  # a directory for a container


_EXT = {VolumeKind.DISK: "qcow2", VolumeKind.DIR: "dir"}
_KIND = {ext: kind for kind, ext in _EXT.items()}


@dataclass(frozen=True)
class VolumeSpec:
    """The volume wanted.  ``size`` (bytes) is the virtual size of a disk: 0 keeps the source's,
    a blank disk needs one; it only ever grows the source.  ``source`` is a verified read-only
    blob (None for a blank volume), ``source_format`` its format (None: detected), ``copy``
    chooses a full copy over an overlay.  A DIR volume is always a new empty directory."""

    volume_id: str
    generation: int
    kind: VolumeKind
    size: int = 0
    source: Path | None = None
    source_format: DiskFormat | None = None
    copy: bool = False


@dataclass(frozen=True)
class VolumeInfo:
    """A complete volume.  ``format`` is "qcow2" or "dir"; ``virtual_size`` is 0 for a
    directory (no limit); ``actual_size`` is the bytes allocated on disk; ``backing`` the
    absolute path of an overlay's source; ``created`` the wall-clock time it was made."""

    volume_id: str
    generation: int
    kind: VolumeKind
    path: Path
    format: str
    virtual_size: int
    actual_size: int
    backing: Path | None
    created: float


@dataclass(frozen=True)
class _Image:
    """What ``qemu-img info`` says about an image."""

    format: str
    virtual_size: int
    actual_size: int
    backing: str | None
    data_file: str | None


def _free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on ``directory``'s file system."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _label(volume_id: str, generation: int) -> str:
    return f"volume {volume_id}#{generation}"


def _check_key(volume_id: str, generation: int) -> None:
    """PermanentError unless ``volume_id`` is a canonical (lower-case) UUID and ``generation``
    an int >= 0: both become a file name."""
    try:
        canonical = str(uuid.UUID(volume_id)) == volume_id
    except (ValueError, TypeError, AttributeError):
        canonical = False
    if not canonical:
        raise PermanentError(f"volume {volume_id!r}: not a canonical UUID")
    if type(generation) is not int or generation < 0:
        raise PermanentError(f"volume {volume_id}: invalid generation {generation!r}")


def _oserror(what: str, exc: OSError) -> BaseException:
    """ENOSPC and EDQUOT as TemporaryError; any other OSError as it is."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TemporaryError(f"{what}: no space left on the volume store: {exc}")
    return exc


class _KeyLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class VolumeStore:
    """The volumes under ``root``; see the module docstring.  Call :meth:`open` first."""

    def __init__(
        self,
        root: Path,
        *,
        qemu_img: str = "qemu-img",
        op_timeout: float = 600.0,
        info_timeout: float = 60.0,
        prlimit: str | None = "prlimit",
    ) -> None:
        """``op_timeout`` bounds each qemu-img run that writes (create, convert, resize);
        ``info_timeout`` each that only reads (info, measure).  ``prlimit`` is the tool that
        puts the limits on qemu-img inspecting a source (None runs it without them)."""
        self.root = root
        self.qemu_img = qemu_img
        self.op_timeout = op_timeout
        self.info_timeout = info_timeout
        self.prlimit = prlimit
        self._locks: dict[str, _KeyLock] = {}
        self._opened = False

    # --- lifecycle and names --------------------------------------------------------------------

    async def open(self) -> None:
        """Create ``root`` (0700) when missing and remove what interrupted creates and deletes
        left (``.tmp-*``).  Idempotent; loads nothing.  Raises OSError when ``root`` cannot be
        made; a leftover that cannot be removed is logged and left for the next open()."""
        await asyncio.to_thread(self._open)
        self._opened = True

    def _open(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in os.scandir(self.root):
            if entry.name.startswith(TEMP_PREFIX):
                log.info("volume store: removing leftover %s", entry.name)
                try:
                    _remove(Path(entry.path))
                except OSError as exc:
                    log.warning("volume store: cannot remove %s: %s", entry.path, exc)
        fsync_dir(self.root)

    def path(self, volume_id: str, generation: int, kind: VolumeKind) -> Path:
        """Where that volume is or would be.  PermanentError for an invalid id or generation."""
        _check_key(volume_id, generation)
        return self.root / f"{volume_id}#{generation}.{_EXT[VolumeKind(kind)]}"

    def _require_open(self) -> None:
        if not self._opened:
            raise RuntimeError("VolumeStore.open() first")

    @contextlib.asynccontextmanager
    async def _serial(self, volume_id: str, generation: int) -> AsyncIterator[None]:
        key = f"{volume_id}#{generation}"
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _KeyLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    def _existing(self, volume_id: str, generation: int) -> tuple[VolumeKind, Path] | None:
        """The complete volume of that key: a regular ``.qcow2`` file or a ``.dir`` directory."""
        for kind, want in ((VolumeKind.DISK, stat.S_ISREG), (VolumeKind.DIR, stat.S_ISDIR)):
            p = self.path(volume_id, generation, kind)
            try:
                mode = os.lstat(p).st_mode
            except FileNotFoundError:
                continue
            if want(mode):
                return kind, p
        return None

    # --- create ---------------------------------------------------------------------------------

    async def create(self, spec: VolumeSpec) -> VolumeInfo:
        """Make the volume ``spec`` describes and return its info.

        Idempotent: a complete volume of that id and generation is returned as it is (its size
        and source are not compared again); PermanentError when it is of the other kind, or
        when something else holds its name.  Crash-safe (see the module docstring); on any
        failure or cancellation the partial volume is removed.  Raises PermanentError for bad
        input and qemu-img failures, TemporaryError for a full file system or a timeout.
        """
        self._require_open()
        final = self.path(spec.volume_id, spec.generation, spec.kind)
        what = _label(spec.volume_id, spec.generation)
        if spec.size < 0:
            raise PermanentError(f"{what}: negative size {spec.size}")
        if spec.kind is VolumeKind.DIR and spec.source is not None:
            raise PermanentError(f"{what}: a directory volume cannot have a source")
        if spec.kind is VolumeKind.DISK and spec.source is None and spec.size == 0:
            raise PermanentError(f"{what}: a blank disk needs a size greater than 0")
        async with self._serial(spec.volume_id, spec.generation):
            found = await asyncio.to_thread(self._existing, spec.volume_id, spec.generation)
            if found is not None:
                kind, _ = found
                if kind is not spec.kind:
                    raise PermanentError(f"{what} exists as a {kind} volume, not a {spec.kind}")
                return await self._info(spec.volume_id, spec.generation, kind, final)
            if await asyncio.to_thread(os.path.lexists, final):
                raise PermanentError(f"{what}: {final} exists and is not a {spec.kind} volume")
            tmp = self.root / f"{TEMP_PREFIX}{final.name}"
            try:
                await asyncio.to_thread(_remove, tmp)  # what a create cut short left
                if spec.kind is VolumeKind.DIR:
                    await asyncio.to_thread(self._build_dir, tmp, what)
                else:
                    await self._build_disk(spec, tmp, what)
                await asyncio.to_thread(self._publish, tmp, final, what)
            except BaseException:
                # Shielded: a cancelled create still cleans up (open() would, later).
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(_remove, tmp))
                raise
            log.info("volume store: created %s (%s)", what, final.name)
            return await self._info(spec.volume_id, spec.generation, spec.kind, final)

    def _build_dir(self, tmp: Path, what: str) -> None:
        try:
            tmp.mkdir(mode=0o700)
            os.chmod(tmp, 0o700)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise _oserror(what, exc) from exc

    async def _build_disk(self, spec: VolumeSpec, tmp: Path, what: str) -> None:
        wanted = -(-spec.size // _SECTOR) * _SECTOR  # qemu-img resize wants whole sectors
        if spec.source is None:
            await self._qemu_img(what, "create", "-q", "-f", "qcow2", tmp, str(wanted))
            return
        source, fmt, image = await self._inspect_source(spec.source, spec.source_format, what)
        if spec.copy:
            need = await self._measure(source, fmt, what)
            have = await asyncio.to_thread(_free_bytes, self.root)
            if need > have:
                raise TemporaryError(f"{what}: not enough space: need {need}, have {have} bytes")
            await self._qemu_img(what, "convert", "-q", "-f", fmt, "-O", "qcow2", source, tmp)
        else:
            await self._qemu_img(what, "create", "-q", "-f", "qcow2", "-b", source, "-F", fmt, tmp)
        if wanted > image.virtual_size:
            await self._qemu_img(what, "resize", "-q", "-f", "qcow2", tmp, str(wanted))
        elif 0 < spec.size < image.virtual_size:
            log.warning(
                "%s: size %d is below the source's %d bytes: kept the source's (never shrunk)",
                what, spec.size, image.virtual_size,
            )  # fmt: skip

    async def _inspect_source(
        self, source: Path, fmt: DiskFormat | None, what: str
    ) -> tuple[Path, DiskFormat, _Image]:
        """The source's absolute path, its format (checked or detected) and what qemu-img says
        of it; PermanentError when it is missing, unreadable, of another format, or a qcow2
        that refers to other files."""
        path = await asyncio.to_thread(_checked_source, source, what)
        args: list[str | Path] = ["info", "--output=json"]
        if fmt is not None:
            args += ["-f", str(fmt)]
        done = await self._qemu_img(what, *args, path, seconds=self.info_timeout, untrusted=True)
        image = _parse_info(done.stdout, what)
        if image.format not in (DiskFormat.QCOW2, DiskFormat.RAW):
            raise PermanentError(
                f"{what}: the source {path} is a {image.format} image, not qcow2 or raw"
            )
        # A qcow2 that names another file would make QEMU open it (/etc/shadow, a device).
        for other, name in ((image.backing, "a backing file"), (image.data_file, "a data file")):
            if other is not None:
                raise PermanentError(f"{what}: the source {path} has {name} ({other!r}): refused")
        return path, DiskFormat(image.format), image

    async def _measure(self, source: Path, fmt: DiskFormat, what: str) -> int:
        """Bytes a qcow2 copy of ``source`` needs (``qemu-img measure``)."""
        done = await self._qemu_img(
            what, "measure", "--output=json", "-f", fmt, "-O", "qcow2", source,
            seconds=self.info_timeout, untrusted=True,
        )  # fmt: skip
        try:
            required = json.loads(done.stdout)["required"]
        except (ValueError, KeyError, TypeError):
            required = None
        if type(required) is not int:
            raise PermanentError(f"{what}: unexpected output of qemu-img measure: {done.stdout!r}")
        return required

    def _publish(self, tmp: Path, final: Path, what: str) -> None:
        """Make ``tmp`` durable (0600 or 0700, creation time), then give it its final name."""
        try:
            with contextlib.suppress(OSError):  # no user xattrs here: created falls back to mtime
                os.setxattr(tmp, _CREATED_XATTR, repr(time.time()).encode())
            if tmp.is_dir():
                fsync_dir(tmp)
            else:
                os.chmod(tmp, 0o600)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.rename(tmp, final)
            fsync_dir(self.root)
        except OSError as exc:
            raise _oserror(what, exc) from exc

    async def _qemu_img(
        self,
        what: str,
        *args: str | Path,
        seconds: float | None = None,
        untrusted: bool = False,
    ) -> runner.Completed:
        """Run qemu-img; its failures as typed errors naming the volume."""
        argv: list[str | Path] = [self.qemu_img, *args]
        if untrusted and self.prlimit is not None:
            argv = [
                self.prlimit, f"--as={_UNTRUSTED_ADDRESS_SPACE}",
                f"--cpu={_UNTRUSTED_CPU_SECONDS}", "--", *argv,
            ]  # fmt: skip
        # Messages name qemu-img and its subcommand, not prlimit in front of it.
        name = f"qemu-img {args[0]}"
        try:
            return await runner.run(argv, timeout=seconds or self.op_timeout)
        except runner.CommandFailed as exc:
            text = (
                exc.stderr.decode("utf-8", "replace").strip()
                or exc.stdout.decode("utf-8", "replace").strip()
            )[-runner.MESSAGE_TAIL :]
            code = exc.returncode or 0
            status = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            if "No space left on device" in text or "Disk quota exceeded" in text:
                raise TemporaryError(f"{what}: no space left on the volume store: {text}") from exc
            raise PermanentError(f"{what}: {name} {status}: {text}") from exc
        except TemporaryError as exc:  # CommandTimeout, CommandStartError
            raise TemporaryError(f"{what}: {name}: {exc}") from exc
        except runner.CommandError as exc:  # CommandNotFound
            raise PermanentError(f"{what}: {name}: {exc}") from exc

    # --- delete ---------------------------------------------------------------------------------

    async def delete(self, volume_id: str, generation: int) -> None:
        """Remove the volume (file or whole tree).  Idempotent: absent is success.  The name
        goes first (a rename, made durable), then the content; content that cannot be removed
        is logged and left under a ``.tmp-`` name for the next open().  Raises PermanentError
        for an invalid key, OSError when the rename fails."""
        self._require_open()
        _check_key(volume_id, generation)
        what = _label(volume_id, generation)
        async with self._serial(volume_id, generation):
            await asyncio.to_thread(self._delete, volume_id, generation, what)

    def _delete(self, volume_id: str, generation: int, what: str) -> None:
        for kind in VolumeKind:
            final = self.path(volume_id, generation, kind)
            doomed = self.root / f"{TEMP_PREFIX}rm-{final.name}"
            try:
                os.rename(final, doomed)
            except FileNotFoundError:
                continue
            fsync_dir(self.root)
            try:
                _remove(doomed)
            except OSError as exc:
                log.warning("%s: deleted, but %s could not be removed: %s", what, doomed, exc)
            else:
                log.info("volume store: deleted %s (%s)", what, final.name)

    # --- observe --------------------------------------------------------------------------------

    async def list(self) -> list[VolumeInfo]:
        """Every complete volume in the store, sorted by id and generation.  Foreign entries
        (other names, a ``.qcow2`` that is not a file...) and temporary ones are ignored, as
        is a volume deleted while listing.  Raises like :meth:`info`."""
        self._require_open()
        found = await asyncio.to_thread(self._scan)
        out: list[VolumeInfo] = []
        for volume_id, generation, kind, path in found:
            with contextlib.suppress(NotFoundError):
                out.append(await self._info(volume_id, generation, kind, path))
        return out

    def _scan(self) -> builtins.list[tuple[str, int, VolumeKind, Path]]:
        found = []
        for entry in os.scandir(self.root):
            m = _NAME.match(entry.name)
            if m is None:
                continue
            kind = _KIND[m["ext"]]
            is_kind = entry.is_dir if kind is VolumeKind.DIR else entry.is_file
            if is_kind(follow_symlinks=False):
                found.append((m["id"], int(m["gen"]), kind, Path(entry.path)))
        return sorted(found, key=lambda f: (f[0], f[1], f[2]))

    async def info(self, volume_id: str, generation: int) -> VolumeInfo:
        """The volume's info: a disk's sizes and backing file from ``qemu-img info`` (with
        ``--force-share``: a running VM holds the image's lock), a directory's used bytes from a
        walk of its tree.  NotFoundError when absent; PermanentError for an invalid key or when
        qemu-img cannot read the disk."""
        kind, path = await self._find(volume_id, generation)
        return await self._info(volume_id, generation, kind, path)

    async def _find(self, volume_id: str, generation: int) -> tuple[VolumeKind, Path]:
        self._require_open()
        _check_key(volume_id, generation)
        found = await asyncio.to_thread(self._existing, volume_id, generation)
        if found is None:
            raise NotFoundError(f"{_label(volume_id, generation)} not found")
        return found

    async def _info(
        self, volume_id: str, generation: int, kind: VolumeKind, path: Path
    ) -> VolumeInfo:
        what = _label(volume_id, generation)
        backing: Path | None = None
        try:
            if kind is VolumeKind.DIR:
                virtual, actual = 0, await asyncio.to_thread(_tree_bytes, path)
            else:
                # Our own file: the format is pinned, never probed (a guest controls the bytes).
                done = await self._qemu_img(
                    what, "info", "--output=json", "-U", "-f", "qcow2", path,
                    seconds=self.info_timeout,
                )  # fmt: skip
                image = _parse_info(done.stdout, what)
                virtual, actual = image.virtual_size, image.actual_size
                backing = Path(image.backing) if image.backing else None
            created = await asyncio.to_thread(_created, path)
        except (DriverError, FileNotFoundError):
            if not await asyncio.to_thread(os.path.lexists, path):
                raise NotFoundError(f"{what} not found") from None
            raise
        return VolumeInfo(
            volume_id=volume_id, generation=generation, kind=kind, path=path,
            format=_EXT[kind], virtual_size=virtual, actual_size=actual, backing=backing,
            created=created,
        )  # fmt: skip

    async def usage(self, volume_id: str, generation: int) -> tuple[int, int]:
        """(maximum, used) bytes, for metrics, without qemu-img: a disk's virtual size from its
        qcow2 header and its allocated blocks; a directory's (0: no limit, allocated blocks of
        its tree: a walk, the one cost here).  NotFoundError when absent."""
        kind, path = await self._find(volume_id, generation)
        try:
            if kind is VolumeKind.DIR:
                return 0, await asyncio.to_thread(_tree_bytes, path)
            return await asyncio.to_thread(_disk_usage, path)
        except FileNotFoundError:
            raise NotFoundError(f"{_label(volume_id, generation)} not found") from None


# --- helpers run in worker threads ---------------------------------------------------------------


def _checked_source(source: Path, what: str) -> Path:
    """``source`` made absolute; PermanentError unless it is a regular file we can read."""
    path = Path(os.path.abspath(source))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise PermanentError(f"{what}: cannot read the source {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PermanentError(f"{what}: the source {path} is not a regular file")
    finally:
        os.close(fd)
    return path


def _parse_info(stdout: bytes, what: str) -> _Image:
    try:
        data: Any = json.loads(stdout)
        fmt, virtual = data["format"], data["virtual-size"]
        actual = data.get("actual-size", 0)
        backing = data.get("full-backing-filename") or data.get("backing-filename")
        specific = data.get("format-specific") or {}
        data_file = (specific.get("data") or {}).get("data-file")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PermanentError(f"{what}: unexpected output of qemu-img info: {exc!r}") from exc
    if not (isinstance(fmt, str) and type(virtual) is int and type(actual) is int):
        raise PermanentError(f"{what}: unexpected output of qemu-img info")
    return _Image(
        fmt, virtual, actual, None if backing is None else str(backing),
        None if data_file is None else str(data_file),
    )  # fmt: skip


def _created(path: Path) -> float:
    """When the volume was made: our xattr, else (file system without user xattrs) its mtime."""
    try:
        return float(os.getxattr(path, _CREATED_XATTR, follow_symlinks=False))
    except (OSError, ValueError):
        return os.lstat(path).st_mtime


def _disk_usage(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(32)
        st = os.fstat(f.fileno())
    if len(header) == 32 and header[:4] == _QCOW2_MAGIC:
        (virtual,) = struct.unpack(">Q", header[24:32])
    else:  # not one of ours: the file's length is the best we know
        virtual = st.st_size
    return int(virtual), st.st_blocks * 512


def _tree_bytes(root: Path) -> int:
    """Bytes allocated to ``root``'s tree, like ``du``: symlinks not followed, hard links
    counted once, entries vanishing while we walk skipped."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            with os.scandir(top) as it:
                stack.extend(entry.path for entry in it)
        except OSError:  # vanished, or unreadable to us: counted as empty
            continue
    return total


def _remove(path: Path) -> None:
    """Remove a file or a whole tree; absent is fine.  A tree a container made read-only is
    made writable and tried again (needed when we are not root).  Raises OSError."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        try:
            shutil.rmtree(path)
        except PermissionError:
            _make_writable(path)
            shutil.rmtree(path)
    except FileNotFoundError:
        return


def _make_writable(root: Path) -> None:
    """Give the owner rwx on every directory of the tree (each before it is listed)."""
    stack = [str(root)]
    while stack:
        top = stack.pop()
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(top).st_mode):
                os.chmod(top, 0o700)
                with os.scandir(top) as it:
                    stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))


__all__ = ["TEMP_PREFIX", "VolumeInfo", "VolumeKind", "VolumeSpec", "VolumeStore"]
