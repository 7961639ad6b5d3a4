"""The DNS answers apps get from their instance's dnsmasq, for flow logs (EVE's
``FlowMessage.dnsReqs``: the names an app resolved and the addresses it was given).

The firewall logs each DNS answer the node sends over UDP to an app of a local instance (its
``output`` chain: ``udp sport 53`` to an app address, rate-limited, :data:`SNAPLEN` bytes, to
NFLOG group :data:`agent.reconcile.firewall.DNS_GROUP`).  :func:`parse_answer` reads one such
packet (IPv4, UDP, DNS) into the question's name and the A/AAAA addresses of the answer; the
flow collector (:mod:`agent.reconcile.flows`) files it under the app interface the packet went
to.  EVE sniffs the bridges' DNS packets for the same records.

Hostile input: the app chose the name and anything upstream chose the answer.  The parser
follows at most :data:`MAX_POINTERS` compression pointers per name, reads at most
:data:`MAX_ANSWERS` records, accepts names of at most 255 bytes of printable ASCII, and says
None for anything malformed.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

#: Bytes of each logged answer (IPv4 60 + UDP 8 + most answers).
SNAPLEN = 512
PREFIX = "dns"
MAX_ANSWERS = 32
MAX_POINTERS = 16
_A, _AAAA, _IN = 1, 28, 1


@dataclass(frozen=True)
class DnsAnswer:
    """What the app at ``app_ip`` was told: ``name`` resolves to ``addrs``."""

    app_ip: str
    name: str
    addrs: tuple[str, ...]


def _name(msg: bytes, at: int) -> tuple[str, int] | None:
    """The name at ``at`` and the offset after it (in the record, not where pointers led)."""
    labels: list[str] = []
    end = None
    hops = 0
    total = 0
    while True:
        if at >= len(msg):
            return None
        size = msg[at]
        if size & 0xC0 == 0xC0:
            if at + 1 >= len(msg) or hops >= MAX_POINTERS:
                return None
            hops += 1
            if end is None:
                end = at + 2
            at = ((size & 0x3F) << 8) | msg[at + 1]
            continue
        if size & 0xC0:
            return None
        at += 1
        if size == 0:
            break
        label = msg[at : at + size]
        if len(label) != size or not all(0x21 <= b <= 0x7E for b in label):
            return None
        total += size + 1
        if total > 255:
            return None
        labels.append(label.decode("ascii"))
        at += size
    return ".".join(labels).lower(), end if end is not None else at


def parse_answer(data: bytes) -> DnsAnswer | None:
    """The DNS response in an IPv4/UDP packet's first bytes, None for anything else (a query,
    no question, a malformed or truncated message)."""
    if len(data) < 20 or data[0] >> 4 != 4 or data[9] != 17:
        return None
    dns = (data[0] & 0x0F) * 4 + 8
    msg = data[dns:]
    if len(msg) < 12:
        return None
    _id, flags, qd, an = struct.unpack_from("!HHHH", msg)
    if not flags & 0x8000 or qd != 1:
        return None
    found = _name(msg, 12)
    if found is None or found[1] + 4 > len(msg):
        return None
    name, at = found
    at += 4
    addrs: list[str] = []
    for _ in range(min(an, MAX_ANSWERS)):
        record = _name(msg, at)
        if record is None or record[1] + 10 > len(msg):
            break  # cut by the snap length: keep what was read
        at = record[1]
        rtype, rclass, _ttl, size = struct.unpack_from("!HHIH", msg, at)
        at += 10
        rdata = msg[at : at + size]
        if len(rdata) != size:
            break
        at += size
        if rclass == _IN and rtype == _A and size == 4:
            addrs.append(str(ipaddress.IPv4Address(rdata)))
        elif rclass == _IN and rtype == _AAAA and size == 16:
            addrs.append(str(ipaddress.IPv6Address(rdata)))
    if not name:
        return None
    app_ip = str(ipaddress.IPv4Address(data[16:20]))
    return DnsAnswer(app_ip, name, tuple(dict.fromkeys(addrs)))


__all__ = ["MAX_ANSWERS", "PREFIX", "SNAPLEN", "DnsAnswer", "parse_answer"]
