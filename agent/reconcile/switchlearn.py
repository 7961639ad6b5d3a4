"""Addresses of apps on switch network instances, learnt from the DHCP answers they get and
the ARP packets they send (EVE's zedrouter sniffs both there for the same purpose).

A VM on a switch instance runs its own DHCP client against the outside network's server, so
the node does not know its address.  The firewall logs every DHCP server answer that crosses a
bridge (``udp sport 67 dport 68`` in its ``forward`` chain, before any verdict, rate-limited;
:data:`agent.reconcile.firewall.DHCP_GROUP`), with enough of each packet to read the BOOTP
header and options.  :class:`SwitchAddresses` reads those packets from its NFLOG listener,
keeps the DHCPACKs whose client hardware address is the MAC of an app interface on a switch
instance (the plan fixes them), and answers :meth:`SwitchAddresses.address` with the address
acknowledged, until the lease runs out (an ACK without lease time: 10 minutes, as EVE lets an
unseen ARP entry expire).  An app that set its address itself (no DHCP) is found by its ARP
packets: the source guard (:mod:`agent.reconcile.antispoof`) logs the ARP an app interface on
a switch instance sends (rate-limited, to the same group, prefix :data:`ARP_PREFIX`); the
sender address of one from the interface's MAC is its address for 10 minutes after the last.

Hostile input: the packet comes from whatever answers DHCP on the outside network.
:func:`parse_ack` reads only fixed offsets and bounded options, accepts a unicast IPv4
``yiaddr`` and a lease time up to 2^32-1, and says None for anything else.  Anyone on that
network who can send a DHCPACK to an app's MAC can make the node report another address for
it (the same holds for EVE's sniffing), as can the app itself with its ARP; nothing but the
report depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.drivers.errors import DriverError
from agent.drivers.nflog import LoggedPacket, Nflog
from agent.reconcile.netplan import SWITCH, NetPlan

log = logging.getLogger(__name__)

#: Bytes of each logged answer: IPv4 (60 at most) + UDP (8) + BOOTP (236) + cookie + options.
SNAPLEN = 600
#: The prefix the firewall's logging rule gives the answers.
PREFIX = "dhcp"
#: The prefix the source guard's logging rule gives the apps' ARP packets.
ARP_PREFIX = "arp"
#: How long an address acknowledged without a lease time is kept.
NO_LEASE_TIME = 600.0
_COOKIE = b"\x63\x82\x53\x63"
_ACK = 5


@dataclass(frozen=True)
class Ack:
    """A DHCPACK: to ``mac``, the address ``ip`` for ``lease_time`` seconds (0: not given)."""

    mac: str
    ip: str
    lease_time: int


def parse_ack(data: bytes) -> Ack | None:
    """The DHCPACK in an IPv4 packet's first bytes (IP, UDP, BOOTP), None for anything else
    (another message type, a truncated or malformed packet, an address no app may hold)."""
    if len(data) < 20 or data[0] >> 4 != 4 or data[9] != 17:
        return None
    bootp = (data[0] & 0x0F) * 4 + 8
    if len(data) < bootp + 240 or data[bootp] != 2 or data[bootp + 1] != 1 or data[bootp + 2] != 6:
        return None  # not a BOOTREPLY for Ethernet
    if data[bootp + 236 : bootp + 240] != _COOKIE:
        return None
    ip = ipaddress.IPv4Address(data[bootp + 16 : bootp + 20])
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip == ipaddress.IPv4Address(
        "255.255.255.255"
    ):  # fmt: skip
        return None
    mac = ":".join(f"{b:02x}" for b in data[bootp + 28 : bootp + 34])
    kind, lease = 0, 0
    at, end = bootp + 240, len(data)
    while at < end:
        code = data[at]
        if code == 255:
            break
        if code == 0:
            at += 1
            continue
        if at + 2 > end or at + 2 + data[at + 1] > end:
            return None  # an option running past what was copied
        size, value = data[at + 1], data[at + 2 : at + 2 + data[at + 1]]
        if code == 53 and size == 1:
            kind = value[0]
        elif code == 51 and size == 4:
            lease = struct.unpack("!I", value)[0]
        at += 2 + size
    if kind != _ACK:
        return None
    return Ack(mac, str(ip), lease)


def parse_arp(data: bytes) -> tuple[str, str] | None:
    """(sender MAC, sender address) of an IPv4-over-Ethernet ARP packet's first bytes, None
    for anything else or an address no app may hold (0.0.0.0 of a probe, multicast...)."""
    if len(data) < 28 or data[:6] != b"\x00\x01\x08\x00\x06\x04":
        return None
    ip = ipaddress.IPv4Address(data[14:18])
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip == ipaddress.IPv4Address(
        "255.255.255.255"
    ):  # fmt: skip
        return None
    return ":".join(f"{b:02x}" for b in data[8:14]), str(ip)


@dataclass(frozen=True)
class _Learnt:
    ip: str
    until: float


class SwitchAddresses:
    """The addresses of the apps on switch instances, from the DHCPACKs the firewall logs and
    the ARP packets the source guard logs."""

    def __init__(self, nflog: Nflog, *, clock: Callable[[], float] = time.time) -> None:
        self.nflog = nflog
        self._clock = clock
        self._learnt: dict[tuple[str, int], _Learnt] = {}
        self._warned = ""

    def address(self, app_id: str, index: int) -> str:
        """The app interface's acknowledged address, "" while none (or it ran out)."""
        found = self._learnt.get((app_id, index))
        return found.ip if found is not None and found.until > self._clock() else ""

    def feed(self, packets: list[LoggedPacket], layout: NetPlan | None) -> int:
        """Learn from ``packets``; forget interfaces no longer on a switch instance.  Returns
        how many addresses were learnt (or renewed)."""
        if layout is None:
            self._learnt.clear()
            return 0
        by_mac = {
            v.mac: key for key, v in layout.vifs.items()
            if layout.instances[v.ni_id].kind == SWITCH
        }  # fmt: skip
        for key in [k for k in self._learnt if k not in by_mac.values()]:
            del self._learnt[key]
        learnt = 0
        now = self._clock()
        for packet in packets:
            if packet.prefix == PREFIX:
                ack = parse_ack(packet.data)
                if ack is None or ack.mac not in by_mac:
                    continue
                key, ip, how = by_mac[ack.mac], ack.ip, "DHCP"
                until = now + (ack.lease_time if ack.lease_time else NO_LEASE_TIME)
            elif packet.prefix == ARP_PREFIX:
                sender = parse_arp(packet.data)
                if sender is None or sender[0] not in by_mac:
                    continue
                key, ip, how = by_mac[sender[0]], sender[1], "ARP"
                until = now + NO_LEASE_TIME
                known = self._learnt.get(key)
                if known is not None and known.ip == ip:
                    until = max(until, known.until)  # not shorter than its DHCP lease
            else:
                continue
            if self._learnt.get(key, _Learnt("", 0)).ip != ip:
                log.info("app %s eth%d: %s on its switch instance (%s)", key[0], key[1], ip, how)
            self._learnt[key] = _Learnt(ip, until)
            learnt += 1
        return learnt

    def wanted(self, layout: NetPlan | None) -> bool:
        """Whether any app interface is on a switch instance (the listener is needed)."""
        return layout is not None and any(
            layout.instances[v.ni_id].kind == SWITCH for v in layout.vifs.values()
        )

    async def run(
        self, layout: Callable[[], NetPlan | None], stop: asyncio.Event, poll: float = 2.0
    ) -> None:
        """Read the logged answers every ``poll`` s while an app is on a switch instance;
        the listener is bound only then."""
        try:
            while not stop.is_set():
                plan = layout()
                try:
                    if self.wanted(plan):
                        if not self.nflog.running:
                            await self.nflog.start()
                        self.feed(self.nflog.drain(), plan)
                    elif self.nflog.running:
                        await self.nflog.stop()
                        self.feed([], plan)
                    self._warned = ""
                except DriverError as exc:
                    if str(exc) != self._warned:
                        self._warned = str(exc)
                        log.warning("switch instance addresses not learnt: %s", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll)
        finally:
            with contextlib.suppress(DriverError):
                await self.nflog.close()


__all__ = [
    "ARP_PREFIX",
    "NO_LEASE_TIME",
    "PREFIX",
    "SNAPLEN",
    "Ack",
    "SwitchAddresses",
    "parse_ack",
    "parse_arp",
]
