"""Container interfaces on switch instances: addresses from the outside network's DHCP server
(agent.reconcile.appdhcp) and the instance's ACL chains (agent.reconcile.firewall), with the
netlink, docker, nft and app-DHCP fakes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.appdhcp_fake import FakeAppDhcp
from agent.drivers.dhcpclient import Lease
from agent.drivers.errors import TemporaryError
from agent.drivers.netlink_fake import FakeNetlink
from agent.drivers.nft_api import Family
from agent.reconcile import appdhcp
from agent.reconcile.apps import AppItem
from agent.reconcile.containerapps import LEASE_RESOLV
from agent.reconcile.engine import EngineSettings
from agent.reconcile.firewall import FirewallItem
from agent.reconcile.networks import Networks
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.records import RecordBook
from tests.unit.test_networks import NODE, NetEnv
from tests.unit.workload_env import APP_CT, APP_VM, Env, env

__all__ = ["env"]

SW = "6d3b3b4e-8a3c-4c47-9d41-0000000000e2"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def net(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[NetEnv, FakeAppDhcp, Clock]]:
    n = NetEnv(env)
    dhcp = FakeAppDhcp()
    clock = Clock()

    def ns_of(pid: int) -> tuple[int, int] | None:
        path = f"/proc/{pid}/ns/net"
        ns = n.host.namespaces.get(path)
        return (0, pid) if ns is not None and ns.alive else None

    monkeypatch.setattr(appdhcp, "_ns_identity", ns_of)
    original = n.reconciler

    def reconciler() -> NodeReconciler:
        e = n.e
        rec = original()
        assert rec.networks is not None
        nets = Networks(n.netlink, e.containers, RecordBook(e.root / "net"), nft=n.nft,
                        app_dhcp=dhcp)  # fmt: skip
        assert nets.leases is not None
        nets.leases._clock = clock
        e.reconciler = NodeReconciler(e.runtime, workloads=e.workloads, networks=nets,
                                      settings=EngineSettings(resync_interval=3600))  # fmt: skip
        e.reconciler.set_condition(VAULT_READY, None)
        return e.reconciler

    n.reconciler = reconciler  # type: ignore[method-assign]
    yield n, dhcp, clock


def switch_doc(n: NetEnv, acls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Both apps on an air-gapped switch instance (another app may serve DHCP there)."""
    doc = n.e.document()
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": SW, "version": "1"}, "displayname": "sw",
        "instType": "ZnetInstSwitch", "activate": True,
    }]  # fmt: skip
    for app in doc["apps"]:
        app["interfaces"] = [{"name": "eth0", "networkId": SW, "acls": acls or []}]
    return doc


async def sync(n: NetEnv) -> bool:
    rec = n.e.reconciler
    assert rec is not None and rec.networks is not None and rec.networks.leases is not None
    return await rec.networks.leases.sync(rec.networks.dhcp_vifs(rec.engine.actual))


async def eth0(n: NetEnv) -> tuple[list[str], list[tuple[str, str]]]:
    state = await n.e.containers.inspect(APP_CT)
    peer = FakeNetlink(NODE, f"/proc/{state.pid}/ns/net", host=n.host)
    link = await peer.link("eth0")
    assert link is not None
    routes = [(str(r.dst), str(r.gateway)) for r in await peer.routes()]
    return [str(a) for a in link.addresses], routes


def key_of(n: NetEnv) -> str:
    rec = n.e.reconciler
    assert rec is not None and rec.networks is not None
    (vif,) = rec.networks.dhcp_vifs(rec.engine.actual)
    return vif.key


def read(path: Path) -> str:
    return path.read_text()


def lease(address: str, obtained: float, seconds: int = 3600) -> Lease:
    return Lease(IPv4Interface(address), (IPv4Address("192.0.2.1"),), (), seconds, obtained)


async def test_a_container_on_a_switch_gets_its_lease(
    net: tuple[NetEnv, FakeAppDhcp, Clock],
) -> None:
    n, dhcp, clock = net
    assert await n.apply(switch_doc(n))
    key = key_of(n)
    assert await eth0(n) == ([], [])  # attached, no address yet
    assert not await sync(n)  # no server answers
    assert dhcp.calls[-1][2:] == ("eth0", None, "ct-app")
    dhcp.serve(key, lease("192.0.2.120/24", clock.now))
    assert not await sync(n)  # asked again only after the backoff
    clock.now += appdhcp.RETRY_MIN
    assert await sync(n)
    addresses, routes = await eth0(n)
    assert addresses == ["192.0.2.120/24"] and ("0.0.0.0/0", "192.0.2.1") in routes
    rec = n.e.reconciler
    assert rec is not None
    owners = {(o.kind, o.id): o for o in rec.owners()}
    (vif,) = owners[("app", APP_CT)].vifs
    assert (vif.ip, vif.gateway) == ("192.0.2.120", "192.0.2.1")
    # The VM runs its own client: nothing asked for it.
    assert {c[0] for c in dhcp.calls} == {key}
    assert owners[("app", APP_VM)].vifs[0].ip == ""


