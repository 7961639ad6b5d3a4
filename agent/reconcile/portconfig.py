"""The addressing of the node's ports (EVE's nim, DPC reconciler part): kind ``port``.

One item per port the effective port config names with DHCP or a static address (a port set
to ``none`` gets nothing, and neither does a port a switch instance bridges: its frames are the
bridge's); the key is the interface name.  What the item does on the port, through the drivers:

- ``static``: the address with its prefix and, for a management port with a gateway, a default
  route through the gateway (the agent's route protocol; metric :func:`route_metric`, so cheaper
  ports win and a route the operating system made, usually with a lower metric, stays first);
- ``client``: a DHCP client on the port (:mod:`agent.drivers.dhcpclient`), whose lease (address
  and, for a management port, the first router as default route) the agent applies itself;
  leases are followed by :meth:`PortConfigurator.sync_leases`, which the port manager calls
  about once a second, and which also starts a client that died again;
- the link up, and the config's MTU when it gives one.

The agent removes only what it set: the addresses it added are tracked in the item's record
(``net/port/<ifname>.json``, written before each change, so a crash leaves them known) and a
restarted agent adopts them; an address the port had before (the operating system's, an
operator's) is never removed, even when the config asks for the same one.  Deleting an item
takes away the agent's addresses and route and stops the client (which releases its lease);
the link stays up, its MTU as it is.  Operations on one port are serialised (a lock shared
with the lease follower).

Ports as JSON (:func:`port_json`, :func:`port_from_json`, checked as strictly as the config's)
and their :func:`fingerprint` serve the port selection's saved state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.drivers.dhcpclient import DhcpClient, Lease
from agent.drivers.errors import DriverError, NotFoundError
from agent.drivers.netlink_api import IPInterface, Netlink, Route
from agent.model.ports import Port
from agent.reconcile.items import DEVICE_OWNER, BaseConfigurator, Item, ItemRef, OwnerRef
from agent.reconcile.netplan import SWITCH, NetPlan
from agent.reconcile.records import RecordBook

log = logging.getLogger(__name__)

KIND = "port"
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Metrics of the agent's default routes: 400 + 100 x cost + a slot per port.
METRIC_BASE, METRIC_SLOTS = 400, 100
#: The longest pause between two attempts to start a DHCP client that keeps dying.
MAX_CLIENT_BACKOFF = 60.0


@dataclass(frozen=True)
class PortItem:
    ifname: str
    name: str
    #: ``client`` or ``static``.
    dhcp: str
    #: ``address/prefix`` (static), else "".
    address: str = ""
    gateway: str = ""
    mtu: int = 0
    management: bool = False
    metric: int = METRIC_BASE

    @property
    def ref(self) -> ItemRef:
        return (KIND, self.ifname)

    @property
    def owner(self) -> OwnerRef:
        return DEVICE_OWNER

    def deps(self) -> Iterable[ItemRef]:
        return ()

    def needs_recreate(self, old: Any) -> bool:
        return False

    def record(self) -> dict[str, Any]:
        return {"ifname": self.ifname, "name": self.name, "dhcp": self.dhcp,
                "address": self.address, "gateway": self.gateway, "mtu": self.mtu,
                "management": self.management, "metric": self.metric}  # fmt: skip

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> PortItem:
        dhcp = str(rec["dhcp"])
        if dhcp not in ("client", "static"):
            raise ValueError(f"unknown addressing {dhcp[:16]!r}")
        return cls(str(rec["ifname"]), str(rec["name"]), dhcp, str(rec["address"]),
                   str(rec["gateway"]), int(rec["mtu"]), bool(rec["management"]),
                   int(rec["metric"]))  # fmt: skip


def route_metric(port: Port, taken: set[int]) -> int:
    """The metric of ``port``'s default route: cheaper ports first, then a slot hashed from
    the name, probed past ``taken`` (two routes with one metric would be one route)."""
    slot = int.from_bytes(hashlib.sha256(port.name.encode()).digest()[:4], "big") % METRIC_SLOTS
    metric = METRIC_BASE + METRIC_SLOTS * port.cost + slot
    while metric in taken:
        metric += 1
    taken.add(metric)
    return metric


def render(layout: NetPlan) -> dict[ItemRef, Item]:
    """The port items of the plan's (effective) ports.  Pure."""
    bridged = {p.ifname for ni in layout.instances.values() if ni.kind == SWITCH for p in ni.ports}
    out: dict[ItemRef, Item] = {}
    taken: set[int] = set()
    for port in sorted(layout.ports.values(), key=lambda p: p.name):
        if port.dhcp not in ("client", "static") or port.ifname in bridged:
            continue
        item = PortItem(port.ifname, port.name, port.dhcp, port.address, port.gateway,
                        port.mtu, port.management, route_metric(port, taken))  # fmt: skip
        out[item.ref] = item
    return out


