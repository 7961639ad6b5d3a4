"""The nfnetlink wire format and the namespace thread shared by the conntrack and NFLOG drivers.

Both drivers speak ``NETLINK_NETFILTER`` directly on a raw socket (a message is an
``nlmsghdr``, an ``nfgenmsg`` and attributes), because the two things they need are small and
hot: a dump of the agent's marked conntrack entries and a stream of logged packet headers.
Everything here is pure byte work, except :class:`NamespaceThread`, the one worker thread of a
driver that entered its network namespace (``setns``; it never creates one), so netlink calls
never block the event loop and sockets open in the right namespace.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from agent.drivers.errors import PermanentError
from agent.drivers.netlink_api import netns_path
from agent.drivers.netns import enter

T = TypeVar("T")

NETLINK_NETFILTER = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN_SIZE = 4  # nfgenmsg: family, version, res_id (big endian)
_NLA = struct.Struct("=HH")


def attr(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    size = _NLA.size + len(data)
    return _NLA.pack(size, kind) + data + b"\0" * (-size % 4)


def request(msg_type: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    """An nfnetlink request: header, ``nfgenmsg`` (``res_id`` sent big endian), attributes."""
    payload = struct.pack("=BB", family, 0) + struct.pack("!H", res_id & 0xFFFF) + body
    return _HDR.pack(_HDR.size + len(payload), msg_type, flags, seq, 0) + payload


def messages(buf: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each message in a datagram; a truncated tail is ignored."""
    at = 0
    while at + _HDR.size <= len(buf):
        size, kind, flags, seq, _pid = _HDR.unpack_from(buf, at)
        if size < _HDR.size or at + size > len(buf):
            return
        yield kind, flags, seq, buf[at + _HDR.size : at + size]
        at += (size + 3) & ~3


def error_code(payload: bytes) -> int:
    """The (positive) errno of an ``NLMSG_ERROR`` payload; 0 is an acknowledgement."""
    if len(payload) < 4:
        return errno.EIO
    code: int = struct.unpack_from("=i", payload)[0]
    return -code


def attrs(data: bytes, start: int = 0) -> dict[int, bytes]:
    """Attributes from ``start`` on, by type (flags stripped; the last of a type wins)."""
    out: dict[int, bytes] = {}
    at = start
    while at + _NLA.size <= len(data):
        size, kind = _NLA.unpack_from(data, at)
        if size < _NLA.size or at + size > len(data):
            break
        out[kind & _NLA_TYPE_MASK] = data[at + _NLA.size : at + size]
        at += (size + 3) & ~3
    return out


def nfgen_attrs(payload: bytes) -> dict[int, bytes]:
    """The attributes of an nfnetlink message payload (after its ``nfgenmsg``)."""
    return attrs(payload, _NFGEN_SIZE)


def be(data: bytes | None) -> int:
    """A big-endian unsigned integer attribute (8, 16, 32 or 64 bits); 0 when absent."""
    return int.from_bytes(data, "big") if data else 0


def ipv4(data: bytes | None) -> str:
    """A 4-byte address attribute as text ("" when absent or not 4 bytes)."""
    return ".".join(str(b) for b in data) if data is not None and len(data) == 4 else ""


def ns_path(netns: str | None) -> str | None:
    """None (the process's own namespace) or the path of ``netns`` (a name or a path)."""
    return None if netns is None else netns_path(netns)


def same_ns(path: str, entered: tuple[int, int] | None) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == entered


class NamespaceThread:
    """One worker thread in a namespace (None: the process's own).  ``run(fn)`` calls ``fn()``
    there; ``on_enter`` is called (in the thread) after each (re-)entry, so that sockets of a
    namespace left behind are dropped.  A call cancelled while waiting still runs to its end."""

    def __init__(self, netns: str | None, label: str, on_enter: Callable[[], None]) -> None:
        self.path = ns_path(netns)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=label)
        self._entered: tuple[int, int] | None = None
        self._on_enter = on_enter
        self.closed = False

    async def run(self, fn: Callable[[], T]) -> T:
        if self.closed:
            raise PermanentError("the driver is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[], T]) -> T:
        if self.path is not None and not same_ns(self.path, self._entered):
            self._on_enter()
            self._entered = enter(self.path)
        return fn()

    async def close(self, last: Callable[[], None]) -> None:
        """Run ``last`` in the thread (closing its sockets), then stop the thread."""
        if not self.closed:
            self.closed = True
            await asyncio.get_running_loop().run_in_executor(self._pool, last)
            self._pool.shutdown(wait=True)
