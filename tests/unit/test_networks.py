"""Network instances and app interfaces through the engine, with the netlink, docker and
libvirt fakes (bridges, veths into containers' namespaces, VM NICs; adoption, restarts)."""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.dnsmasq_fake import FakeDnsmasq, FakeDnsmasqHost
from agent.drivers.domainxml import parse as parse_domain
from agent.drivers.netlink_fake import FakeNetlink, FakeNetworkHost
from agent.drivers.nft_api import NftSettings
from agent.drivers.nft_fake import FakeNft
from agent.reconcile.engine import EngineSettings
from agent.reconcile.networks import Networks
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.records import RecordBook
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from tests.unit.workload_env import APP_CT, APP_VM, Env, env

__all__ = ["env"]

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000000e1"
NODE = "wl-node"


class NetEnv:
    def __init__(self, e: Env) -> None:
        self.e = e
        self.host = FakeNetworkHost()
        self.netlink = FakeNetlink(NODE, host=self.host)
        self.nft = FakeNft(NftSettings(NODE))
        self.dns_host = FakeDnsmasqHost()
        self.dnsmasq = FakeDnsmasq(self.dns_host, NODE, e.root / "dnsmasq")
        start = e.containers.start

        async def start_with_netns(name: str) -> None:
            await start(name)
            state = await e.containers.inspect(name)
            if state.pid is not None:
                path = f"/proc/{state.pid}/ns/net"
                if path not in self.host.namespaces:
                    self.host.add_netns(path)

        e.containers.start = start_with_netns

    def reconciler(self) -> NodeReconciler:
        e = self.e
        ws = Workspace(
            root=lambda: e.vault, items=lambda: e.runtime.current,
            settings=WorkloadSettings(vm_halt_grace=0.2, container_halt_grace=0.2, reserve=0),
        )  # fmt: skip
        e.workloads = Workloads(WorkloadDrivers(e.containers, e.hypervisor), ws)
        e.made.append(e.workloads)
        nets = Networks(
            self.netlink,
            e.containers,
            RecordBook(e.root / "net"),
            dnsmasq=self.dnsmasq,
            nft=self.nft,
        )
        e.reconciler = NodeReconciler(
            e.runtime, workloads=e.workloads, networks=nets,
            settings=EngineSettings(resync_interval=3600),
        )  # fmt: skip
        e.reconciler.set_condition(VAULT_READY, None)
        return e.reconciler

    def document(self, **ni: Any) -> dict[str, Any]:
        doc = self.e.document()
        doc["networkInstances"] = [{
            "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "lan",
            "instType": "ZnetInstLocal", "activate": True,
            "ip": {"subnet": "10.7.0.0/24", "gateway": "10.7.0.1",
                   "dhcpRange": {"start": "10.7.0.10", "end": "10.7.0.50"}}, **ni,
        }]  # fmt: skip
        for app in doc["apps"]:
            app["interfaces"] = [{"name": "eth0", "networkId": NI}]
        return doc

    async def apply(self, doc: dict[str, Any]) -> bool:
        rec = self.e.reconciler or self.reconciler()
        return await rec.apply(self.e.config(doc), 20)

    def links(self) -> dict[str, Any]:
        return {link.name: link for link in self.host.namespace(None).links}


@pytest.fixture
def net(env: Env) -> NetEnv:
    return NetEnv(env)


async def test_apps_get_interfaces_on_the_instance(net: NetEnv) -> None:
    assert await net.apply(net.document())
    links = {link.name: link for link in await net.netlink.list_owned()}
    (bridge,) = [link for link in links.values() if link.kind == "bridge"]
    assert sorted(str(a) for a in bridge.addresses) == ["10.7.0.1/24", "169.254.169.254/32"]
    assert await net.netlink.forwarding(bridge.name)
    (vif,) = [link for link in links.values() if link.kind == "veth"]
    assert vif.master == bridge.name
    # The peer is eth0 in the container's namespace, with its address and default route.
    state = await net.e.containers.inspect(APP_CT)
    peer_ns = FakeNetlink(NODE, f"/proc/{state.pid}/ns/net", host=net.host)
    eth0 = await peer_ns.link("eth0")
    assert eth0 is not None and eth0.mac.startswith("02:")
    (address,) = eth0.addresses
    assert address in ipaddress.ip_network("10.7.0.0/24") and address.ip != ipaddress.ip_address(
        "10.7.0.1"
    )
    routes = await peer_ns.routes()
    assert any(str(r.dst) == "0.0.0.0/0" and str(r.gateway) == "10.7.0.1" for r in routes)
    # The VM has a NIC on the same bridge.
    info = await net.e.hypervisor.state(uuid.UUID(APP_VM))
    nics = parse_domain(net.e.hypervisor.domains[info.name].xml).nics
    assert [n.bridge for n in nics] == [bridge.name]
    phases = {(o.kind, o.id): o.phase for o in net.e.reconciler.owners()}  # type: ignore[union-attr]
    assert phases[("app", APP_CT)] == "RUNNING"


