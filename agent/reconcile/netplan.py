"""How a config's network instances and app interfaces are laid out on the node.  Pure.

EVE's zedrouter gives every network instance a bridge and every app interface (VIF) a host-side
link, a MAC address and, on a local instance, an IPv4 address from the instance's DHCP range.
This module decides all of that from the config alone, deterministically, so that the same
config always yields the same names and addresses (an agent restart changes nothing):

- link names come from :func:`agent.drivers.netlink_api.link_name` with an index hashed from
  the instance's UUID (bridges) or the app's UUID and interface position (VIFs), probed past
  collisions in a fixed order;
- a VIF's MAC is the one the config gives, else ``02`` (locally administered, unicast) and five
  bytes of a hash of the node, the app and the interface position: stable per app and interface;
- an app interface's IPv4 address on a local instance is the configured ``addr`` when it lies in
  the subnet, else one of the DHCP range, hashed and probed like the names (apps are placed in
  UUID order, so one app's address never depends on when the others arrived, barring a
  collision).  Switch instances get their addresses from outside (no address here).

Problems are errors of the app (an interface on a missing or inactive instance, a static
address outside the subnet or taken twice); the rest still plans.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.drivers.netlink_api import MAX_INDEX, LinkKind, link_name
from agent.model.acl import Ace
from agent.model.config import NodeConfig, ObjectError
from agent.model.ports import Addressing, Port, PortError, instance_addressing, resolve

LOCAL, SWITCH = "local", "switch"
#: netinst.proto ZNetworkInstType
_TYPES = {1: SWITCH, 2: LOCAL}
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_HOST_BAD = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class NiPlan:
    id: str
    name: str
    kind: str
    bridge: str
    #: Local instances: subnet, gateway (the bridge's address), DHCP range.
    addressing: Addressing | None
    #: The ports it uses (NAT out of, or bridged to); () for an air-gapped instance.
    ports: tuple[Port, ...]
    port_label: str
    dns_servers: tuple[str, ...]
    static_dns: tuple[tuple[str, tuple[str, ...]], ...]
    mtu: int
    #: A cluster member's cluster instance: the port its subnet is reached through, across the
    #: members' nodes (see :func:`mark_cluster`); "" for any other instance.
    cluster_port: str = ""


@dataclass(frozen=True)
class VifPlan:
    app_id: str
    #: Position in the app's interface list (eth0, eth1, ... in the app).
    index: int
    ni_id: str
    #: The host side of the veth (containers) or the tap libvirt makes (VMs: its name).
    host_name: str
    mac: str
    #: IPv4 address on a local instance; "" on a switch instance.
    ip: str
    hostname: str
    acls: tuple[Ace, ...] = ()

    @property
    def guest_ifname(self) -> str:
        return f"eth{self.index}"


@dataclass
class NetPlan:
    instances: dict[str, NiPlan] = field(default_factory=dict)
    vifs: dict[tuple[str, int], VifPlan] = field(default_factory=dict)
    errors: list[ObjectError] = field(default_factory=list)
    #: The node's ports (the config's, else the last known ones), by logical name.
    ports: dict[str, Port] = field(default_factory=dict)


def _hash_index(*parts: str) -> int:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_INDEX + 1)


def _unique_index(taken: set[int], *parts: str) -> int:
    index = _hash_index(*parts)
    while index in taken:
        index = (index + 1) % (MAX_INDEX + 1)
    taken.add(index)
    return index


def stable_mac(node: str, app_id: str, index: int) -> str:
    """``02:xx:xx:xx:xx:xx``: locally administered, unicast, stable per node, app, interface."""
    digest = hashlib.sha256(f"{node}\x00{app_id}\x00{index}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def hostname(name: str, app_id: str) -> str:
    """A DNS label from the app's display name (its UUID when nothing is left)."""
    label = _HOST_BAD.sub("-", name.lower()).strip("-")[:63].strip("-")
    return label or app_id


def plan(config: NodeConfig, node: str, ports: Mapping[str, Port] | None = None) -> NetPlan:
    """The layout of ``config`` on node ``node``; ``ports`` are the node's effective ports (the
    config's once they have worked, else the last working ones: :mod:`agent.reconcile.
    portselect`), None for the config's own.  Pure."""
    known_ports = ports if ports is not None else config.ports
    out = NetPlan(ports=dict(known_ports))
    bridges: set[int] = set()
    for ni in sorted(config.network_instances.values(), key=lambda n: n.id):
        kind = _TYPES.get(ni.inst_type)
        if kind is None or not ni.activate:
            continue
        addressing = None
        if kind == LOCAL:
            try:
                addressing = instance_addressing(ni.subnet, ni.gateway, ni.dhcp_start, ni.dhcp_end)
            except PortError as exc:
                out.errors.append(ObjectError("networkinstance", ni.id, ni.name, str(exc)))
                continue
        used = resolve(known_ports, ni.port)
        if kind == SWITCH and ni.port and not used:
            message = f"no port named or labelled {ni.port!r} to bridge"
            out.errors.append(ObjectError("networkinstance", ni.id, ni.name, message))
            continue
        index = _unique_index(bridges, "bridge", ni.id)
        out.instances[ni.id] = NiPlan(
            id=ni.id, name=ni.name, kind=kind, bridge=link_name(node, LinkKind.BRIDGE, index),
            addressing=addressing, ports=used[:1] if kind == SWITCH else used,
            port_label=ni.port, dns_servers=ni.dns_servers, static_dns=ni.static_dns,
            mtu=ni.mtu,
        )  # fmt: skip
    _plan_vifs(config, node, out)
    mark_cluster(config, out)
    return out


