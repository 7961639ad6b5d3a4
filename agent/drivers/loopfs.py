"""An ext4 filesystem in an image file, loop-mounted: the vault's store where /persist cannot
encrypt.

This is the only module that runs ``mkfs.ext4``, ``mount`` and ``umount`` for the vault.  The
image is made with ``-O encrypt`` so fscrypt works inside it; it is mounted with ``mount -o loop``
(the kernel detaches the loop device by itself on unmount: ``autoclear``).  Every operation is
idempotent and touches only the given image and mountpoint: ``mount`` of an image that is
already mounted there is fine, a mountpoint that holds anything else is an error, and
``unmount`` of something not mounted is success.

:class:`ImageFs` is the real driver; :class:`FakeImageFs` keeps "mounted" in memory for unit
tests and raises the same errors.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.drivers import runner

log = logging.getLogger(__name__)

#: The smallest image we make: ext4 with a journal needs a few MiB to be useful at all.
MIN_IMAGE_SIZE = 16 * 1024 * 1024


class LoopFsError(Exception):
    """An image could not be made, mounted or unmounted.  The message names the file and says
    what the tool answered."""


class LoopFsBusy(LoopFsError):
    """The filesystem is in use and cannot be unmounted."""


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, the fields we use."""

    mountpoint: Path
    source: str
    fstype: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...)
    out: list[str] = []
    i = 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountInfo]:
    """Parse mountinfo.  The last entry for a mountpoint is the one on top."""
    mounts: list[MountInfo] = []
    for line in mountinfo.read_text().splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 2:
            continue
        mounts.append(MountInfo(Path(_unescape(fields[4])), _unescape(rfields[1]), rfields[0]))
    return mounts


def loop_backing_file(device: str) -> Path | None:
    """The file behind ``/dev/loopN`` (from sysfs), or None."""
    name = Path(device).name
    if not name.startswith("loop"):
        return None
    try:
        text = (Path("/sys/block") / name / "loop" / "backing_file").read_text().strip()
    except OSError:
        return None
    return Path(text.removesuffix(" (deleted)"))


class ImageFsDriver(Protocol):
    """What the vault needs from an image-backed filesystem."""

    def create(self, image: Path, size: int, *, label: str) -> None:
        """Make a sparse image of ``size`` bytes with an ext4 (``-O encrypt``) on it.  Refuses
        to touch an existing image (LoopFsError)."""
        ...

    def is_mounted(self, image: Path, mountpoint: Path) -> bool:
        """True when ``image`` is mounted at ``mountpoint``; LoopFsError when something else
        is."""
        ...

    def mount(self, image: Path, mountpoint: Path) -> None:
        """Mount ``image`` at ``mountpoint`` (made if missing).  Idempotent."""
        ...

    def unmount(self, image: Path, mountpoint: Path) -> None:
        """Unmount; not mounted is success.  LoopFsBusy when files are open."""
        ...