async def test_a_restarted_container_is_attached_again(net: NetEnv) -> None:
    assert await net.apply(net.document())
    rec = net.e.reconciler
    assert rec is not None
    old = await net.e.containers.inspect(APP_CT)
    # The container stops by itself: its namespace goes, and the veth pair with it.
    await net.e.containers.stop(APP_CT)
    net.host.remove_netns(f"/proc/{old.pid}/ns/net")
    await rec.engine.resync(["container", "domain", "vif"])
    await rec.engine.settle(10)
    new = await net.e.containers.inspect(APP_CT)
    assert new.running and new.pid != old.pid
    peer_ns = FakeNetlink(NODE, f"/proc/{new.pid}/ns/net", host=net.host)
    assert await peer_ns.link("eth0") is not None


async def test_restart_adopts_and_delete_leaves_nothing(net: NetEnv, tmp_path: Path) -> None:
    assert await net.apply(net.document())
    before = {link.name for link in await net.netlink.list_owned()}
    net.e.reconciler = None
    rec = net.reconciler()
    assert await rec.apply(net.e.config(net.document()), 20)
    assert {link.name for link in await net.netlink.list_owned()} == before
    assert rec.engine.started_ops < 7  # adopted, not rebuilt (the nft items re-apply)

    doc = net.e.document(networkInstances=[], apps=[], volumes=[], contentInfo=[])
    assert await rec.apply(net.e.config(doc), 20)
    assert await net.netlink.list_owned() == []
    assert not list((net.e.root / "net").rglob("*.json"))


async def test_an_address_change_applies_in_place(net: NetEnv) -> None:
    assert await net.apply(net.document())
    (bridge,) = [link for link in await net.netlink.list_owned() if link.kind == "bridge"]
    doc = net.document(ip={"subnet": "10.8.0.0/24", "gateway": "10.8.0.1"})
    assert await net.apply(doc)
    again = await net.netlink.link(bridge.name)
    assert again is not None and again.ifindex == bridge.ifindex  # the same bridge
    assert sorted(str(a) for a in again.addresses) == ["10.8.0.1/24", "169.254.169.254/32"]


async def test_an_interface_on_a_missing_instance_is_an_error_of_its_app(net: NetEnv) -> None:
    doc = net.document()
    doc["apps"][1]["interfaces"] = [{"name": "eth0", "networkId": NI, "addr": "10.9.9.9"}]
    assert not await net.apply(doc)
    errors = {e.id: e.message for e in net.e.reconciler.report.object_errors}  # type: ignore[union-attr]
    assert "not free in 10.7.0.0/24" in errors[APP_CT]
    assert await net.e.containers.inspect(APP_CT) is not None
    assert not (await net.e.containers.inspect(APP_CT)).exists  # it does not run
    phases = {(o.kind, o.id): o.phase for o in net.e.reconciler.owners()}  # type: ignore[union-attr]
    assert phases[("app", APP_VM)] == "RUNNING"


