"""What the NFLOG listener makes of the kernel's packet messages (agent.drivers.nflog.
parse_packet): IPv4 from the inet and bridge tables, IPv4 ARP from a bridge table, nothing
else.  The real kernel's messages: tests/integration/test_flow_drivers_contract.py and
test_networks_kinds.py."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers import nfnetlink as nf
from agent.drivers.nflog import (
    NFULA_PACKET_HDR,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULA_TIMESTAMP,
    parse_packet,
)
from tests.netpackets import arp, dhcp_ack


def message(hw_protocol: int, payload: bytes, prefix: bytes = b"arp\0") -> bytes:
    return b"\x07\x00\x00\x00" + b"".join((
        nf.attr(NFULA_PACKET_HDR, struct.pack("!HBB", hw_protocol, 3, 0)),
        nf.attr(NFULA_TIMESTAMP, struct.pack("!QQ", 1_700_000_000, 500_000)),
        nf.attr(NFULA_PREFIX, prefix),
        nf.attr(NFULA_PAYLOAD, payload),
    ))  # fmt: skip


def test_ipv4_and_arp_are_read_anything_else_is_not() -> None:
    got = parse_packet(message(0x0806, arp()), 0.0)
    assert got is not None and (got.prefix, got.proto, got.src, got.dst) == (
        "arp", 0, "192.0.2.77", "192.0.2.1")  # fmt: skip
    assert got.time == 1_700_000_000.5 and got.data == arp()
    ack = parse_packet(message(0x0800, dhcp_ack(), b"dhcp\0"), 0.0)
    assert ack is not None and (ack.proto, ack.sport, ack.dport) == (17, 67, 68)
    assert parse_packet(message(0x86DD, b"\x60" + b"\0" * 39), 0.0) is None  # IPv6
    assert parse_packet(message(0x0806, arp()[:27]), 0.0) is None
    assert parse_packet(message(0x0806, b"\x00\x06" + arp()[2:]), 0.0) is None  # not Ethernet


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 0x0800, 0x0806, 0x86DD]), st.binary(max_size=80))
def test_hostile_payloads_are_none_or_a_packet(hw_protocol: int, payload: bytes) -> None:
    got = parse_packet(message(hw_protocol, payload), 0.0)
    if got is not None:
        assert got.proto == 0 if hw_protocol == 0x0806 else got.proto == payload[9]
