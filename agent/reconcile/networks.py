"""Network instances (EVE's zedrouter, links part): bridges and app interfaces.

Two kinds of item, both rendered from :mod:`agent.reconcile.netplan`:

- ``bridge`` (one per active network instance): the instance's bridge, with a stable MAC of
  its own (so the gateway's address never moves with the ports that come and go) and, for a
  local instance, the gateway address with the subnet's prefix and IPv4 forwarding on; a
  switch instance enslaves its port instead.  Address, MTU or port changes apply in place.
- ``vif`` (one per container app interface): a veth pair whose host side is enslaved to the
  instance's bridge and whose peer is moved into the container's network namespace (found by
  its init PID) as ``eth<n>``, with the app's MAC, address and, on the first interface, the
  default route through the gateway.  It depends on the app's container: a recreated
  container recreates it, and a container that restarted by itself (a new namespace, the old
  pair gone with it) is seen as a vanished VIF and attached again.  VM interfaces are libvirt
  bridge NICs on the domain (:mod:`agent.reconcile.vmapps`); they depend on the bridge.

What was made is recorded (``net/<kind>/<key>.json``, not secret, outside the vault: networks do
not wait for it), so a restarted agent adopts bridges and VIFs instead of rebuilding them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent.drivers.appdhcp import AppDhcp
from agent.drivers.containers import ContainerRuntime
from agent.drivers.dnsmasq import Dnsmasq
from agent.drivers.errors import NotFoundError, TemporaryError
from agent.drivers.metadata import METADATA_ADDRESS, MetadataServer
from agent.drivers.netlink_api import LinkKind, Netlink, Route, parse_name
from agent.drivers.nflog import Nflog
from agent.drivers.nft_api import Nft
from agent.model.config import ObjectError
from agent.reconcile import dnsdhcp, firewall, nodefirewall
from agent.reconcile import metadata as metadata_mod
from agent.reconcile.acerules import HostSet
from agent.reconcile.appdhcp import AppLeases, DhcpVif
from agent.reconcile.items import BaseConfigurator, Configurator, Item, ItemRef, OwnerRef
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, stable_mac
from agent.reconcile.records import RecordBook
from agent.reconcile.switchlearn import SwitchAddresses

log = logging.getLogger(__name__)

BRIDGE, VIF = "bridge", "vif"


@dataclass(frozen=True)
class BridgeItem:
    ni_id: str
    name: str
    kind: str
    #: ``gateway/prefix`` of a local instance ("" for a switch).
    address: str
    mac: str
    mtu: int = 0
    #: The port a switch instance bridges ("" none).
    port: str = ""
    #: The ports a local instance NATs out of (forwarding on: the replies come in there).
    nat_ports: tuple[str, ...] = ()
    display: str = field(default="", compare=False)
    #: A cluster instance (its subnet spread over the members' nodes): the port the rest of
    #: the subnet is reached through, the subnet, and the instance's own app addresses (host
    #: routes to the bridge).  See :func:`render`.
    cluster_port: str = ""
    subnet: str = ""
    host_routes: tuple[str, ...] = ()

    @property
    def ref(self) -> ItemRef:
        return (BRIDGE, self.ni_id)

    @property
    def owner(self) -> OwnerRef:
        return ("networkinstance", self.ni_id)

    def deps(self) -> Iterable[ItemRef]:
        return ()

    def needs_recreate(self, old: Any) -> bool:
        return not isinstance(old, BridgeItem) or (old.name, old.kind) != (self.name, self.kind)

    def record(self) -> dict[str, Any]:
        return {"ni_id": self.ni_id, "name": self.name, "kind": self.kind,
                "address": self.address, "mac": self.mac, "mtu": self.mtu, "port": self.port,
                "nat_ports": list(self.nat_ports), "display": self.display,
                "cluster_port": self.cluster_port, "subnet": self.subnet,
                "host_routes": list(self.host_routes)}  # fmt: skip

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> BridgeItem:
        return cls(str(rec["ni_id"]), str(rec["name"]), str(rec["kind"]), str(rec["address"]),
                   str(rec["mac"]), int(rec["mtu"]), str(rec["port"]),
                   tuple(str(p) for p in rec.get("nat_ports", ())),
                   str(rec.get("display", "")), str(rec.get("cluster_port", "")),
                   str(rec.get("subnet", "")),
                   tuple(str(r) for r in rec.get("host_routes", ())))  # fmt: skip


@dataclass(frozen=True)
class VifItem:
    app_id: str
    index: int
    ni_id: str
    host_name: str
    mac: str
    #: ``address/prefix`` in the app ("" on a switch instance: the outside network's DHCP).
    address: str
    gateway: str
    bridge: str
    #: A switch instance's container VIF: addressed from the outside network's DHCP server
    #: (:mod:`agent.reconcile.appdhcp`) with this hostname.
    dhcp: bool = False
    #: Sent to the DHCP server; a rename is no reason to recreate the interface.
    hostname: str = field(default="", compare=False)

    @property
    def ref(self) -> ItemRef:
        return (VIF, f"{self.app_id}.{self.index}")

    @property
    def owner(self) -> OwnerRef:
        return ("app", self.app_id)

    def deps(self) -> Iterable[ItemRef]:
        return ((BRIDGE, self.ni_id), ("container", self.app_id))

    def needs_recreate(self, old: Any) -> bool:
        return True

    def record(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "index": self.index, "ni_id": self.ni_id,
                "host_name": self.host_name, "mac": self.mac, "address": self.address,
                "gateway": self.gateway, "bridge": self.bridge, "dhcp": self.dhcp,
                "hostname": self.hostname}  # fmt: skip

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> VifItem:
        return cls(str(rec["app_id"]), int(rec["index"]), str(rec["ni_id"]),
                   str(rec["host_name"]), str(rec["mac"]), str(rec["address"]),
                   str(rec["gateway"]), str(rec["bridge"]), rec.get("dhcp") is True,
                   str(rec.get("hostname", "")))  # fmt: skip

    def peer_name(self, netlink: Netlink) -> str:
        """The peer's name while it is still in the node's namespace (before the move)."""
        parsed = parse_name(netlink.node, self.host_name)
        return netlink.name(LinkKind.PEER, parsed[1] if parsed else 0)


def bridge_mac(node: str, ni_id: str) -> str:
    return stable_mac(node, f"bridge:{ni_id}", 0)


def render(netplan: NetPlan, node: str, container_apps: Iterable[str]) -> dict[ItemRef, Item]:
    """Bridge items of every planned instance, VIF items of the container apps' interfaces."""
    out: dict[ItemRef, Item] = {}
    for ni in netplan.instances.values():
        address = subnet = ""
        hosts: tuple[str, ...] = ()
        if ni.kind == LOCAL and ni.addressing is not None:
            address = f"{ni.addressing.gateway}/{ni.addressing.subnet.prefixlen}"
            if ni.cluster_port:
                # The subnet is the members': only the gateway and this node's apps are here
                # (host routes), the rest is behind the cluster port; proxy ARP on both sides
                # lets apps and the port's network reach each other without NAT.
                address = f"{ni.addressing.gateway}/32"
                subnet = str(ni.addressing.subnet)
                hosts = tuple(sorted(v.ip for v in netplan.vifs.values()
                                     if v.ni_id == ni.id and v.ip))  # fmt: skip
        port = ni.ports[0].ifname if ni.kind != LOCAL and ni.ports else ""
        nat = tuple(p.ifname for p in ni.ports) if ni.kind == LOCAL else ()
        item = BridgeItem(ni.id, ni.bridge, ni.kind, address, bridge_mac(node, ni.id), ni.mtu,
                          port, nat, ni.name, ni.cluster_port, subnet, hosts)  # fmt: skip
        out[item.ref] = item
    containers = set(container_apps)
    for vif in netplan.vifs.values():
        if vif.app_id not in containers:
            continue
        ni = netplan.instances[vif.ni_id]
        address = gateway = ""
        if vif.ip and ni.addressing is not None:
            address = f"{vif.ip}/{ni.addressing.subnet.prefixlen}"
            gateway = str(ni.addressing.gateway)
        # Also on an air-gapped switch: another app there may serve DHCP.
        dhcp = ni.kind == SWITCH
        vif_item = VifItem(vif.app_id, vif.index, vif.ni_id, vif.host_name, vif.mac, address,
                           gateway, ni.bridge, dhcp, vif.hostname if dhcp else "")  # fmt: skip
        out[vif_item.ref] = vif_item
    return out