def _run(argv: Sequence[str], what: str, *, timeout: float = 120.0) -> None:
    """Run a tool in the calling thread (the vault calls these from a worker thread)."""
    try:
        proc = runner.run_sync(argv, timeout=timeout, check=False)
    except runner.CommandNotFound as exc:
        raise LoopFsError(f"{what}: {argv[0]} is not installed") from exc
    except runner.CommandTimeout as exc:
        raise LoopFsError(f"{what}: {argv[0]} did not finish in {timeout:.0f} s") from exc
    except runner.CommandError as exc:
        raise LoopFsError(f"{what}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr_text or proc.stdout_text).strip() or f"exit status {proc.returncode}"
        if "target is busy" in detail:
            raise LoopFsBusy(f"{what}: {detail}")
        raise LoopFsError(f"{what}: {detail}")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    return found or name


class ImageFs:
    """The real driver: ``mkfs.ext4``, ``mount -o loop``, ``umount``.  Needs root."""

    def __init__(self, mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
        self._mountinfo = mountinfo

    def create(self, image: Path, size: int, *, label: str) -> None:
        if size < MIN_IMAGE_SIZE:
            raise LoopFsError(f"image {image}: {size} bytes is too small (min {MIN_IMAGE_SIZE})")
        image.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError as exc:
            raise LoopFsError(f"image {image} exists already; not overwriting it") from exc
        except OSError as exc:
            raise LoopFsError(f"image {image}: {exc.strerror}") from exc
        try:
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            _run(
                [_tool("mkfs.ext4"), "-q", "-F", "-O", "encrypt", "-L", label[:16], str(image)],
                f"mkfs.ext4 on {image}",
            )
        except BaseException:
            image.unlink(missing_ok=True)
            raise

    def _mounted_at(self, mountpoint: Path) -> MountInfo | None:
        target = mountpoint.absolute()
        found: MountInfo | None = None
        try:
            mounts = read_mounts(self._mountinfo)
        except OSError as exc:
            raise LoopFsError(f"cannot read {self._mountinfo}: {exc.strerror}") from exc
        for entry in mounts:
            if entry.mountpoint == target:
                found = entry
        return found

    def is_mounted(self, image: Path, mountpoint: Path) -> bool:
        entry = self._mounted_at(mountpoint)
        if entry is None:
            return False
        backing = loop_backing_file(entry.source)
        if backing is None or not _same_file(backing, image):
            raise LoopFsError(
                f"{mountpoint} holds {entry.source} ({entry.fstype}), not the image {image}"
            )
        return True

    def mount(self, image: Path, mountpoint: Path) -> None:
        if not image.is_file():
            raise LoopFsError(f"image {image} does not exist")
        if self.is_mounted(image, mountpoint):
            return
        mountpoint.mkdir(parents=True, exist_ok=True)
        _run(
            [
                _tool("mount"),
                "-t",
                "ext4",
                "-o",
                "loop,nodev,nosuid",
                str(image),
                str(mountpoint),
            ],
            f"mount {image} at {mountpoint}",
        )
        log.info("mounted %s at %s", image, mountpoint)

    def unmount(self, image: Path, mountpoint: Path) -> None:
        if not self.is_mounted(image, mountpoint):
            return
        _run([_tool("umount"), str(mountpoint)], f"umount {mountpoint}")
        log.info("unmounted %s", mountpoint)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute() == b.absolute()


class FakeImageFs:
    """In-memory stand-in for unit tests; raises the same errors as :class:`ImageFs`.

    The "filesystem" of an image is the directory ``<image>.fakefs``: ``create`` empties it,
    ``mount`` moves it onto the (empty) mountpoint, ``unmount`` moves it back and leaves an
    empty mountpoint, so what was written while mounted disappears from the mountpoint on
    unmount and comes back on mount, and inodes (and their xattrs) survive.  ``reboot()``
    unmounts everything; ``fail_mount`` makes mounts fail with that message.
    """

    def __init__(self) -> None:
        self.mounted: dict[Path, Path] = {}
        self.fail_mount: str | None = None

    @staticmethod
    def backing(image: Path) -> Path:
        return image.with_name(image.name + ".fakefs")

    def create(self, image: Path, size: int, *, label: str) -> None:
        if size < MIN_IMAGE_SIZE:
            raise LoopFsError(f"image {image}: {size} bytes is too small (min {MIN_IMAGE_SIZE})")
        if image.exists():
            raise LoopFsError(f"image {image} exists already; not overwriting it")
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(f"fake ext4 image {label} {size}\n".encode())
        shutil.rmtree(self.backing(image), ignore_errors=True)
        self.backing(image).mkdir()

    def is_mounted(self, image: Path, mountpoint: Path) -> bool:
        source = self.mounted.get(mountpoint.absolute())
        if source is None:
            return False
        if source != image.absolute():
            raise LoopFsError(f"{mountpoint} holds {source}, not the image {image}")
        return True

    def mount(self, image: Path, mountpoint: Path) -> None:
        if not image.is_file():
            raise LoopFsError(f"image {image} does not exist")
        if self.is_mounted(image, mountpoint):
            return
        if self.fail_mount is not None:
            raise LoopFsError(f"mount {image} at {mountpoint}: {self.fail_mount}")
        backing = self.backing(image)
        backing.mkdir(exist_ok=True)
        mountpoint.parent.mkdir(parents=True, exist_ok=True)
        if mountpoint.exists():
            mountpoint.rmdir()  # OSError if not empty, as mounting over data would hide it
        os.rename(backing, mountpoint)
        self.mounted[mountpoint.absolute()] = image.absolute()

    def unmount(self, image: Path, mountpoint: Path) -> None:
        if self.is_mounted(image, mountpoint):
            os.rename(mountpoint, self.backing(image))
            mountpoint.mkdir()
            del self.mounted[mountpoint.absolute()]

    def reboot(self) -> None:
        for mountpoint, image in list(self.mounted.items()):
            self.unmount(image, mountpoint)


__all__ = [
    "MIN_IMAGE_SIZE",
    "FakeImageFs",
    "ImageFs",
    "ImageFsDriver",
    "LoopFsBusy",
    "LoopFsError",
    "MountInfo",
    "loop_backing_file",
    "read_mounts",
]
