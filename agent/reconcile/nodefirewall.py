"""The node firewall: what may reach the node itself, as one nftables table.  Rendering is pure.

EVE's device firewall (``eve:pkg/pillar/dpcreconciler/linux.go``, ``getIntendedFilterRules``)
lets into the node, through its ports, only replies to what the node started (so the
controller connection always works: the node dials it), SSH when the config gives an
authorized key (``debug.enable.ssh``), VNC when ``app.allow.vnc`` is set, DHCP, ICMP echo and,
on a cluster node, the cluster's ports on its cluster interface; TCP 8080 is always refused;
the rest arriving on a port is dropped.  It also refuses routing from one port to another.
This table does the same (``inet <prefix>node``):

- ``input`` (hook input) sends what arrives on a port the config names (an L3 port: not one a
  switch instance bridges) to ``port_in``, and what arrives on a local instance's bridge (an
  app talking to the node) to ``app_in``; everything else (loopback, interfaces the config does
  not name) is left alone, as the agent touches only what the config names;
- ``port_in``: established and related, then the rules above in EVE's order, then a counted
  drop (``node:in:drop``);
- ``app_in``: established and related, DHCP, DNS, the metadata server (169.254.169.254, TCP
  80) and ICMP; the rest dropped (``node:app-in:drop``) - apps reach the instance's services,
  not the node's;
- ``forward`` (hook forward): a packet from one L3 port to another is dropped.

ICMPv6 passes everywhere (neighbour discovery).  A rejected TCP port answers with a reset, as
EVE's do.  The table exists only when there is something to guard (an L3 port or a local
instance).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.drivers.metadata import METADATA_ADDRESS
from agent.drivers.nft_api import Chain, Family, Rule, Table
from agent.model.configitems import ConfigItems
from agent.reconcile.items import NodeItem
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan

KIND = "nodefirewall"
TABLE = "node"
_PROTOCOLS = {"tcp": 6, "udp": 17}


@dataclass(frozen=True)
class Inbound:
    """One more thing the node accepts on its ports (the cluster's ports, for one): ``protocol``
    tcp or udp, destination ports ``first``-``last``, only on ``ifname`` and to ``daddr`` when
    given."""

    label: str
    protocol: str
    first: int
    last: int
    ifname: str = ""
    daddr: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in _PROTOCOLS:
            raise ValueError(f"{self.label}: protocol {self.protocol!r} is not tcp or udp")
        if not 0 < self.first <= self.last <= 65535:
            raise ValueError(f"{self.label}: ports {self.first}-{self.last} out of range")


@dataclass(frozen=True)
class NodePolicy:
    """What the config lets in besides replies, DHCP and ICMP echo."""

    ssh: bool = False
    vnc: bool = False
    inbound: tuple[Inbound, ...] = ()

    @classmethod
    def from_items(cls, items: ConfigItems, inbound: Iterable[Inbound] = ()) -> NodePolicy:
        """EVE's switches: an SSH authorized key opens port 22, ``app.allow.vnc`` 5900-5999."""
        return cls(
            ssh=bool(str(items.get("debug.enable.ssh")).strip()),
            vnc=items.bool("app.allow.vnc"),
            inbound=tuple(inbound),
        )


@dataclass(frozen=True)
class NodeFirewallItem(NodeItem):
    """The node firewall table (name without our prefix; the configurator adds it)."""

    KIND = KIND
    tables: tuple[Table, ...]


def _meta(key: str, value: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}}


def _names(names: Iterable[str]) -> Any:
    found = sorted(set(names))
    return found[0] if len(found) == 1 else {"set": found}


def _port(protocol: str, first: int, last: int | None = None) -> list[dict[str, Any]]:
    # ``tcp dport`` (the protocol implied), as the kernel lists it back.
    right: Any = first if last is None or last == first else {"range": [first, last]}
    left = {"payload": {"protocol": protocol, "field": "dport"}}
    return [{"match": {"op": "==", "left": left, "right": right}}]


_ESTABLISHED = {
    "match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}
}
_INVALID = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}
_ECHO = {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}},
                   "right": "echo-request"}}  # fmt: skip
_ICMPV6 = _meta("l4proto", "ipv6-icmp")
_ACCEPT: dict[str, Any] = {"accept": None}
_DROP: dict[str, Any] = {"drop": None}
_RESET: dict[str, Any] = {"reject": {"type": "tcp reset"}}