def _route(item: PortItem, gateway: str) -> Route | None:
    """The default route ``item`` wants through ``gateway`` (management ports only)."""
    if not item.management or not gateway:
        return None
    gw = ipaddress.ip_address(gateway)
    dst = ipaddress.ip_network("::/0" if gw.version == 6 else "0.0.0.0/0")
    return Route(dst, gw, dev=item.ifname, metric=item.metric)


def _effect(lease: Lease | None) -> tuple[str, str] | None:
    """What of a lease shows on the port: its address and router."""
    return None if lease is None else (str(lease.address), str(lease.router or ""))


def _as_recorded(
    item: PortItem, present: set[IPInterface], owned: set[IPInterface], routes: set[Route]
) -> bool:
    """Whether a static port carries exactly what its item says of the agent's: its address,
    none other of the agent's, and its default route."""
    wanted = {ipaddress.ip_interface(item.address)} if item.address else set()
    route = _route(item, item.gateway) if wanted else None
    return wanted <= present and not (present & owned) - wanted and route in (None, *routes)


def _route_record(route: Route) -> dict[str, Any]:
    return {"dst": str(route.dst), "gateway": str(route.gateway), "dev": route.dev,
            "metric": route.metric}  # fmt: skip


def _route_from(rec: Mapping[str, Any]) -> Route:
    return Route(ipaddress.ip_network(str(rec["dst"])), ipaddress.ip_address(str(rec["gateway"])),
                 dev=str(rec["dev"]), metric=int(rec["metric"]))  # fmt: skip


# --- ports as JSON (the port selection's saved state) ---------------------------------------


def port_json(port: Port) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(port).items()}


def port_from_json(doc: Any) -> Port:
    """A port from the state file, checked as strictly as the config's.  Raises ValueError."""
    if not isinstance(doc, dict):
        raise ValueError("a port is not an object")

    def text(key: str, pattern: re.Pattern[str] | None = None) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise ValueError(f"port field {key} is not valid")
        return value

    def number(key: str, low: int, high: int) -> int:
        value = doc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"port field {key} is not valid")
        return value

    def flag(key: str) -> bool:
        value = doc.get(key)
        if not isinstance(value, bool):
            raise ValueError(f"port field {key} is not valid")
        return value

    labels, dns = doc.get("shared_labels"), doc.get("dns")
    if not isinstance(labels, list) or len(labels) > 64 or not isinstance(dns, list):
        raise ValueError("port labels or DNS servers are not lists")
    dhcp = text("dhcp")
    if dhcp not in ("client", "static", "none"):
        raise ValueError("port field dhcp is not valid")
    address, gateway = text("address"), text("gateway")
    if address:
        ipaddress.ip_interface(address)
    if gateway:
        ipaddress.ip_address(gateway)
    return Port(
        name=text("name", _LABEL), ifname=text("ifname", _IFNAME), management=flag("management"),
        for_apps=flag("for_apps"), cost=number("cost", 0, 255),
        shared_labels=tuple(str(x) for x in labels if isinstance(x, str) and _LABEL.fullmatch(x)),
        dhcp=dhcp, address=address, gateway=gateway,
        dns=tuple(str(ipaddress.ip_address(str(d))) for d in dns[:16]),
        mtu=number("mtu", 0, 65535),
    )  # fmt: skip