async def test_dhcp_and_dns_follow_the_apps(net: NetEnv) -> None:
    doc = net.document(dns=[{"HostName": "printer", "Address": ["10.7.0.200"]}])
    assert await net.apply(doc)
    inst = net.dnsmasq.instance(uuid.UUID(NI))
    config = inst.config
    assert str(config.gateway) == "10.7.0.1"
    assert (str(config.dhcp_range[0]), str(config.dhcp_range[1])) == ("10.7.0.10", "10.7.0.50")
    hosts = {h.hostname: str(h.ip) for h in config.static_hosts}
    assert set(hosts) == {"vm-app", "ct-app"}
    records = {r.name: [str(a) for a in r.addresses] for r in config.dns_records}
    assert records["vm-app"] == [hosts["vm-app"]] and records["printer"] == ["10.7.0.200"]
    assert config.upstreams == () and not config.default_route  # no port: air-gapped
    # The container is configured with the address dnsmasq reserves for it.
    state = await net.e.containers.inspect(APP_CT)
    peer = await FakeNetlink(NODE, f"/proc/{state.pid}/ns/net", host=net.host).link("eth0")
    assert peer is not None and str(peer.addresses[0].ip) == hosts["ct-app"]

    # An app leaves: a reload (SIGHUP), not a restart.
    doc["apps"] = [a for a in doc["apps"] if a["uuidandversion"]["uuid"] != APP_VM]
    assert await net.apply(doc)
    inst = net.dnsmasq.instance(uuid.UUID(NI))
    assert inst.reloads == 1 and inst.restarts == 0
    assert {h.hostname for h in inst.config.static_hosts} == {"ct-app"}

    # The instance goes: dnsmasq stops.
    doc = net.e.document(networkInstances=[], apps=[], volumes=[], contentInfo=[])
    assert await net.apply(doc)
    assert not await net.dnsmasq.list_owned()


async def test_app_and_instance_info_carry_the_addresses(net: NetEnv) -> None:
    from agent.link.objectinfo import ObjectDetails, object_info

    assert await net.apply(net.document())
    owners = {o.id: o for o in net.e.reconciler.owners()}  # type: ignore[union-attr]
    app = owners[APP_CT]
    msg = object_info("dev", "app", APP_CT, app.state, details=ObjectDetails.of(app))
    (iface,) = msg.ainfo.network
    assert iface.IPAddrs[0].startswith("10.7.0.") and iface.defaultRouters == ["10.7.0.1"]
    assert iface.macAddr.startswith("02:") and iface.ipv4_up
    ni = owners[NI]
    msg = object_info("dev", "networkinstance", NI, ni.state, details=ObjectDetails.of(ni))
    info = msg.niinfo
    assert info.bridgeIPAddr == "10.7.0.1" and info.bridgeName == ni.bridge
    assert {v.appID for v in info.vifs} == {APP_CT, APP_VM}
    assert {a.ipAddress[0] for a in info.ipAssignments} >= {iface.IPAddrs[0]}
    assert "eth0 10.7.0." in app.interfaces[0]


def with_uplink(doc: dict[str, Any], acls: list[dict[str, Any]]) -> dict[str, Any]:
    doc["deviceIoList"] = [
        {
            "ptype": "PhyIoNetEth",
            "phylabel": "up0",
            "logicallabel": "up0",
            "phyaddrs": {"ifname": "up0"},
            "usage": "PhyIoUsageMgmtAndApps",
        }
    ]
    doc["systemAdapterList"] = [{"name": "up0"}]
    doc["networkInstances"][0]["port"] = {"name": "uplink"}
    for app in doc["apps"]:
        if app["uuidandversion"]["uuid"] == APP_CT:
            app["interfaces"][0]["acls"] = acls
    return doc  # fmt: skip


