"""The node's network ports and the addressing of network instances, validated.  Pure.

A *port* is what EVE calls a system adapter: a logical name (``SystemAdapter.name``) over a
kernel interface (the ``ifname`` of the ``PhysicalIO`` its ``lowerLayerName`` names, or, as in
older configs, of the ``PhysicalIO`` with the same logical label), with IP settings from the
``NetworkConfig`` it refers to (DHCP client or static).  As EVE does, every port carries the
shared label ``all``, every management port ``uplink`` and every zero-cost management port
``freeuplink``, besides the labels the config gives.  A network instance names its port by
logical name or by a shared label (several ports); no port means an air-gapped instance.

Everything the controller sends is hostile: interface names must be kernel-valid and short,
labels bounded, addresses parse, a gateway and a DHCP range lie inside their subnet.  A port
that fails is left out with an error; the rest still applies.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: common.PhyIoMemberUsage values that make a port a management port.
USAGE_MGMT = frozenset({1, 5})  # MgmtAndApps, MgmtOnly
USAGE_MGMT_ONLY = 5
#: common.DHCPType
DHCP_STATIC, DHCP_NONE, DHCP_CLIENT = 1, 2, 4

_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_LABELS = 32
IMPLICIT_LABELS = ("all", "uplink", "freeuplink")


class PortError(ValueError):
    """A port or an instance's addressing that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    ifname: str
    management: bool
    #: False for a management-only port (apps' instances may not use it).
    for_apps: bool
    cost: int
    shared_labels: tuple[str, ...]
    #: ``client``, ``static`` or ``none``.
    dhcp: str
    #: Static address with its prefix length ("" unless static).
    address: str = ""
    gateway: str = ""
    dns: tuple[str, ...] = ()
    mtu: int = 0


def _label(text: str, what: str) -> str:
    if not _LABEL.match(text):
        raise PortError(f"{what} {text[:64]!r} is not a label ([A-Za-z0-9_.:-], 1-64)")
    return text


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise PortError(f"{what} {text[:64]!r} is not an IP address") from None


