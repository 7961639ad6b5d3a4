"""An in-memory :class:`~agent.drivers.netlink_api.Netlink`: the same names, ownership rules
and errors as :class:`~agent.drivers.netlink.NetlinkDriver`, no kernel.

A :class:`FakeNetworkHost` is the kernel's side, shared by every fake driver of a test:
network namespaces by path (``/run/netns/<name>``, ``/proc/<pid>/ns/net``; the process's own
is :data:`ROOT`), their links (each namespace starts with a ``lo`` that is down), addresses,
masters, veth peers (deleting either side deletes both, so does removing the namespace of
either), per-link sysctl flags (forwarding, proxy ARP), and routes.  Connected routes are not
listed, but a route of ours at the place of one (same table, dst and metric as an up link's
subnet) is refused as the kernel refuses it.  Not modelled: a bridge's MTU and MAC following
its ports, routes going away when their link goes down, IPv6 duplicate address detection.

Test hooks: :meth:`FakeNetworkHost.add_netns` and :meth:`~FakeNetworkHost.remove_netns` (a
container starting and dying), :meth:`~FakeNetworkHost.add_link` (a link the agent did not make),
:meth:`~FakeNetworkHost.add_route` (a route of another protocol); :meth:`FakeNetlink.fail_next`
makes the next call of an operation raise the given error.
"""

from __future__ import annotations

import errno
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import ip_interface

from agent.drivers.errors import DriverError, NotFoundError, PermanentError
from agent.drivers.netlink_api import (
    MAIN_TABLE,
    RTPROT_AGENT,
    IPAddress,
    IPInterface,
    IPNetwork,
    LinkInfo,
    Naming,
    Route,
    VethInfo,
    check_ifname,
    check_mac,
    check_ours,
    default_metric,
    driver_error,
    managed,
    netns_path,
    node_tag,
)

#: The key of the process's own namespace.
ROOT = "/proc/self/ns/net"


@dataclass(eq=False)
class FakeLink:
    name: str
    ifindex: int
    kind: str | None
    mac: str
    mtu: int = 1500
    up: bool = False
    master: FakeLink | None = None
    addresses: list[IPInterface] = field(default_factory=list)
    #: Per-link IPv4 sysctl flags by name (``forwarding``, ``proxy_arp``); unset is off.
    sysctls: dict[str, bool] = field(default_factory=dict)
    #: A veth's other side and its namespace.
    peer: tuple[FakeNamespace, FakeLink] | None = None


@dataclass(eq=False)
class FakeNamespace:
    label: str
    links: list[FakeLink] = field(default_factory=list)
    #: (route, protocol); routes of other protocols come from :meth:`FakeNetworkHost.add_route`.
    routes: list[tuple[Route, int]] = field(default_factory=list)
    alive: bool = True
    bridge_filtering: bool = False
    _ifindex: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def get(self, name: str) -> FakeLink | None:
        return next((link for link in self.links if link.name == name), None)

    def new_link(self, name: str, kind: str | None, mac: str | None = None) -> FakeLink:
        link = FakeLink(name, next(self._ifindex), kind, mac or _random_mac())
        self.links.append(link)
        return link

    def info(self, link: FakeLink) -> LinkInfo:
        addrs = sorted((a for a in link.addresses if managed(a)), key=lambda a: (a.version, a))
        master = link.master.name if link.master is not None else None
        return LinkInfo(link.name, link.ifindex, link.kind, link.mtu, link.mac, master,
                        tuple(addrs), link.up)  # fmt: skip

    def drop(self, link: FakeLink) -> None:
        """Remove the link as the kernel does: ports released, its routes gone."""
        if link not in self.links:
            return
        self.links.remove(link)
        for other in self.links:
            if other.master is link:
                other.master = None
        self.routes = [(r, p) for r, p in self.routes if r.dev != link.name]


def _random_mac() -> str:
    octets = [0x02] + [random.randrange(256) for _ in range(5)]
    return ":".join(f"{o:02x}" for o in octets)