async def test_nat_acls_and_portmaps_become_nft_rules(net: NetEnv) -> None:
    net.host.add_link(None, "up0")
    acls: list[dict[str, Any]] = [
        {"id": 1, "matches": [{"type": "ip", "value": "192.0.2.0/24"},
                              {"type": "protocol", "value": "tcp"},
                              {"type": "fport", "value": "8080"}]},
        {"id": 2, "matches": [{"type": "ip", "value": "198.51.100.7"}],
         "actions": [{"drop": True}]},
        {"id": 3, "matches": [{"type": "protocol", "value": "tcp"},
                              {"type": "lport", "value": "8022"}],
         "actions": [{"portmap": True, "appPort": 22}]},
    ]  # fmt: skip
    assert await net.apply(with_uplink(net.document(), acls))
    tables = {t.name.rsplit("_", 1)[1]: t for t in await net.nft.list_owned()}
    nat, filt = tables["nat"], tables["filter"]
    post = nat.chain("postrouting")
    assert post is not None and len(post.rules) == 1
    assert (post.rules[0].comment or "").startswith("nat:")
    pre = nat.chain("prerouting")
    assert pre is not None and "dnat" in str(pre.rules[0].expr)
    comments = [r.comment for c in filt.chains for r in c.rules if r.comment]
    assert any(c.endswith(":1") for c in comments) and any(c.endswith(":2") for c in comments)
    assert any(c.endswith(":0") for c in comments)  # the implicit drop
    assert await net.netlink.forwarding("up0")  # replies come in on the port
    # An ACL edit changes the rules, not the app.
    before = (await net.e.containers.inspect(APP_CT)).id
    acls[0]["matches"][2]["value"] = "9090"
    assert await net.apply(with_uplink(net.document(), acls))
    filt = {t.name.rsplit("_", 1)[1]: t for t in await net.nft.list_owned()}["filter"]
    assert "9090" in str([c.rules for c in filt.chains])
    assert (await net.e.containers.inspect(APP_CT)).id == before


async def test_acls_this_agent_cannot_render_are_errors_of_their_app(net: NetEnv) -> None:
    net.host.add_link(None, "up0")
    acls = [{"id": 1, "matches": [{"type": "eidset", "value": ""}]}]
    assert not await net.apply(with_uplink(net.document(), acls))
    errors = {e.id: e.message for e in net.e.reconciler.report.object_errors}  # type: ignore[union-attr]
    assert "eidset matches are not supported yet" in errors[APP_CT]


async def test_a_host_match_is_a_set_dnsmasq_fills(net: NetEnv) -> None:
    net.host.add_link(None, "up0")
    acls = [{"id": 5, "matches": [{"type": "host", "value": "example.com"},
                                  {"type": "protocol", "value": "tcp"}]}]  # fmt: skip
    ok = await net.apply(with_uplink(net.document(), acls))
    assert ok, net.e.reconciler.report  # type: ignore[union-attr]
    filt = {t.name.rsplit("_", 1)[1]: t for t in await net.nft.list_owned()}["filter"]
    (hosts,) = [s for s in filt.sets if s.name != "apps"]  # (that one: the node's apps)
    assert "timeout" in hosts.flags and "@" + hosts.name in str([c.rules for c in filt.chains])
    config = net.dnsmasq.instance(uuid.UUID(NI)).config
    (rule,) = config.nftsets
    assert rule.domain == "example.com"
    assert rule.sets[0].name == hosts.name and rule.sets[0].table == filt.name


async def test_acl_drops_reach_the_app_metrics(net: NetEnv) -> None:
    from agent.link.appmetrics import add_app_metrics
    from agent.reconcile.apptelemetry import AppMetric
    from agent.reconcile.firewall import drops
    from agent.wire.pb.metrics import metrics_pb2

    net.host.add_link(None, "up0")
    limit = {"limit": True, "limitrate": 5, "limitunit": "s", "limitburst": 5}
    udp = [{"type": "protocol", "value": "udp"}]
    acls = [{"id": 2, "matches": [{"type": "ip", "value": "198.51.100.7"}],
             "actions": [{"drop": True}]},
            {"id": 3, "matches": udp, "actions": [limit]}]  # fmt: skip
    assert await net.apply(with_uplink(net.document(), acls))
    layout = net.e.reconciler.layout  # type: ignore[union-attr]
    assert layout is not None
    counters = {f"ace:{APP_CT}:0:0": (7, 700), f"ace:{APP_CT}:0:2": (3, 300),
                f"ace:{APP_CT}:0:3:over": (4, 400), f"ace-in:{APP_CT}:0:0": (2, 200)}  # fmt: skip
    (iface,) = drops(layout, counters)[APP_CT]
    assert (iface.ifname, iface.tx, iface.rx, iface.tx_limited) == ("eth0", 10, 2, 4)
    msg = metrics_pb2.ZMetricMsg()
    add_app_metrics(msg, [AppMetric(APP_CT, "ct-app", "container")], {APP_CT: [iface]})
    (entry,) = msg.am[0].network
    assert (entry.txAclDrops, entry.rxAclDrops, entry.txAclRateLimitDrops) == (10, 2, 4)
