"""agent.reconcile.flows: conntrack entries and logged drops into per-app flow records (which
end is the app's, the deciding ACE, once per flow, bounded), and the collector on the fakes."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.conntrack import CtEntry, CtTuple
from agent.drivers.conntrack_fake import FakeConntrack
from agent.drivers.errors import TemporaryError
from agent.drivers.nflog import LoggedPacket
from agent.drivers.nflog_fake import FakeNflog
from agent.model.config import NetworkInstance, NodeConfig
from agent.model.configitems import ConfigItems
from agent.model.ports import instance_addressing
from agent.reconcile.acerules import FLOW_MARK
from agent.reconcile.flows import (
    FlowCollector,
    FlowRecord,
    FlowReport,
    FlowScope,
    FlowSettings,
    FlowTable,
    Scopes,
    parse_prefix,
)
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, NiPlan, VifPlan

NI = "7a1e5f0c-3b2d-4c8e-9f10-00000000e001"
OFF = "7a1e5f0c-3b2d-4c8e-9f10-00000000e002"
APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
APP2 = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
APP_IP, APP2_IP, REMOTE, PORT_IP = "10.1.0.10", "10.2.0.10", "192.0.2.2", "192.0.2.1"


def _ni(ni_id: str, subnet: str, bridge: str) -> NiPlan:
    net = ipaddress.ip_network(subnet)
    addressing = instance_addressing(subnet, str(net.network_address + 1), "", "")
    return NiPlan(ni_id, "lan", LOCAL, bridge, addressing, (), "", (), (), 0)


def layout() -> NetPlan:
    plan = NetPlan()
    plan.instances[NI] = _ni(NI, "10.1.0.0/24", "bn1")
    plan.instances[OFF] = _ni(OFF, "10.2.0.0/24", "bn2")
    plan.vifs[(APP, 0)] = VifPlan(APP, 0, NI, "vif1", "02:00:00:00:00:01", APP_IP, "app")
    plan.vifs[(APP2, 0)] = VifPlan(APP2, 0, OFF, "vif2", "02:00:00:00:00:02", APP2_IP, "app2")
    return plan


def config(*disabled: str) -> NodeConfig:
    nis = {
        ni: NetworkInstance(ni, "1", "lan", 2, True, "", 4, "", "", "", "", (), (), 0,
                            disable_flowlog=ni in disabled)
        for ni in dict.fromkeys((NI, OFF, *disabled))
    }  # fmt: skip
    return NodeConfig("dev", "1", 0.0, ConfigItems(), network_instances=nis)


SCOPES = Scopes.of(layout(), config())


def out_entry(cid: int, ace: int = 5, sport: int = 40000, packets: int = 3) -> CtEntry:
    """The app opened a TCP connection out through NAT (the reply goes to the port address)."""
    return CtEntry(
        cid, CtTuple(APP_IP, REMOTE, 6, sport, 80), CtTuple(REMOTE, PORT_IP, 6, 80, sport),
        FLOW_MARK | ace, orig_packets=packets, orig_bytes=packets * 60, reply_packets=2,
        reply_bytes=500, start=1000.0,
    )  # fmt: skip


def portmap_entry(cid: int) -> CtEntry:
    """The outside reached the app's port 8000 through the node's 8022 (DNAT)."""
    return CtEntry(
        cid, CtTuple(REMOTE, PORT_IP, 6, 5000, 8022), CtTuple(APP_IP, REMOTE, 6, 8000, 5000),
        FLOW_MARK | 2, orig_packets=4, orig_bytes=400, reply_packets=6, reply_bytes=6000,
        start=1001.0,
    )  # fmt: skip


def all_records(reports: list[FlowReport]) -> list[FlowRecord]:
    return [rec for report in reports for rec in report.flows]


def test_an_outbound_flow_is_reported_once_when_it_ends() -> None:
    table = FlowTable()
    table.observe([out_entry(1)], SCOPES, 1010.0)
    table.observe([replace(out_entry(1), orig_packets=9, orig_bytes=900)], SCOPES, 1020.0)
    table.observe([replace(out_entry(1), orig_packets=9, orig_bytes=900)], SCOPES, 1030.0)
    assert table.take(SCOPES) == []  # still open: nothing yet
    table.observe([], SCOPES, 1040.0)
    (report,) = table.take(SCOPES)
    assert report.scope == FlowScope(APP, "eth0", "bn1", NI)
    assert report.flows == (
        FlowRecord(APP_IP, 40000, REMOTE, 80, 6, inbound=False, acl_id=5, drop=False,
                   start=1000.0, end=1020.0, tx_bytes=900, tx_packets=9, rx_bytes=500,
                   rx_packets=2),
    )  # fmt: skip
    table.observe([], SCOPES, 1050.0)
    assert table.take(SCOPES) == []  # once


def test_a_portmapped_flow_is_inbound_from_the_apps_side() -> None:
    table = FlowTable()
    table.observe([portmap_entry(7)], SCOPES, 1002.0)
    table.observe([], SCOPES, 1012.0)
    (rec,) = all_records(table.take(SCOPES))
    assert (rec.src, rec.sport, rec.dst, rec.dport) == (APP_IP, 8000, REMOTE, 5000)
    assert rec.inbound and rec.acl_id == 2 and not rec.drop
    assert (rec.tx_packets, rec.tx_bytes, rec.rx_packets, rec.rx_bytes) == (6, 6000, 4, 400)


def test_unmarked_foreign_and_unlogged_flows_are_ignored() -> None:
    table = FlowTable()
    stranger = replace(out_entry(2), orig=CtTuple("10.9.9.9", REMOTE, 6, 1, 80),
                       reply=CtTuple(REMOTE, "10.9.9.9", 6, 80, 1))  # fmt: skip
    off_app = replace(out_entry(3), orig=CtTuple(APP2_IP, REMOTE, 6, 2, 80))
    table.observe([replace(out_entry(1), mark=0x1234), stranger, off_app], SCOPES, 1.0)
    assert table.following == 1  # APP2's instance is logged here
    scopes = Scopes.of(layout(), config(OFF))  # ... and not here
    table = FlowTable()
    table.observe([off_app], scopes, 1.0)
    table.observe([], scopes, 2.0)
    assert table.following == 0 and table.take(scopes) == []


def test_a_flow_whose_interface_stopped_being_logged_is_dropped() -> None:
    table = FlowTable()
    table.observe([out_entry(1)], SCOPES, 1.0)
    off = Scopes.of(layout(), config(NI))
    table.observe([], off, 2.0)
    assert table.take(SCOPES) == []


def test_logged_drops_are_aggregated_per_direction_ace_and_tuple() -> None:
    table = FlowTable()

    def pkt(prefix: str, src: str, sport: int, dst: str, dport: int, at: float) -> LoggedPacket:
        return LoggedPacket(prefix, at, 17, src, dst, sport, dport, 100)

    table.logged([
        pkt(f"ace:{APP}:0:0", APP_IP, 5000, REMOTE, 53, 10.0),
        pkt(f"ace:{APP}:0:0", APP_IP, 5000, REMOTE, 53, 12.0),
        pkt(f"ace:{APP}:0:7", APP_IP, 5000, REMOTE, 53, 11.0),
        pkt(f"ace:{APP}:0:9:over", APP_IP, 5001, REMOTE, 99, 11.0),
        pkt(f"ace-in:{APP}:0:0", REMOTE, 6000, APP_IP, 22, 13.0),
        pkt(f"ace:{APP}:3:0", APP_IP, 1, REMOTE, 1, 1.0),  # no such interface
        pkt("nat:x", APP_IP, 1, REMOTE, 1, 1.0),  # not ours
    ], SCOPES)  # fmt: skip
    (report,) = table.take(SCOPES)
    got = {(r.acl_id, r.inbound, r.dport): r for r in report.flows}
    assert set(got) == {(0, False, 53), (7, False, 53), (9, False, 99), (0, True, 6000)}
    implicit = got[(0, False, 53)]
    assert implicit.drop and (implicit.start, implicit.end) == (10.0, 12.0)
    assert (implicit.tx_packets, implicit.tx_bytes, implicit.rx_packets) == (2, 200, 0)
    inbound = got[(0, True, 6000)]
    assert (inbound.src, inbound.sport, inbound.dst) == (APP_IP, 22, REMOTE)
    assert (inbound.rx_packets, inbound.tx_packets) == (1, 0)
    assert table.take(SCOPES) == []


def test_a_switch_apps_flows_are_found_by_the_address_the_node_learnt() -> None:
    """On a switch instance the plan has no address: the learnt one finds the app's flows
    (bridged, un-NATed); its drops are found by the prefix, learnt address or not."""
    plan = layout()
    sw = "7a1e5f0c-3b2d-4c8e-9f10-00000000e003"
    plan.instances[sw] = NiPlan(sw, "sw", SWITCH, "bs1", None, (), "", (), (), 0)
    plan.vifs[(APP2, 1)] = VifPlan(APP2, 1, sw, "vif3", "02:00:00:00:00:03", "", "app2")
    leased = "192.0.2.120"
    scopes = Scopes.of(plan, config(), lambda app, index: leased if index == 1 else "")
    assert scopes.by_ip[leased] == plan.vifs[(APP2, 1)] and (APP2, 1) in scopes.by_key
    bridged = CtEntry(
        4, CtTuple(leased, REMOTE, 6, 41000, 443), CtTuple(REMOTE, leased, 6, 443, 41000),
        FLOW_MARK | 3, orig_packets=5, orig_bytes=500, reply_packets=4, reply_bytes=4000,
        start=1000.0,
    )  # fmt: skip
    table = FlowTable()
    table.observe([bridged], scopes, 1001.0)
    table.observe([], scopes, 1011.0)
    table.logged([LoggedPacket(f"ace-in:{APP2}:1:0", 1005.0, 6, REMOTE, leased, 5, 22, 60)],
                 Scopes.of(plan, config()))  # fmt: skip
    reports = {r.scope: r for r in table.take(scopes)}
    report = reports[FlowScope(APP2, "eth1", "bs1", sw)]
    flow, drop = sorted(report.flows, key=lambda r: r.drop)
    assert (flow.src, flow.dst, flow.acl_id, flow.inbound) == (leased, REMOTE, 3, False)
    assert drop.drop and drop.inbound and (drop.acl_id, drop.sport) == (0, 22)
    # Not learnt (yet): its flows are nobody's; a switch instance with flow logs off: nothing.
    assert leased not in Scopes.of(plan, config()).by_ip
    assert (APP2, 1) not in Scopes.of(plan, config(sw)).by_key


@pytest.mark.parametrize(
    ("prefix", "parsed"),
    [
        (f"ace:{APP}:0:5", ((APP, 0), 5, False)),
        (f"ace:{APP}:2:5:over", ((APP, 2), 5, False)),
        (f"ace-in:{APP}:1:0", ((APP, 1), 0, True)),
        (f"ace:{APP}:x:5", None),
        (f"ace:{APP}:0:5:under", None),
        ("portmap:a:0:1:up0", None),
        ("", None),
    ],
)
def test_prefixes(prefix: str, parsed: object) -> None:
    assert parse_prefix(prefix) == parsed


def test_records_are_bounded_and_packed() -> None:
    table = FlowTable(FlowSettings(max_records=300, max_open=400, pack=125))
    entries = [out_entry(i, sport=1000 + i) for i in range(1, 401)]
    table.observe(entries, SCOPES, 1.0)
    table.observe([*entries, out_entry(9999)], SCOPES, 2.0)  # one past max_open
    assert table.following == 400 and table.lost == 1
    table.observe([], SCOPES, 3.0)
    reports = table.take(SCOPES)
    assert [len(r.flows) for r in reports] == [125, 125, 50]
    assert table.lost == 1 + 100


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sets(st.integers(1, 12), max_size=12), min_size=1, max_size=12))
def test_every_ended_flow_is_reported_exactly_once(samples: list[set[int]]) -> None:
    """Connections appear and disappear over the samples (an id comes back as a new flow);
    each disappearance is one record, a flow still there at the end is not reported."""
    table = FlowTable()
    reported: list[int] = []
    ended = 0
    previous: set[int] = set()
    for at, present in enumerate(samples):
        table.observe([out_entry(i, sport=i) for i in present], SCOPES, float(at))
        ended += len(previous - present)
        previous = present
        reported += [r.sport for r in all_records(table.take(SCOPES))]
    assert len(reported) == ended
    assert table.following == len(previous)


# ---------------------------------------------------------------- the collector on the fakes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_collector_reports_at_its_interval_and_follows_the_config() -> None:
    ct, nflog, clock = FakeConntrack(), FakeNflog(17750, "node"), Clock()
    sent: list[list[FlowReport]] = []
    state: list[NodeConfig] = [config()]

    async def sink(reports: list[FlowReport]) -> None:
        sent.append(reports)

    collector = FlowCollector(ct, nflog, lambda: (layout(), state[0]), sink,
                              FlowSettings(interval=30, sample=5), clock)  # fmt: skip
    await collector.step()
    assert ct.accounting and nflog.running
    ct.add(out_entry(1))
    nflog.log(LoggedPacket(f"ace:{APP}:0:0", clock.now, 6, APP_IP, REMOTE, 1, 2, 60))
    clock.now += 5
    await collector.step()
    ct.remove(1)
    clock.now += 5
    await collector.step()
    assert sent == []  # not yet due
    clock.now += 25
    await collector.step()
    (reports,) = sent
    assert sorted((r.acl_id, r.drop) for r in all_records(reports)) == [(0, True), (5, False)]
    assert collector.reported == 2

    # Flow logs off on every instance: the group is left, nothing is read.
    state[0] = config(NI, OFF)
    await collector.step()
    assert not nflog.running
    ct.fail_next("dump", TemporaryError("must not be called"))
    await collector.step()

    # Back on; a failing driver is retried at the next sample.
    state[0] = config()
    nflog.fail_next(TemporaryError("group taken"))
    await collector.step()
    assert not nflog.running
    await collector.step()
    assert nflog.running
    await nflog.close()