class FakeNetworkHost:
    """The namespaces, links and routes every fake driver of a test sees."""

    def __init__(self) -> None:
        self.namespaces: dict[str, FakeNamespace] = {}
        self.add_netns(ROOT)

    def add_netns(self, netns: str) -> FakeNamespace:
        """A new namespace at ``netns`` (a name or a path); lo only."""
        ns = FakeNamespace(netns)
        lo = ns.new_link("lo", None, "00:00:00:00:00:00")
        lo.mtu = 65536
        self.namespaces[netns_path(netns) if netns != ROOT else ROOT] = ns
        return ns

    def remove_netns(self, netns: str) -> None:
        """The namespace dies: its links go, and the other sides of its veth pairs."""
        ns = self.namespaces.pop(netns_path(netns), None)
        if ns is None:
            return
        ns.alive = False
        for link in list(ns.links):
            _delete(ns, link)

    def namespace(self, netns: str | None) -> FakeNamespace:
        """NotFoundError when it does not exist."""
        path = ROOT if netns is None else netns_path(netns)
        ns = self.namespaces.get(path)
        if ns is None or not ns.alive:
            raise driver_error(errno.ENOENT, f"network namespace {path}")
        return ns

    def add_link(self, netns: str | None, name: str, kind: str | None = "dummy") -> FakeLink:
        """A link the agent did not make."""
        ns = self.namespace(netns)
        if ns.get(name) is not None:
            raise ValueError(f"{name} exists")
        return ns.new_link(check_ifname(name), kind)

    def add_route(self, netns: str | None, route: Route, proto: int = 4) -> None:
        """A route of another protocol (default: static)."""
        self.namespace(netns).routes.append((route, proto))


def _delete(ns: FakeNamespace, link: FakeLink) -> None:
    ns.drop(link)
    if link.peer is not None:
        other_ns, other = link.peer
        link.peer = other.peer = None
        other_ns.drop(other)


def _sync_addresses(link: FakeLink, wanted: Sequence[IPInterface]) -> None:
    keep = [a for a in link.addresses if not managed(a)]
    link.addresses = keep + list(dict.fromkeys(ip_interface(w) for w in wanted))


def _converge(link: FakeLink, *, mtu: int | None, up: bool, mac: str | None = None) -> None:
    if mac is not None:
        link.mac = mac
    if mtu is not None:
        if not 68 <= mtu <= 65535:
            raise driver_error(errno.EINVAL, f"setting the MTU of {link.name}")
        link.mtu = mtu
    link.up = up


def _at(ns: FakeNamespace, route: Route) -> tuple[Route, int] | None:
    """The route at ``route``'s place; PermanentError when it is not ours (or connected)."""
    metric = default_metric(route.dst.version) if route.metric is None else route.metric
    for have, proto in ns.routes:
        have_metric = default_metric(have.dst.version) if have.metric is None else have.metric
        if have.dst == route.dst and have.table == route.table and have_metric == metric:
            if proto != RTPROT_AGENT:
                raise PermanentError(
                    f"route to {route.dst} in table {route.table}: held by a route of protocol "
                    f"{proto}, not ours"
                )
            return have, proto
    connected_metric = 0 if route.dst.version == 4 else 256
    for link in ns.links:
        for addr in link.addresses if link.up else ():
            if (addr.network, MAIN_TABLE, connected_metric) == (route.dst, route.table, metric):
                raise PermanentError(
                    f"route to {route.dst} in table {route.table}: held by a route of protocol "
                    "2, not ours"
                )
    return None


def _ensure_route(ns: FakeNamespace, route: Route) -> None:
    dev = None
    if route.dev is not None:
        dev = ns.get(route.dev)
        if dev is None:
            raise NotFoundError(f"route to {route.dst}: no link {route.dev}")
    if route.gateway is not None:
        candidates = [dev] if dev is not None else ns.links
        on_link = [
            link
            for link in candidates
            if link.up and any(route.gateway in a.network for a in link.addresses)
        ]
        if not on_link:
            raise driver_error(errno.ENETUNREACH, f"route to {route.dst}")
        dev = dev or on_link[0]
    assert dev is not None
    found = _at(ns, route)
    if found is not None:
        ns.routes.remove(found)
    ns.routes.append(
        (Route(route.dst, route.gateway, dev.name, route.table, route.metric), RTPROT_AGENT)
    )


def _delete_route(ns: FakeNamespace, route: Route) -> None:
    found = _at(ns, route)
    if found is not None:
        ns.routes.remove(found)


