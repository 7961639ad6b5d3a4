"""One contract for both netlink drivers: FakeNetlink and NetlinkDriver on the kernel.

The real half runs as root in network namespaces the test makes itself, named
``nlt<hex>-...``: one plays the node's (the driver works in it as production works in the
root namespace), others the containers' (a named namespace, or a ``unshare --net sleep``
process reached as ``/proc/<pid>/ns/net``, to kill as a container dies).  Teardown closes the
drivers, kills the processes and removes the namespaces, also when the test failed; nothing in
the root namespace is touched.  Traffic is checked with ICMP echo sent from inside a namespace
by ``nsenter --net=... python3 -c ...`` (the test's own tool; the agent never runs one).
Without root, pyroute2 or namespaces the real half fails when services are required (CI,
``make test``) and skips otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any, NoReturn

import pytest

from agent.drivers.errors import NotFoundError, PermanentError
from agent.drivers.netlink import (
    MAIN_TABLE,
    LinkKind,
    Netlink,
    NetlinkDriver,
    Route,
    link_name,
)
from agent.drivers.netlink_fake import FakeNetlink, FakeNetworkHost
from tests.integration.prereqs import netns_missing

#: A raw-socket ICMP echo, run inside a namespace: exit 0 when ``argv[1]`` answers within 3 s.
PING = """
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
ident, body = os.getpid() & 0xFFFF, b"eve-agent-ping"
pkt = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + body
pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.3)
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    s.sendto(pkt, (sys.argv[1], 0))
    try:
        while True:
            data, (src, _) = s.recvfrom(2048)
            icmp = data[(data[0] & 15) * 4:]
            if src == sys.argv[1] and icmp[0] == 0 and icmp[4:6] == pkt[4:6]:
                sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
