"""The cluster network across two member nodes, on the real kernel (root; namespaces made here).

Every member has the cluster's local instance with the same subnet, its K3s VM at its own
cluster address.  The agent spreads that subnet over the members' cluster ports (the gateway
and the node's apps as host routes on the bridge, the rest of the subnet behind the port, proxy
ARP on both, no NAT inside the subnet), so the VMs reach each other with their own addresses,
the K3s port their portmap ACE opens is reachable and others are not, and traffic out of the
subnet is still NATed.  A "LAN" namespace joins the two nodes' cluster ports; each "VM" is a
namespace on its node's bridge (the agent's real bridge, firewall and routes; no hypervisor).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.netlink import NetlinkDriver
from agent.drivers.nft import LibNft, NftSettings
from agent.model.acl import Ace, AceAction, AceMatch
from agent.model.config import (
    AppInstance,
    AppInterface,
    ClusterConfig,
    NetworkInstance,
    NodeConfig,
)
from agent.model.configitems import parse_items
from agent.model.ports import Port
from agent.model.secret import Secret
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.networks import Networks
from agent.reconcile.node import NodeReconciler
from agent.reconcile.records import RecordBook
from tests.integration.nshelpers import app_standin, ask, in_ns, ip, serve_who
from tests.integration.prereqs import netns_missing

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000c1001"
CLUSTER = "6d3b3b4e-8a3c-4c47-9d41-0000000c1009"
PORT = Port("cp0", "cp0", True, True, 0, ("all", "uplink", "clusterlan"), "none")


@dataclass
class Member:
    n: int
    node_ns: str
    vm_ns: str
    reconciler: NodeReconciler
    nets: Networks

    @property
    def address(self) -> str:
        return f"10.244.0.{10 + self.n}"

    @property
    def device(self) -> str:
        return f"6d3b3b4e-8a3c-4c47-9d41-0000000d000{self.n}"

    def config(self) -> NodeConfig:
        ni = NetworkInstance(NI, "1", "cluster-c", 2, True, "clusterlan", 1, "10.244.0.0/24",
                             "10.244.0.1", "10.244.0.220", "10.244.0.250", (), (), 0)  # fmt: skip
        acls = (
            Ace(1, "out", 0, (AceMatch("ip", "0.0.0.0/0"),), ()),
            Ace(2, "k3s-tcp-6443", 0, (AceMatch("protocol", "tcp"), AceMatch("lport", "6443"),
                                       AceMatch("adapter", "clusterlan")),
                (AceAction(portmap=True, app_port=6443),)),
        )  # fmt: skip
        app_id = f"6d3b3b4e-8a3c-4c47-9d41-0000000a000{self.n}"
        app = AppInstance(app_id, "1", "k3s-c", True, 1 << 20, 1, 1, 0,
                          (AppInterface("eth0", NI, self.address, "", acls, 0),), (), 0, 0,
                          Secret(), False, 0, 0)  # fmt: skip
        cluster = ClusterConfig(CLUSTER, "c", "clusterlan", f"{self.address}/24", False,
                                "10.244.0.11", 1, "", Secret("token"))  # fmt: skip
        return NodeConfig(self.device, "1", 0.0, parse_items([]), apps={app_id: app},
                          network_instances={NI: ni}, ports={"cp0": PORT},
                          cluster=cluster)  # fmt: skip


def _topology(tag: str) -> list[str]:
    """lan (a bridge, 192.0.2.1 with a web server), two node namespaces with their cluster port
    cp0 on it (192.0.2.11, .12); returns every namespace made."""
    lan = f"ecl-{tag}-lan"
    made = [lan]
    ip("netns", "add", lan)
    ip("-n", lan, "link", "add", "lan0", "type", "bridge")
    ip("-n", lan, "addr", "add", "192.0.2.1/24", "dev", "lan0")
    ip("-n", lan, "link", "set", "lan0", "up")
    ip("-n", lan, "link", "set", "lo", "up")
    for n in (1, 2):
        node = f"ecl-{tag}-n{n}"
        made.append(node)
        ip("netns", "add", node)
        ip("-n", node, "link", "set", "lo", "up")
        ip("-n", node, "link", "add", "cp0", "type", "veth", "peer", "name", f"l{n}",
            "netns", lan)  # fmt: skip
        ip("-n", node, "addr", "add", f"192.0.2.{10 + n}/24", "dev", "cp0")
        ip("-n", node, "link", "set", "cp0", "up")
        ip("-n", lan, "link", "set", f"l{n}", "master", "lan0", "up")
    return made


@pytest.fixture
async def members(
    require_service: Callable[[str, str], NoReturn], tmp_path: Path
) -> AsyncIterator[list[Member]]:
    why = netns_missing({"nft": "nftables", "ip": "iproute2"}, ("nftables", "pyroute2"))
    if why is not None:
        require_service("network namespaces and nftables", why)
    tag = uuid.uuid4().hex[:6]
    made: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    out: list[Member] = []
    closers = []
    try:
        made += await asyncio.to_thread(_topology, tag)
        servers.append(await asyncio.to_thread(serve_who, made[0], 8080))
        for n in (1, 2):
            node_ns = f"ecl-{tag}-n{n}"
            name = f"cl{tag}{n}"
            netlink = NetlinkDriver(name, node_ns)
            nft = LibNft(NftSettings(name, netns=node_ns))
            closers += [netlink, nft]
            nets = Networks(netlink, FakeContainerRuntime(name), RecordBook(tmp_path / name),
                            nft=nft)  # fmt: skip
            rec = NodeReconciler(RuntimeItems(), networks=nets,
                                 settings=EngineSettings(resync_interval=3600))  # fmt: skip
            out.append(Member(n, node_ns, f"ecl-{tag}-v{n}", rec, nets))
        yield out
    finally:
        for proc in servers:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        for closer in closers:
            await closer.close()  # type: ignore[attr-defined]
        for member in out:
            made.append(member.vm_ns)
        for ns in made:
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", ns], check=False,
                                    capture_output=True)  # fmt: skip


async def test_members_reach_each_other_with_their_own_addresses(members: list[Member]) -> None:
    for m in members:
        assert await m.reconciler.apply(m.config(), 30), m.reconciler.report
        layout = m.reconciler.layout
        assert layout is not None and layout.instances[NI].cluster_port == "cp0"
        await asyncio.to_thread(app_standin, m.node_ns, m.vm_ns, layout.instances[NI].bridge,
                                "vm0", f"{m.address}/24", "10.244.0.1")  # fmt: skip
    one, two = members
    servers = [await asyncio.to_thread(serve_who, two.vm_ns, port) for port in (6443, 22)]
    try:
        await asyncio.sleep(0.5)
        # The K3s port the portmap ACE opens: reached, and the caller's own address arrives.
        got = await asyncio.to_thread(ask, one.vm_ns, two.address, 6443)
        assert got.returncode == 0, got.stderr + await asyncio.to_thread(_diagnose, members)
        assert got.stdout.strip() == one.address  # no NAT inside the cluster subnet
        # A port no ACE opens: dropped by the receiving VM's ingress chain (from another node
        # only the PORTMAPs let anything in).
        got = await asyncio.to_thread(ask, one.vm_ns, two.address, 22)
        assert got.returncode != 0
        # Out of the subnet: NATed through the node's port as for any local instance.
        got = await asyncio.to_thread(ask, one.vm_ns, "192.0.2.1", 8080)
        assert got.returncode == 0 and got.stdout.strip() == "192.0.2.11", got.stderr
        # The node reaches its own VM (a host route), and the other member's through the port.
        got = await asyncio.to_thread(ask, two.node_ns, two.address, 6443)
        assert got.returncode == 0, got.stderr
    finally:
        for proc in servers:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    # Out of the cluster: the port is the node's own again (no route, no proxy ARP).
    empty = NodeConfig(one.device, "2", 0.0, parse_items([]), ports={"cp0": PORT})
    assert await one.reconciler.apply(empty, 30), one.reconciler.report
    routes = await asyncio.to_thread(in_ns, one.node_ns, "ip", "route", "show", "dev", "cp0")
    assert "10.244.0.0/24" not in routes.stdout
    assert not await one.nets.netlink.proxy_arp("cp0")


def _diagnose(members: list[Member]) -> str:
    out = []
    for m in members:
        for argv in (["ip", "-br", "addr"], ["ip", "route"], ["nft", "list", "ruleset"],
                     ["sh", "-c", "grep -H . /proc/sys/net/ipv4/conf/*/proxy_arp"]):  # fmt: skip
            done = in_ns(m.node_ns, *argv)
            out.append(f"[{m.node_ns}] $ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)
