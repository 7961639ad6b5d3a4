"""Crash-safe file writes.

A reader sees either the whole old file or the whole new one: write a temporary file in the same
directory, fsync it, rename it over the target, then fsync the directory so the rename itself is
durable.  A crash at any point leaves the previous content intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Creates the parent directory when missing.  Raises OSError; on failure the old file is kept
    and no temporary file is left behind.
    """
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
