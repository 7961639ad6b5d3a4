"""Keeping the last working port config: the pure selection (examples and Hypothesis), and the
port manager in a node reconciler with the netlink, DHCP client and probe fakes (candidate
works -> committed; fails -> fallback, error, no retry until the config changes or the better
interval passes; first boot; a restart keeps the last working config)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.dhcpclient import Lease
from agent.drivers.dhcpclient_fake import FakeDhcpClient, FakeDhcpNetwork
from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.netlink_fake import FakeNetlink, FakeNetworkHost
from agent.drivers.netprobe import FakeProber
from agent.model.config import NodeConfig, from_proto
from agent.model.configitems import ConfigItems, parse_items
from agent.model.ports import Port
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.networks import Networks
from agent.reconcile.node import NodeReconciler
from agent.reconcile.portconfig import PortConfigurator
from agent.reconcile.portselect import (
    MAX_FAILED,
    PortManager,
    Selection,
    controller_target,
    fingerprint,
    load_selection,
)
from agent.reconcile.records import RecordBook
from controller.configs import config_from_document

NODE = "port-node"
DEVICE = "9e0c9e0c-0000-4000-8000-000000000001"
NET_DHCP = "9e0c9e0c-0000-4000-8000-0000000000a1"
NET_STATIC = "9e0c9e0c-0000-4000-8000-0000000000a2"
LEASE = Lease(IPv4Interface("10.88.0.120/24"), (IPv4Address("10.88.0.1"),), (), 600)


def port(name: str = "eth0", dhcp: str = "client", address: str = "", gateway: str = "",
         management: bool = True) -> Port:  # fmt: skip
    labels = ("all", "uplink", "freeuplink") if management else ("all",)
    return Port(name, name, management, True, 0, labels, dhcp, address, gateway)


A = {"eth0": port()}
B = {"eth0": port(dhcp="static", address="10.66.0.5/24", gateway="10.66.0.1")}
C = {"eth0": port(dhcp="static", address="10.88.0.20/24", gateway="10.88.0.1")}
NO_MGMT = {"eth1": port("eth1", management=False)}


# --- the pure selection -------------------------------------------------------------------------


def test_first_boot_uses_the_candidate_and_commits_it_once_it_works() -> None:
    sel = Selection()
    assert sel.effective() is None  # nothing offered, nothing known: no port managed
    assert sel.offer({}, "1") is False and sel.effective() is None
    assert sel.offer(A, "1") is True
    assert sel.effective() == A
    fp = sel.start(100.0, 600)
    assert fp == fingerprint(A) and sel.effective() == A
    assert sel.passed(fp, 100.0) and sel.last_working == A and sel.committed
    assert sel.start(101.0, 600) is None  # nothing to test any more
    assert sel.error(600) is None


def test_a_failed_candidate_falls_back_and_waits_for_a_change_or_the_better_interval() -> None:
    sel = Selection(last_working=dict(A))
    sel.offer(A, "1")
    assert sel.committed and sel.start(0.0, 600) is None
    sel.offer(B, "2")
    fp = sel.start(1000.0, 600)
    assert fp is not None and sel.effective() == B  # applied while tested
    assert sel.fail(fp, "controller not reached", 1000.0)
    assert sel.effective() == A
    message, at = sel.error(600) or ("", 0.0)
    assert "config 2 failed its test: controller not reached" in message and at == 1000.0
    assert "last working port config is in use" in message
    # The same ports again (another config version): not retried before the interval.
    assert sel.offer(dict(B), "3") is False
    assert sel.start(1599.0, 600) is None and sel.retry_at(600) == 1600.0
    assert sel.start(1600.0, 600) == fp  # the better interval passed: tried again
    assert sel.effective() == B
    # A better interval of 0: never again until the config changes.
    assert sel.fail(fp, "again", 1601.0)
    assert sel.start(10**9, 0) is None and sel.retry_at(0) is None
    assert "not tried again until the config changes" in (sel.error(0) or ("", 0))[0]
    # A new config is tested at once; the one that fails is stale then.
    sel.offer(C, "4")
    fp_c = sel.start(1602.0, 0)
    assert fp_c is not None and not sel.fail(fp, "stale", 1603.0)
    assert sel.passed(fp_c, 1604.0) and sel.last_working == C and sel.error(0) is None


def test_first_boot_failure_keeps_the_candidate_and_retries_it() -> None:
    sel = Selection()
    sel.offer(B, "1")
    fp = sel.start(0.0, 600)
    assert fp is not None and sel.fail(fp, "no answer", 0.0)
    assert sel.effective() == B  # nothing to go back to
    assert "no earlier port config worked" in (sel.error(600) or ("", 0))[0]
    assert sel.start(599.0, 600) is None and sel.start(600.0, 600) == fp
    # A clock that moved back (failure "in the future") does not block a test.
    assert sel.fail(fp, "x", 5000.0) and sel.start(10.0, 600) == fp


def test_a_candidate_without_a_management_port() -> None:
    sel = Selection(last_working=dict(A))
    sel.offer(NO_MGMT, "2")
    assert sel.start(0.0, 600) is None and sel.effective() == A
    assert "no management port" in (sel.error(600) or ("", 0))[0]
    first = Selection()
    first.offer(NO_MGMT, "1")
    assert first.start(0.0, 600) is None and first.effective() == NO_MGMT
    assert first.error(600) is None


def test_the_state_round_trips_and_bad_state_is_a_first_boot(tmp_path: Path) -> None:
    sel = Selection(last_working=dict(C))
    sel.offer(B, "2")
    fp = sel.start(5.0, 600)
    assert fp is not None
    sel.fail(fp, "why", 5.0)
    again = Selection.from_bytes(sel.to_bytes())
    assert again.last_working == C and again.failed == sel.failed
    path = tmp_path / "state.json"
    path.write_bytes(b'{"version": 1, "last_working": [{"name": "x"}]}')
    assert load_selection(path).last_working is None
    path.write_bytes(b"\x00garbage")
    assert load_selection(path).last_working is None
    assert load_selection(tmp_path / "none.json").last_working is None
    hostile = sel.to_bytes().replace(b'"ifname": "eth0"', b'"ifname": "eth0;reboot"')
    path.write_bytes(hostile)
    assert load_selection(path).last_working is None


def test_controller_target() -> None:
    assert controller_target("ctl.example.com") == ("ctl.example.com", 443)
    assert controller_target("10.0.0.1:3333") == ("10.0.0.1", 3333)
    assert controller_target("https://[fd00::1]:8443") == ("fd00::1", 8443)
    assert controller_target("") is None and controller_target("host:99999") is None


CONFIGS = {"A": A, "B": B, "C": C, "none": {}, "nomgmt": NO_MGMT}
steps = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from(sorted(CONFIGS))),
        st.tuples(st.just("start"), st.integers(0, 2000)),
        st.tuples(st.just("result"), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.sampled_from([0, 300]), st.booleans())
def test_selection_invariants(ops: list[tuple[str, Any]], better: int, booted: bool) -> None:
    sel = Selection(last_working=dict(A) if booted else None)
    now = 0.0
    for op, arg in ops:
        if op == "offer":
            sel.offer(CONFIGS[arg], "v")
        elif op == "start":
            now += arg
            fp = sel.start(now, better)
            if fp is not None:
                assert sel.effective() == sel.offered and sel.testing == fp
        elif sel.testing is not None:
            fp = sel.testing
            if arg:
                assert sel.passed(fp, now) and sel.last_working == sel.offered
            else:
                assert sel.fail(fp, "no", now)
                # Not tried again before the better interval (never with 0).
                assert sel.start(now, better) is None
                assert sel.start(now + max(better, 1) - 1, better) is None
        eff = sel.effective()
        assert eff in (None, sel.last_working, sel.offered)
        # A config that has not worked is in use only while tested, or with no history.
        if eff is not None and sel.last_working is not None and eff != sel.last_working:
            assert sel.testing is not None
        if sel.last_working is not None:
            assert eff is not None
        assert len(sel.failed) <= MAX_FAILED
        again = Selection.from_bytes(sel.to_bytes())
        assert again.last_working == sel.last_working and again.failed == sel.failed


# --- the manager in a node reconciler, with fakes -----------------------------------------------


def document(version: str, *adapters: dict[str, Any], extra_nets: list[Any] | None = None,
             ) -> dict[str, Any]:  # fmt: skip
    return {
        "id": {"uuid": DEVICE, "version": version},
        "deviceIoList": [
            {"ptype": "PhyIoNetEth", "phylabel": "eth0", "logicallabel": "eth0",
             "phyaddrs": {"ifname": "eth0"}, "usage": "PhyIoUsageMgmtAndApps"},
            {"ptype": "PhyIoNetEth", "phylabel": "eth1", "logicallabel": "eth1",
             "phyaddrs": {"ifname": "eth1"}, "usage": "PhyIoUsageShared"},
        ],
        "networks": [
            {"id": NET_DHCP, "type": "V4", "ip": {"dhcp": "Client"}},
            *(extra_nets or []),
        ],
        "systemAdapterList": list(adapters),
    }  # fmt: skip


def static_net(subnet: str, gateway: str) -> dict[str, Any]:
    return {"id": NET_STATIC, "type": "V4",
            "ip": {"dhcp": "Static", "subnet": subnet, "gateway": gateway}}  # fmt: skip


def dhcp_doc(version: str) -> dict[str, Any]:
    return document(version, {"name": "eth0", "networkUUID": NET_DHCP})


def static_doc(version: str, addr: str, subnet: str, gateway: str) -> dict[str, Any]:
    return document(version, {"name": "eth0", "networkUUID": NET_STATIC, "addr": addr},
                    extra_nets=[static_net(subnet, gateway)])  # fmt: skip


def config(doc: dict[str, Any]) -> NodeConfig:
    return from_proto(config_from_document(doc))


class Site:
    """A node with one port (eth0) in the fake host, a DHCP server on it, a fake probe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = FakeNetworkHost()
        self.host.add_link(None, "eth0", None)
        self.host.add_link(None, "eth1", None)
        self.dhcp_net = FakeDhcpNetwork(self.host)
        self.dhcp_net.serve("eth0", LEASE)
        self.prober = FakeProber()
        self.items: ConfigItems = parse_items([("timer.port.testduration", "10"),
                                               ("timer.port.timeout", "2")])  # fmt: skip
        self.mono = 0.0
        self.wall = 1_000_000.0
        self.rec: NodeReconciler | None = None
        self.manager: PortManager | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def fake_sleep(self, seconds: float) -> None:
        # A test's second passes in 0.1 s: time enough for the engine to apply the ports.
        await asyncio.sleep(0.1)
        self.mono += seconds

    async def start(self) -> NodeReconciler:
        netlink = FakeNetlink(NODE, host=self.host)
        records = RecordBook(self.root / "net")
        self.manager = PortManager(
            PortConfigurator(netlink, FakeDhcpClient(self.dhcp_net, NODE), records),
            self.prober, self.root / "net" / "portconfig.json", lambda: self.items,
            lambda: ("10.89.0.1", 443), clock=lambda: self.mono, wallclock=lambda: self.wall,
            sleep=self.fake_sleep, poll=0.01,
        )  # fmt: skip
        nets = Networks(netlink, FakeContainerRuntime(NODE), records)
        self.rec = NodeReconciler(RuntimeItems(), networks=nets, ports=self.manager,
                                  settings=EngineSettings(resync_interval=3600))  # fmt: skip
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.rec.run(self._stop))
        await asyncio.sleep(0.05)  # the engine observes (adopts) before the first config
        return self.rec

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def accept(self, doc: dict[str, Any]) -> None:
        assert self.rec is not None
        await self.rec.accept(config(doc))

    def eth0(self) -> tuple[set[str], set[str]]:
        """eth0's addresses and the default routes of the agent through it."""
        ns = self.host.namespace(None)
        link = ns.get("eth0")
        assert link is not None
        routes = {f"{r.gateway}" for r, proto in ns.routes if r.dev == "eth0" and proto == 207}
        return {str(a) for a in link.addresses}, routes

    def device_errors(self) -> list[str]:
        assert self.rec is not None
        return [m for o in self.rec.owners() if o.kind == "device" for m, _ in o.errors]


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path)
    try:
        yield s
    finally:
        await s.stop()