"""


@dataclass
class Env:
    kind: str
    node: str
    drv: Netlink
    #: A new named namespace (a container's); returns its name.
    make_netns: Callable[[], Awaitable[str]]
    #: A new "container": a process in a namespace of its own; returns its /proc/<pid>/ns/net
    #: path and a coroutine function that kills it (the namespace dies).
    make_container: Callable[[], Awaitable[tuple[str, Callable[[], Awaitable[None]]]]]
    #: A link the agent did not make: (netns or None for the node's, name, "bridge" or "veth").
    add_foreign: Callable[[str | None, str, str], Awaitable[None]]
    add_foreign_route: Callable[[Route], Awaitable[None]]
    #: Another node's driver in the same namespace, or this node's in another namespace.
    driver: Callable[[str, str | None], Netlink]
    #: Real only: ICMP echo from a namespace (None: the node's) to an address.
    ping: Callable[[str | None, str], Awaitable[bool]] | None
    #: Real only: the sysctl as the kernel has it, read from outside the driver.
    read_forwarding: Callable[[str], Awaitable[bool]] | None
    break_connection: Callable[[], Awaitable[None]]
    drivers: list[Netlink] = field(default_factory=list)

    def name(self, kind: LinkKind, index: int) -> str:
        return self.drv.name(kind, index)


def _root_missing() -> str | None:
    return netns_missing({"nsenter": "util-linux", "unshare": "util-linux"})


async def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=20)


@pytest.fixture(params=["fake", "real"])
async def env(
    request: pytest.FixtureRequest, require_service: Callable[[str, str], NoReturn]
) -> AsyncIterator[Env]:
    node = f"contract-{uuid.uuid4().hex[:12]}"
    counter = itertools.count(1)
    if request.param == "fake":
        host = FakeNetworkHost()
        host.add_netns("node")
        fake = FakeNetlink(node, "node", host=host)

        async def fake_netns() -> str:
            name = f"c{next(counter)}"
            host.add_netns(name)
            return name

        async def fake_container() -> tuple[str, Callable[[], Awaitable[None]]]:
            path = f"/proc/{10000 + next(counter)}/ns/net"
            host.add_netns(path)

            async def kill() -> None:
                host.remove_netns(path)

            return path, kill

        async def fake_foreign(netns: str | None, name: str, kind: str) -> None:
            host.add_link(netns or "node", name, kind)

        async def fake_route(route: Route) -> None:
            host.add_route("node", route)

        async def nothing() -> None:
            return None

        yield Env("fake", node, fake, fake_netns, fake_container, fake_foreign, fake_route,
                  lambda n, ns: FakeNetlink(n, ns or "node", host=host), None, None,
                  nothing)  # fmt: skip
        return

    missing = _root_missing()
    if missing is not None:
        require_service("network namespaces", missing)
    from pyroute2 import IPRoute, netns

    prefix = f"nlt{uuid.uuid4().hex[:8]}"
    node_ns = f"{prefix}-node"
    made: list[str] = []
    procs: list[asyncio.subprocess.Process] = []
    try:
        await asyncio.to_thread(netns.create, node_ns)
        made.append(node_ns)
    except OSError as exc:
        require_service("network namespaces", f"cannot create one: {exc}")
    drv = NetlinkDriver(node, node_ns)
    drivers: list[Netlink] = [drv]

    async def real_netns() -> str:
        name = f"{prefix}-c{next(counter)}"
        await asyncio.to_thread(netns.create, name)
        made.append(name)
        return name

    async def real_container() -> tuple[str, Callable[[], Awaitable[None]]]:
        proc = await asyncio.create_subprocess_exec("unshare", "--net", "sleep", "60")
        procs.append(proc)
        path = f"/proc/{proc.pid}/ns/net"
        ours = os.stat("/proc/self/ns/net").st_ino
        for _ in range(200):  # until unshare has switched before exec'ing sleep
            if os.stat(path).st_ino != ours:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("unshare --net did not make a namespace")

        async def kill() -> None:
            proc.kill()
            await proc.wait()

        return path, kill

    def in_ns(netns_name: str | None, fn: Callable[[Any], None]) -> None:
        with IPRoute(netns=netns_name or node_ns, flags=0) as ipr:
            fn(ipr)

    async def real_foreign(netns_name: str | None, name: str, kind: str) -> None:
        # No dummy module on our CI kernels: a veth pair (its peer named <name>x) stands in.
        extra = {"peer": f"{name}x"} if kind == "veth" else {}
        await asyncio.to_thread(
            in_ns, netns_name, lambda ipr: ipr.link("add", ifname=name, kind=kind, **extra)
        )

    async def real_route(route: Route) -> None:
        def add(ipr: Any) -> None:
            (dev,) = ipr.link("get", ifname=route.dev)
            ipr.route("add", dst=str(route.dst.network_address), dst_len=route.dst.prefixlen,
                      oif=dev["index"], table=route.table, proto=4)  # fmt: skip

        await asyncio.to_thread(in_ns, None, add)

    def driver(n: str, ns: str | None) -> Netlink:
        d = NetlinkDriver(n, ns or node_ns)
        drivers.append(d)
        return d

    async def ping(ns: str | None, address: str) -> bool:
        where = ns if ns is not None and "/" in ns else f"/run/netns/{ns or node_ns}"
        done = await _run("nsenter", f"--net={where}", sys.executable, "-c", PING, address)
        return done.returncode == 0

    async def read_forwarding(ifname: str) -> bool:
        done = await _run("nsenter", f"--net=/run/netns/{node_ns}", "cat",
                          f"/proc/sys/net/ipv4/conf/{ifname}/forwarding")  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip() == b"1"

    async def break_connection() -> None:
        await drv._ns.run(lambda ipr: ipr.close())  # the driver must notice and reopen

    e = Env("real", node, drv, real_netns, real_container, real_foreign, real_route, driver,
            ping, read_forwarding, break_connection, drivers)  # fmt: skip
    try:
        yield e
    finally:
        for d in drivers:
            with contextlib.suppress(Exception):
                await d.close()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for name in made:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(netns.remove, name)
        leftover = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        assert not leftover, f"namespaces left behind: {leftover}"


def ifs(*addresses: str) -> list[Any]:
    return [ip_interface(a) for a in addresses]


async def test_bridge_addresses_idempotent_and_changed(env: Env) -> None:
    drv = env.drv
    br = env.name(LinkKind.BRIDGE, 1)
    info = await drv.ensure_bridge(br, mtu=1400, mac="02:00:5e:00:00:01",
                                   addresses=ifs("10.61.0.1/24", "fd61::1/64"))  # fmt: skip
    assert info.name == br and info.kind == "bridge" and info.up and info.master is None
    assert info.mtu == 1400 and info.mac == "02:00:5e:00:00:01"
    assert info.addresses == tuple(ifs("10.61.0.1/24", "fd61::1/64"))
    again = await drv.ensure_bridge(br, mtu=1400, mac="02:00:5e:00:00:01",
                                    addresses=ifs("fd61::1/64", "10.61.0.1/24"))  # fmt: skip
    assert again == info
    assert await drv.link(br) == info
    # Another set: one address gone, one with another prefix length, one new.
    changed = await drv.ensure_bridge(br, addresses=ifs("10.61.0.1/16", "10.62.0.1/24"))
    assert changed.addresses == tuple(ifs("10.61.0.1/16", "10.62.0.1/24"))
    assert changed.mtu == 1400 and changed.ifindex == info.ifindex  # mtu None: left as it was
    assert await drv.addresses(br) == changed.addresses
    down = await drv.ensure_bridge(br, addresses=(), up=False)
    assert not down.up and down.addresses == ()
    assert [i.name for i in await drv.list_owned()] == [br]
    with pytest.raises(PermanentError, match="MAC"):
        await drv.ensure_bridge(br, mac="01:00:5e:00:00:01")  # multicast
    with pytest.raises(NotFoundError):
        await drv.addresses(env.name(LinkKind.BRIDGE, 2))


async def test_veth_into_a_namespace_carries_traffic(env: Env, loop_watch: Any) -> None:
    drv = env.drv
    br, vif, peer = (env.name(k, 7) for k in (LinkKind.BRIDGE, LinkKind.VIF, LinkKind.PEER))
    await drv.ensure_bridge(br, addresses=ifs("10.63.0.1/24", "198.51.100.1/32"))
    await drv.set_forwarding(br, True)
    container = await env.make_netns()
    default = (ip_network("0.0.0.0/0"), ip_address("10.63.0.1"))
    kwargs: dict[str, Any] = dict(
        bridge=br, mac="02:00:00:63:00:02", peer_netns=container,
        peer_addresses=ifs("10.63.0.2/24"), peer_routes=[default], mtu=1450,
    )  # fmt: skip
    info = await drv.ensure_veth(vif, peer, **kwargs)
    assert info.host.name == vif and info.host.kind == "veth" and info.host.master == br
    assert info.host.up and info.host.mtu == 1450
    assert info.peer.name == "eth0" and info.peer.mac == "02:00:00:63:00:02"
    assert info.peer.addresses == tuple(ifs("10.63.0.2/24")) and info.peer.up
    assert info.peer.mtu == 1450 and info.peer.kind == "veth"
    assert await drv.link(peer) is None  # moved away
    inside = env.driver(env.node, container)
    assert await inside.link("eth0") == info.peer
    assert await inside.routes() == [Route(default[0], default[1], "eth0", MAIN_TABLE)]
    assert await drv.ensure_veth(vif, peer, **kwargs) == info  # in place: nothing changes
    assert [i.name for i in await drv.list_owned()] == [br, vif]
    if env.ping is not None:
        assert await env.ping(container, "10.63.0.1"), "container -> bridge"
        assert await env.ping(container, "198.51.100.1"), "container -> default route"
        assert await env.ping(None, "10.63.0.2"), "node -> container"
    # New addresses and no route: applied in place.
    kwargs.update(peer_addresses=ifs("10.63.0.3/24"), peer_routes=[])
    moved = await drv.ensure_veth(vif, peer, **kwargs)
    assert moved.peer.addresses == tuple(ifs("10.63.0.3/24"))
    assert moved.peer.ifindex == info.peer.ifindex and moved.host.ifindex == info.host.ifindex
    assert await inside.routes() == []
    if env.ping is not None:
        assert await env.ping(None, "10.63.0.3")
        assert not await env.ping(container, "198.51.100.1"), "no route any more"
    assert loop_watch.longest < 0.05


async def test_veth_peer_stays_moves_and_is_recreated(env: Env) -> None:
    drv = env.drv
    vif, peer = env.name(LinkKind.VIF, 3), env.name(LinkKind.PEER, 3)
    here = await drv.ensure_veth(vif, peer, peer_addresses=ifs("10.64.0.2/24"))
    assert here.peer.name == peer and here.host.master is None
    assert [i.name for i in await drv.list_owned()] == [peer, vif]
    assert (await drv.link(peer)) == here.peer
    first = await env.make_netns()
    there = await drv.ensure_veth(vif, peer, peer_netns=first, peer_ifname="net1")
    assert there.peer.name == "net1" and there.host.ifindex == here.host.ifindex
    assert there.peer.addresses == ()
    assert await drv.link(peer) is None
    second = await env.make_netns()
    again = await drv.ensure_veth(vif, peer, peer_netns=second)
    assert again.peer.name == "eth0"
    assert await env.driver(env.node, first).link("net1") is None  # the old pair is gone
    assert await env.driver(env.node, second).link("eth0") == again.peer
    assert drv.netns is not None
    with pytest.raises(PermanentError, match="own namespace"):
        await drv.ensure_veth(vif, peer, peer_netns=drv.netns)


async def test_enslave_and_release_a_foreign_port(env: Env) -> None:
    drv = env.drv
    br = env.name(LinkKind.BRIDGE, 4)
    await drv.ensure_bridge(br)
    await env.add_foreign(None, "nlport0", "veth")
    await env.add_foreign(None, "nlbr0", "bridge")
    await drv.set_master("nlport0", br)
    await drv.set_master("nlport0", br)
    port = await drv.link("nlport0")
    assert port is not None and port.master == br and port.kind == "veth"
    await drv.set_master("nlport0", None)
    await drv.set_master("nlport0", None)
    port = await drv.link("nlport0")
    assert port is not None and port.master is None
    # Never touched otherwise: not listed, not deleted, no forwarding, no bridge of that name.
    assert [i.name for i in await drv.list_owned()] == [br]
    with pytest.raises(PermanentError, match="not this node's"):
        await drv.delete_link("nlport0")
    with pytest.raises(PermanentError, match="not this node's"):
        await drv.ensure_bridge("nlbr0")
    with pytest.raises(PermanentError, match="not this node's"):
        await drv.set_forwarding("nlport0", True)
    with pytest.raises(PermanentError, match="not this node's"):
        await drv.set_master("nlport0", "nlbr0")
    with pytest.raises(NotFoundError):
        await drv.set_master("nlport9", br)
    with pytest.raises(NotFoundError):
        await drv.set_master("nlport0", env.name(LinkKind.BRIDGE, 5))
    assert await drv.link("nlbr0") is not None and await drv.link("nlport0") is not None


async def test_a_port_of_a_foreign_bridge_is_refused(env: Env) -> None:
    drv = env.drv
    br = env.name(LinkKind.BRIDGE, 4)
    await drv.ensure_bridge(br)
    await env.add_foreign(None, "nlport2", "veth")
    other = env.driver("other-node", None)
    other_br = other.name(LinkKind.BRIDGE, 1)
    await other.ensure_bridge(other_br)
    await other.set_master("nlport2", other_br)
    with pytest.raises(PermanentError, match="not ours"):
        await drv.set_master("nlport2", br)
    with pytest.raises(PermanentError, match="not ours"):
        await drv.set_master("nlport2", None)
    assert (await drv.link("nlport2")).master == other_br  # type: ignore[union-attr]


async def test_delete_is_idempotent_and_takes_the_pair(env: Env) -> None:
    drv = env.drv
    br, vif, peer = (env.name(k, 2) for k in (LinkKind.BRIDGE, LinkKind.VIF, LinkKind.PEER))
    await drv.ensure_bridge(br, addresses=ifs("10.65.0.1/24"))
    container = await env.make_netns()
    await drv.ensure_veth(vif, peer, bridge=br, peer_netns=container)
    inside = env.driver(env.node, container)
    assert await inside.link("eth0") is not None
    await drv.delete_link(vif)
    await drv.delete_link(vif)
    assert await inside.link("eth0") is None
    await drv.delete_link(br)
    await drv.delete_link(br)
    await drv.delete_link(env.name(LinkKind.BRIDGE, 99))
    assert await drv.list_owned() == []


async def test_list_owned_sees_only_this_nodes_links(env: Env) -> None:
    drv = env.drv
    other = env.driver("another-node", None)
    mine, theirs = env.name(LinkKind.BRIDGE, 1), other.name(LinkKind.BRIDGE, 1)
    assert mine != theirs and not drv.is_ours(theirs) and drv.is_ours(mine)
    await drv.ensure_bridge(mine)
    await other.ensure_bridge(theirs)
    await env.add_foreign(None, "nlfor0", "veth")
    assert [i.name for i in await drv.list_owned()] == [mine]
    assert [i.name for i in await other.list_owned()] == [theirs]
    with pytest.raises(PermanentError):
        await drv.delete_link(theirs)
    assert await drv.link(theirs) is not None  # reading anything is fine


async def test_a_dead_container_or_missing_bridge_is_not_found(env: Env) -> None:
    drv = env.drv
    br, vif, peer = (env.name(k, 5) for k in (LinkKind.BRIDGE, LinkKind.VIF, LinkKind.PEER))
    await drv.ensure_bridge(br, addresses=ifs("10.66.0.1/24"))
    path, kill = await env.make_container()
    info = await drv.ensure_veth(vif, peer, bridge=br, peer_netns=path,
                                 peer_addresses=ifs("10.66.0.2/24"))  # fmt: skip
    assert info.peer.name == "eth0"
    if env.ping is not None:
        assert await env.ping(path, "10.66.0.1")
    await kill()
    for _ in range(100):  # the kernel destroys a dead namespace's links asynchronously
        if await drv.link(vif) is None:
            break
        await asyncio.sleep(0.05)
    assert await drv.link(vif) is None
    with pytest.raises(NotFoundError, match="namespace"):
        await drv.ensure_veth(vif, peer, bridge=br, peer_netns=path)
    with pytest.raises(NotFoundError, match=env.name(LinkKind.BRIDGE, 6)):
        await drv.ensure_veth(vif, peer, bridge=env.name(LinkKind.BRIDGE, 6))
    gone = env.driver(env.node, f"{drv.netns}-never")
    with pytest.raises(NotFoundError, match="namespace"):
        await gone.link("lo")


async def test_peer_name_taken_in_the_namespace(env: Env) -> None:
    drv = env.drv
    container = await env.make_netns()
    await env.add_foreign(container, "eth0", "veth")
    vif, peer = env.name(LinkKind.VIF, 8), env.name(LinkKind.PEER, 8)
    with pytest.raises(PermanentError, match="eth0"):
        await drv.ensure_veth(vif, peer, peer_netns=container)
    ok = await drv.ensure_veth(vif, peer, peer_netns=container, peer_ifname="eth1")
    assert ok.peer.name == "eth1"
    with pytest.raises(PermanentError, match="not a bridge"):
        await drv.ensure_bridge(vif)
    await drv.ensure_bridge(env.name(LinkKind.BRIDGE, 8))
    with pytest.raises(PermanentError, match="not a veth"):
        await drv.ensure_veth(env.name(LinkKind.BRIDGE, 8), peer)
    with pytest.raises(PermanentError, match="not this node's"):
        await drv.ensure_veth("veth0", peer)


async def test_forwarding_sysctl(env: Env) -> None:
    drv = env.drv
    br = env.name(LinkKind.BRIDGE, 9)
    await drv.ensure_bridge(br)
    assert await drv.forwarding(br) is False
    await drv.set_forwarding(br, True)
    await drv.set_forwarding(br, True)
    assert await drv.forwarding(br) is True
    if env.read_forwarding is not None:
        assert await env.read_forwarding(br) is True
    await drv.set_forwarding(br, False)
    assert await drv.forwarding(br) is False
    if env.read_forwarding is not None:
        assert await env.read_forwarding(br) is False
    with pytest.raises(NotFoundError):
        await drv.set_forwarding(env.name(LinkKind.BRIDGE, 10), True)
    with pytest.raises(NotFoundError):
        await drv.forwarding("nlnone0")


async def test_proxy_arp_sysctl(env: Env) -> None:
    drv = env.drv
    br = env.name(LinkKind.BRIDGE, 12)
    await drv.ensure_bridge(br)
    assert await drv.proxy_arp(br) is False
    await drv.set_proxy_arp(br, True)
    await drv.set_proxy_arp(br, True)
    assert await drv.proxy_arp(br) is True
    await drv.set_proxy_arp(br, False)
    assert await drv.proxy_arp(br) is False
    with pytest.raises(NotFoundError):
        await drv.set_proxy_arp(env.name(LinkKind.BRIDGE, 13), True)
    with pytest.raises(NotFoundError):
        await drv.set_proxy_arp("nlnone0", True, port=True)


async def test_bridge_filtering_sysctl(env: Env) -> None:
    paths = [f"/proc/sys/net/bridge/bridge-nf-call-{v}" for v in ("iptables", "ip6tables")]
    where = f"--net=/run/netns/{env.drv.netns}"
    if env.kind == "real":  # off first, so the driver has something to do
        for path in paths:
            await _run("nsenter", where, "sh", "-c", f"echo 0 > {path}")
    assert await env.drv.ensure_bridge_filtering() is True
    assert await env.drv.ensure_bridge_filtering() is True  # idempotent
    if env.kind == "real":
        for path in paths:
            done = await _run("nsenter", where, "cat", path)
            assert done.stdout.strip() == b"1", path


async def test_routes_are_ours_only(env: Env) -> None:
    drv = env.drv
    br = env.name(LinkKind.BRIDGE, 11)
    await drv.ensure_bridge(br, addresses=ifs("10.67.0.1/24"))
    table_route = Route(ip_network("10.99.0.0/16"), dev=br, table=1234)
    via = Route(ip_network("203.0.113.0/24"), gateway=ip_address("10.67.0.9"))
    for route in (table_route, via, table_route, via):
        await drv.ensure_route(route)
    assert sorted(await drv.routes(), key=str) == sorted(
        [table_route, Route(via.dst, via.gateway, br)], key=str
    )
    assert await drv.routes(1234) == [table_route]
    # Another protocol's route, and the bridge's connected route, are not ours to replace.
    foreign = Route(ip_network("10.98.0.0/16"), dev=br)
    await env.add_foreign_route(foreign)
    with pytest.raises(PermanentError, match="not ours"):
        await drv.ensure_route(foreign)
    with pytest.raises(PermanentError, match="not ours"):
        await drv.delete_route(foreign)
    with pytest.raises(PermanentError, match="not ours"):
        await drv.ensure_route(Route(ip_network("10.67.0.0/24"), dev=br))
    with pytest.raises(PermanentError, match="unreachable"):
        await drv.ensure_route(Route(ip_network("0.0.0.0/0"), gateway=ip_address("192.0.2.1")))
    with pytest.raises(NotFoundError):
        await drv.ensure_route(Route(ip_network("10.97.0.0/16"), dev="nlnone0"))
    for route in (table_route, via, table_route, via):
        await drv.delete_route(route)
    assert await drv.routes() == []


async def test_reopens_a_broken_socket(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    br = env.name(LinkKind.BRIDGE, 12)
    await env.drv.ensure_bridge(br)
    await env.break_connection()
    with caplog.at_level(logging.INFO, logger="agent.drivers.netlink"):
        assert [i.name for i in await env.drv.list_owned()] == [br]
    if env.kind == "real":
        assert "reopening" in caplog.text


#: Run by the test below inside a namespace of its own: the driver in its process's namespace.
IN_PROCESS_NS = """
import asyncio, ipaddress, sys
from agent.drivers.netlink import LinkKind, NetlinkDriver
async def main():
    drv = NetlinkDriver(sys.argv[1])
    br = drv.name(LinkKind.BRIDGE, 1)
    await drv.ensure_bridge(br, addresses=[ipaddress.ip_interface("10.68.0.1/24")])
    await drv.set_forwarding(br, True)
    print(br, [i.name for i in await drv.list_owned()], await drv.forwarding(br))
    await drv.close()