def l3_ports(plan: NetPlan) -> list[str]:
    """The kernel names of the config's ports that carry the node's own IP traffic (a switch
    instance's port is the instance's bridge's, not the node's)."""
    bridged = {
        p.ifname for ni in plan.instances.values() if ni.kind == SWITCH for p in ni.ports
    }  # fmt: skip
    return sorted({p.ifname for p in plan.ports.values()} - bridged)


def _port_in(policy: NodePolicy) -> Chain:
    rules = [
        Rule((_ESTABLISHED, _ACCEPT)),
        Rule((_INVALID, _DROP)),
        Rule((*_port("tcp", 8080), _RESET), comment="node:in:8080"),
        Rule((*_port("tcp", 22), _ACCEPT if policy.ssh else _RESET), comment="node:in:ssh"),
        Rule((*_port("tcp", 5900, 5999), _ACCEPT if policy.vnc else _RESET), comment="node:in:vnc"),
        Rule((*_port("udp", 67, 68), _ACCEPT), comment="node:in:dhcp"),
        Rule((_ECHO, _ACCEPT), comment="node:in:icmp"),
        Rule((_ICMPV6, _ACCEPT)),
    ]
    for extra in policy.inbound:
        exprs = [*_port(extra.protocol, extra.first, extra.last)]
        if extra.ifname:
            exprs.insert(0, _meta("iifname", extra.ifname))
        if extra.daddr:
            exprs.append({"match": {"op": "==", "right": extra.daddr, "left": {
                "payload": {"protocol": "ip", "field": "daddr"}}}})  # fmt: skip
        rules.append(Rule((*exprs, _ACCEPT), comment=f"node:in:{extra.label}", counter=True))
    rules.append(Rule((_DROP,), comment="node:in:drop", counter=True))
    return Chain("port_in", rules=tuple(rules))


def _app_in() -> Chain:
    metadata = {"match": {"op": "==", "right": METADATA_ADDRESS, "left": {
        "payload": {"protocol": "ip", "field": "daddr"}}}}  # fmt: skip
    return Chain("app_in", rules=(
        Rule((_ESTABLISHED, _ACCEPT)),
        Rule((*_port("udp", 67), _ACCEPT), comment="node:app-in:dhcp"),
        Rule((*_port("udp", 53), _ACCEPT), comment="node:app-in:dns"),
        Rule((*_port("tcp", 53), _ACCEPT), comment="node:app-in:dns-tcp"),
        Rule((metadata, *_port("tcp", 80), _ACCEPT), comment="node:app-in:metadata"),
        Rule((_ECHO, _ACCEPT), comment="node:app-in:icmp"),
        Rule((_ICMPV6, _ACCEPT)),
        Rule((_DROP,), comment="node:app-in:drop", counter=True),
    ))  # fmt: skip


def render(plan: NetPlan, policy: NodePolicy) -> NodeFirewallItem | None:
    """The node firewall for ``plan`` under ``policy``; None when there is nothing to guard."""
    ports = l3_ports(plan)
    bridges = sorted(ni.bridge for ni in plan.instances.values() if ni.kind == LOCAL)
    if not ports and not bridges:
        return None
    input_rules: list[Rule] = []
    chains: list[Chain] = []
    if ports:
        input_rules.append(Rule((_meta("iifname", _names(ports)), {"jump": {"target": "port_in"}})))
        chains.append(_port_in(policy))
    if bridges:
        input_rules.append(
            Rule((_meta("iifname", _names(bridges)), {"jump": {"target": "app_in"}}))
        )
        chains.append(_app_in())
    # Before the app firewall's forward chain (priority 0): a port-to-port packet is never
    # anyone's app traffic.
    forward_rules: tuple[Rule, ...] = ()
    if len(ports) > 1:
        forward_rules = (Rule((_meta("iifname", _names(ports)), _meta("oifname", _names(ports)),
                               _DROP), comment="node:fwd:drop", counter=True),)  # fmt: skip
    chains += [
        Chain("input", hook="input", type="filter", priority=0, rules=tuple(input_rules)),
        Chain("forward", hook="forward", type="filter", priority=-5, rules=forward_rules),
    ]
    return NodeFirewallItem((Table(Family.INET, TABLE, chains=tuple(chains)),))
