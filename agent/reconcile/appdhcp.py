"""Addresses for container interfaces on switch network instances, from the outside network's
DHCP server (EVE's switch instance: "external DHCP").

A container's VIF on a switch instance is attached without an address (:mod:`agent.reconcile.
networks`, ``VifItem.dhcp``).  :class:`AppLeases` runs beside the engine and follows every such
VIF the engine has in place: it asks for a lease in the container's namespace
(:class:`agent.drivers.appdhcp.AppDhcp`, one exchange at a time), applies it to the interface
(its address and, on the app's first interface, the default route through the lease's router)
through the netlink driver, renews it at half its time (asking for the same address), and
takes the address away when the lease runs out unrenewed.  A container that restarted has a new
namespace (the VIF item attaches it again): its lease is asked for afresh.

Leases held are recorded (``applease/<vif>.json`` beside the VIFs' records) with the namespace
they were applied in, so a restarted agent keeps following them instead of asking again; a
record whose namespace is gone is dropped.  Reports take the address from :meth:`AppLeases.
address`.

No answer is no error (the app runs without an address until a server answers; asked again
after 2, 4, ... 60 s); a driver error is logged once per message and retried the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.drivers.appdhcp import AppDhcp
from agent.drivers.containers import ContainerRuntime
from agent.drivers.dhcpclient import Lease, lease_record
from agent.drivers.errors import DriverError
from agent.drivers.netlink_api import Netlink
from agent.reconcile.records import RecordBook

log = logging.getLogger(__name__)

RECORD_KIND = "applease"
#: Shortest and longest wait before asking again after no answer or an error.
RETRY_MIN, RETRY_MAX = 2.0, 60.0
#: A lease is never renewed sooner than this after it was obtained (a hostile 1 s lease).
RENEW_MIN = 10.0


@dataclass(frozen=True)
class DhcpVif:
    """What :class:`AppLeases` needs of a VIF item (``networks.VifItem`` with ``dhcp``)."""

    app_id: str
    index: int
    host_name: str
    peer_name: str
    bridge: str
    mac: str
    hostname: str

    @property
    def key(self) -> str:
        return self.host_name


@dataclass
class _Held:
    #: The namespace (st_dev, st_ino) the lease was applied in.
    ns: tuple[int, int]
    #: (app id, interface index).
    vif: tuple[str, int] = ("", 0)
    lease: Lease | None = None
    next_try: float = 0.0
    failures: int = 0
    last_error: str = ""


def _ns_identity(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _renew_at(lease: Lease) -> float:
    if lease.lease_time >= 0xFFFFFFFF:
        return math.inf
    return lease.obtained + max(RENEW_MIN, lease.lease_time / 2)


class AppLeases:
    """The DHCP leases of a node's container interfaces on switch instances."""

    def __init__(
        self,
        dhcp: AppDhcp,
        netlink: Netlink,
        containers: ContainerRuntime,
        records: RecordBook,
        *,
        clock: Callable[[], float] = time.time,
        ns_of: Callable[[int], tuple[int, int] | None] | None = None,
    ) -> None:
        """``ns_of`` tells a process's network namespace (st_dev, st_ino), None when it is
        gone (default: ``/proc/<pid>/ns/net``; tests give their own)."""
        self.dhcp = dhcp
        self._ns_of = ns_of or _ns_identity
        self.netlink = netlink
        self.containers = containers
        self.records = records
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._loaded = False
        self._wake = asyncio.Event()
        #: Called after a lease was applied or lost (reports pick the address up).
        self.on_change: Callable[[], None] = lambda: None
        #: Told an app's DNS servers from its leases (interface order) when they change: the
        #: container's resolv.conf (``ContainerAppConfigurator.lease_dns``).  May raise OSError.
        self.on_dns: Callable[[str, tuple[str, ...]], Awaitable[None]] | None = None
        self._dns_told: dict[str, tuple[str, ...]] = {}

    def kick(self) -> None:
        """A VIF was (re)attached: look at once."""
        self._wake.set()

    def address(self, app_id: str, index: int) -> tuple[str, str]:
        """(address, router) the app's interface holds by DHCP, ("", "") for none."""
        for held in self._held.values():
            lease = held.lease
            if lease is not None and held.vif == (app_id, index):
                router = str(lease.router) if lease.router is not None else ""
                return str(lease.address.ip), router
        return "", ""

    async def run(self, vifs: Callable[[], list[DhcpVif]], stop: asyncio.Event) -> None:
        """Follow the leases of ``vifs()`` (the VIFs in place) until ``stop``."""
        while not stop.is_set():
            self._wake.clear()
            wanted = vifs()
            try:
                await self.sync(wanted)
            except Exception:  # one bad pass must not end the task; logged with its trace
                log.exception("app DHCP pass failed")
            wait = self._next_wait() if wanted else 30.0
            with contextlib.suppress(asyncio.TimeoutError):
                waits = [asyncio.ensure_future(self._wake.wait()),
                         asyncio.ensure_future(stop.wait())]  # fmt: skip
                _done, pending = await asyncio.wait(
                    waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()

    def _next_wait(self) -> float:
        now = self._clock()
        due = [h.next_try for h in self._held.values()]
        due += [_renew_at(h.lease) for h in self._held.values() if h.lease is not None]
        soonest = min(due, default=now + RETRY_MIN)
        return min(max(0.5, soonest - now), 30.0)

    async def sync(self, wanted: list[DhcpVif]) -> bool:
        """One pass over ``wanted``: ask, renew, apply, expire; forget what is no longer
        wanted.  Returns whether any address changed."""
        if not self._loaded:
            await self._load()
        keys = {v.key for v in wanted}
        for key in [k for k in self._held if k not in keys]:
            del self._held[key]
            await self.records.remove(RECORD_KIND, key)
            with contextlib.suppress(DriverError, OSError):
                await self.dhcp.forget(key)
        results = await asyncio.gather(*(self._one(v) for v in wanted))
        changed = any(results)
        if changed:
            self.on_change()
        await self._tell_dns()
        return changed

    async def _tell_dns(self) -> None:
        """Each app's DNS servers from its leases to ``on_dns`` when they changed.  A lease
        lost leaves the servers told last (a resolver with no server helps nobody)."""
        if self.on_dns is None:
            return
        now: dict[str, list[str]] = {}
        for held in sorted(self._held.values(), key=lambda h: h.vif):
            if held.lease is not None:
                servers = now.setdefault(held.vif[0], [])
                servers += [s for d in held.lease.dns if (s := str(d)) not in servers]
        for app_id in [a for a in self._dns_told if a not in now]:
            del self._dns_told[app_id]
        for app_id, servers in now.items():
            told = tuple(servers)
            if not told or self._dns_told.get(app_id) == told:
                continue
            try:
                await self.on_dns(app_id, told)
            except OSError as exc:
                log.warning("app %s: DNS servers of its lease not written: %s", app_id, exc)
                continue
            self._dns_told[app_id] = told

    async def _one(self, vif: DhcpVif) -> bool:
        try:
            state = await self.containers.inspect(vif.app_id)
        except DriverError:
            return False  # dockerd away: the workloads' watch reports it; ask again later
        if not state.running or state.pid is None:
            return False
        path = f"/proc/{state.pid}/ns/net"
        ns = await asyncio.to_thread(self._ns_of, state.pid)
        if ns is None:
            return False
        held = self._held.get(vif.key)
        if held is None or held.ns != ns:
            held = self._held[vif.key] = _Held(ns, (vif.app_id, vif.index))
        now = self._clock()
        lease = held.lease
        if lease is not None and now < _renew_at(lease):
            return False
        if now < held.next_try:
            return False
        try:
            got = await self.dhcp.acquire(
                vif.key, path, f"eth{vif.index}",
                requested=lease.address.ip if lease is not None else None,
                hostname=vif.hostname,
            )  # fmt: skip
            if got is None:
                self._backoff(held, "")
                if lease is not None and lease.expired(now):
                    log.warning("app %s eth%d: lease of %s ran out unrenewed", vif.app_id,
                                vif.index, lease.address)  # fmt: skip
                    await self._apply(vif, state.pid, None)
                    held.lease = None
                    await self.records.remove(RECORD_KIND, vif.key)
                    return True
                return False
            await self._apply(vif, state.pid, got)
        except DriverError as exc:
            self._backoff(held, str(exc))
            return False
        held.failures, held.next_try, held.last_error = 0, 0.0, ""
        moved = lease is None or lease.address != got.address or lease.routers != got.routers
        held.lease = got
        if moved:
            log.info("app %s eth%d: %s by DHCP", vif.app_id, vif.index, got.address)
        await self.records.save(RECORD_KIND, vif.key, {
            "ns": list(ns), "app_id": vif.app_id, "index": vif.index,
            "lease": dict(lease_record(got) or {}),
        })  # fmt: skip
        return moved

    def _backoff(self, held: _Held, error: str) -> None:
        held.failures += 1
        held.next_try = self._clock() + min(RETRY_MAX, RETRY_MIN * 2 ** (held.failures - 1))
        if error and error != held.last_error:
            log.warning("app DHCP: %s", error)
        held.last_error = error

    async def _apply(self, vif: DhcpVif, pid: int, lease: Lease | None) -> None:
        """The interface holds exactly the lease's address (none for None) and, on the first
        interface, the default route through its router."""
        addresses = [lease.address] if lease is not None else []
        routes: list[tuple[Any, Any]] = []
        if lease is not None and lease.router is not None and vif.index == 0:
            routes.append((ipaddress.ip_network("0.0.0.0/0"), lease.router))
        await self.netlink.ensure_veth(
            vif.host_name, vif.peer_name, bridge=vif.bridge, mac=vif.mac,
            peer_netns=f"/proc/{pid}/ns/net", peer_ifname=f"eth{vif.index}",
            peer_addresses=addresses, peer_routes=routes,
        )  # fmt: skip

    async def _load(self) -> None:
        """Leases a previous run held (adopted while their namespace lives)."""
        self._loaded = True
        for key, rec in (await self.records.load(RECORD_KIND)).items():
            try:
                ns = (int(rec["ns"][0]), int(rec["ns"][1]))
                raw = rec["lease"]
                lease = Lease(
                    ipaddress.IPv4Interface(str(raw["address"])),
                    tuple(ipaddress.IPv4Address(str(r)) for r in raw.get("routers", ())[:8]),
                    tuple(ipaddress.IPv4Address(str(d)) for d in raw.get("dns", ())[:8]),
                    int(raw["lease_time"]), float(raw["obtained"]),
                )  # fmt: skip
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                log.warning("app lease record %s unusable (%s)", key, exc)
                await self.records.remove(RECORD_KIND, key)
                continue
            vif = (str(rec.get("app_id", "")), int(rec.get("index", 0)))
            self._held[key] = _Held(ns, vif, lease)


__all__ = ["AppLeases", "DhcpVif"]