def fingerprint(ports: Mapping[str, Port]) -> str:
    """A digest of a port config (every field of every port), to tell configs apart."""
    doc = [port_json(ports[name]) for name in sorted(ports)]
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass
class _Port:
    """What the agent has set on one port (mirrors its record)."""

    item: PortItem
    owned: tuple[IPInterface, ...] = ()
    routes: tuple[Route, ...] = ()
    #: The lease applied (DHCP ports); None: none yet or lost.
    lease: Lease | None = None
    #: Whether the item's operation completed (the lease follower leaves others alone).
    applied: bool = False
    #: DHCP client restarts: failures in a row and the monotonic time of the next attempt.
    client_failures: int = 0
    client_next: float = 0.0
    #: The last lease problem logged (each one once, not every poll).
    problem: str = ""


class PortConfigurator(BaseConfigurator):
    """Applies port items; see the module docstring."""

    def __init__(
        self, netlink: Netlink, dhcp: DhcpClient, records: RecordBook, *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.netlink = netlink
        self.dhcp = dhcp
        self.records = records
        self._clock = clock
        self._ports: dict[str, _Port] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, ifname: str) -> asyncio.Lock:
        return self._locks.setdefault(ifname, asyncio.Lock())

    # --- what the port manager asks

    def not_ready(self, ifname: str) -> str | None:
        """Why port ``ifname`` cannot carry traffic yet as its item says (None: it can)."""
        port = self._ports.get(ifname)
        if port is None or not port.applied:
            return f"{ifname} not configured yet"
        if port.item.dhcp == "client" and port.lease is None:
            return f"{ifname} has no DHCP lease yet"
        return None

    def following(self) -> bool:
        """Whether a DHCP port is applied (the lease follower has work)."""
        return any(p.item.dhcp == "client" and p.applied for p in self._ports.values())

    def lease(self, ifname: str) -> Lease | None:
        port = self._ports.get(ifname)
        return port.lease if port is not None else None

    async def sync_leases(self) -> None:
        """Follow the leases of the DHCP ports: a client that died is started again (with a
        backoff while it keeps dying), a new, changed or lost lease is applied.  Errors are
        logged, never raised: the next call tries again."""
        for ifname, port in list(self._ports.items()):
            if port.item.dhcp != "client" or not port.applied:
                continue
            async with self._lock(ifname):
                if self._ports.get(ifname) is not port or not port.applied:
                    continue  # changed while we waited for the lock
                try:
                    await self._follow(port)
                    port.problem = ""
                except (DriverError, OSError) as exc:
                    if str(exc) != port.problem:
                        port.problem = str(exc)
                        log.warning("port %s: applying its DHCP lease failed: %s", ifname, exc)

    async def _follow(self, port: _Port) -> None:
        ifname = port.item.ifname
        if self._clock() >= port.client_next:
            try:
                state = await self.dhcp.ensure(ifname)
            except DriverError as exc:
                port.client_failures += 1
                delay = min(MAX_CLIENT_BACKOFF, 2.0**port.client_failures)
                port.client_next = self._clock() + delay
                if port.client_failures == 1:
                    log.warning("port %s: %s (trying again, at most every %g s)", ifname, exc,
                                MAX_CLIENT_BACKOFF)  # fmt: skip
                return
            if state.started and port.applied:
                log.info("port %s: DHCP client started again (pid %d)", ifname, state.pid)
            port.client_failures = 0
        lease = await self.dhcp.lease(ifname)
        if _effect(lease) != _effect(port.lease):
            await self._apply(port, lease)
        else:
            port.lease = lease  # a renewal: nothing changes on the port

    # --- the engine's side

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        out: dict[ItemRef, Item] = {}
        records = await self.records.load(KIND)
        ours = set(await self.netlink.routes()) if records else set()
        for key, rec in records.items():
            try:
                item = PortItem.from_record(rec)
                owned = tuple(ipaddress.ip_interface(str(a)) for a in rec.get("owned", ()))
                routes = tuple(_route_from(r) for r in rec.get("routes", ()))
            except (KeyError, TypeError, ValueError, DriverError) as exc:
                log.warning("port record %s unusable (%s)", key, exc)
                continue
            try:
                present = set(await self.netlink.addresses(item.ifname))
            except NotFoundError:
                continue  # the link went: the engine creates the item again when it returns
            if item.dhcp == "static" and not _as_recorded(item, present, set(owned), ours):
                # Not as the record says (a crash mid-change, someone's edit): a drifted item,
                # so the engine applies the desired one again.
                item = PortItem(item.ifname, item.name, item.dhcp, "", "", item.mtu,
                                item.management, item.metric)  # fmt: skip
            if item.ifname not in self._ports:
                # Adopted: what the agent set before a restart is its own again.
                self._ports[item.ifname] = _Port(item, owned, routes, applied=True)
            out[item.ref] = item
        return out

    async def create(self, item: PortItem) -> None:
        async with self._lock(item.ifname):
            await self._set(item, None)
        what = "DHCP client" if item.dhcp == "client" else item.address
        log.info("port %s (%s): %s", item.ifname, item.name, what)

    async def modify(self, old: PortItem, new: PortItem) -> None:
        async with self._lock(new.ifname):
            await self._set(new, old)
        what = "DHCP client" if new.dhcp == "client" else f"{new.address} via {new.gateway}"
        log.info("port %s (%s): now %s", new.ifname, new.name, what)

    async def delete(self, item: PortItem) -> None:
        async with self._lock(item.ifname):
            port = self._ports.get(item.ifname) or _Port(item)
            port.applied = False
            if item.dhcp == "client":
                await self.dhcp.stop(item.ifname)
            port.item = PortItem(item.ifname, item.name, "static")  # wants nothing
            with contextlib.suppress(NotFoundError):  # the link went, and all on it
                await self._apply(port, None)
            self._ports.pop(item.ifname, None)
            await self.records.remove(KIND, item.ifname)
        log.info("port %s: the agent's addressing removed", item.ifname)

    async def _set(self, item: PortItem, old: PortItem | None) -> None:
        port = self._ports.get(item.ifname)
        if port is None:
            port = self._ports[item.ifname] = _Port(item)
        port.applied = False
        if old is not None and old.dhcp == "client" and item.dhcp != "client":
            await self.dhcp.stop(item.ifname)
            port.lease = None
        port.item = item
        lease = None
        if item.dhcp == "client":
            await self.dhcp.ensure(item.ifname)
            port.client_failures = 0
            lease = await self.dhcp.lease(item.ifname)
        await self._apply(port, lease)
        port.applied = True

    async def _apply(self, port: _Port, lease: Lease | None) -> None:
        """Make the port carry what its item and ``lease`` say, recording first what the agent
        is about to own, then what it owns."""
        item = port.item
        wanted: list[IPInterface] = []
        if item.dhcp == "client":
            wanted = [lease.address] if lease is not None else []
            gateway = str(lease.router) if lease is not None and lease.router else ""
        else:
            wanted = [ipaddress.ip_interface(item.address)] if item.address else []
            gateway = item.gateway
        route = _route(item, gateway) if wanted else None
        present = set(await self.netlink.addresses(item.ifname))
        claim = tuple(dict.fromkeys([*port.owned, *(a for a in wanted if a not in present)]))
        routes = tuple(dict.fromkeys([*port.routes, *([route] if route else [])]))
        await self._record(item, claim, routes)
        port.owned = await self.netlink.ensure_port_addresses(
            item.ifname, wanted, owned=claim, mtu=item.mtu or None
        )
        for old in port.routes:
            if old != route:
                with contextlib.suppress(NotFoundError):
                    await self.netlink.delete_route(old)
        port.routes = ()
        if route is not None:
            await self.netlink.ensure_route(route)
            port.routes = (route,)
        port.lease = lease
        await self._record(item, port.owned, port.routes)
        if item.dhcp == "client":
            log.info("port %s: %s", item.ifname,
                     f"lease {lease.address} via {gateway or 'no router'}" if lease is not None
                     else "no DHCP lease")  # fmt: skip

    async def _record(self, item: PortItem, owned: Iterable[IPInterface],
                      routes: Iterable[Route]) -> None:  # fmt: skip
        rec = item.record()
        rec["owned"] = [str(a) for a in owned]
        rec["routes"] = [_route_record(r) for r in routes]
        await self.records.save(KIND, item.ifname, rec)


__all__ = [
    "KIND",
    "PortConfigurator",
    "PortItem",
    "fingerprint",
    "port_from_json",
    "port_json",
    "render",
    "route_metric",
]