def committed(s: Site, doc: dict[str, Any]) -> Callable[[], bool]:
    fp = fingerprint(config(doc).ports)

    def check() -> bool:
        assert s.manager is not None
        sel = s.manager.selection
        return sel.last_working is not None and fingerprint(sel.last_working) == fp

    return check


async def test_dhcp_then_bad_static_falls_back_then_good_static(site: Site) -> None:
    await site.start()
    site.host.namespace(None).get("eth0").addresses.append(IPv4Interface("192.0.2.9/32"))  # type: ignore[union-attr]
    await site.accept(dhcp_doc("1"))
    await eventually(committed(site, dhcp_doc("1")))
    assert site.eth0() == ({"10.88.0.120/24", "192.0.2.9/32"}, {"10.88.0.1"})
    await eventually((site.root / "net" / "portconfig.json").exists)  # saved just after

    # A static address on the wrong network: the controller is not reached, the agent goes
    # back to DHCP by itself and says why.
    site.prober.reachable = False
    await site.accept(static_doc("2", "10.66.0.5", "10.66.0.0/24", "10.66.0.1"))
    await eventually(lambda: bool(site.device_errors()))
    (error,) = site.device_errors()
    assert "config 2 failed its test" in error and "not reached" in error
    await eventually(lambda: site.eth0() == ({"10.88.0.120/24", "192.0.2.9/32"}, {"10.88.0.1"}))
    assert site.dhcp_net.clients  # the DHCP client runs again
    tries = len(site.prober.calls)
    assert tries >= 2  # a few tries over the test duration
    # Reported as EVE's DPC list: the config's (failed) first, the one in use second.
    assert site.manager is not None
    bad, used = site.manager.report()
    assert not bad.in_use and bad.last_failed == site.wall and "failed its test" in bad.last_error
    assert bad.ports[0].addresses == ("10.66.0.5/24",) and bad.ports[0].routers == ("10.66.0.1",)
    assert used.in_use and used.last_succeeded == site.wall and used.last_error == ""
    assert (used.ports[0].addresses, used.ports[0].routers) == (("10.88.0.120/24",), ("10.88.0.1",))
    # The same ports in another config version: no retry (the better interval has not passed).
    await site.accept(static_doc("3", "10.66.0.5", "10.66.0.0/24", "10.66.0.1"))
    await asyncio.sleep(0.2)
    assert len(site.prober.calls) == tries and site.device_errors()

    # A static config that works is taken.
    site.prober.reachable = True
    good = static_doc("4", "10.88.0.20", "10.88.0.0/24", "10.88.0.1")
    await site.accept(good)
    await eventually(committed(site, good))
    assert site.eth0() == ({"10.88.0.20/24", "192.0.2.9/32"}, {"10.88.0.1"})
    assert site.device_errors() == [] and not site.dhcp_net.clients
    assert ("release", "eth0") in site.dhcp_net.events
    (only,) = site.manager.report()
    assert only.in_use and only.last_error == "" and only.ports[0].addresses == ("10.88.0.20/24",)