async def test_renewed_at_half_time_moved_and_lost(net: tuple[NetEnv, FakeAppDhcp, Clock]) -> None:
    n, dhcp, clock = net
    assert await n.apply(switch_doc(n))
    key = key_of(n)
    start = clock.now
    dhcp.serve(key, lease("192.0.2.120/24", start, 100))
    assert await sync(n)
    calls = len(dhcp.calls)
    clock.now = start + 40
    assert not await sync(n) and len(dhcp.calls) == calls  # not due before half time
    # At half time it asks for the same address; the server moves it.
    clock.now = start + 51
    dhcp.serve(key, lease("192.0.2.121/24", start + 51, 100))
    assert await sync(n)
    assert dhcp.calls[-1][3] == IPv4Address("192.0.2.120")
    assert (await eth0(n))[0] == ["192.0.2.121/24"]
    # The server goes away: the address stays until the lease ran out, then it goes.
    del dhcp.offers[key]
    clock.now = start + 51 + 60
    assert not await sync(n)
    assert (await eth0(n))[0] == ["192.0.2.121/24"]
    clock.now = start + 51 + 101 + appdhcp.RETRY_MAX
    assert await sync(n)
    assert await eth0(n) == ([], [])


async def test_a_restarted_container_asks_afresh_and_an_agent_restart_adopts(
    net: tuple[NetEnv, FakeAppDhcp, Clock],
) -> None:
    n, dhcp, clock = net
    assert await n.apply(switch_doc(n))
    key = key_of(n)
    dhcp.serve(key, Lease(IPv4Interface("192.0.2.120/24"), (), (), 3600, clock.now))
    assert await sync(n)
    # An agent restart: new reconciler and leases; the record is adopted, nothing asked.
    calls = len(dhcp.calls)
    n.reconciler()
    assert await n.apply(switch_doc(n))
    assert not await sync(n)
    assert len(dhcp.calls) == calls
    rec = n.e.reconciler
    assert rec is not None and rec.networks is not None and rec.networks.leases is not None
    assert rec.networks.leases.address(APP_CT, 0) == ("192.0.2.120", "")
    # The container restarts by itself: a new namespace, attached again, a fresh request.
    old = await n.e.containers.inspect(APP_CT)
    await n.e.containers.stop(APP_CT)
    n.host.remove_netns(f"/proc/{old.pid}/ns/net")
    await rec.engine.resync(["container", "domain", "vif"])
    await rec.engine.settle(10)
    assert await sync(n)
    assert dhcp.calls[-1][3] is None
    assert (await eth0(n))[0] == ["192.0.2.120/24"]


