"""Entering a network namespace from a worker thread (Python 3.11 has no ``os.setns``).

A driver that works in a namespace keeps one thread that entered it (the thread's sockets are
then made there); it never creates namespaces.  ``enter`` raises TemporaryError when the
namespace is missing (it may come), PermanentError without the privilege to enter it.
"""

from __future__ import annotations

import ctypes
import errno
import os

from agent.drivers.errors import PermanentError, TemporaryError

CLONE_NEWNET = 0x40000000


def netns_path(netns: str) -> str:
    """A namespace's path: a name under /run/netns, or a path (``/proc/<pid>/ns/net``)."""
    return netns if "/" in netns else f"/run/netns/{netns}"


def enter(path: str) -> tuple[int, int]:
    """Move the calling thread into the network namespace at ``path``; its (st_dev, st_ino)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TemporaryError(f"network namespace {path}: {exc.strerror}", retry_after=2.0) from exc
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            message = f"entering network namespace {path}: {os.strerror(code)}"
            raise PermanentError(message) if code == errno.EPERM else TemporaryError(message)
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def ns_id(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the namespace at ``path``; None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
