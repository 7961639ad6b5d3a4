"""Switch instances' app addresses from the DHCPACKs the firewall logs
(agent.reconcile.switchlearn): the parser on crafted and hostile packets, the learner with the
NFLOG fake (packets on the kernel: test_networks_kinds)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.nflog import LoggedPacket
from agent.drivers.nflog_fake import FakeNflog
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, NiPlan, VifPlan
from agent.reconcile.switchlearn import (
    ARP_PREFIX,
    NO_LEASE_TIME,
    PREFIX,
    SwitchAddresses,
    parse_ack,
    parse_arp,
)
from tests.netpackets import arp, dhcp_ack

VM, CT = "6d3b3b4e-8a3c-4c47-9d41-0000000000a1", "6d3b3b4e-8a3c-4c47-9d41-0000000000a2"
MAC = "02:aa:bb:cc:dd:01"


def ack(mac: str = MAC, ip: str = "192.0.2.120", lease: int | None = 3600, kind: int = 5,
        options: bytes = b"") -> bytes:  # fmt: skip
    return dhcp_ack(mac, ip, lease, kind, options)


def packet(data: bytes, prefix: str = PREFIX) -> LoggedPacket:
    return LoggedPacket(prefix, 0.0, 17, "192.0.2.1", "255.255.255.255", 67, 68, len(data), data)


def layout() -> NetPlan:
    plan = NetPlan()
    plan.instances["s"] = NiPlan("s", "s", SWITCH, "eb1", None, (), "", (), (), 0)
    plan.instances["l"] = NiPlan("l", "l", LOCAL, "eb0", None, (), "", (), (), 0)
    plan.vifs[(VM, 0)] = VifPlan(VM, 0, "s", "ev0", MAC, "", "vm")
    plan.vifs[(CT, 0)] = VifPlan(CT, 0, "l", "ev1", "02:aa:bb:cc:dd:02", "10.1.0.10", "ct")
    return plan


def test_an_ack_is_read_and_everything_else_is_not() -> None:
    found = parse_ack(ack())
    assert found is not None and (found.mac, found.ip, found.lease_time) == (MAC, "192.0.2.120",
                                                                           3600)  # fmt: skip
    assert parse_ack(ack(kind=2)) is None  # an offer
    assert parse_ack(ack(ip="0.0.0.0")) is None
    assert parse_ack(ack(ip="224.0.0.1")) is None
    assert parse_ack(ack()[:-30]) is None  # cut inside the options
    assert parse_ack(ack(options=b"\x00\x00\x0c\x03abc")) is not None  # pads and a hostname
    assert parse_ack(ack(options=b"\x0c\xffab")) is None  # an option past the end


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700), st.integers(0, 699), st.binary(max_size=8))
def test_hostile_packets_are_none_or_a_sane_ack(noise: bytes, at: int, patch: bytes) -> None:
    for data in (noise, ack()[:at] + patch + ack()[at + len(patch) :]):
        found = parse_ack(data)
        if found is not None:
            assert len(found.mac) == 17 and 0 <= found.lease_time <= 0xFFFFFFFF
            assert found.ip.count(".") == 3


def test_the_learner_keeps_switch_apps_acks_until_they_run_out() -> None:
    now = [1000.0]
    log = FakeNflog(17751, "learn-ns")
    learner = SwitchAddresses(log, clock=lambda: now[0])
    plan = layout()
    stray = ack(mac="02:aa:bb:cc:dd:02", ip="192.0.2.77")  # the local app's MAC: not learnt
    assert learner.feed([packet(ack()), packet(stray), packet(ack(), prefix="ace:x")], plan) == 1
    assert learner.address(VM, 0) == "192.0.2.120" and learner.address(CT, 0) == ""
    now[0] += 3601
    assert learner.address(VM, 0) == ""
    learner.feed([packet(ack(ip="192.0.2.121", lease=None))], plan)
    now[0] += NO_LEASE_TIME - 1
    assert learner.address(VM, 0) == "192.0.2.121"
    # The app leaves the switch instance: forgotten.
    del plan.vifs[(VM, 0)]
    learner.feed([], plan)
    assert learner.address(VM, 0) == ""


def test_an_arp_sender_is_read_and_everything_else_is_not() -> None:
    assert parse_arp(arp()) == (MAC, "192.0.2.77")
    assert parse_arp(arp(op=2)) == (MAC, "192.0.2.77")  # a reply names its sender too
    assert parse_arp(arp(sender_ip="0.0.0.0")) is None  # a probe
    assert parse_arp(arp(sender_ip="224.0.0.5")) is None
    assert parse_arp(arp()[:27]) is None
    assert parse_arp(b"\x00\x06" + arp()[2:]) is None  # not Ethernet


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 40), st.binary(max_size=6))
def test_hostile_arp_is_none_or_a_sane_sender(noise: bytes, at: int, patch: bytes) -> None:
    for data in (noise, arp()[:at] + patch + arp()[at + len(patch) :]):
        found = parse_arp(data)
        if found is not None:
            assert len(found[0]) == 17 and found[1].count(".") == 3


def test_an_address_the_app_set_itself_is_learnt_from_its_arp() -> None:
    now = [1000.0]
    learner = SwitchAddresses(FakeNflog(17751, "learn-ns"), clock=lambda: now[0])
    plan = layout()
    local_app = arp(sender_mac="02:aa:bb:cc:dd:02", sender_ip="10.1.0.99")
    assert learner.feed([packet(arp(), ARP_PREFIX), packet(local_app, ARP_PREFIX),
                         packet(arp(sender_ip="192.0.2.78"), PREFIX)], plan) == 1  # fmt: skip
    assert learner.address(VM, 0) == "192.0.2.77" and learner.address(CT, 0) == ""
    now[0] += NO_LEASE_TIME - 1
    learner.feed([packet(arp(), ARP_PREFIX)], plan)  # seen again: kept 10 minutes more
    now[0] += NO_LEASE_TIME - 1
    assert learner.address(VM, 0) == "192.0.2.77"
    now[0] += 2
    assert learner.address(VM, 0) == ""
    # ARP of the address a DHCP lease gave does not shorten the lease.
    learner.feed([packet(ack(ip="192.0.2.77", lease=86400))], plan)
    learner.feed([packet(arp(), ARP_PREFIX)], plan)
    now[0] += 3600
    assert learner.address(VM, 0) == "192.0.2.77"


async def test_the_listener_is_bound_only_while_an_app_is_on_a_switch() -> None:
    log = FakeNflog(17751, "learn-ns2")
    learner = SwitchAddresses(log)
    current: list[NetPlan | None] = [layout()]
    stop = asyncio.Event()
    task = asyncio.create_task(learner.run(lambda: current[0], stop, poll=0.01))
    try:
        for _ in range(100):
            if log.running:
                break
            await asyncio.sleep(0.01)
        assert log.running
        log.log(packet(ack()))
        for _ in range(100):
            if learner.address(VM, 0):
                break
            await asyncio.sleep(0.01)
        assert learner.address(VM, 0) == "192.0.2.120"
        current[0] = NetPlan()
        for _ in range(100):
            if not log.running:
                break
            await asyncio.sleep(0.01)
        assert not log.running and learner.address(VM, 0) == ""
    finally:
        stop.set()
        await task