def _net(text: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PortError(f"{what} {text[:64]!r} is not a subnet") from None


def parse_port(adapter: Any, physical: Mapping[str, Any], networks: Mapping[str, Any]) -> Port:
    """One ``SystemAdapter`` with the ``PhysicalIO`` (by logical label) and ``NetworkConfig``
    (by id) it refers to.  Raises PortError."""
    name = _label(adapter.name, "port name")
    lower = adapter.lowerLayerName or adapter.name
    phy = physical.get(lower)
    if phy is None:
        raise PortError(f"port {name}: no physical IO with logical label {lower[:64]!r}")
    ifname = dict(phy.phyaddrs).get("ifname", "")
    if not _IFNAME.match(ifname):
        raise PortError(f"port {name}: interface name {ifname[:32]!r} is not valid")
    usage = int(phy.usage)
    management = usage in USAGE_MGMT or bool(adapter.uplink)
    cost = int(adapter.cost)
    if not 0 <= cost <= 255:
        raise PortError(f"port {name}: cost {cost} outside 0..255")
    labels = [_label(label, f"port {name}: shared label") for label in adapter.shared_labels]
    if len(labels) > MAX_LABELS:
        raise PortError(f"port {name}: more than {MAX_LABELS} shared labels")
    for label in labels:
        if label in IMPLICIT_LABELS:
            raise PortError(f"port {name}: shared label {label!r} is reserved")
    implicit = ["all"] + (["uplink"] if management else [])
    if management and cost == 0:
        implicit.append("freeuplink")
    dhcp, address, gateway, mtu = "client", "", "", 0
    dns: tuple[str, ...] = ()
    if adapter.networkUUID:
        net = networks.get(adapter.networkUUID)
        if net is None:
            raise PortError(f"port {name}: no network {adapter.networkUUID[:64]!r}")
        mtu = int(net.mtu)
        if mtu and not 576 <= mtu <= 65535:
            raise PortError(f"port {name}: MTU {mtu} outside 576..65535")
        kind = int(net.ip.dhcp)
        dns = tuple(str(_ip(d, f"port {name}: DNS server")) for d in net.ip.dns)
        if kind == DHCP_STATIC:
            dhcp = "static"
            subnet = _net(net.ip.subnet, f"port {name}: subnet")
            addr = _ip(adapter.addr, f"port {name}: address")
            if addr not in subnet:
                raise PortError(f"port {name}: address {addr} is not in {subnet}")
            address = f"{addr}/{subnet.prefixlen}"
            if net.ip.gateway:
                gw = _ip(net.ip.gateway, f"port {name}: gateway")
                if gw not in subnet:
                    raise PortError(f"port {name}: gateway {gw} is not in {subnet}")
                gateway = str(gw)
        elif kind == DHCP_NONE:
            dhcp = "none"
    return Port(
        name=name, ifname=ifname, management=management, for_apps=usage != USAGE_MGMT_ONLY,
        cost=cost, shared_labels=tuple(dict.fromkeys([*implicit, *labels])), dhcp=dhcp,
        address=address, gateway=gateway, dns=dns, mtu=mtu,
    )  # fmt: skip


def parse_ports(
    adapters: Iterable[Any], physical: Iterable[Any], networks: Iterable[Any]
) -> tuple[dict[str, Port], list[tuple[str, str]]]:
    """Every port of the config, and (name, error) for each one left out.  Two ports on one
    interface, or two with one name, leave the later one out."""
    phys = {p.logicallabel: p for p in physical if p.logicallabel}
    nets = {n.id: n for n in networks if n.id}
    ports: dict[str, Port] = {}
    errors: list[tuple[str, str]] = []
    used: dict[str, str] = {}
    for adapter in adapters:
        try:
            port = parse_port(adapter, phys, nets)
        except PortError as exc:
            errors.append((str(adapter.name)[:64], str(exc)))
            continue
        if port.name in ports:
            errors.append((port.name, f"duplicate port {port.name}"))
        elif port.ifname in used:
            errors.append(
                (port.name, f"interface {port.ifname} is port {used[port.ifname]} already")
            )
        else:
            ports[port.name] = port
            used[port.ifname] = port.name
    return ports, errors


def resolve(ports: Mapping[str, Port], label: str) -> tuple[Port, ...]:
    """The ports a network instance's ``port`` names: one by logical name, or every port with
    that shared label (sorted by cost, then name); ``()`` for an empty label (air-gapped)."""
    if not label:
        return ()
    if label in ports:
        return (ports[label],)
    found = [p for p in ports.values() if label in p.shared_labels]
    return tuple(sorted(found, key=lambda p: (p.cost, p.name)))


@dataclass(frozen=True, slots=True)
class Addressing:
    """A local instance's IPv4 addressing: the subnet, the gateway (the bridge's address) and
    the DHCP range, all checked to fit together."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dhcp_start: ipaddress.IPv4Address
    dhcp_end: ipaddress.IPv4Address


#: EVE caps a local instance's dynamic range at this many addresses.
MAX_DHCP_RANGE = 255


def instance_addressing(subnet: str, gateway: str, start: str, end: str) -> Addressing:
    """Check a local instance's addressing; defaults as EVE: the gateway is the subnet's first
    host, the range the rest (capped).  Raises PortError naming the problem."""
    net = _net(subnet, "subnet")
    if not isinstance(net, ipaddress.IPv4Network):
        raise PortError("only IPv4 local instances are supported")
    if net.prefixlen > 30:
        raise PortError(f"subnet {net} is too small (at most /30)")
    hosts = net.hosts()
    first = next(hosts)
    gw = _ip(gateway, "gateway") if gateway else first
    if (
        not isinstance(gw, ipaddress.IPv4Address)
        or gw not in net
        or gw in (net.network_address, net.broadcast_address)
    ):
        raise PortError(f"gateway {gw} is not a host of {net}")
    lo = _ip(start, "DHCP range start") if start else gw + 1
    hi = (
        _ip(end, "DHCP range end")
        if end
        else min(net.broadcast_address - 1, lo + MAX_DHCP_RANGE - 1)
    )
    if not (isinstance(lo, ipaddress.IPv4Address) and isinstance(hi, ipaddress.IPv4Address)):
        raise PortError("the DHCP range must be IPv4")
    for addr, what in ((lo, "start"), (hi, "end")):
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise PortError(f"DHCP range {what} {addr} is not a host of {net}")
    if hi < lo:
        raise PortError(f"DHCP range {lo}-{hi} is empty")
    if lo <= gw <= hi:
        raise PortError(f"the gateway {gw} is inside the DHCP range {lo}-{hi}")
    if int(hi) - int(lo) + 1 > MAX_DHCP_RANGE:
        hi = lo + MAX_DHCP_RANGE - 1
    return Addressing(net, gw, lo, hi)