def mark_cluster(config: NodeConfig, out: NetPlan) -> None:
    """A cluster member's K3s VM sits at the node's cluster address on a local instance that
    every member has, with the same subnet: that instance's subnet is spread over the members'
    nodes through its (first) port (:mod:`agent.reconcile.networks`).  Nothing when the node is
    in no cluster, or no app interface of a local instance with a port has that address."""
    if config.cluster is None:
        return
    own = str(ipaddress.ip_interface(config.cluster.ip_prefix).ip)
    vif = next((v for v in out.vifs.values() if v.ip == own), None)
    if vif is None:
        return
    ni = out.instances[vif.ni_id]
    if ni.kind == LOCAL and ni.ports:
        out.instances[ni.id] = replace(ni, cluster_port=ni.ports[0].ifname)


def _plan_vifs(config: NodeConfig, node: str, out: NetPlan) -> None:
    vif_indexes: set[int] = set()
    taken: dict[str, set[ipaddress.IPv4Address]] = {}
    for ni_id, instance in out.instances.items():
        if instance.addressing is not None:
            taken[ni_id] = {instance.addressing.gateway}
    apps = sorted(config.apps.values(), key=lambda a: a.id)
    # Static addresses first, so a dynamic one never takes an address the config gave away.
    pending: list[tuple[str, int, str, str, str, tuple[Ace, ...]]] = []
    for app in apps:
        problems = []
        for index, iface in enumerate(app.interfaces):
            ni = out.instances.get(iface.network_id)
            if ni is None:
                problems.append(f"interface {index}: network instance {iface.network_id} is "
                                "not active or not usable")  # fmt: skip
                continue
            mac = iface.mac.lower() if iface.mac else stable_mac(node, app.id, index)
            if not _MAC.match(mac) or int(mac[:2], 16) & 1:
                problems.append(f"interface {index}: MAC {iface.mac[:32]!r} is not unicast")
                continue
            static = ""
            if ni.addressing is not None and iface.static_ip:
                try:
                    addr = ipaddress.IPv4Address(iface.static_ip)
                except ValueError:
                    problems.append(f"interface {index}: {iface.static_ip[:40]!r} is not IPv4")
                    continue
                if (
                    addr not in ni.addressing.subnet
                    or addr in taken[ni.id]
                    or addr
                    in (
                        ni.addressing.subnet.network_address,
                        ni.addressing.subnet.broadcast_address,
                    )
                ):
                    problems.append(f"interface {index}: address {addr} is not free in "
                                    f"{ni.addressing.subnet}")  # fmt: skip
                    continue
                taken[ni.id].add(addr)
                static = str(addr)
            pending.append((app.id, index, ni.id, mac, static, iface.acls))
        if problems:
            out.errors.append(ObjectError("app", app.id, app.name, "; ".join(problems)))
    names = {a.id: hostname(a.name, a.id) for a in apps}
    failed = {e.id for e in out.errors if e.kind == "app"}
    for app_id, index, ni_id, mac, static, acls in pending:
        if app_id in failed:
            continue
        target = out.instances[ni_id]
        ip = static
        if target.addressing is not None and not ip:
            found = _allocate(target.addressing, taken[ni_id], app_id, index)
            if found is None:
                out.errors.append(ObjectError("app", app_id, names[app_id],
                                              f"network instance {target.name or ni_id} has no "
                                              "free address"))  # fmt: skip
                continue
            ip = str(found)
        host = link_name(node, LinkKind.VIF, _unique_index(vif_indexes, "vif", app_id, str(index)))
        out.vifs[(app_id, index)] = VifPlan(app_id, index, ni_id, host, mac, ip,
                                            names[app_id], acls)  # fmt: skip


def _allocate(
    a: Addressing, taken: set[ipaddress.IPv4Address], app_id: str, index: int
) -> ipaddress.IPv4Address | None:
    size = int(a.dhcp_end) - int(a.dhcp_start) + 1
    start = _hash_index("ip", app_id, str(index)) % size
    for step in range(size):
        addr = a.dhcp_start + (start + step) % size
        if addr not in taken:
            taken.add(addr)
            return addr
    return None