async def test_retried_after_the_better_interval(site: Site) -> None:
    site.items = parse_items([("timer.port.testduration", "10"),
                              ("timer.port.testbetterinterval", "60")])  # fmt: skip
    await site.start()
    await site.accept(dhcp_doc("1"))
    await eventually(committed(site, dhcp_doc("1")))
    site.prober.reachable = False
    bad = static_doc("2", "10.88.0.30", "10.88.0.0/24", "10.88.0.1")
    await site.accept(bad)
    await eventually(lambda: bool(site.device_errors()))
    site.prober.reachable = True  # the network is fixed...
    site.wall += 59
    await asyncio.sleep(0.1)
    assert site.device_errors()
    site.wall += 2  # ...and once the interval has passed, the candidate is tried again
    await eventually(committed(site, bad))
    assert site.eth0()[0] == {"10.88.0.30/24"}


async def test_first_boot_failure_stays_and_a_restart_keeps_the_last_working(site: Site) -> None:
    site.prober.reachable = False
    await site.start()
    await site.accept(dhcp_doc("1"))
    await eventually(lambda: bool(site.device_errors()))
    assert "no earlier port config worked" in site.device_errors()[0]
    assert site.eth0() == ({"10.88.0.120/24"}, {"10.88.0.1"})  # used as it is
    site.prober.reachable = True
    good = static_doc("2", "10.88.0.20", "10.88.0.0/24", "10.88.0.1")
    await site.accept(good)
    await eventually(committed(site, good))
    site.prober.reachable = False
    bad = static_doc("3", "10.66.0.5", "10.66.0.0/24", "10.66.0.1")
    await site.accept(bad)
    await eventually(lambda: bool(site.device_errors()))
    await site.stop()

    # The agent restarts with the bad config as its saved one: the last working config is
    # kept and the bad one not tried again (it failed a moment ago).
    calls = len(site.prober.calls)
    rec = await site.start()
    await site.accept(bad)
    await asyncio.sleep(0.2)
    await rec.engine.settle(5)
    assert site.eth0() == ({"10.88.0.20/24"}, {"10.88.0.1"})
    assert len(site.prober.calls) == calls and site.device_errors()
    # Offering the committed config again needs no test.
    await site.accept(static_doc("4", "10.88.0.20", "10.88.0.0/24", "10.88.0.1"))
    await asyncio.sleep(0.1)
    assert len(site.prober.calls) == calls and site.device_errors() == []


