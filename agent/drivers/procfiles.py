"""Daemons found again by their pid files, checked in ``/proc``.

The agent starts some daemons in sessions of their own (dnsmasq, udhcpc) so that they outlive an
agent restart; a new agent finds each by its pid file.  A pid file is never trusted alone: the
pid may have been reused by another process since, and an unprivileged daemon owns its own pid
file.  :func:`adopted_pid` therefore counts the pid only while ``/proc/<pid>/cmdline`` is what
the caller says its daemon's command line is, and the process is not a zombie (a daemon whose
parent, init or the agent, has not reaped it yet has exited all the same).

Small synchronous reads (at most 32 bytes of the pid file, one cmdline, one stat), cheap enough
for the event loop.  Linux only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

#: A pid file holds one decimal number and a newline; anything longer is not a pid file.
MAX_PID_FILE = 32


def read_pid(path: Path) -> int | None:
    """The positive pid in the pid file ``path``; None when it is missing, unreadable, or does
    not hold one number."""
    try:
        with open(path, "rb") as pid_file:
            data = pid_file.read(MAX_PID_FILE + 1)
    except OSError:
        return None
    if len(data) > MAX_PID_FILE:
        return None
    try:
        pid = int(data.strip())
    except ValueError:
        return None
    return pid if pid > 0 else None


def cmdline(pid: int) -> list[bytes] | None:
    """The argv of process ``pid`` (``/proc/<pid>/cmdline`` split at NULs, without the last
    empty field); None when there is no such process.  A zombie's is empty."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data.split(b"\0")[:-1] if data.endswith(b"\0") else data.split(b"\0")


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] != "Z"


def adopted_pid(pid_file: Path, ours: Callable[[Sequence[bytes]], bool]) -> int | None:
    """The pid in ``pid_file`` while that process is alive and ``ours(argv)`` says its command
    line is the caller's daemon; None otherwise (no pid file, a dead or reused pid, a zombie)."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    argv = cmdline(pid)
    if not argv or not ours(argv):
        return None
    return pid if alive(pid) else None
