"""DHCP and DNS of local network instances: one dnsmasq per instance (EVE's zedrouter).

The ``dnsmasq`` item of a local instance carries its whole :class:`DnsmasqConfig`:

- DHCP on the bridge: the instance's range, and a fixed address per app interface (MAC → the
  address the network plan gave it, with the app's host name), so a VM gets the address the
  agent reports and a container's statically configured one is never handed out again;
- DNS: every app's name (``app-name`` → its addresses on this instance) and the config's
  static entries; upstream servers from the instance's config, else from its ports (the
  config's, or a DHCP port's lease: :meth:`agent.reconcile.portselect.PortManager.effective`);
  none at all on an air-gapped instance, which then answers only its own
  names and hands out no default route.

Only host changes (apps coming and going) happen all the time; the driver applies those with a
SIGHUP (same process, leases kept), and restarts dnsmasq only when the main configuration
changes.  The item depends on the instance's bridge (dnsmasq binds to its gateway address).
After an agent restart the running instances are observed and adopted by ``ensure``.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.drivers.dnsmasq import (
    Dnsmasq,
    DnsmasqConfig,
    HostRecord,
    InvalidConfig,
    NftSet,
    NftsetRule,
    Route,
    StaticHost,
)
from agent.drivers.metadata import METADATA_ADDRESS
from agent.reconcile.items import BaseConfigurator, Item, ItemRef, OwnerRef
from agent.reconcile.netplan import LOCAL, NetPlan

log = logging.getLogger(__name__)

KIND = "dnsmasq"


@dataclass(frozen=True)
class DnsmasqItem:
    ni_id: str
    #: None for an instance observed running (compared unequal: ``ensure`` adopts it).
    config: DnsmasqConfig | None
    display: str = field(default="", compare=False)

    @property
    def ref(self) -> ItemRef:
        return (KIND, self.ni_id)

    @property
    def owner(self) -> OwnerRef:
        return ("networkinstance", self.ni_id)

    def deps(self) -> Iterable[ItemRef]:
        return (("bridge", self.ni_id),)

    def needs_recreate(self, old: Any) -> bool:
        return False  # ensure() restarts or reloads as the change needs


def render(
    netplan: NetPlan,
    apps: Mapping[str, str],
    nftsets: Mapping[str, Sequence[tuple[str, str, str]]] | None = None,
) -> tuple[dict[ItemRef, Item], list[str]]:
    """The dnsmasq items of the plan's local instances, and the problems found (as
    ``ni_id: message``; the instance runs without dnsmasq then).  ``apps`` maps app ids to
    their host names; ``nftsets`` per instance the (domain, table, set) whose resolved
    addresses dnsmasq adds to the firewall's sets (``host`` ACL matches)."""
    out: dict[ItemRef, Item] = {}
    problems: list[str] = []
    for ni in netplan.instances.values():
        if ni.kind != LOCAL or ni.addressing is None:
            continue
        a = ni.addressing
        vifs = [v for v in netplan.vifs.values() if v.ni_id == ni.id and v.ip]
        names: dict[str, list[str]] = {}
        for vif in vifs:
            names.setdefault(vif.hostname, []).append(vif.ip)
        upstreams = list(ni.dns_servers)
        if not upstreams:
            upstreams = [d for port in ni.ports for d in port.dns]
        try:
            records = [HostRecord(n, tuple(ipaddress.ip_address(i) for i in ips))
                       for n, ips in sorted(names.items())]  # fmt: skip
            records += [
                HostRecord(host, tuple(ipaddress.ip_address(x) for x in addrs))
                for host, addrs in ni.static_dns
                if host not in names and addrs
            ]
            config = DnsmasqConfig(
                instance_id=uuid.UUID(ni.id),
                bridge=ni.bridge,
                gateway=a.gateway,
                subnet=a.subnet,
                dhcp_range=(a.dhcp_start, a.dhcp_end),
                static_hosts=tuple(
                    StaticHost(v.mac, ipaddress.IPv4Address(v.ip), v.hostname)
                    for v in sorted(vifs, key=lambda v: v.mac)
                ),
                dns_records=tuple(records),
                upstreams=tuple(ipaddress.ip_address(u) for u in dict.fromkeys(upstreams)),
                mtu=ni.mtu or None,
                default_route=bool(ni.ports),
                # An air-gapped instance gives no default route, yet its apps must reach the
                # metadata server (a VM posting its kubeconfig): a route to it alone.
                routes=()
                if ni.ports
                else (Route(ipaddress.IPv4Network(f"{METADATA_ADDRESS}/32"), a.gateway),),
                nftsets=tuple(
                    NftsetRule(domain, (NftSet(table, name),))
                    for domain, table, name in sorted((nftsets or {}).get(ni.id, ()))
                ),
            )
        except (InvalidConfig, ValueError) as exc:
            problems.append(f"{ni.id}: DHCP/DNS: {exc}")
            continue
        item = DnsmasqItem(ni.id, config, ni.name)
        out[item.ref] = item
    return out, problems


class DnsmasqConfigurator(BaseConfigurator):
    def __init__(self, driver: Dnsmasq) -> None:
        self.driver = driver

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        return {
            (KIND, str(s.instance_id)): DnsmasqItem(str(s.instance_id), None)
            for s in await self.driver.list_owned()
        }

    async def create(self, item: DnsmasqItem) -> None:
        assert item.config is not None
        state = await self.driver.ensure(item.config)
        log.info("network instance %s: dnsmasq %s (pid %d)", item.display or item.ni_id,
                 state.change.value, state.pid)  # fmt: skip

    async def modify(self, old: DnsmasqItem, new: DnsmasqItem) -> None:
        await self.create(new)

    async def delete(self, item: DnsmasqItem) -> None:
        await self.driver.stop(uuid.UUID(item.ni_id))