async def test_a_config_without_ports_keeps_the_last_working_one(site: Site) -> None:
    await site.start()
    await site.accept(document("0"))  # no ports at all: nothing is managed
    await asyncio.sleep(0.05)
    assert site.eth0() == (set(), set()) and not site.prober.calls
    await site.accept(dhcp_doc("1"))
    await eventually(committed(site, dhcp_doc("1")))
    await site.accept(document("2"))
    await asyncio.sleep(0.1)
    assert site.eth0() == ({"10.88.0.120/24"}, {"10.88.0.1"}) and site.dhcp_net.clients


async def test_leases_are_followed_and_a_dead_client_is_started_again(site: Site) -> None:
    await site.start()
    await site.accept(dhcp_doc("1"))
    await eventually(committed(site, dhcp_doc("1")))
    new = Lease(IPv4Interface("10.88.0.121/24"), (IPv4Address("10.88.0.254"),), (), 600)
    site.dhcp_net.serve("eth0", new)
    await eventually(lambda: site.eth0() == ({"10.88.0.121/24"}, {"10.88.0.254"}))
    site.dhcp_net.withdraw("eth0")
    await eventually(lambda: site.eth0() == (set(), set()))
    site.dhcp_net.serve("eth0", LEASE)
    site.dhcp_net.crash("eth0")
    await eventually(lambda: site.eth0() == ({"10.88.0.120/24"}, {"10.88.0.1"}))
    assert [e for e in site.dhcp_net.events if e[0] == "start"] == [("start", "eth0")] * 2


