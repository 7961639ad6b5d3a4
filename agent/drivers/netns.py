"""Entering a network namespace from a worker thread (Python 3.11 has no ``os.setns``).

A driver that works in a namespace keeps one thread that entered it (the thread's sockets are
then made there); it never creates namespaces.  Errors are the errno's typed driver error
(:func:`agent.drivers.netlink_api.driver_error`): NotFoundError when the namespace is gone,
PermanentError when entering it is refused, TemporaryError otherwise.
"""

from __future__ import annotations

import ctypes
import errno
import os

from agent.drivers.netlink_api import driver_error, netns_path

__all__ = ["enter", "netns_path", "ns_id"]

CLONE_NEWNET = 0x40000000


def enter(path: str) -> tuple[int, int]:
    """Move the calling thread into the network namespace at ``path``; its (st_dev, st_ino)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise driver_error(exc.errno or errno.ENOENT, f"network namespace {path}") from exc
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise driver_error(ctypes.get_errno(), f"entering network namespace {path}")
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def ns_id(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of a namespace file; NotFoundError when it is gone."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise driver_error(exc.errno or errno.ENOENT, f"network namespace {path}") from exc
    return st.st_dev, st.st_ino