asyncio.run(main())
"""


async def test_the_process_namespace(require_service: Callable[[str, str], NoReturn]) -> None:
    """Production runs the driver in the agent's own namespace (``netns=None``): do that in a
    process that nsenter put into a test namespace."""
    missing = _root_missing()
    if missing is not None:
        require_service("network namespaces", missing)
    from pyroute2 import netns

    name = f"nlt{uuid.uuid4().hex[:8]}-proc"
    await asyncio.to_thread(netns.create, name)
    try:
        done = await _run("nsenter", f"--net=/run/netns/{name}", sys.executable, "-c",
                          IN_PROCESS_NS, "proc-node")  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        br = link_name("proc-node", LinkKind.BRIDGE, 1)
        assert done.stdout.decode().split() == [br, f"['{br}']", "True"]
        inside = NetlinkDriver("proc-node", name)
        try:
            info = await inside.link(br)
            assert info is not None and info.addresses == tuple(ifs("10.68.0.1/24"))
        finally:
            await inside.close()
    finally:
        await asyncio.to_thread(netns.remove, name)


async def test_port_addresses_are_only_the_agents_own(env: Env) -> None:
    """A port the config names (a veth stands in for a NIC): the agent adds what it is asked,
    removes only what it says it set, and routes through it as through its own links."""
    drv = env.drv
    await env.add_foreign(None, "port0", "veth")
    owned = await drv.ensure_port_addresses("port0", ifs("10.70.0.2/24"), mtu=1400)
    assert owned == tuple(ifs("10.70.0.2/24"))
    assert await drv.ensure_port_addresses("port0", ifs("10.70.0.2/24"), owned=owned) == owned
    info = await drv.link("port0")
    assert info is not None and info.up and info.mtu == 1400
    # An address someone else set (added here without keeping it as the agent's).
    await drv.ensure_port_addresses("port0", ifs("10.70.0.2/24", "192.0.2.9/24"), owned=owned)
    owned = await drv.ensure_port_addresses("port0", ifs("10.70.0.3/24"), owned=owned)
    assert owned == tuple(ifs("10.70.0.3/24"))
    assert set(await drv.addresses("port0")) == set(ifs("10.70.0.3/24", "192.0.2.9/24"))
    # Asked for an address that was there before: kept, but never the agent's to remove.
    owned = await drv.ensure_port_addresses("port0", ifs("192.0.2.9/24"), owned=owned)
    assert owned == ()
    assert await drv.ensure_port_addresses("port0", [], owned=owned) == ()
    assert await drv.addresses("port0") == tuple(ifs("192.0.2.9/24"))
    # A default route through the port, with the agent's protocol and its own metric.
    default = Route(ip_network("0.0.0.0/0"), ip_address("192.0.2.1"), dev="port0", metric=437)
    await drv.ensure_route(default)
    await drv.ensure_route(default)
    assert await drv.routes() == [default]
    await drv.delete_route(default)
    assert await drv.routes() == []
    with pytest.raises(NotFoundError):
        await drv.ensure_port_addresses("nlnone0", ifs("10.70.0.2/24"))
    br = env.name(LinkKind.BRIDGE, 13)
    await drv.ensure_bridge(br)
    with pytest.raises(PermanentError, match="own links"):
        await drv.ensure_port_addresses(br, ifs("10.70.0.2/24"))