async def test_a_restart_adopts_what_the_agent_set(site: Site) -> None:
    await site.start()
    good = static_doc("1", "10.88.0.20", "10.88.0.0/24", "10.88.0.1")
    await site.accept(good)
    await eventually(committed(site, good))
    await site.stop()
    # While the agent is down, someone adds an address of their own.
    site.host.namespace(None).get("eth0").addresses.append(IPv4Interface("192.0.2.9/32"))  # type: ignore[union-attr]
    rec = await site.start()
    await site.accept(good)
    await rec.engine.settle(5)
    assert rec.engine.started_ops == 0  # adopted as it was: nothing to do
    await site.accept(dhcp_doc("2"))  # the agent's own address goes, the other stays
    await eventually(committed(site, dhcp_doc("2")))
    assert site.eth0() == ({"10.88.0.120/24", "192.0.2.9/32"}, {"10.88.0.1"})


async def test_a_change_cut_short_is_seen_as_drift(tmp_path: Path) -> None:
    """The record is written before the port changes: after a crash in between, the record
    names the new item but the port still carries the old one; observe must not take the
    record's word for it."""
    from agent.drivers.errors import TemporaryError
    from agent.reconcile.portconfig import PortItem

    host = FakeNetworkHost()
    host.add_link(None, "eth0", None)
    netlink = FakeNetlink(NODE, host=host)
    dhcp = FakeDhcpClient(FakeDhcpNetwork(host), NODE)
    records = RecordBook(tmp_path / "net")
    bad = PortItem("eth0", "eth0", "static", "10.66.0.5/24", "10.66.0.1", management=True)
    good = PortItem("eth0", "eth0", "static", "10.88.0.20/24", "10.88.0.1", management=True)
    first = PortConfigurator(netlink, dhcp, records)
    await first.create(bad)
    netlink.fail_next("ensure_port_addresses", TemporaryError("cut short"))
    with pytest.raises(TemporaryError):
        await first.modify(bad, good)
    again = PortConfigurator(netlink, dhcp, records)  # the agent restarted
    (seen,) = (await again.observe() or {}).values()
    assert isinstance(seen, PortItem) and seen != good and seen.ref == good.ref
    await again.modify(seen, good)
    assert {str(a) for a in await netlink.addresses("eth0")} == {"10.88.0.20/24"}
    assert (await again.observe() or {}).get(good.ref) == good


