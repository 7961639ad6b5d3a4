"""IPv4/UDP packets as the firewall's NFLOG rules copy them (from the IP header on), for the
parsers of agent.reconcile.switchlearn (DHCP answers) and agent.reconcile.dnslog (DNS answers):
used by their unit tests and as fuzzing seeds."""

from __future__ import annotations

import struct


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def _udp_ipv4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, _ip(src),
                       _ip(dst)) + udp  # fmt: skip


def dhcp_ack(mac: str = "02:aa:bb:cc:dd:01", ip: str = "192.0.2.120", lease: int | None = 3600,
             kind: int = 5, options: bytes = b"") -> bytes:  # fmt: skip
    """A BOOTREPLY from a DHCP server (message type ``kind``: 5 is an ACK, 2 an offer)."""
    bootp = bytearray(236)
    bootp[0:3] = b"\x02\x01\x06"
    bootp[16:20] = _ip(ip)
    bootp[28:34] = bytes.fromhex(mac.replace(":", ""))
    opts = b"\x35\x01" + bytes([kind])
    if lease is not None:
        opts += b"\x33\x04" + struct.pack("!I", lease)
    payload = bytes(bootp) + b"\x63\x82\x53\x63" + opts + options + b"\xff"
    return _udp_ipv4("192.0.2.1", "255.255.255.255", 67, 68, payload)


def qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_answer(name: str = "example.com", addrs: tuple[str, ...] = ("93.184.216.34",),
               to: str = "10.66.0.20", flags: int = 0x8180) -> bytes:  # fmt: skip
    """A DNS response from the gateway's port 53, its answers compressed to the question."""
    body = struct.pack("!HHHHHH", 0x1234, flags, 1, len(addrs), 0, 0) + qname(name)
    body += struct.pack("!HH", 1, 1)
    for a in addrs:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + _ip(a)
    return _udp_ipv4("10.66.0.1", to, 53, 40000, body)


def arp(sender_mac: str = "02:aa:bb:cc:dd:01", sender_ip: str = "192.0.2.77",
        target_ip: str = "192.0.2.1", op: int = 1) -> bytes:  # fmt: skip
    """An IPv4-over-Ethernet ARP packet (request: ``op`` 1), as a bridge table logs it (from
    the ARP header on)."""
    mac = bytes.fromhex(sender_mac.replace(":", ""))
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, _ip(sender_ip), b"\0" * 6,
                       _ip(target_ip))  # fmt: skip