async def test_driver_errors_back_off_and_are_logged_once(
    net: tuple[NetEnv, FakeAppDhcp, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    n, dhcp, clock = net
    assert await n.apply(switch_doc(n))
    key = key_of(n)
    dhcp.fail[key] = TemporaryError("udhcpc would not start")
    caplog.set_level(logging.WARNING)
    waits = []
    for _ in range(5):
        before = len(dhcp.calls)
        assert not await sync(n)
        assert len(dhcp.calls) == before + 1
        held = n.e.reconciler.networks.leases._held[key]  # type: ignore[union-attr]
        waits.append(held.next_try - clock.now)
        clock.now = held.next_try
    assert waits == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert sum("udhcpc would not start" in r.message for r in caplog.records) == 1


async def test_switch_acls_are_chains_by_mac_both_ways(
    net: tuple[NetEnv, FakeAppDhcp, Clock],
) -> None:
    n, _dhcp, _clock = net
    acls = [{"id": 1, "matches": [{"type": "ip", "value": "192.0.2.0/24"},
                                  {"type": "protocol", "value": "tcp"},
                                  {"type": "fport", "value": "8080"}]},
            {"id": 2, "matches": [{"type": "protocol", "value": "tcp"},
                                  {"type": "lport", "value": "22"}],
             "actions": [{"drop": True}]}]  # fmt: skip
    assert await n.apply(switch_doc(n, acls))
    rec = n.e.reconciler
    assert rec is not None and rec.layout is not None
    fw = next(i for r, i in rec.engine.actual.items() if r[0] == "firewall")
    assert isinstance(fw, FirewallItem)
    (table,) = [t for t in fw.tables if t.family == Family.INET]
    maps = {m.name: m for m in table.maps}
    macs = {v.mac for v in rec.layout.vifs.values()}
    assert {e[0] for e in maps["sw_out"].elements} == macs == {e[0] for e in maps["sw_in"].elements}
    ct = rec.layout.vifs[(APP_CT, 0)]
    number = sorted(v.app_id for v in rec.layout.vifs.values()).index(APP_CT)
    out, inn = table.chain(f"sout{number}"), table.chain(f"sin{number}")
    assert out is not None and inn is not None
    by_comment = {r.comment: r for r in out.rules if r.comment}
    allow = by_comment[f"ace:{ct.app_id}:0:1"]
    assert {"return": None} in allow.expr  # the receiver's chain decides too
    assert any("daddr" in str(x) for x in allow.expr)
    mirrored = {r.comment: r for r in inn.rules if r.comment}[f"ace-in:{ct.app_id}:0:1"]
    text = str(mirrored.expr)
    assert "saddr" in text and "'sport'" in text and "8080" in text
    assert out.rules[-1].comment == f"ace:{ct.app_id}:0:0"
    assert inn.rules[-1].comment == f"ace-in:{ct.app_id}:0:0"


@pytest.mark.parametrize(
    ("matches", "actions", "why"),
    [
        ([{"type": "host", "value": "example.com"}], [], "host matches are not supported"),
        ([{"type": "protocol", "value": "tcp"}, {"type": "lport", "value": "80"}],
         [{"portmap": True, "appPort": 80}], "portmap needs a local"),
    ],
)  # fmt: skip
async def test_what_a_switch_cannot_do_is_an_error_of_the_app(
    net: tuple[NetEnv, FakeAppDhcp, Clock],
    matches: list[dict[str, str]],
    actions: list[dict[str, Any]],
    why: str,
) -> None:
    n, _dhcp, _clock = net
    acls = [{"id": 5, "matches": matches, "actions": actions}]
    await n.apply(switch_doc(n, acls))
    rec = n.e.reconciler
    assert rec is not None
    errors = {(o.kind, o.id): " ".join(e for e, _ in o.errors) for o in rec.owners()}
    assert why in errors[("app", APP_CT)]


def test_hostile_requests_never_reach_a_command_line() -> None:
    from agent.drivers.appdhcp import check_request
    from agent.drivers.errors import PermanentError

    check_request("ewlv1", "/proc/12/ns/net", "eth0", "ct-app")
    for bad in (("ewlv1", "/proc/12/ns/net;rm", "eth0", ""),
                ("ewlv1", "/etc/passwd", "eth0", ""),
                ("../x", "/proc/1/ns/net", "eth0", ""),
                ("ewlv1", "/proc/1/ns/net", "eth0 -s", ""),
                ("ewlv1", "/proc/1/ns/net", "eth0", "-x evil")):  # fmt: skip
        with pytest.raises(PermanentError):
            check_request(*bad)


async def test_the_lease_dns_servers_become_the_containers_resolv_conf(
    net: tuple[NetEnv, FakeAppDhcp, Clock],
) -> None:
    """A container whose only instance is a switch gets its ``/etc/resolv.conf`` bound from a
    file the lease's DNS servers are written into, in place, when they come and change."""
    n, dhcp, clock = net
    assert await n.apply(switch_doc(n))
    rec = n.e.reconciler
    assert rec is not None and n.e.workloads is not None
    containers = n.e.workloads.containers
    item = rec.engine.actual[("container", APP_CT)]
    assert isinstance(item, AppItem) and item.lease_dns and not item.resolvers
    spec = await containers.spec(item)
    (bound,) = [m for m in spec.mounts if m.target == "/etc/resolv.conf"]
    path = Path(bound.source)
    assert path.name == LEASE_RESOLV and "nameserver" not in read(path)
    inode = path.stat().st_ino  # noqa: ASYNC240 - a test's stat

    def served(*dns: str) -> Lease:
        return Lease(IPv4Interface("192.0.2.120/24"), (IPv4Address("192.0.2.1"),),
                     tuple(IPv4Address(d) for d in dns), 3600, clock.now)  # fmt: skip

    dhcp.serve(key_of(n), served("192.0.2.53", "192.0.2.54"))
    assert await sync(n)
    lines = read(path).splitlines()
    assert [x for x in lines if not x.startswith("#")] == [
        "nameserver 192.0.2.53",
        "nameserver 192.0.2.54",
    ]
    assert path.stat().st_ino == inode  # noqa: ASYNC240 - written in place: the mount holds it
    # A renewal naming another server rewrites it; one naming the same leaves it be.
    clock.now += 1800
    dhcp.serve(key_of(n), served("192.0.2.55"))
    await sync(n)
    assert "nameserver 192.0.2.55\n" in read(path) and "192.0.2.53" not in read(path)
    assert path.stat().st_ino == inode  # noqa: ASYNC240 - a test's stat


async def test_containers_on_local_instances_keep_their_dnsmasq(env: Env) -> None:
    """lease_dns only where no local instance gives the container a resolver (its dnsmasq)."""
    n = NetEnv(env)
    assert await n.apply(n.document())
    rec = n.e.reconciler
    assert rec is not None
    item = rec.engine.actual[("container", APP_CT)]
    assert isinstance(item, AppItem) and item.resolvers and not item.lease_dns
