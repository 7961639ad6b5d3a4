"""The kernel's connection tracking table, read for flow logs: :class:`Conntrack` and the real
:class:`NfConntrack` (ctnetlink over a raw ``NETLINK_NETFILTER`` socket).

What it does, in the driver's network namespace (``netns``: a name under ``/run/netns`` or a
path; None: the process's own):

- :meth:`Conntrack.enable_accounting` turns on ``net.netfilter.nf_conntrack_acct`` (packet and
  byte counters per direction) and ``nf_conntrack_timestamp`` (each entry's start time) there.
  Both apply to connections made from then on.  These are the namespace's own sysctls: on a
  real node (the root namespace) the host's, as EVE sets them on its own OS.
- :meth:`Conntrack.dump` lists the IPv4 entries whose mark, under ``mask``, equals ``mark``
  (the kernel filters, so a busy host's other connections cost nothing here), each as a
  :class:`CtEntry` with both tuples, counters, start time and mark.

Netlink work runs in the driver's one worker thread (see
:class:`agent.drivers.nfnetlink.NamespaceThread`).  Errors: a namespace that is gone is
``NotFoundError``; a refused sysctl or dump ``PermanentError`` (EPERM) or ``TemporaryError``
(ENOBUFS, EINTR...); a socket that broke mid-dump is reopened on the next call.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass
from typing import Protocol

from agent.drivers import nfnetlink as nf
from agent.drivers.errors import TemporaryError
from agent.drivers.netlink_api import driver_error

# ctnetlink (linux/netfilter/nfnetlink_conntrack.h)
_SUBSYS_CTNETLINK = 1
_IPCTNL_MSG_CT_GET = 1
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_TIMEOUT, CTA_MARK = 1, 2, 7, 8
CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_ID, CTA_TIMESTAMP, CTA_MARK_MASK = 9, 10, 12, 20, 21
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_COUNTERS_PACKETS, CTA_COUNTERS_BYTES = 1, 2
CTA_TIMESTAMP_START = 1

_SYSCTLS = ("nf_conntrack_acct", "nf_conntrack_timestamp")


@dataclass(frozen=True)
class CtTuple:
    """One direction of a connection: addresses, protocol number and ports (0 for ICMP)."""

    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0


@dataclass(frozen=True)
class CtEntry:
    """One tracked connection.  ``orig`` is the direction of its first packet, ``reply`` the
    answer's (NAT shows here: a masqueraded flow's reply goes to the node's port address).
    Counters are 0 when accounting was off when the connection was made; ``start`` (wall
    clock seconds) is 0 without timestamps."""

    id: int
    orig: CtTuple
    reply: CtTuple
    mark: int
    orig_packets: int = 0
    orig_bytes: int = 0
    reply_packets: int = 0
    reply_bytes: int = 0
    start: float = 0.0
    #: Seconds left before the entry expires.
    timeout: int = 0


class Conntrack(Protocol):
    """The connection tracking table of one network namespace (see the module docstring)."""

    async def enable_accounting(self) -> None:
        """Counters and timestamps on for connections made from now on."""
        ...

    async def dump(self, mark: int, mask: int) -> list[CtEntry]:
        """IPv4 entries with ``entry.mark & mask == mark``."""
        ...

    async def close(self) -> None: ...


def _tuple(data: bytes | None) -> CtTuple:
    parts = nf.attrs(data or b"")
    ip, proto = nf.attrs(parts.get(CTA_TUPLE_IP, b"")), nf.attrs(parts.get(CTA_TUPLE_PROTO, b""))
    return CtTuple(
        nf.ipv4(ip.get(CTA_IP_V4_SRC)),
        nf.ipv4(ip.get(CTA_IP_V4_DST)),
        nf.be(proto.get(CTA_PROTO_NUM)),
        nf.be(proto.get(CTA_PROTO_SRC_PORT)),
        nf.be(proto.get(CTA_PROTO_DST_PORT)),
    )


def _counters(data: bytes | None) -> tuple[int, int]:
    found = nf.attrs(data or b"")
    return nf.be(found.get(CTA_COUNTERS_PACKETS)), nf.be(found.get(CTA_COUNTERS_BYTES))


def parse_entry(payload: bytes) -> CtEntry | None:
    """A ctnetlink ``IPCTNL_MSG_CT_NEW`` payload as a :class:`CtEntry` (None: not IPv4)."""
    found = nf.nfgen_attrs(payload)
    orig, reply = _tuple(found.get(CTA_TUPLE_ORIG)), _tuple(found.get(CTA_TUPLE_REPLY))
    if not orig.src or not reply.src:
        return None
    o_pkts, o_bytes = _counters(found.get(CTA_COUNTERS_ORIG))
    r_pkts, r_bytes = _counters(found.get(CTA_COUNTERS_REPLY))
    stamp = nf.be(nf.attrs(found.get(CTA_TIMESTAMP, b"")).get(CTA_TIMESTAMP_START))
    return CtEntry(
        id=nf.be(found.get(CTA_ID)),
        orig=orig,
        reply=reply,
        mark=nf.be(found.get(CTA_MARK)),
        orig_packets=o_pkts,
        orig_bytes=o_bytes,
        reply_packets=r_pkts,
        reply_bytes=r_bytes,
        start=stamp / 1e9,
        timeout=nf.be(found.get(CTA_TIMEOUT)),
    )


def dump_request(seq: int, mark: int, mask: int) -> bytes:
    """The ``IPCTNL_MSG_CT_GET`` dump of IPv4 entries filtered by mark in the kernel."""
    body = nf.attr(CTA_MARK, (mark & mask).to_bytes(4, "big"))
    body += nf.attr(CTA_MARK_MASK, mask.to_bytes(4, "big"))
    msg_type = (_SUBSYS_CTNETLINK << 8) | _IPCTNL_MSG_CT_GET
    return nf.request(msg_type, nf.NLM_F_REQUEST | nf.NLM_F_DUMP, seq, socket.AF_INET, 0, body)


class NfConntrack:
    """:class:`Conntrack` over ctnetlink in ``netns``; see the module docstring."""

    def __init__(self, netns: str | None = None) -> None:
        self._thread = nf.NamespaceThread(netns, f"conntrack-{netns or 'self'}", self._drop)
        self._sock: socket.socket | None = None
        self._seq = int(time.time())

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nf.NETLINK_NETFILTER)
            except OSError as exc:
                raise driver_error(exc.errno or errno.EIO, "opening ctnetlink") from exc
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.settimeout(10.0)
            sock.bind((0, 0))
            self._sock = sock
        return self._sock

    async def enable_accounting(self) -> None:
        await self._thread.run(self._enable)

    def _enable(self) -> None:
        for name in _SYSCTLS:
            path = f"/proc/sys/net/netfilter/{name}"
            try:
                with open(path, "r+", encoding="ascii") as f:
                    if f.read().strip() != "1":
                        f.seek(0)
                        f.write("1\n")
            except OSError as exc:
                raise driver_error(exc.errno or errno.EIO, f"sysctl {name}") from exc

    async def dump(self, mark: int, mask: int) -> list[CtEntry]:
        return await self._thread.run(lambda: self._dump(mark, mask))

    def _dump(self, mark: int, mask: int) -> list[CtEntry]:
        sock = self._socket()
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        out: list[CtEntry] = []
        try:
            sock.send(dump_request(seq, mark, mask))
            while True:
                data = sock.recv(1 << 16)
                for kind, _flags, got_seq, payload in nf.messages(data):
                    if got_seq != seq:
                        continue  # a late answer to an earlier, abandoned dump
                    if kind == nf.NLMSG_DONE:
                        return out
                    if kind == nf.NLMSG_ERROR:
                        code = nf.error_code(payload)
                        if code == 0:
                            continue
                        raise driver_error(code, "conntrack dump")
                    entry = parse_entry(payload)
                    if entry is not None:
                        out.append(entry)
        except OSError as exc:  # TimeoutError too
            # The socket is in an unknown place of a dump: start the next one afresh.
            self._drop()
            if exc.errno is not None:
                raise driver_error(exc.errno, "conntrack dump") from exc
            raise TemporaryError(f"conntrack dump: {exc or 'timed out'}") from exc

    async def close(self) -> None:
        await self._thread.close(self._drop)
