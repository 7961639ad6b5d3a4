"""Packets the firewall logged before dropping them: :class:`Nflog` and the real
:class:`NflogListener` (nfnetlink_log over a raw ``NETLINK_NETFILTER`` socket).

The firewall's dropping rules send the packets they drop to an NFLOG group (nft ``log group
G snaplen N prefix "<rule comment>"``, rate-limited per rule).  The listener binds that group in
the driver's network namespace (``NFULNL_CFG_CMD_BIND``; one listener per group and namespace:
the kernel refuses a second with EPERM, which is ``TemporaryError`` here), asks for the first
bytes of each packet (copy mode packet, :data:`COPY_RANGE` bytes: the IPv4 header and the
ports), and parses each message into a :class:`LoggedPacket`: the rule's prefix, addresses,
protocol, ports and the packet's length (its IPv4 total length, not the copied part).
Other families are skipped.

A reader thread receives; :meth:`Nflog.drain` hands over what arrived since the last call.
Bounds: at most ``max_pending`` packets wait between drains, the rest are counted in
:attr:`Nflog.lost`, as are the kernel's own losses (ENOBUFS: the socket buffer overflowed, an
unknown number of packets; counted once).  A reader that fails otherwise stops and
:attr:`Nflog.running` turns False; :meth:`Nflog.start` binds afresh.

Sockets are opened in the driver's namespace by its worker thread (see
:class:`agent.drivers.nfnetlink.NamespaceThread`); the reader thread only reads them.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from agent.drivers import nfnetlink as nf
from agent.drivers.errors import TemporaryError
from agent.drivers.netlink_api import driver_error

log = logging.getLogger(__name__)

# nfnetlink_log (linux/netfilter/nfnetlink_log.h)
_SUBSYS_ULOG = 4
_MSG_PACKET, _MSG_CONFIG = 0, 1
_CFG_CMD, _CFG_MODE, _CFG_NLBUFSIZ, _CFG_TIMEOUT, _CFG_QTHRESH = 1, 2, 3, 4, 5
_CMD_BIND, _CMD_UNBIND = 1, 2
_COPY_PACKET = 2
NFULA_PACKET_HDR, NFULA_TIMESTAMP, NFULA_PAYLOAD, NFULA_PREFIX = 1, 3, 9, 10
_ETH_P_IP = 0x0800
_ETH_P_ARP = 0x0806

#: Bytes of each packet copied to us: an IPv4 header with options (60) and the ports.
COPY_RANGE = 64
MAX_PENDING = 10_000


@dataclass(frozen=True)
class LoggedPacket:
    """One logged IPv4 packet: the logging rule's ``prefix``, when it arrived (wall clock
    seconds), its addresses, protocol number, ports (0 unless TCP, UDP or SCTP) and length;
    ``data`` is what was copied of it (the listener's ``copy_range`` bytes at most, from the
    IPv4 header on).  Or an IPv4-over-Ethernet ARP packet a ``bridge`` table logged: ``proto``
    0, ``src`` and ``dst`` its sender's and target's addresses, ``data`` from the ARP header
    on."""

    prefix: str
    time: float
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    length: int
    data: bytes = field(default=b"", repr=False, compare=False)


class Nflog(Protocol):
    """One NFLOG group in one namespace (see the module docstring)."""

    @property
    def running(self) -> bool:
        """Bound and reading."""
        ...

    @property
    def lost(self) -> int:
        """Packets (or kernel overflows) lost since the listener was made."""
        ...

    async def start(self) -> None:
        """Bind the group and start reading (nothing when running)."""
        ...

    def drain(self) -> list[LoggedPacket]:
        """The packets that arrived since the last call, oldest first.  Never blocks."""
        ...

    async def stop(self) -> None:
        """Unbind and stop reading; :meth:`start` may bind again."""
        ...

    async def close(self) -> None:
        """:meth:`stop` for good."""
        ...


def parse_packet(payload: bytes, now: float) -> LoggedPacket | None:
    """An ``NFULNL_MSG_PACKET`` payload as a :class:`LoggedPacket` (None: neither IPv4 nor
    IPv4 ARP, or too short to tell)."""
    found = nf.nfgen_attrs(payload)
    header = found.get(NFULA_PACKET_HDR)
    hw_protocol = struct.unpack_from("!H", header)[0] if header and len(header) >= 2 else 0
    if hw_protocol not in (0, _ETH_P_IP, _ETH_P_ARP):
        return None
    data = found.get(NFULA_PAYLOAD, b"")
    if hw_protocol == _ETH_P_ARP:
        return _arp(found, data, now)
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    length, proto = struct.unpack_from("!H", data, 2)[0], data[9]
    sport = dport = 0
    if proto in (6, 17, 132) and len(data) >= ihl + 4:
        sport, dport = struct.unpack_from("!HH", data, ihl)
    prefix, when = _prefix_and_time(found, now)
    return LoggedPacket(prefix, when, proto, nf.ipv4(data[12:16]), nf.ipv4(data[16:20]), sport,
                        dport, length, bytes(data))  # fmt: skip


def _arp(found: dict[int, bytes], data: bytes, now: float) -> LoggedPacket | None:
    # Ethernet (1) and IPv4 (0x0800), 6- and 4-byte addresses: 28 bytes in all.
    if len(data) < 28 or data[:6] != b"\x00\x01\x08\x00\x06\x04":
        return None
    prefix, when = _prefix_and_time(found, now)
    return LoggedPacket(prefix, when, 0, nf.ipv4(data[14:18]), nf.ipv4(data[24:28]), 0, 0,
                        len(data), bytes(data))  # fmt: skip


def _prefix_and_time(found: dict[int, bytes], now: float) -> tuple[str, float]:
    prefix = found.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
    stamp = found.get(NFULA_TIMESTAMP)
    when = now
    if stamp is not None and len(stamp) == 16:
        sec, usec = struct.unpack("!QQ", stamp)
        when = sec + usec / 1e6
    return prefix, when


def config_request(seq: int, group: int, body: bytes) -> bytes:
    msg_type = (_SUBSYS_ULOG << 8) | _MSG_CONFIG
    return nf.request(msg_type, nf.NLM_F_REQUEST | nf.NLM_F_ACK, seq, socket.AF_UNSPEC, group, body)


def bind_requests(group: int, copy_range: int = COPY_RANGE) -> list[bytes]:
    """Bind ``group``; copy ``copy_range`` bytes of each packet; batch up to 64 packets or
    half a second in 64 KiB (fewer wake-ups under a flood)."""
    mode = struct.pack("!IBB", copy_range, _COPY_PACKET, 0)
    bodies = [
        nf.attr(_CFG_CMD, bytes([_CMD_BIND])),
        nf.attr(_CFG_MODE, mode),
        nf.attr(_CFG_NLBUFSIZ, struct.pack("!I", 65536)),
        nf.attr(_CFG_TIMEOUT, struct.pack("!I", 50)),
        nf.attr(_CFG_QTHRESH, struct.pack("!I", 64)),
    ]
    return [config_request(i + 1, group, body) for i, body in enumerate(bodies)]


class NflogListener:
    """:class:`Nflog` on the kernel; see the module docstring."""

    def __init__(
        self,
        group: int,
        netns: str | None = None,
        *,
        max_pending: int = MAX_PENDING,
        copy_range: int = COPY_RANGE,
    ) -> None:
        """``copy_range``: bytes of each packet asked for (more than the headers for a caller
        that reads payloads)."""
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group} outside 0..65535")
        if not 20 <= copy_range <= 0xFFFF:
            raise ValueError(f"copy range {copy_range} outside 20..65535")
        self.group = group
        self.copy_range = copy_range
        self.max_pending = max_pending
        self._thread = nf.NamespaceThread(netns, f"nflog-{netns or 'self'}", self._drop)
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[LoggedPacket] = []
        self._lost = 0

    @property
    def running(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    @property
    def lost(self) -> int:
        return self._lost

    async def start(self) -> None:
        if self.running:
            return
        await self._thread.run(self._bind)
        self._stop = threading.Event()
        sock = self._sock
        assert sock is not None
        self._reader = threading.Thread(
            target=self._read, args=(sock, self._stop), name=f"nflog-{self.group}", daemon=True
        )
        self._reader.start()

    def _bind(self) -> None:
        """Open, configure and bind a socket (worker thread, in the namespace)."""
        self._drop()
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nf.NETLINK_NETFILTER)
        except OSError as exc:
            raise driver_error(exc.errno or errno.EIO, "opening nfnetlink_log") from exc
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((0, 0))
            sock.settimeout(5.0)
            for msg in bind_requests(self.group, self.copy_range):
                sock.send(msg)
                self._ack(sock, struct.unpack_from("=I", msg, 8)[0])
            sock.settimeout(0.5)  # the reader looks at its stop flag this often
        except OSError as exc:
            sock.close()
            raise driver_error(exc.errno or errno.EIO, f"NFLOG group {self.group}") from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _ack(self, sock: socket.socket, seq: int) -> None:
        while True:
            for kind, _flags, got, payload in nf.messages(sock.recv(65536)):
                if kind == nf.NLMSG_ERROR and got == seq:
                    code = nf.error_code(payload)
                    if code == errno.EPERM:  # the kernel's answer when the group is taken
                        taken = f"NFLOG group {self.group} is bound by another listener here"
                        raise TemporaryError(taken, retry_after=10.0)
                    if code:
                        raise driver_error(code, f"binding NFLOG group {self.group}")
                    return

    def _read(self, sock: socket.socket, stop: threading.Event) -> None:
        packet_type = (_SUBSYS_ULOG << 8) | _MSG_PACKET
        while not stop.is_set():
            try:
                data = sock.recv(1 << 17)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._lost += 1  # the kernel dropped some: the socket buffer was full
                    continue
                if not stop.is_set():
                    log.error("NFLOG group %d: reading stopped: %s", self.group, exc)
                return
            now = time.time()
            got = []
            for kind, _flags, _seq, payload in nf.messages(data):
                if kind == packet_type:
                    packet = parse_packet(payload, now)
                    if packet is not None:
                        got.append(packet)
            if got:
                with self._lock:
                    room = max(0, self.max_pending - len(self._pending))
                    self._pending += got[:room]
                    self._lost += len(got) - len(got[:room])

    def drain(self) -> list[LoggedPacket]:
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def _drop(self) -> None:
        """Stop the reader and close the socket (the kernel unbinds the group with it)."""
        self._stop.set()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=2.0)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    async def stop(self) -> None:
        """Unbind and stop reading; :meth:`start` binds again."""
        await self._thread.run(self._drop)

    async def close(self) -> None:
        await self._thread.close(self._drop)