class FakeNetlink(Naming):
    """See the module docstring."""

    def __init__(
        self, node: str, netns: str | None = None, *, host: FakeNetworkHost | None = None
    ) -> None:
        node_tag(node)
        self._node = node
        self._netns = netns
        self.host = host if host is not None else FakeNetworkHost()
        self._failures: dict[str, DriverError] = {}
        self.calls: list[str] = []
        self.closed = False

    # --- test hooks
    def fail_next(self, operation: str, error: DriverError) -> None:
        """``operation``: a method name (``ensure_bridge``, ``ensure_veth``...)."""
        self._failures[operation] = error

    def _enter(self, operation: str) -> FakeNamespace:
        self.calls.append(operation)
        if self.closed:
            raise PermanentError("the netlink driver is closed")
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error
        return self.host.namespace(self._netns)

    def _ours(self, ns: FakeNamespace, name: str, what: str = "link") -> FakeLink | None:
        check_ours(self._node, name, what)
        return ns.get(name)

    # --- links
    async def ensure_bridge(
        self,
        name: str,
        *,
        mtu: int | None = None,
        mac: str | None = None,
        addresses: Sequence[IPInterface] = (),
        up: bool = True,
    ) -> LinkInfo:
        ns = self._enter("ensure_bridge")
        mac = check_mac(mac)
        link = self._ours(ns, name, "bridge") or ns.new_link(name, "bridge")
        if link.kind != "bridge":
            raise PermanentError(f"{name} exists as a {link.kind or 'device'}, not a bridge")
        _converge(link, mtu=mtu, up=up, mac=mac)
        _sync_addresses(link, addresses)
        return ns.info(link)

    async def delete_link(self, name: str) -> None:
        ns = self._enter("delete_link")
        link = self._ours(ns, name)
        if link is not None:
            _delete(ns, link)

    async def set_master(self, link: str, bridge: str | None) -> None:
        ns = self._enter("set_master")
        port = ns.get(check_ifname(link))
        br = self._ours(ns, bridge, "bridge") if bridge is not None else None
        if port is None:
            raise NotFoundError(f"no link {link}")
        if bridge is not None:
            if br is None:
                raise NotFoundError(f"no bridge {bridge}")
            if br.kind != "bridge":
                raise PermanentError(f"{bridge} is a {br.kind or 'device'}, not a bridge")
            if port is br:
                raise driver_error(errno.EOPNOTSUPP, f"setting the master to {bridge} of {link}")
        if port.master is br:
            return
        if port.master is not None and not self.is_ours(port.master.name):
            raise PermanentError(f"{link} is a port of {port.master.name}, which is not ours")
        port.master = br

    async def link(self, name: str) -> LinkInfo | None:
        ns = self._enter("link")
        link = ns.get(check_ifname(name))
        return None if link is None else ns.info(link)

    async def list_owned(self) -> list[LinkInfo]:
        ns = self._enter("list_owned")
        return sorted((ns.info(k) for k in ns.links if self.is_ours(k.name)), key=lambda i: i.name)

    async def addresses(self, ifname: str) -> tuple[IPInterface, ...]:
        info = await self.link(ifname)
        if info is None:
            raise NotFoundError(f"no link {ifname}")
        return info.addresses

    # --- veth
    async def ensure_veth(
        self,
        host_name: str,
        peer_name: str,
        *,
        bridge: str | None = None,
        mac: str | None = None,
        peer_netns: str | None = None,
        peer_ifname: str = "eth0",
        peer_addresses: Sequence[IPInterface] = (),
        peer_routes: Sequence[tuple[IPNetwork, IPAddress | None]] = (),
        mtu: int | None = None,
    ) -> VethInfo:
        ns = self._enter("ensure_veth")
        check_ours(self._node, peer_name)
        host = self._ours(ns, host_name)
        if bridge is not None:
            check_ours(self._node, bridge, "bridge")
        mac = check_mac(mac)
        if peer_netns is None:
            peer_ifname = peer_name
        check_ifname(peer_ifname)
        there = self.host.namespace(peer_netns) if peer_netns is not None else ns
        if peer_netns is not None and there is ns:
            raise PermanentError(f"{netns_path(peer_netns)} is the driver's own namespace")
        if host is not None:
            if host.kind != "veth" or host.peer is None:
                raise PermanentError(f"{host_name} exists as a {host.kind or 'device'}, not a veth")
            if host.peer[0] not in (ns, there):
                _delete(ns, host)
                host = None
        if host is None:
            for name in (host_name, peer_name):
                if ns.get(name) is not None:
                    raise PermanentError(
                        f"cannot create veth {host_name}/{peer_name}: {name} exists"
                    )
            host, peer = ns.new_link(host_name, "veth"), ns.new_link(peer_name, "veth")
            host.peer, peer.peer = (ns, peer), (ns, host)
        assert host.peer is not None
        peer_ns, peer = host.peer
        if peer_ns is not there:
            if there.get(peer.name) is not None:
                raise driver_error(errno.EEXIST, f"moving to the peer's namespace of {peer.name}")
            ns.drop(peer)
            peer = there.new_link(peer.name, "veth", peer.mac)
            host.peer, peer.peer = (there, peer), (ns, host)
        if bridge is not None:
            br = ns.get(bridge)
            if br is None:
                raise NotFoundError(f"no bridge {bridge}")
            if br.kind != "bridge":
                raise PermanentError(f"{bridge} is a {br.kind or 'device'}, not a bridge")
            host.master = br
        else:
            host.master = None
        _converge(host, mtu=mtu, up=True)
        if peer.name != peer_ifname:
            if there.get(peer_ifname) is not None:
                raise PermanentError(f"{peer_ifname} already exists in the peer's namespace")
            peer.name = peer_ifname
        _converge(peer, mtu=mtu, up=True, mac=mac)
        _sync_addresses(peer, peer_addresses)
        routes = [Route(dst, gw, dev=peer_ifname) for dst, gw in peer_routes]
        for route in routes:
            _ensure_route(there, route)
        for have, proto in list(there.routes):
            if proto == RTPROT_AGENT and have.dev == peer_ifname and have not in routes:
                there.routes.remove((have, proto))
        return VethInfo(ns.info(host), there.info(peer))

    # --- routes and sysctls
    async def ensure_route(self, route: Route) -> None:
        _ensure_route(self._enter("ensure_route"), route)

    async def delete_route(self, route: Route) -> None:
        _delete_route(self._enter("delete_route"), route)

    async def routes(self, table: int | None = None) -> list[Route]:
        ns = self._enter("routes")
        return [r for r, p in ns.routes if p == RTPROT_AGENT and table in (None, r.table)]

    def _set_sysctl(self, key: str, ifname: str, on: bool, port: bool) -> None:
        """Set the link's ``net.ipv4.conf.<if>.<key>``: our link, or any link for a port (the
        real driver's checks), ENOENT when there is no such link."""
        ns = self._enter(f"set_{key}")
        link = ns.get(check_ifname(ifname)) if port else self._ours(ns, ifname)
        if link is None:
            raise driver_error(errno.ENOENT, f"{key} of {ifname}")
        link.sysctls[key] = on

    def _sysctl(self, key: str, ifname: str) -> bool:
        """The link's ``net.ipv4.conf.<if>.<key>``, any link; ENOENT when there is none."""
        ns = self._enter(key)
        link = ns.get(check_ifname(ifname))
        if link is None:
            raise driver_error(errno.ENOENT, f"{key} of {ifname}")
        return link.sysctls.get(key, False)

    async def set_forwarding(self, ifname: str, on: bool, *, port: bool = False) -> None:
        self._set_sysctl("forwarding", ifname, on, port)

    async def forwarding(self, ifname: str) -> bool:
        return self._sysctl("forwarding", ifname)

    async def ensure_port_addresses(
        self,
        ifname: str,
        addresses: Sequence[IPInterface],
        *,
        owned: Sequence[IPInterface] = (),
        mtu: int | None = None,
    ) -> tuple[IPInterface, ...]:
        ns = self._enter("ensure_port_addresses")
        check_ifname(ifname)
        if self.is_ours(ifname):
            raise PermanentError(f"{ifname} is one of this node's own links, not a port")
        link = ns.get(ifname)
        if link is None:
            raise NotFoundError(f"no link {ifname}")
        _converge(link, mtu=mtu, up=True)
        wanted = {ip_interface(a) for a in addresses}
        mine = {ip_interface(a) for a in owned}
        have = {a for a in link.addresses if managed(a)}
        link.addresses = [a for a in link.addresses if a not in mine or a in wanted]
        added = wanted - have
        link.addresses += sorted(added, key=lambda a: (a.version, a))
        return tuple(sorted((mine & wanted & have) | added, key=lambda a: (a.version, a)))

    async def set_proxy_arp(self, ifname: str, on: bool, *, port: bool = False) -> None:
        self._set_sysctl("proxy_arp", ifname, on, port)

    async def proxy_arp(self, ifname: str) -> bool:
        return self._sysctl("proxy_arp", ifname)

    async def ensure_bridge_filtering(self) -> bool:
        self._enter("ensure_bridge_filtering").bridge_filtering = True
        return True

    async def close(self) -> None:
        self.closed = True
