"""Finding a daemon again by its pid file (agent/drivers/procfiles.py), with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent.drivers import procfiles

MARK = b"procfiles-test-marker"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child whose argv carries :data:`MARK` (killed and reaped at the end)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", MARK.decode()])
    try:
        # Until the child has exec'd, /proc/<pid>/cmdline is its parent's (pytest's).
        deadline = time.monotonic() + 10
        while MARK not in Path(f"/proc/{child.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the child did not exec within 10 s"
            time.sleep(0.01)
        yield child
    finally:
        child.kill()
        child.wait()


def marked(argv: Sequence[bytes]) -> bool:
    return MARK in argv


def pid_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "daemon.pid"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"abc\n", b"-5\n", b"0\n", b"12 34\n", b"1" * 40 + b"\n"],
)
def test_a_pid_file_without_one_positive_number_is_no_pid(tmp_path: Path, content: bytes) -> None:
    assert procfiles.read_pid(pid_file(tmp_path, content)) is None


def test_read_pid(tmp_path: Path) -> None:
    assert procfiles.read_pid(pid_file(tmp_path, b"1234\n")) == 1234
    assert procfiles.read_pid(tmp_path / "missing.pid") is None
    assert procfiles.read_pid(tmp_path) is None  # a directory: unreadable


def test_cmdline_and_alive_of_a_running_process(sleeper: subprocess.Popen[bytes]) -> None:
    argv = procfiles.cmdline(sleeper.pid)
    assert argv is not None and argv[-1] == MARK and argv[0] == sys.executable.encode()
    assert procfiles.alive(sleeper.pid)
    assert procfiles.alive(os.getpid())


def test_a_pid_file_of_our_daemon_is_adopted(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    path = pid_file(tmp_path, f"{sleeper.pid}\n".encode())
    assert procfiles.adopted_pid(path, marked) == sleeper.pid


def test_a_reused_pid_is_not_adopted(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """The pid runs, but another program: the caller's check of the argv says no."""
    path = pid_file(tmp_path, f"{sleeper.pid}\n".encode())
    assert procfiles.adopted_pid(path, lambda argv: b"dnsmasq" in argv) is None
    # Our own process runs, and is not the daemon either.
    assert procfiles.adopted_pid(pid_file(tmp_path, f"{os.getpid()}".encode()), marked) is None


def test_a_dead_pid_is_not_adopted(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    sleeper.kill()
    sleeper.wait()
    assert procfiles.cmdline(sleeper.pid) is None
    assert not procfiles.alive(sleeper.pid)
    path = pid_file(tmp_path, f"{sleeper.pid}\n".encode())
    assert procfiles.adopted_pid(path, marked) is None


def test_a_zombie_is_not_alive_nor_adopted(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """Exited but not reaped yet (its parent, here this test, has not waited for it)."""
    sleeper.kill()
    deadline = time.monotonic() + 10
    while procfiles.alive(sleeper.pid):
        assert time.monotonic() < deadline, "the killed child did not become a zombie"
        time.sleep(0.01)
    assert Path(f"/proc/{sleeper.pid}").exists()  # still there: a zombie
    path = pid_file(tmp_path, f"{sleeper.pid}\n".encode())
    assert procfiles.adopted_pid(path, marked) is None
    assert procfiles.adopted_pid(path, lambda argv: True) is None  # whatever its argv says


def test_no_pid_file_no_pid(tmp_path: Path) -> None:
    assert procfiles.adopted_pid(tmp_path / "none.pid", lambda argv: True) is None
