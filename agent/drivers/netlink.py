"""Links, addresses, routes and namespaces over netlink with pyroute2: the ground under network
instances (EVE's zedrouter).  A local instance is a Linux bridge holding the gateway address;
an app's container joins it through a veth pair whose peer lives in the container's network
namespace; a switch instance enslaves a node port to a bridge.  Nothing here runs ``ip``.
The interface, names and ownership rules are in :mod:`agent.drivers.netlink_api` (re-exported
here).

Namespaces.  A driver works in the process's own network namespace (``netns=None``) or in a
named one (``/run/netns/<name>``, or any path to a namespace file).  Each namespace it works in
gets one worker thread that entered it (``setns``; never creating it) and holds one pyroute2
``IPRoute`` opened there, so netlink calls never block the event loop and ``/proc/sys/net``
paths resolve in that namespace.  Before each call the worker checks that the path still names
the namespace it entered (re-entering when it was recreated; ``NotFoundError`` when it is
gone); a socket found broken is reopened and the call run once more, then ``TemporaryError``.
A peer's namespace (``ensure_veth``) is held open (a file descriptor) and entered by a thread
of its own for the call only.  Call :meth:`NetlinkDriver.close`.

Errors: ENODEV, ENOENT, ESRCH, EADDRNOTAVAIL -> ``NotFoundError``; EEXIST, EPERM, EACCES,
EINVAL, ERANGE, EOPNOTSUPP... -> ``PermanentError``; EBUSY, EAGAIN, ENOBUFS, EINTR and anything
unexpected -> ``TemporaryError``; each message names the object.  Operations are serial per
namespace, not transactions: run those of one object from one task at a time (the reconcile
engine does).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface, ip_network
from typing import Any, TypeVar

from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError
from agent.drivers.netlink_api import (
    IFNAMSIZ,
    MAIN_TABLE,
    MAX_INDEX,
    RTPROT_AGENT,
    IPAddress,
    IPInterface,
    IPNetwork,
    LinkInfo,
    LinkKind,
    Naming,
    Netlink,
    Route,
    VethInfo,
    check_ifname,
    check_mac,
    check_ours,
    default_metric,
    driver_error,
    is_ours,
    link_name,
    managed,
    netns_path,
    node_tag,
    parse_name,
)
from agent.drivers.netns import enter, ns_id

__all__ = [
    "IFNAMSIZ", "MAIN_TABLE", "MAX_INDEX", "RTPROT_AGENT", "IPAddress", "IPInterface",
    "IPNetwork", "LinkInfo", "LinkKind", "Netlink", "NetlinkDriver", "Route", "VethInfo",
    "driver_error", "is_ours", "link_name", "node_tag", "parse_name",
]  # fmt: skip

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- errors --------------------------------------------------------------------------------------

_BROKEN = frozenset({errno.EBADF, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET})


class _Broken(Exception):
    """The netlink socket died under a call."""


def _nl(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one pyroute2 call, translating its errors (see the module docstring)."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return fn(*args, **kwargs)
    except NetlinkError as exc:
        raise driver_error(int(exc.code), what) from exc
    except OSError as exc:
        if exc.errno in _BROKEN or isinstance(exc, ConnectionError):
            raise _Broken(str(exc)) from exc
        raise driver_error(exc.errno or errno.EIO, what) from exc


# --- one namespace, one thread -------------------------------------------------------------------


class _Namespace:
    """A worker thread in one namespace (``path``; None: the process's own) and its IPRoute."""

    def __init__(self, path: str | None, label: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"netlink-{label}")
        self._ipr: Any = None
        self.entered: tuple[int, int] | None = None
        self.closed = False

    async def run(self, fn: Callable[[Any], T]) -> T:
        if self.closed:
            raise PermanentError("the netlink driver is closed")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _call(self, fn: Callable[[Any], T]) -> T:
        for attempt in (1, 2):
            if self.path is not None:
                current = ns_id(self.path)
                if current != self.entered:
                    self._drop()
                    self.entered = enter(self.path)
            if self._ipr is None:
                from pyroute2 import IPRoute

                try:
                    # groups=0: no multicast subscription, or unread events would pile up.
                    self._ipr = IPRoute(groups=0)
                except OSError as exc:
                    raise driver_error(exc.errno or errno.EIO, "opening netlink") from exc
            try:
                return fn(self._ipr)
            except _Broken as exc:
                self._drop()
                if attempt == 2:
                    raise TemporaryError(f"netlink socket broken: {exc}") from exc
                log.info("netlink socket in %s broken (%s); reopening", self.path or "/", exc)
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        ipr, self._ipr = self._ipr, None
        if ipr is not None:
            try:
                ipr.close()
            except Exception as exc:  # noqa: BLE001 - a dead socket may fail to close; it is gone
                log.debug("closing a broken IPRoute: %s", exc)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await asyncio.get_running_loop().run_in_executor(self._pool, self._drop)
            self._pool.shutdown(wait=True)


# --- the driver ----------------------------------------------------------------------------------

_IFF_UP = 1


def _bridge(ipr: Any, name: str) -> Any:
    """The bridge ``name``'s link message: NotFoundError when missing, PermanentError when the
    name is another kind of link."""
    br = _get(ipr, name)
    if br is None:
        raise NotFoundError(f"no bridge {name}")
    if _kind(br) != "bridge":
        raise PermanentError(f"{name} is a {_kind(br) or 'device'}, not a bridge")
    return br


def _get(ipr: Any, name: str) -> Any:
    """The link message of ``name``, None when there is none."""
    try:
        return _nl(f"link {name}", ipr.link, "get", ifname=name)[0]
    except NotFoundError:
        return None


def _kind(msg: Any) -> str | None:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return str(kind) if kind else None


def _is_up(msg: Any) -> bool:
    return bool(msg["flags"] & _IFF_UP)


def _addrs(ipr: Any, index: int, name: str) -> tuple[IPInterface, ...]:
    out = []
    for msg in _nl(f"addresses of {name}", ipr.addr, "dump", index=index):
        if msg["index"] != index:
            continue
        addr = ip_interface(f"{msg.get('IFA_LOCAL') or msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
        if managed(addr):
            out.append(addr)
    return tuple(sorted(out, key=lambda a: (a.version, a)))


def _info(ipr: Any, msg: Any) -> LinkInfo:
    name = msg.get("IFLA_IFNAME")
    master_index = msg.get("IFLA_MASTER")
    master = None
    if master_index:
        master = _nl(f"master of {name}", ipr.link, "get", index=master_index)[0].get("IFLA_IFNAME")
    return LinkInfo(
        name=name,
        ifindex=msg["index"],
        kind=_kind(msg),
        mtu=int(msg.get("IFLA_MTU")),
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        master=master,
        addresses=_addrs(ipr, msg["index"], name),
        up=_is_up(msg),
    )


def _sync_addrs(ipr: Any, msg: Any, wanted: Sequence[IPInterface]) -> None:
    """Exactly ``wanted`` on the link: extra ones removed first (removing a primary IPv4 address
    takes its secondaries along, so what is missing is read again after)."""
    name, index = msg.get("IFLA_IFNAME"), msg["index"]
    wanted_set = {ip_interface(a) for a in wanted}
    for addr in _addrs(ipr, index, name):
        if addr not in wanted_set:
            with contextlib.suppress(NotFoundError):
                _nl(f"removing {addr} from {name}", ipr.addr, "del", index=index,
                    address=str(addr.ip), prefixlen=addr.network.prefixlen)  # fmt: skip
    have = set(_addrs(ipr, index, name))
    for addr in sorted(wanted_set - have, key=lambda a: (a.version, a)):
        _nl(f"adding {addr} to {name}", ipr.addr, "add", index=index, address=str(addr.ip),
            prefixlen=addr.network.prefixlen)  # fmt: skip


def _set(ipr: Any, msg: Any, what: str, **attrs: Any) -> None:
    _nl(f"{what} of {msg.get('IFLA_IFNAME')}", ipr.link, "set", index=msg["index"], **attrs)


def _converge(ipr: Any, msg: Any, *, mtu: int | None, up: bool, mac: str | None = None) -> None:
    if mac is not None and str(msg.get("IFLA_ADDRESS")).lower() != mac.lower():
        _set(ipr, msg, "setting the MAC", address=mac)
    if mtu is not None and msg.get("IFLA_MTU") != mtu:
        _set(ipr, msg, "setting the MTU", mtu=mtu)
    if up != _is_up(msg):
        _set(ipr, msg, "changing the state", state="up" if up else "down")


def _dst(msg: Any) -> IPNetwork:
    default = "::" if msg["family"] == socket.AF_INET6 else "0.0.0.0"
    return ip_network(f"{msg.get('RTA_DST') or default}/{msg['dst_len']}")


def _table(msg: Any) -> int:
    return int(msg.get("RTA_TABLE") or msg["table"])


def _route_msgs(ipr: Any, table: int | None) -> list[tuple[Any, Route | None]]:
    """The IP routes of ``table`` (all when None): (message, Route or None when not ours)."""
    names = {m["index"]: m.get("IFLA_IFNAME") for m in _nl("links", ipr.link, "dump")}
    out: list[tuple[Any, Route | None]] = []
    for msg in _nl("routes", ipr.route, "dump"):
        if msg["family"] not in (socket.AF_INET, socket.AF_INET6):
            continue
        if table is not None and _table(msg) != table:
            continue
        route = None
        if msg["proto"] == RTPROT_AGENT:
            dst, gw = _dst(msg), msg.get("RTA_GATEWAY")
            metric = msg.get("RTA_PRIORITY") or 0
            route = Route(
                dst=dst,
                gateway=ip_address(gw) if gw else None,
                dev=names.get(msg.get("RTA_OIF")),
                table=_table(msg),
                metric=None if metric == default_metric(dst.version) else metric,
            )
        out.append((msg, route))
    return out


def _at(ipr: Any, route: Route) -> Route | None:
    """Our route at ``route``'s place (table, dst, metric); PermanentError when another's."""
    metric = default_metric(route.dst.version) if route.metric is None else route.metric
    for msg, have in _route_msgs(ipr, route.table):
        if _dst(msg) == route.dst and (msg.get("RTA_PRIORITY") or 0) == metric:
            if have is None:
                raise PermanentError(
                    f"route to {route.dst} in table {route.table}: held by a route of protocol "
                    f"{msg['proto']}, not ours"
                )
            return have
    return None


def _route_args(route: Route) -> dict[str, Any]:
    return {
        "dst": str(route.dst.network_address),
        "dst_len": route.dst.prefixlen,
        "family": socket.AF_INET6 if route.dst.version == 6 else socket.AF_INET,
        "table": route.table,
        "proto": RTPROT_AGENT,
        "priority": default_metric(route.dst.version) if route.metric is None else route.metric,
    }


def _ensure_route(ipr: Any, route: Route) -> None:
    args = _route_args(route)
    if route.dev is not None:
        dev = _get(ipr, route.dev)
        if dev is None:
            raise NotFoundError(f"route to {route.dst}: no link {route.dev}")
        args["oif"] = dev["index"]
    if route.gateway is not None:
        args["gateway"] = str(route.gateway)
    have = _at(ipr, route)
    if have is not None and have.gateway == route.gateway and route.dev in (None, have.dev):
        return
    _nl(f"route to {route.dst}", ipr.route, "replace", **args)


def _delete_route(ipr: Any, route: Route) -> None:
    if _at(ipr, route) is None:
        return
    with contextlib.suppress(NotFoundError):
        _nl(f"deleting route to {route.dst}", ipr.route, "del", **_route_args(route))


def _sysctl(ifname: str, key: str = "forwarding") -> str:
    return f"/proc/sys/net/ipv4/conf/{check_ifname(ifname)}/{key}"


def _read_forwarding(ifname: str, key: str = "forwarding") -> bool:
    try:
        with open(_sysctl(ifname, key)) as f:
            return f.read().strip() == "1"
    except OSError as exc:
        raise driver_error(exc.errno or errno.EIO, f"{key} of {ifname}") from exc


def _write_forwarding(ifname: str, on: bool, key: str = "forwarding") -> None:
    if _read_forwarding(ifname, key) == on:
        return
    try:
        with open(_sysctl(ifname, key), "w") as f:
            f.write("1" if on else "0")
    except OSError as exc:
        raise driver_error(exc.errno or errno.EIO, f"setting {key} of {ifname}") from exc


class NetlinkDriver(Naming):
    """:class:`Netlink` over pyroute2 in the process's namespace or ``netns``; see the module
    docstring."""

    def __init__(self, node: str, netns: str | None = None) -> None:
        node_tag(node)  # ValueError for an empty node
        self._node = node
        self._netns = netns
        self._ns = _Namespace(None if netns is None else netns_path(netns), "self")

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
        check_ours(self._node, name, "bridge")
        mac = check_mac(mac)

        def work(ipr: Any) -> LinkInfo:
            msg = _get(ipr, name)
            if msg is None:
                try:
                    _nl(f"creating bridge {name}", ipr.link, "add", ifname=name, kind="bridge")
                except PermanentError:
                    if _get(ipr, name) is None:  # not a creation race: something else
                        raise
                msg = _get(ipr, name)
            if msg is None:
                raise TemporaryError(f"bridge {name} vanished while being created")
            if _kind(msg) != "bridge":
                raise PermanentError(f"{name} exists as a {_kind(msg) or 'device'}, not a bridge")
            _converge(ipr, msg, mtu=mtu, up=up, mac=mac)
            _sync_addrs(ipr, msg, addresses)
            return _info(ipr, _get(ipr, name))

        return await self._ns.run(work)

    async def delete_link(self, name: str) -> None:
        check_ours(self._node, name)

        def work(ipr: Any) -> None:
            msg = _get(ipr, name)
            if msg is not None:
                with contextlib.suppress(NotFoundError):
                    _nl(f"deleting {name}", ipr.link, "del", index=msg["index"])

        await self._ns.run(work)

    async def set_master(self, link: str, bridge: str | None) -> None:
        check_ifname(link)
        if bridge is not None:
            check_ours(self._node, bridge, "bridge")

        def work(ipr: Any) -> None:
            port = _get(ipr, link)
            if port is None:
                raise NotFoundError(f"no link {link}")
            current = _info(ipr, port).master
            target = 0
            if bridge is not None:
                br = _bridge(ipr, bridge)
                if current == bridge:
                    return
                target = br["index"]
            elif current is None:
                return
            if current is not None and not self.is_ours(current):
                raise PermanentError(f"{link} is a port of {current}, which is not ours")
            _set(ipr, port, f"setting the master to {bridge}", master=target)

        await self._ns.run(work)

    async def link(self, name: str) -> LinkInfo | None:
        check_ifname(name)

        def work(ipr: Any) -> LinkInfo | None:
            msg = _get(ipr, name)
            return None if msg is None else _info(ipr, msg)

        return await self._ns.run(work)

    async def list_owned(self) -> list[LinkInfo]:
        def work(ipr: Any) -> list[LinkInfo]:
            msgs = [m for m in _nl("links", ipr.link, "dump") if self.is_ours(m.get("IFLA_IFNAME"))]
            return sorted((_info(ipr, m) for m in msgs), key=lambda i: i.name)

        return await self._ns.run(work)

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
        check_ours(self._node, host_name)
        check_ours(self._node, peer_name)
        if bridge is not None:
            check_ours(self._node, bridge, "bridge")
        mac = check_mac(mac)
        if peer_netns is None:
            peer_ifname = peer_name
        check_ifname(peer_ifname)
        routes = [Route(dst, gw, dev=peer_ifname) for dst, gw in peer_routes]
        if peer_netns is None:
            peer = await self._ns.run(
                lambda ipr: _veth_host(ipr, host_name, peer_name, None, bridge, mtu)
            )
            peer_info = await self._ns.run(
                lambda ipr: _veth_peer(ipr, peer, peer_ifname, mac, mtu, peer_addresses, routes)
            )
        else:
            peer_info = await self._veth_away(
                host_name, peer_name, netns_path(peer_netns), bridge, mac, peer_ifname,
                peer_addresses, routes, mtu,
            )  # fmt: skip
        host = await self.link(host_name)
        if host is None:
            raise TemporaryError(f"veth {host_name} vanished (its peer's namespace died?)")
        return VethInfo(host, peer_info)

    async def _veth_away(
        self, host_name: str, peer_name: str, path: str, bridge: str | None, mac: str | None,
        peer_ifname: str, addresses: Sequence[IPInterface], routes: list[Route],
        mtu: int | None,
    ) -> LinkInfo:  # fmt: skip
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise driver_error(exc.errno or errno.ENOENT, f"network namespace {path}") from exc
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == await self._ns.run(lambda _: _own_ns()):
                raise PermanentError(f"{path} is the driver's own namespace")
            peer = await self._ns.run(
                lambda ipr: _veth_host(ipr, host_name, peer_name, fd, bridge, mtu)
            )
            there = _Namespace(f"/proc/self/fd/{fd}", "peer")
            try:
                return await there.run(
                    lambda ipr: _veth_peer(ipr, peer, peer_ifname, mac, mtu, addresses, routes)
                )
            finally:
                await there.close()
        finally:
            os.close(fd)

    # --- routes and sysctls
    async def ensure_route(self, route: Route) -> None:
        await self._ns.run(lambda ipr: _ensure_route(ipr, route))

    async def delete_route(self, route: Route) -> None:
        await self._ns.run(lambda ipr: _delete_route(ipr, route))

    async def routes(self, table: int | None = None) -> list[Route]:
        def work(ipr: Any) -> list[Route]:
            return [r for _, r in _route_msgs(ipr, table) if r is not None]

        return await self._ns.run(work)

    async def set_forwarding(self, ifname: str, on: bool, *, port: bool = False) -> None:
        if port:
            check_ifname(ifname)
        else:
            check_ours(self._node, ifname)
        await self._ns.run(lambda _: _write_forwarding(ifname, on))

    async def forwarding(self, ifname: str) -> bool:
        return await self._ns.run(lambda _: _read_forwarding(ifname))

    async def set_proxy_arp(self, ifname: str, on: bool, *, port: bool = False) -> None:
        if port:
            check_ifname(ifname)
        else:
            check_ours(self._node, ifname)
        await self._ns.run(lambda _: _write_forwarding(ifname, on, "proxy_arp"))

    async def proxy_arp(self, ifname: str) -> bool:
        return await self._ns.run(lambda _: _read_forwarding(ifname, "proxy_arp"))

    async def ensure_port_addresses(
        self,
        ifname: str,
        addresses: Sequence[IPInterface],
        *,
        owned: Sequence[IPInterface] = (),
        mtu: int | None = None,
    ) -> tuple[IPInterface, ...]:
        check_ifname(ifname)
        if self.is_ours(ifname):
            raise PermanentError(f"{ifname} is one of this node's own links, not a port")
        wanted = {ip_interface(a) for a in addresses}
        mine = {ip_interface(a) for a in owned}

        def work(ipr: Any) -> tuple[IPInterface, ...]:
            msg = _get(ipr, ifname)
            if msg is None:
                raise NotFoundError(f"no link {ifname}")
            _converge(ipr, msg, mtu=mtu, up=True)
            index = msg["index"]
            # Removed first, as in _sync_addrs: removing a primary takes its secondaries.
            for addr in _addrs(ipr, index, ifname):
                if addr in mine and addr not in wanted:
                    with contextlib.suppress(NotFoundError):
                        _nl(f"removing {addr} from {ifname}", ipr.addr, "del", index=index,
                            address=str(addr.ip), prefixlen=addr.network.prefixlen)  # fmt: skip
            have = set(_addrs(ipr, index, ifname))
            added = wanted - have
            for addr in sorted(added, key=lambda a: (a.version, a)):
                _nl(f"adding {addr} to {ifname}", ipr.addr, "add", index=index,
                    address=str(addr.ip), prefixlen=addr.network.prefixlen)  # fmt: skip
            now = set(_addrs(ipr, index, ifname))
            return tuple(sorted(((mine & wanted & have) | added) & now,
                                key=lambda a: (a.version, a)))  # fmt: skip

        return await self._ns.run(work)

    async def ensure_bridge_filtering(self) -> bool:
        return await self._ns.run(lambda _: _write_bridge_filtering())

    async def close(self) -> None:
        await self._ns.close()


#: Bridged IPv4 and IPv6 through the IP hooks (kernel defaults, which a host may have changed).
_BRIDGE_NF = (
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
)


def _write_bridge_filtering() -> bool:
    for path in _BRIDGE_NF:
        try:
            with open(path, "r+") as f:
                if f.read().strip() != "1":
                    f.seek(0)
                    f.write("1")
        except FileNotFoundError:
            return False  # no br_netfilter in this kernel
        except OSError as exc:
            name = path.rsplit("/", 1)[1]
            raise driver_error(exc.errno or errno.EIO, f"setting {name}") from exc
    return True


def _own_ns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class _Peer:
    """Where the peer of a host side is: its ifindex in its namespace, and the host's."""

    host_index: int
    index: int


def _veth_host(
    ipr: Any, host: str, peer: str, fd: int | None, bridge: str | None, mtu: int | None
) -> _Peer:
    """The pair exists, its peer in the namespace of ``fd`` (None: here), the host side
    configured; where the peer is."""
    msg = _get(ipr, host)
    if msg is not None:
        if _kind(msg) != "veth":
            raise PermanentError(f"{host} exists as a {_kind(msg) or 'device'}, not a veth")
        nsid = msg.get("IFLA_LINK_NETNSID")
        if nsid is not None and (fd is None or nsid != _nsid(ipr, fd)):
            # The peer is in a namespace other than the one asked for: start again.
            log.info("veth %s: peer in another namespace; recreating the pair", host)
            _nl(f"deleting {host}", ipr.link, "del", index=msg["index"])
            msg = None
    if msg is None:
        for name in (host, peer):
            if _get(ipr, name) is not None:
                raise PermanentError(f"cannot create veth {host}/{peer}: {name} exists")
        _nl(f"creating veth {host}/{peer}", ipr.link, "add", ifname=host, kind="veth", peer=peer)
        msg = _get(ipr, host)
        if msg is None:
            raise TemporaryError(f"veth {host} vanished while being created")
    if fd is not None and msg.get("IFLA_LINK_NETNSID") is None:
        here = _nl(f"peer of {host}", ipr.link, "get", index=msg.get("IFLA_LINK"))[0]
        _set(ipr, here, "moving to the peer's namespace", net_ns_fd=fd)
        msg = _get(ipr, host)
        if msg is None:
            raise NotFoundError(f"veth {host} vanished: the peer's namespace died")
    if bridge is not None:
        br = _bridge(ipr, bridge)
        if msg.get("IFLA_MASTER") != br["index"]:
            _set(ipr, msg, f"enslaving to {bridge}", master=br["index"])
    elif msg.get("IFLA_MASTER"):
        _set(ipr, msg, "releasing from its bridge", master=0)
    _converge(ipr, msg, mtu=mtu, up=True)
    return _Peer(host_index=msg["index"], index=int(msg.get("IFLA_LINK")))


def _nsid(ipr: Any, fd: int) -> int | None:
    nsid = _nl("netns id", ipr.get_netnsid, fd=fd).get("nsid")
    return None if nsid is None or nsid in (-1, 0xFFFFFFFF) else int(nsid)


def _veth_peer(
    ipr: Any,
    peer: _Peer,
    ifname: str,
    mac: str | None,
    mtu: int | None,
    addresses: Sequence[IPInterface],
    routes: Sequence[Route],
) -> LinkInfo:
    """In the peer's namespace: the peer named ``ifname``, configured."""
    try:
        msg = _nl("veth peer", ipr.link, "get", index=peer.index)[0]
    except NotFoundError:
        msg = None
    if msg is None or _kind(msg) != "veth" or msg.get("IFLA_LINK") != peer.host_index:
        raise TemporaryError(f"the peer of veth #{peer.host_index} is not where it was moved")
    if msg.get("IFLA_IFNAME") != ifname:
        if _get(ipr, ifname) is not None:
            raise PermanentError(f"{ifname} already exists in the peer's namespace")
        if _is_up(msg):
            _set(ipr, msg, "bringing down to rename", state="down")
        _set(ipr, msg, f"renaming to {ifname}", ifname=ifname)
        msg = _get(ipr, ifname)
    _converge(ipr, msg, mtu=mtu, up=True, mac=mac)
    _sync_addrs(ipr, msg, addresses)
    for route in routes:
        _ensure_route(ipr, route)
    for _, have in _route_msgs(ipr, None):
        if have is not None and have.dev == ifname and have not in routes:
            _delete_route(ipr, have)
    return _info(ipr, _get(ipr, ifname))


# --- taps from libvirt's namespace -----------------------------------------------------------


def claim_links(links: Sequence[tuple[str, str]], netns: str) -> None:
    """Move each link ``(name, bridge)`` from the calling thread's namespace into ``netns``
    (a name or a path) and enslave it to its bridge there, up.  For an emulated node's VMs:
    libvirt makes their taps in its own namespace, QEMU keeps using them once moved.  A link
    already moved is only enslaved.  Blocking (a worker thread); typed driver errors
    (NotFoundError: a tap or bridge missing)."""
    from pyroute2 import IPRoute

    path = netns_path(netns)
    with IPRoute() as ipr:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for name, _bridge in links:
                found = _nl(f"looking up {name}", ipr.link_lookup, ifname=check_ifname(name))
                if found:
                    _nl(f"moving {name} into {path}", ipr.link, "set", index=found[0],
                        net_ns_fd=fd)  # fmt: skip
        finally:
            os.close(fd)
    failed: list[Exception] = []

    def inside() -> None:
        # A thread of its own: it enters the namespace and ends.
        try:
            enter(path)
            with IPRoute() as ipr:
                for name, bridge in links:
                    found = _nl(f"looking up {name}", ipr.link_lookup, ifname=name)
                    master = _nl(f"looking up {bridge}", ipr.link_lookup, ifname=bridge)
                    if not found or not master:
                        missing = name if not found else bridge
                        raise driver_error(errno.ENODEV, f"{missing} in {path}")
                    _nl(f"enslaving {name} to {bridge}", ipr.link, "set", index=found[0],
                        master=master[0], state="up")  # fmt: skip
        except (DriverError, OSError) as exc:  # handed to the caller
            failed.append(exc)

    worker = threading.Thread(target=inside, name="claim-links", daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        raise TemporaryError(f"moving taps into {path}: no answer within 30 s")
    if failed:
        raise failed[0]
