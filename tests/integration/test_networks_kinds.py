"""Switch and air-gapped network instances with real packets (root; namespaces made here).

- A switch instance bridges a node port to an "outside" namespace whose dnsmasq hands out
  addresses: an app on the instance (a namespace on the bridge, as a VM's DHCP client would be)
  leases an outside address and reaches the outside with it, no NAT in between, as far as its
  ACL allows; the node learns that address from the DHCP answer its firewall logs.
- An air-gapped local instance (no port) connects its two apps as their ACLs say and nothing
  else: an allowed port passes with the caller's own address, others are dropped either way,
  the node's own listeners are out of reach, and there is no way out.

The agent runs its network reconciler in the node's namespace (bridges, firewall; no workloads:
the apps are stand-ins at the addresses the plan gives them).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from agent.drivers.conntrack import NfConntrack
from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.netlink import NetlinkDriver
from agent.drivers.nflog import NflogListener
from agent.drivers.nft import LibNft, NftSettings
from agent.model.acl import Ace, AceMatch
from agent.model.config import AppInstance, AppInterface, NetworkInstance, NodeConfig
from agent.model.configitems import parse_items
from agent.model.ports import Port
from agent.model.secret import Secret
from agent.reconcile.acerules import FLOW_MARK, FLOW_MARK_MASK
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.firewall import DHCP_GROUP
from agent.reconcile.netplan import NetPlan
from agent.reconcile.networks import Networks
from agent.reconcile.node import NodeReconciler
from agent.reconcile.records import RecordBook
from agent.reconcile.switchlearn import SNAPLEN, SwitchAddresses
from tests.integration.nshelpers import app_standin, ask, in_ns, ip, serve_who, wait_listening
from tests.integration.prereqs import netns_missing

DEVICE = "6d3b3b4e-8a3c-4c47-9d41-0000000f0001"
NI = "6d3b3b4e-8a3c-4c47-9d41-0000000f0002"
APPS = ["6d3b3b4e-8a3c-4c47-9d41-0000000f00a1", "6d3b3b4e-8a3c-4c47-9d41-0000000f00a2"]
NF6 = "/proc/sys/net/bridge/bridge-nf-call-ip6tables"
# One UDP datagram over IPv6: received on argv[1] within 5 s ("<source port> <data>"; exit 1 if
# none), or sent from port argv[1] to argv[2]:argv[3] every 0.2 s, 20 times (the receiver may
# still be starting).
UDP_RECV = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "s.bind(('::', int(sys.argv[1])))\n"
    "s.settimeout(5)\n"
    "try:\n"
    "    data, peer = s.recvfrom(64)\n"
    "except TimeoutError:\n"
    "    sys.exit(1)\n"
    "print(peer[1], data.decode())\n"
)
UDP_SEND = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
    "s.bind(('::', int(sys.argv[1])))\n"
    "for _ in range(20):\n"
    "    s.sendto(b'hi', (sys.argv[2], int(sys.argv[3])))\n"
    "    time.sleep(0.2)\n"
)


@dataclass
class Site:
    tag: str
    node_ns: str
    rec: NodeReconciler
    made: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, name: str) -> str:
        made = f"ekd-{self.tag}-{name}"
        ip("netns", "add", made)
        ip("-n", made, "link", "set", "lo", "up")
        self.made.append(made)
        return made


@pytest.fixture
async def site(
    require_service: Callable[[str, str], NoReturn], tmp_path: Path
) -> AsyncIterator[Site]:
    why = netns_missing({"nft": "nftables", "dnsmasq": "dnsmasq-base", "busybox": "busybox"},
                        ("nftables", "pyroute2"))  # fmt: skip
    if why is not None:
        require_service("network namespaces, nftables, dnsmasq, busybox", why)
    tag = uuid.uuid4().hex[:6]
    node_ns = f"ekd-{tag}-node"
    await asyncio.to_thread(ip, "netns", "add", node_ns)
    await asyncio.to_thread(ip, "-n", node_ns, "link", "set", "lo", "up")
    name = f"kd{tag}"
    netlink = NetlinkDriver(name, node_ns)
    nft = LibNft(NftSettings(name, netns=node_ns))
    nets = Networks(netlink, FakeContainerRuntime(name), RecordBook(tmp_path / "net"), nft=nft)
    rec = NodeReconciler(RuntimeItems(), networks=nets,
                         settings=EngineSettings(resync_interval=3600))  # fmt: skip
    s = Site(tag, node_ns, rec, [node_ns])
    try:
        yield s
    finally:
        for proc in s.procs:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        await netlink.close()
        await nft.close()
        for ns in reversed(s.made):
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", ns], check=False,
                                    capture_output=True)  # fmt: skip


def _app(n: int, iface: AppInterface) -> AppInstance:
    return AppInstance(APPS[n], "1", f"app{n}", True, 1 << 20, 1, 1, 0, (iface,), (), 0, 0,
                       Secret(), False, 0, 0)  # fmt: skip


async def test_a_switch_instance_hands_out_outside_addresses(site: Site, tmp_path: Path) -> None:
    outside = await asyncio.to_thread(site.ns, "out")
    await asyncio.to_thread(ip, "-n", site.node_ns, "link", "add", "sw0", "type", "veth", "peer",
                            "name", "o0", "netns", outside)  # fmt: skip
    for argv in ((site.node_ns, "link", "set", "sw0", "up"),
                 (outside, "addr", "add", "192.0.2.1/24", "dev", "o0"),
                 (outside, "link", "set", "o0", "up")):  # fmt: skip
        await asyncio.to_thread(ip, "-n", *argv)
    site.procs.append(await asyncio.to_thread(subprocess.Popen, [
        "ip", "netns", "exec", outside, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
        "--port=0", "--interface=o0", "--bind-interfaces", "--no-ping", "--pid-file=",
        f"--dhcp-leasefile={tmp_path / 'leases'}", "--dhcp-range=192.0.2.100,192.0.2.150,1h",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    for port_no in (8080, 9090):
        site.procs.append(await asyncio.to_thread(serve_who, outside, port_no))
    port = Port("sw0", "sw0", False, True, 0, ("all", "lan"), "none")
    ni = NetworkInstance(NI, "1", "lan", 1, True, "lan", 1, "", "", "", "", (), (), 0)
    web = Ace(1, "", 0, (AceMatch("ip", "192.0.2.0/24"), AceMatch("protocol", "tcp"),
                         AceMatch("fport", "8080")), ())  # fmt: skip
    # IPv6 remotes: 8087 to the outside's IPv6 address, 8088 to another one only.
    web6 = [
        Ace(n, "", 0, (AceMatch("ip", a), AceMatch("protocol", "tcp"), AceMatch("fport", p)), ())
        for n, a, p in ((2, "fd00:e5::1/128", "8087"), (3, "fd00:e5::99/128", "8088"))
    ]
    app = _app(0, AppInterface("eth0", NI, "", "", (web, *web6), 0))
    config = NodeConfig(DEVICE, "1", 0.0, parse_items([]), apps={app.id: app},
                        network_instances={NI: ni}, ports={"sw0": port})  # fmt: skip
    # Bridged IPv6 off in the node's namespace: the instance's bridge turns it on.
    await asyncio.to_thread(in_ns, site.node_ns, "sh", "-c", f"echo 0 > {NF6}")
    assert await site.rec.apply(config, 30), site.rec.report
    layout = site.rec.layout
    assert layout is not None
    bridge = layout.instances[NI].bridge
    shown = await asyncio.to_thread(in_ns, site.node_ns, "ip", "-o", "link", "show", "sw0")
    assert f"master {bridge}" in shown.stdout  # the port is the instance's
    app_ns = f"ekd-{site.tag}-app"
    site.made.append(app_ns)
    vif = layout.vifs[(app.id, 0)]  # as the agent would attach it (the source guard's)
    await asyncio.to_thread(app_standin, site.node_ns, app_ns, bridge, vif.host_name,
                            mac=vif.mac)  # fmt: skip
    # The firewall logs the DHCP answers crossing the bridge: the node learns the app's address.
    learner = SwitchAddresses(NflogListener(DHCP_GROUP, site.node_ns, copy_range=SNAPLEN))
    await learner.nflog.start()
    script = tmp_path / "udhcpc.sh"
    script.write_text('#!/bin/sh\n[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"\n'
                      "exit 0\n")  # fmt: skip
    script.chmod(0o755)
    got = await asyncio.to_thread(in_ns, app_ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q",
                                  "-t", "5", "-s", str(script), timeout=60)  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    leased = await asyncio.to_thread(in_ns, app_ns, "ip", "-4", "-o", "addr", "show", "eth0")
    assert "192.0.2.1" in leased.stdout  # an outside address (.100-.150)
    address = leased.stdout.split("inet ", 1)[1].split("/", 1)[0]
    try:
        for _ in range(50):
            learner.feed(learner.nflog.drain(), layout)
            if learner.address(app.id, 0):
                break
            await asyncio.sleep(0.1)
        assert learner.address(app.id, 0) == address
    finally:
        await learner.nflog.close()
    who = await asyncio.to_thread(ask, app_ns, "192.0.2.1", 8080)
    assert who.returncode == 0 and who.stdout.strip() == address  # bridged, not NATed
    # The allowing ACE marked the connection for flow logs, as on a local instance.
    ct = NfConntrack(site.node_ns)
    try:
        marked = await ct.dump(FLOW_MARK, FLOW_MARK_MASK)
    finally:
        await ct.close()
    assert any(e.orig.src == address and e.orig.dport == 8080 and e.mark == FLOW_MARK | 1
               for e in marked), marked  # fmt: skip
    # The instance's ACL holds (its chains reached by the app's MAC): no ACE allows 9090.
    assert (await asyncio.to_thread(ask, app_ns, "192.0.2.1", 9090)).returncode != 0
    # IPv6 meets the same chains: ICMPv6 is always allowed, TCP to a port no ACE allows is
    # dropped (it would pass with bridged IPv6 left off).
    await check_switch_ipv6(site, outside, app_ns)
    # DHCPv6 passes both ways, as EVE's implicit allows (the server's answer by its port).
    await check_switch_dhcpv6(outside, app_ns)
    # An address the app sets itself is learnt from its ARP (which the source guard logs).
    await check_learnt_from_arp(site, app_ns, app.id, layout)


def _udp(receiver: str, port: int, sender: str, sport: int, address: str) -> str | None:
    """A datagram from ``sender``'s ``sport`` to ``address``:``port`` in ``receiver``: what
    arrived ("<source port> hi"), None if nothing did."""
    with subprocess.Popen(["ip", "netns", "exec", receiver, "python3", "-c", UDP_RECV, str(port)],
                          stdout=subprocess.PIPE, text=True) as recv:  # fmt: skip
        send = subprocess.Popen(["ip", "netns", "exec", sender, "python3", "-c", UDP_SEND,
                                 str(sport), address, str(port)])  # fmt: skip
        try:
            out, _ = recv.communicate(timeout=30)
        finally:
            send.kill()
            send.wait()
    return out.strip() if recv.returncode == 0 else None


async def check_switch_dhcpv6(outside: str, app_ns: str) -> None:
    # A server's datagram to the client that is no reply conntrack knows (as an answer to a
    # multicast solicit is not), then the app to a server (from another port than 546: the
    # first exchange's reply direction would pass on conntrack alone).
    assert await asyncio.to_thread(_udp, app_ns, 546, outside, 547, "fd00:e5::2") == "547 hi"
    assert await asyncio.to_thread(_udp, outside, 547, app_ns, 5460, "fd00:e5::1") == "5460 hi"
    # Other UDP ports stay shut both ways.
    assert await asyncio.to_thread(_udp, outside, 549, app_ns, 5461, "fd00:e5::1") is None
    assert await asyncio.to_thread(_udp, app_ns, 5462, outside, 548, "fd00:e5::2") is None


async def check_learnt_from_arp(site: Site, app_ns: str, app_id: str, layout: NetPlan) -> None:
    learner = SwitchAddresses(NflogListener(DHCP_GROUP, site.node_ns, copy_range=SNAPLEN))
    await learner.nflog.start()
    try:
        for argv in (("addr", "flush", "dev", "eth0", "scope", "global"),
                     ("addr", "add", "192.0.2.77/24", "dev", "eth0"),
                     ("neigh", "flush", "dev", "eth0")):  # fmt: skip
            await asyncio.to_thread(ip, "-n", app_ns, *argv)
        # The ACE lets it reach 8080 outside: its ARP for 192.0.2.1 names 192.0.2.77.
        who = await asyncio.to_thread(ask, app_ns, "192.0.2.1", 8080)
        assert who.returncode == 0 and who.stdout.strip() == "192.0.2.77", who
        for _ in range(50):
            learner.feed(learner.nflog.drain(), layout)
            if learner.address(app_id, 0) == "192.0.2.77":
                break
            await asyncio.sleep(0.1)
        assert learner.address(app_id, 0) == "192.0.2.77"
    finally:
        await learner.nflog.close()


async def check_switch_ipv6(site: Site, outside: str, app_ns: str) -> None:
    assert (await asyncio.to_thread(in_ns, site.node_ns, "cat", NF6)).stdout.strip() == "1"
    for ns, dev, address in ((outside, "o0", "fd00:e5::1/64"), (app_ns, "eth0", "fd00:e5::2/64")):
        await asyncio.to_thread(ip, "-n", ns, "addr", "add", address, "dev", dev, "nodad")
    for port_no in (8086, 8087, 8088):
        site.procs.append(await asyncio.to_thread(serve_who, outside, port_no, "::"))
        await asyncio.to_thread(wait_listening, ["ip", "netns", "exec", outside], "::1", port_no)
    ping = await asyncio.to_thread(in_ns, app_ns, "ping", "-6", "-c", "1", "-W", "5", "fd00:e5::1")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert (await asyncio.to_thread(ask, app_ns, "fd00:e5::1", 8086)).returncode != 0
    # The ACEs' IPv6 addresses are matched (ip6): 8087 is allowed to this address, 8088 only
    # to another one (it once passed: the rule was rendered without its address).
    who = await asyncio.to_thread(ask, app_ns, "fd00:e5::1", 8087)
    assert who.returncode == 0 and who.stdout.strip() == "fd00:e5::2", who
    assert (await asyncio.to_thread(ask, app_ns, "fd00:e5::1", 8088)).returncode != 0


async def test_an_air_gapped_instance_connects_its_apps_and_nothing_else(site: Site) -> None:
    ni = NetworkInstance(NI, "1", "island", 2, True, "", 1, "10.60.0.0/24", "10.60.0.1",
                         "10.60.0.100", "10.60.0.150", (), (), 0)  # fmt: skip
    to_two = Ace(1, "", 0, (AceMatch("ip", "10.60.0.12"), AceMatch("protocol", "tcp"),
                            AceMatch("fport", "8080")), ())  # fmt: skip
    apps = [
        _app(0, AppInterface("eth0", NI, "10.60.0.11", "", (to_two,), 0)),
        _app(1, AppInterface("eth0", NI, "10.60.0.12", "", (), 0)),  # no ACE: only replies
    ]
    config = NodeConfig(DEVICE, "1", 0.0, parse_items([]), apps={a.id: a for a in apps},
                        network_instances={NI: ni})  # fmt: skip
    assert await site.rec.apply(config, 30), site.rec.report
    layout = site.rec.layout
    assert layout is not None and not layout.instances[NI].ports
    bridge = layout.instances[NI].bridge
    one, two = f"ekd-{site.tag}-a1", f"ekd-{site.tag}-a2"
    for n, (app_ns, address) in enumerate(((one, "10.60.0.11"), (two, "10.60.0.12"))):
        site.made.append(app_ns)
        vif = layout.vifs[(APPS[n], 0)]  # as the agent would attach it (the source guard's)
        await asyncio.to_thread(app_standin, site.node_ns, app_ns, bridge, vif.host_name,
                                f"{address}/24", "10.60.0.1", vif.mac)  # fmt: skip
    for app_ns, port in ((two, 8080), (two, 9090), (one, 8080)):
        site.procs.append(await asyncio.to_thread(serve_who, app_ns, port))
    site.procs.append(await asyncio.to_thread(serve_who, site.node_ns, 2222))
    await asyncio.sleep(0.5)
    who = await asyncio.to_thread(ask, one, "10.60.0.12", 8080)
    assert who.returncode == 0 and who.stdout.strip() == "10.60.0.11"  # its ACL allows it
    assert (await asyncio.to_thread(ask, one, "10.60.0.12", 9090)).returncode != 0  # not that
    assert (await asyncio.to_thread(ask, two, "10.60.0.11", 8080)).returncode != 0  # no ACE
    assert (await asyncio.to_thread(ask, one, "10.60.0.1", 2222)).returncode != 0  # the node
    nowhere = await asyncio.to_thread(ask, one, "192.0.2.1", 8080)
    assert nowhere.returncode != 0  # no port: no way out
    # An app that takes another address or MAC is held by the source guard (no ACL chain
    # would know it: without the guard the forward hook's policy would let it through).
    for change, undo in (
        (("addr", "replace", "10.60.0.13/24", "dev", "eth0"),
         ("addr", "del", "10.60.0.13/24", "dev", "eth0")),
        (("link", "set", "eth0", "address", "02:00:00:00:00:99"),
         ("link", "set", "eth0", "address", layout.vifs[(APPS[0], 0)].mac)),
    ):  # fmt: skip
        if change[0] == "addr":
            await asyncio.to_thread(ip, "-n", one, "addr", "flush", "dev", "eth0")
        await asyncio.to_thread(ip, "-n", one, *change)
        if change[0] == "addr":
            await asyncio.to_thread(ip, "-n", one, "route", "replace", "default", "via",
                                    "10.60.0.1")  # fmt: skip
        spoofed = await asyncio.to_thread(ask, one, "10.60.0.12", 8080)
        assert spoofed.returncode != 0, f"{change}: {spoofed.stdout}"
        await asyncio.to_thread(ip, "-n", one, *undo)
        if change[0] == "addr":
            await asyncio.to_thread(ip, "-n", one, "addr", "add", "10.60.0.11/24", "dev", "eth0")
            await asyncio.to_thread(ip, "-n", one, "route", "replace", "default", "via",
                                    "10.60.0.1")  # fmt: skip
        back = await asyncio.to_thread(ask, one, "10.60.0.12", 8080)
        assert back.returncode == 0 and back.stdout.strip() == "10.60.0.11", back
    counters = await site.rec.networks.firewall.counters()  # type: ignore[union-attr]
    assert counters[f"spoof:{APPS[0]}:0:ip"][0] > 0
    assert counters[f"spoof:{APPS[0]}:0:mac"][0] > 0


async def test_on_a_local_instance_the_receivers_acl_decides_too(site: Site) -> None:
    # EVE's ACEs work both ways: between two apps, the sender's ACL must allow the receiver
    # and the receiver's (mirrored: remote end as source) the sender.
    far = await asyncio.to_thread(site.ns, "far")  # the port's other end
    await asyncio.to_thread(ip, "-n", site.node_ns, "link", "add", "up0", "type", "veth", "peer",
                            "name", "o0", "netns", far)  # fmt: skip
    for argv in (("addr", "add", "192.0.2.11/24", "dev", "up0"), ("link", "set", "up0", "up")):
        await asyncio.to_thread(ip, "-n", site.node_ns, *argv)
    port = Port("up0", "up0", True, True, 0, ("all", "uplink"), "none")
    ni = NetworkInstance(NI, "1", "lan", 2, True, "uplink", 1, "10.61.0.0/24", "10.61.0.1",
                         "10.61.0.100", "10.61.0.150", (), (), 0)  # fmt: skip
    m = AceMatch
    to_two = Ace(1, "", 0, (m("ip", "10.61.0.12"), m("protocol", "tcp"), m("fport", "8080")), ())
    outside = Ace(1, "", 0, (m("ip", "198.51.100.0/24"),), ())
    from_one = Ace(2, "", 0, (m("ip", "10.61.0.11"), m("protocol", "tcp"), m("lport", "8080")),
                   ())  # fmt: skip

    def config(version: str, *acls: Ace) -> NodeConfig:
        apps = [
            _app(0, AppInterface("eth0", NI, "10.61.0.11", "", (to_two,), 0)),
            _app(1, AppInterface("eth0", NI, "10.61.0.12", "", acls, 0)),
        ]
        return NodeConfig(DEVICE, version, 0.0, parse_items([]), apps={a.id: a for a in apps},
                          network_instances={NI: ni}, ports={"up0": port})  # fmt: skip

    assert await site.rec.apply(config("1", outside), 30), site.rec.report
    layout = site.rec.layout
    assert layout is not None and layout.instances[NI].ports
    bridge = layout.instances[NI].bridge
    one, two = f"ekd-{site.tag}-l1", f"ekd-{site.tag}-l2"
    for n, (app_ns, address) in enumerate(((one, "10.61.0.11"), (two, "10.61.0.12"))):
        site.made.append(app_ns)
        vif = layout.vifs[(APPS[n], 0)]
        await asyncio.to_thread(app_standin, site.node_ns, app_ns, bridge, vif.host_name,
                                f"{address}/24", "10.61.0.1", vif.mac)  # fmt: skip
    site.procs.append(await asyncio.to_thread(serve_who, two, 8080, "::"))
    await asyncio.to_thread(wait_listening, ["ip", "netns", "exec", two], "::1", 8080)
    # IPv6 addresses the apps gave themselves: their ACLs name only IPv4 addresses, so
    # nothing passes over IPv6 (it once met no chain at all).
    for app_ns, address in ((one, "fd00:61::11/64"), (two, "fd00:61::12/64")):
        await asyncio.to_thread(ip, "-n", app_ns, "addr", "add", address, "dev", "eth0", "nodad")
    # The sender's ACL allows it, the receiver's names only an outside network: dropped, and
    # counted as the receiver's ingress drop.
    assert (await asyncio.to_thread(ask, one, "10.61.0.12", 8080)).returncode != 0
    counters = await site.rec.networks.firewall.counters()  # type: ignore[union-attr]
    assert counters[f"ace-in:{APPS[1]}:0:0"][0] > 0
    # The receiver's ACL names the sender (its port as the local one): through, with the
    # sender's own address (no NAT on the instance).
    assert await site.rec.apply(config("2", outside, from_one), 30), site.rec.report
    who = await asyncio.to_thread(ask, one, "10.61.0.12", 8080)
    assert who.returncode == 0 and who.stdout.strip() == "::ffff:10.61.0.11", who
    assert (await asyncio.to_thread(ask, one, "fd00:61::12", 8080)).returncode != 0
    counters = await site.rec.networks.firewall.counters()  # type: ignore[union-attr]
    assert counters[f"ace:{APPS[0]}:0:0"][0] > 0  # the sender's implicit drop took the IPv6
