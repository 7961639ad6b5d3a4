"""Crash-safe file writes.

A reader sees either the whole old file or the whole new one: write a temporary file in the same
directory, fsync it, rename it over the target, then fsync the directory so the rename itself is
durable.  A crash at any point leaves the previous content intact; the temporary file a kill
left behind is removed by the agent's next start (:func:`remove_leftovers`).

A write the *storage* refuses (full filesystem, used-up quota, I/O error, read-only filesystem)
raises a typed :class:`StorageError` (:class:`NoSpaceError` for the first two): every caller that
persists state handles it where it happens (keep the data in memory, report, retry later) instead
of letting the agent crash and crash-loop on a full disk.  Both are ``OSError`` subclasses with
the original ``errno``, so handlers written for ``OSError`` keep working.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path


class StorageError(OSError):
    """The storage refused a write (EIO, EROFS, or out of space): nothing was stored and the
    previous file is intact.  Temporary from the caller's view: keep the data, retry later."""


class NoSpaceError(StorageError):
    """The filesystem is full or the quota is used up (ENOSPC, EDQUOT)."""


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_STORAGE = _NO_SPACE | {errno.EIO, errno.EROFS}


def typed_storage_error(exc: OSError, path: Path | None = None) -> OSError:
    """``exc`` as a :class:`NoSpaceError` or :class:`StorageError` when its errno says the storage
    is at fault; any other error unchanged."""
    if isinstance(exc, StorageError) or exc.errno not in _STORAGE:
        return exc
    cls = NoSpaceError if exc.errno in _NO_SPACE else StorageError
    filename = exc.filename if exc.filename is not None else (str(path) if path else None)
    typed = cls(exc.errno, exc.strerror or os.strerror(exc.errno), filename)
    typed.__cause__ = exc
    return typed


def is_storage_error(exc: BaseException | None) -> bool:
    """``exc``, or an error it was raised from, says the storage refused a write."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and (isinstance(exc, StorageError) or exc.errno in _STORAGE):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Creates the parent directory when missing.  Raises :class:`NoSpaceError` or
    :class:`StorageError` when the storage refuses the write, other OSErrors as they come; on
    failure the old file is kept and no temporary file is left behind.
    """
    try:
        _write_atomic(path, data, mode)
    except OSError as exc:
        typed = typed_storage_error(exc, path)
        if typed is exc:
            raise
        raise typed from exc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), mode)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)


#: The temporary file of :func:`write_atomic` (``tempfile.mkstemp``'s 8 random characters).
_LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_leftovers(directories: Iterable[Path]) -> list[Path]:
    """Remove the temporary files of writes a kill interrupted (between the temporary file and
    its rename) in ``directories`` and below, hidden directories left out; the files removed.
    Only while nothing writes there (at start).  Never raises: what cannot be removed stays."""
    removed = []
    for top in directories:
        for current, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if _LEFTOVER.match(name):
                    path = Path(current) / name
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
    return removed


def copy_atomic(src: Path, dst: Path) -> None:
    """Atomically replace ``dst`` with the content of ``src``; raises OSError."""
    write_atomic(dst, src.read_bytes())


def fsync_dir(directory: Path) -> None:
    """Make a rename or create in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_optional(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
