# SPDX-License-Identifier: Apache-2.0
"""agent.util.atomicfile: a reader sees the whole old file or the whole new one, never a mix."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest

from agent.util import atomicfile
from agent.util.atomicfile import copy_atomic, read_optional, write_atomic

OLD = b"old content\n" * 100
NEW = b"new content, longer than the old one\n" * 200


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def fail(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.EIO, "injected failure")


def test_write_creates_file_and_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file"
    write_atomic(target, NEW)
    assert target.read_bytes() == NEW
    assert entries(target.parent) == ["file"]


def test_replace_existing(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomic(target, OLD)
    write_atomic(target, NEW)
    assert target.read_bytes() == NEW
    write_atomic(target, b"")
    assert target.read_bytes() == b""
    assert entries(tmp_path) == ["file"]


def test_replace_is_a_new_inode(tmp_path: Path) -> None:
    """Renamed over, not rewritten in place: an open reader keeps the old bytes."""
    target = tmp_path / "file"
    write_atomic(target, OLD)
    with target.open("rb") as reader:
        write_atomic(target, NEW)
        assert reader.read() == OLD
    assert target.read_bytes() == NEW


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400])
def test_mode_bits(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "file"
    write_atomic(target, NEW, mode=mode)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_default_mode_is_private_even_with_open_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        write_atomic(tmp_path / "file", NEW)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "file").stat().st_mode) == 0o600


def test_mode_applies_when_replacing(tmp_path: Path) -> None:
    target = tmp_path / "file"
    write_atomic(target, OLD, mode=0o644)
    write_atomic(target, NEW)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["replace", "fsync", "fchmod"])
def test_failure_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    target = tmp_path / "file"
    write_atomic(target, OLD)
    monkeypatch.setattr(os, name, fail)
    with pytest.raises(OSError, match="injected"):
        write_atomic(target, NEW)
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert entries(tmp_path) == ["file"]


def test_failure_without_old_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "file", NEW)
    monkeypatch.undo()
    assert entries(tmp_path) == []


class HalfWriter:
    """A file object whose write() puts half the data on disk, then fails (disk full)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner

    def __enter__(self) -> HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    def write(self, data: bytes) -> int:
        self._inner.write(data[: len(data) // 2])
        self._inner.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_write_failing_mid_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file"
    write_atomic(target, OLD)
    real_fdopen = os.fdopen
    seen: list[str] = []

    def half_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> HalfWriter:
        inner = real_fdopen(fd, mode, *args, **kwargs)
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return HalfWriter(inner)

    monkeypatch.setattr(os, "fdopen", half_fdopen)
    with pytest.raises(OSError) as info:
        write_atomic(target, NEW)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert len(seen) == 1
    assert Path(seen[0]).parent == tmp_path  # the temp file was in the target's directory
    assert not Path(seen[0]).exists()
    assert target.read_bytes() == OLD
    assert entries(tmp_path) == ["file"]


def test_interrupt_is_cleaned_up_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BaseException (Ctrl-C, task cancellation) also removes the temp file."""
    target = tmp_path / "file"
    write_atomic(target, OLD)

    def interrupt(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, NEW)
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert entries(tmp_path) == ["file"]


def test_directory_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(atomicfile, "fsync_dir", synced.append)
    write_atomic(tmp_path / "sub" / "file", NEW)
    assert synced == [tmp_path / "sub"]


def test_fsync_dir_on_real_directory(tmp_path: Path) -> None:
    atomicfile.fsync_dir(tmp_path)  # must not raise
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        atomicfile.fsync_dir(tmp_path / "f")


def test_copy_atomic(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "out" / "dst"
    src.write_bytes(NEW)
    write_atomic(dst, OLD)
    copy_atomic(src, dst)
    assert dst.read_bytes() == NEW
    assert src.read_bytes() == NEW
    with pytest.raises(FileNotFoundError):
        copy_atomic(tmp_path / "missing", dst)
    assert dst.read_bytes() == NEW


def test_read_optional(tmp_path: Path) -> None:
    assert read_optional(tmp_path / "missing") is None
    assert read_optional(tmp_path / "no" / "such" / "dir") is None
    (tmp_path / "empty").write_bytes(b"")
    assert read_optional(tmp_path / "empty") == b""
    (tmp_path / "data").write_bytes(OLD)
    assert read_optional(tmp_path / "data") == OLD


def test_read_optional_other_errors_raise(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_optional(tmp_path)


def test_leftovers_of_interrupted_writes_are_removed(tmp_path: Path) -> None:
    """What a kill between the temporary file and its rename leaves, and nothing else."""
    (tmp_path / "outbox").mkdir()
    fd, name = tempfile.mkstemp(prefix=".device.info.", suffix=".tmp", dir=tmp_path / "outbox")
    os.close(fd)
    kept = [tmp_path / "outbox" / "device.info", tmp_path / "outbox" / "x.tmp",
            tmp_path / ".hidden.tmp", tmp_path / ".staging" / ".key.pem.abcdefgh.tmp"]  # fmt: skip
    for path in kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    assert atomicfile.remove_leftovers([tmp_path, tmp_path / "missing"]) == [Path(name)]
    assert not Path(name).exists()
    assert all(path.exists() for path in kept)