class _Recorded(BaseConfigurator):
    kind = ""

    def __init__(self, netlink: Netlink, records: RecordBook) -> None:
        self.netlink = netlink
        self.records = records

    async def _recorded(self) -> dict[str, dict[str, Any]]:
        return await self.records.load(self.kind)


class BridgeConfigurator(_Recorded):
    kind = BRIDGE
    _warned = False

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        links = {link.name: link for link in await self.netlink.list_owned()}
        out: dict[ItemRef, Item] = {}
        for key, rec in (await self._recorded()).items():
            try:
                item = BridgeItem.from_record(rec)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("bridge record %s unusable (%s)", key, exc)
                continue
            link = links.get(item.name)
            if link is None or link.kind != "bridge":
                continue
            have = {str(a) for a in link.addresses}
            if item.address and item.address not in have:
                item = replace(item, address="")
            out[item.ref] = item
        return out

    async def _apply(self, item: BridgeItem, old: BridgeItem | None) -> None:
        addresses = [ipaddress.ip_interface(item.address)] if item.address else []
        if item.kind == LOCAL:
            # Apps reach the metadata server here (the same /32 on every local instance).
            addresses.append(ipaddress.ip_interface(f"{METADATA_ADDRESS}/32"))
        await self.netlink.ensure_bridge(
            item.name, mtu=item.mtu or None, mac=item.mac, addresses=addresses
        )
        # Bridged packets must meet the ACLs too (EVE relies on the same bridge netfilter):
        # between apps on a local instance, and everything of a switch instance's apps.
        if not await self.netlink.ensure_bridge_filtering() and not self._warned:
            self._warned = True
            log.warning("kernel without bridge netfilter: bridged traffic of apps (on one "
                        "local instance, on switch instances) is not filtered")  # fmt: skip
        if item.kind == LOCAL:
            await self.netlink.set_forwarding(item.name, True)
            for port in item.nat_ports:
                await self.netlink.set_forwarding(port, True, port=True)
        if old is not None and old.port and old.port != item.port:
            await self._release(old.port)
        if item.port:
            await self.netlink.set_master(item.port, item.name)
        await self._spread(item, old)

    async def _spread(self, item: BridgeItem, old: BridgeItem | None) -> None:
        """A cluster instance's routes and proxy ARP (see :func:`render`); what an older
        version set and this one does not is taken back."""
        if item.cluster_port:
            for ip in item.host_routes:
                await self.netlink.ensure_route(Route(ipaddress.ip_network(f"{ip}/32"),
                                                      dev=item.name))  # fmt: skip
            await self.netlink.ensure_route(
                Route(ipaddress.ip_network(item.subnet), dev=item.cluster_port)
            )
            await self.netlink.set_proxy_arp(item.name, True)
            await self.netlink.set_proxy_arp(item.cluster_port, True, port=True)
            await self.netlink.set_forwarding(item.cluster_port, True, port=True)
        if old is None or not old.cluster_port:
            return
        for ip in set(old.host_routes) - set(item.host_routes):
            with contextlib.suppress(NotFoundError):
                await self.netlink.delete_route(
                    Route(ipaddress.ip_network(f"{ip}/32"), dev=old.name)
                )
        if (old.cluster_port, old.subnet) != (item.cluster_port, item.subnet):
            await self._unspread(old)

    async def _unspread(self, old: BridgeItem) -> None:
        with contextlib.suppress(NotFoundError):
            await self.netlink.delete_route(
                Route(ipaddress.ip_network(old.subnet), dev=old.cluster_port)
            )
        with contextlib.suppress(NotFoundError):  # the port may be gone
            await self.netlink.set_proxy_arp(old.cluster_port, False, port=True)

    async def _release(self, port: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.netlink.set_master(port, None)

    async def create(self, item: BridgeItem) -> None:
        await self.records.save(BRIDGE, item.ni_id, item.record())
        await self._apply(item, None)
        log.info("network instance %s: bridge %s up", item.display or item.ni_id, item.name)

    async def modify(self, old: BridgeItem, new: BridgeItem) -> None:
        await self.records.save(BRIDGE, new.ni_id, new.record())
        await self._apply(new, old)

    async def delete(self, item: BridgeItem) -> None:
        if item.port:
            await self._release(item.port)
        if item.cluster_port:
            await self._unspread(item)
        await self.netlink.delete_link(item.name)
        await self.records.remove(BRIDGE, item.ni_id)


class VifConfigurator(_Recorded):
    kind = VIF

    def __init__(
        self,
        netlink: Netlink,
        records: RecordBook,
        containers: ContainerRuntime,
        leases: AppLeases | None = None,
    ) -> None:
        super().__init__(netlink, records)
        self.containers = containers
        self.leases = leases

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        names = {link.name for link in await self.netlink.list_owned()}
        out: dict[ItemRef, Item] = {}
        for key, rec in (await self._recorded()).items():
            try:
                item = VifItem.from_record(rec)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("vif record %s unusable (%s)", key, exc)
                continue
            if item.host_name in names:
                out[item.ref] = item
        return out

    async def create(self, item: VifItem) -> None:
        state = await self.containers.inspect(item.app_id)
        if not state.exists or state.pid is None:
            raise TemporaryError(f"container of app {item.app_id} is not running", retry_after=2)
        await self.records.save(VIF, f"{item.app_id}.{item.index}", item.record())
        peer = item.peer_name(self.netlink)
        routes: list[tuple[Any, Any]] = []
        if item.gateway and item.index == 0:
            routes.append((ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address(item.gateway)))
        await self.netlink.ensure_veth(
            item.host_name, peer, bridge=item.bridge, mac=item.mac,
            peer_netns=f"/proc/{state.pid}/ns/net", peer_ifname=f"eth{item.index}",
            peer_addresses=[ipaddress.ip_interface(item.address)] if item.address else [],
            peer_routes=routes,
        )  # fmt: skip
        log.info("app %s: eth%d on %s (%s)", item.app_id, item.index, item.bridge,
                 item.address or "outside DHCP")  # fmt: skip
        if item.dhcp and self.leases is not None:
            self.leases.kick()  # a new namespace asks for its lease at once

    async def modify(self, old: VifItem, new: VifItem) -> None:
        await self.create(new)  # needs_recreate: not reached

    async def delete(self, item: VifItem) -> None:
        await self.netlink.delete_link(item.host_name)
        await self.records.remove(VIF, f"{item.app_id}.{item.index}")


class Networks:
    """The network kinds of one node: its plan and the bridge and VIF configurators."""

    def __init__(
        self,
        netlink: Netlink,
        containers: ContainerRuntime,
        records: RecordBook,
        dnsmasq: Dnsmasq | None = None,
        nft: Nft | None = None,
        metadata: MetadataServer | None = None,
        app_dhcp: AppDhcp | None = None,
        dhcp_log: Nflog | None = None,
    ) -> None:
        self.netlink = netlink
        self.bridges = BridgeConfigurator(netlink, records)
        #: The DHCP leases of container interfaces on switch instances (None: they get none).
        self.leases = (
            AppLeases(app_dhcp, netlink, containers, records) if app_dhcp is not None else None
        )
        self.vifs = VifConfigurator(netlink, records, containers, self.leases)
        #: What switch instances' apps were given by DHCP (None: not learnt).
        self.switch_addresses = SwitchAddresses(dhcp_log) if dhcp_log is not None else None
        self.dnsmasq = dnsdhcp.DnsmasqConfigurator(dnsmasq) if dnsmasq is not None else None
        self.firewall = firewall.FirewallConfigurator(nft) if nft is not None else None
        self.node_firewall = firewall.FirewallConfigurator(nft) if nft is not None else None
        self.metadata = (
            metadata_mod.MetadataConfigurator(metadata) if metadata is not None else None
        )

    @property
    def node(self) -> str:
        return self.netlink.node

    def dhcp_vifs(self, actual: Mapping[ItemRef, Item]) -> list[DhcpVif]:
        """The VIFs in ``actual`` (the engine's items in place) that want an outside lease."""
        return [
            DhcpVif(item.app_id, item.index, item.host_name, item.peer_name(self.netlink),
                    item.bridge, item.mac, item.hostname)
            for ref, item in sorted(actual.items())
            if ref[0] == VIF and isinstance(item, VifItem) and item.dhcp
        ]  # fmt: skip

    async def acl_drops(self, layout: NetPlan | None) -> dict[str, list[firewall.InterfaceDrops]]:
        """Per app, what the firewall dropped of each interface (empty without a firewall).
        Reads every counter: call it at the metrics interval, not more often."""
        if self.firewall is None or layout is None:
            return {}
        return firewall.drops(layout, await self.firewall.counters())

    def configurators(self) -> dict[str, Configurator]:
        kinds: dict[str, Configurator] = {BRIDGE: self.bridges, VIF: self.vifs}
        if self.dnsmasq is not None:
            kinds[dnsdhcp.KIND] = self.dnsmasq
        if self.firewall is not None:
            kinds[firewall.KIND] = self.firewall
        if self.node_firewall is not None:
            kinds[nodefirewall.KIND] = self.node_firewall
        if self.metadata is not None:
            kinds[metadata_mod.KIND] = self.metadata
        return kinds

    def render(
        self,
        layout: NetPlan,
        container_apps: Iterable[str],
        policy: nodefirewall.NodePolicy | None = None,
    ) -> tuple[dict[ItemRef, Item], list[ObjectError]]:
        """Every network item of ``layout``, and the instances' problems; ``policy`` is what
        the node firewall lets in (the config's; nothing extra when None)."""
        items = render(layout, self.node, container_apps)
        errors: list[ObjectError] = []
        if self.node_firewall is not None:
            guard = nodefirewall.render(layout, policy or nodefirewall.NodePolicy())
            if guard is not None:
                items[guard.ref] = guard
        local = any(ni.kind == LOCAL for ni in layout.instances.values())
        switched = any(layout.instances[v.ni_id].kind == SWITCH for v in layout.vifs.values())
        host_sets: list[HostSet] = []
        if self.firewall is not None and (local or switched):
            fw, problems_by_app, host_sets = firewall.render(layout)
            items[fw.ref] = fw
            hostnames = {v.app_id: v.hostname for v in layout.vifs.values()}
            for app_id, message in problems_by_app:
                errors.append(ObjectError("app", app_id, hostnames.get(app_id, ""), message))
        if self.dnsmasq is not None:
            hosts = {v.app_id: v.hostname for v in layout.vifs.values()}
            nftsets: dict[str, list[tuple[str, str, str]]] = {}
            if self.firewall is not None:
                table = self.firewall.nft.table_name(firewall.FILTER_TABLE)
                for h in host_sets:
                    nftsets.setdefault(h.ni_id, []).append((h.domain, table, h.set_name))
            dhcp, problems = dnsdhcp.render(layout, hosts, nftsets)
            items.update(dhcp)
            for problem in problems:
                ni_id, _, message = problem.partition(": ")
                name = layout.instances[ni_id].name if ni_id in layout.instances else ""
                errors.append(ObjectError("networkinstance", ni_id, name, message))
        if self.metadata is not None and local:
            served = metadata_mod.MetadataItem()
            items[served.ref] = served
        return items, errors