async def test_a_local_instance_forwards_to_the_dns_servers_of_its_ports_lease(site: Site) -> None:
    await site.start()
    ni = "6d3b3b4e-8a3c-4c47-9d41-00000000e0d1"
    doc = dhcp_doc("1")
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": ni, "version": "1"}, "displayname": "lan",
        "instType": "ZnetInstLocal", "activate": True, "port": {"name": "uplink"},
        "ip": {"subnet": "10.7.0.0/24", "gateway": "10.7.0.1",
               "dhcpRange": {"start": "10.7.0.10", "end": "10.7.0.50"}},
    }]  # fmt: skip

    def upstreams() -> tuple[str, ...]:
        assert site.rec is not None
        layout = site.rec.layout
        return layout.instances[ni].ports[0].dns if layout and ni in layout.instances else ()

    site.dhcp_net.serve("eth0", Lease(LEASE.address, LEASE.routers,
                                      (IPv4Address("10.88.0.53"),), 600))  # fmt: skip
    await site.accept(doc)
    await eventually(lambda: upstreams() == ("10.88.0.53",))
    # The server names another DNS server at a renewal: the instance follows.
    site.dhcp_net.serve("eth0", Lease(LEASE.address, LEASE.routers,
                                      (IPv4Address("10.88.0.54"),), 600))  # fmt: skip
    await eventually(lambda: upstreams() == ("10.88.0.54",))
