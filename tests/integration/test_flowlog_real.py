"""Flow logs with real packets: the firewall's marks and logs, read back by the collector.

Three namespaces this test makes (``evetest-flr<random>``, ``...a``, ``...o``) and removes,
also when it fails: the node's, with a bridge at 10.77.0.1/24 and the firewall the agent
renders for one app interface (10.77.0.10 on that bridge); the app's, joined to the bridge by a
veth pair (no container runtime needed: the firewall only sees addresses); and an "outside"
one joined to the node's port (192.0.2.1 - 192.0.2.2, the helper of
``test_networks_real``).  The app's ACL allows TCP 8080 out (ACE 1), drops UDP 5353 (ACE 7),
maps the node's 8022 to its 8000 (ACE 2) and drops the rest (ACE 0).  Traffic of each kind
must come back as flow records with the right ACE, action, direction and counters.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from agent.drivers.conntrack import NfConntrack
from agent.drivers.nflog import NflogListener
from agent.drivers.nft import LibNft, NftSettings
from agent.model.acl import Ace, AceAction, AceMatch
from agent.model.ports import Port, instance_addressing
from agent.reconcile import firewall
from agent.reconcile.acerules import NFLOG_GROUP
from agent.reconcile.flows import FlowCollector, FlowRecord, FlowReport, FlowSettings
from agent.reconcile.netplan import LOCAL, NetPlan, NiPlan, VifPlan
from tests.integration.nshelpers import wait_listening
from tests.integration.prereqs import netns_missing
from tests.integration.test_networks_real import _GET, _outside

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000000f1"
APP = "6d3b3b4e-8a3c-4c47-9d41-0000000000a1"
APP_IP, REMOTE, PORT_IP = "10.77.0.10", "192.0.2.2", "192.0.2.1"
BRIDGE, VIF = "bn-flw", "vn-flw"
UDP_SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(3):\n"
    "    s.sendto(b'q' * 40, (sys.argv[1], int(sys.argv[2])))\n"
)
TCP_TRY = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)


def plan(up: str) -> NetPlan:
    out = NetPlan()
    port = Port("up0", up, True, True, 0, (), "none")
    addressing = instance_addressing("10.77.0.0/24", "10.77.0.1", "", "")
    out.instances[NI] = NiPlan(NI, "lan", LOCAL, BRIDGE, addressing, (port,), "uplink", (), (),
                               0)  # fmt: skip
    acls = (
        Ace(1, "web", 0, (AceMatch("ip", "192.0.2.0/24"), AceMatch("protocol", "tcp"),
                          AceMatch("fport", "8080")), ()),
        Ace(7, "no-mdns", 0, (AceMatch("protocol", "udp"), AceMatch("fport", "5353")),
            (AceAction(drop=True),)),
        Ace(2, "in", 0, (AceMatch("protocol", "tcp"), AceMatch("lport", "8022")),
            (AceAction(portmap=True, app_port=8000),)),
    )  # fmt: skip
    out.vifs[(APP, 0)] = VifPlan(APP, 0, NI, VIF, "02:00:00:00:0f:01", APP_IP, "app", acls)
    return out


@dataclass
class Site:
    node: str
    app: str
    outside: str
    layout: NetPlan

    def in_app(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.app, *argv], capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip

    def outside_get(self, url: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", self.outside, sys.executable, "-c", _GET, url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _topology(node: str, app: str, outside: str, up: str) -> None:
    _sh("ip", "netns", "add", node)
    _sh("ip", "netns", "add", app)
    for ns in (node, app):
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
    n = ("ip", "-n", node)
    _sh(*n, "link", "add", BRIDGE, "type", "bridge")
    _sh(*n, "addr", "add", "10.77.0.1/24", "dev", BRIDGE)
    _sh(*n, "link", "set", BRIDGE, "up")
    _sh(*n, "link", "add", VIF, "type", "veth", "peer", "name", "eth0", "netns", app)
    _sh(*n, "link", "set", VIF, "master", BRIDGE, "up")
    a = ("ip", "-n", app)
    _sh(*a, "link", "set", "eth0", "address", "02:00:00:00:0f:01")  # the plan's (source guard)
    _sh(*a, "addr", "add", f"{APP_IP}/24", "dev", "eth0")
    _sh(*a, "link", "set", "eth0", "up")
    _sh(*a, "route", "add", "default", "via", "10.77.0.1")
    _outside(node, outside, up)
    # Forwarding on, and closed TCP connections leave conntrack within a second (this
    # namespace's own settings), so the test need not wait two minutes for them to end.
    for key, value in (("net.ipv4.ip_forward", "1"),
                       ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"),
                       ("net.netfilter.nf_conntrack_tcp_timeout_close", "1"),
                       ("net.netfilter.nf_conntrack_tcp_timeout_fin_wait", "1"),
                       ("net.netfilter.nf_conntrack_tcp_timeout_last_ack", "1")):  # fmt: skip
        _sh("ip", "netns", "exec", node, "sysctl", "-qw", f"{key}={value}")


@pytest.fixture
async def site(
    tmp_path: Path, require_service: Callable[[str, str], NoReturn]
) -> AsyncIterator[Site]:
    missing = netns_missing({"ip": "iproute2", "sysctl": "procps"}, ("nftables",))
    if missing is not None:
        require_service("network namespaces with nftables", missing)
    node = f"evetest-flr{uuid.uuid4().hex[:6]}"
    app, outside, up = f"{node}a", f"{node}o", f"up{node[-6:]}"
    servers: list[subprocess.Popen[bytes]] = []
    (tmp_path / "index.html").write_text("flows\n")
    try:
        await asyncio.to_thread(_topology, node, app, outside, up)
        for ns, address, port in ((outside, REMOTE, 8080), (app, APP_IP, 8000)):
            servers.append(await asyncio.to_thread(
                subprocess.Popen,
                ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", str(port),
                 "--bind", address, "--directory", str(tmp_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        for ns, address, port in ((outside, REMOTE, 8080), (app, APP_IP, 8000)):
            await asyncio.to_thread(wait_listening, ["ip", "netns", "exec", ns], address, port)
        yield Site(node, app, outside, plan(up))
    finally:
        await asyncio.to_thread(_teardown, servers, (node, app, outside))


def _teardown(servers: list[subprocess.Popen[bytes]], namespaces: tuple[str, ...]) -> None:
    for proc in servers:
        proc.kill()
        proc.wait()
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _find(records: list[FlowRecord], acl_id: int, drop: bool, dport: int) -> FlowRecord | None:
    return next((r for r in records if (r.acl_id, r.drop, r.dport) == (acl_id, drop, dport)),
                None)  # fmt: skip


async def test_allowed_and_dropped_flows_come_back_with_their_ace(site: Site) -> None:
    nft = LibNft(NftSettings(f"flr{site.node[-6:]}", netns=site.node))
    item, errors, _hosts = firewall.render(site.layout)
    assert errors == []
    reports: list[FlowReport] = []

    async def sink(got: list[FlowReport]) -> None:
        reports.extend(got)

    collector = FlowCollector(
        NfConntrack(site.node), NflogListener(NFLOG_GROUP, site.node),
        lambda: (site.layout, None), sink, FlowSettings(interval=0.5, sample=0.25),
    )  # fmt: skip
    stop = asyncio.Event()
    configurator = firewall.FirewallConfigurator(nft)
    await configurator.create(item)
    task = asyncio.create_task(collector.run(stop))
    try:
        await asyncio.sleep(0.5)  # accounting on and the group bound before the traffic
        # Allowed out (ACE 1, through NAT), dropped by ACE 7 and by the implicit drop.
        web = await asyncio.to_thread(site.in_app, sys.executable, "-c", _GET,
                                      f"http://{REMOTE}:8080/")  # fmt: skip
        assert web.returncode == 0, web.stderr
        udp = await asyncio.to_thread(site.in_app, sys.executable, "-c", UDP_SEND, REMOTE, "5353")
        assert udp.returncode == 0, udp.stderr
        denied = await asyncio.to_thread(site.in_app, sys.executable, "-c", TCP_TRY, REMOTE,
                                         "9090")  # fmt: skip
        assert denied.returncode == 1
        # In through the portmap (ACE 2): the outside reaches the app's 8000 on the port.
        mapped = await asyncio.to_thread(site.outside_get, f"http://{PORT_IP}:8022/")
        assert mapped.returncode == 0 and "flows" in mapped.stdout, mapped.stderr

        def complete(records: list[FlowRecord]) -> bool:
            found = (_find(records, 1, False, 8080), _find(records, 7, True, 5353),
                     _find(records, 0, True, 9090))  # fmt: skip
            return all(found) and any(r.acl_id == 2 for r in records)

        deadline = time.monotonic() + 20
        records: list[FlowRecord] = []
        while not complete(records) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            records = [r for rep in reports for r in rep.flows]
        assert {rep.scope.app_id for rep in reports} == {APP}, reports
        assert {(rep.scope.ifname, rep.scope.bridge, rep.scope.ni_id) for rep in reports} == {
            ("eth0", BRIDGE, NI)
        }

        web_flow = _find(records, 1, False, 8080)
        assert web_flow is not None, records
        assert (web_flow.src, web_flow.dst, web_flow.proto, web_flow.inbound) == (
            APP_IP, REMOTE, 6, False,
        )  # fmt: skip
        assert web_flow.tx_packets >= 3 and web_flow.rx_packets >= 3
        assert web_flow.rx_bytes > len("flows\n") and web_flow.start <= web_flow.end

        mdns = _find(records, 7, True, 5353)
        assert mdns is not None, records
        assert (mdns.src, mdns.dst, mdns.proto, mdns.tx_packets, mdns.tx_bytes) == (
            APP_IP, REMOTE, 17, 3, 3 * 68,
        )  # fmt: skip

        implicit = _find(records, 0, True, 9090)
        assert implicit is not None and implicit.proto == 6 and implicit.tx_packets >= 1, records

        (inbound,) = [r for r in records if r.acl_id == 2]
        assert inbound.inbound and not inbound.drop
        assert (inbound.src, inbound.sport, inbound.dst) == (APP_IP, 8000, REMOTE)
        assert inbound.rx_packets >= 3 and inbound.tx_packets >= 3
    finally:
        stop.set()
        await task
        await configurator.delete(item)
        await nft.close()
