"""NAT and the apps' ACLs on network instances, as nftables tables.  Rendering is pure.

Three tables of the node (ours by name, :mod:`agent.drivers.nft_api`), applied together in one
transaction by the ``firewall`` item, so no packet ever meets half of a change:

- ``bridge guard``: the source guard (:mod:`agent.reconcile.antispoof`).
- ``ip nat``: ``postrouting`` masquerades each local instance's subnet out of its ports (EVE's
  NAT); ``prerouting`` turns each PORTMAP ACE into a DNAT from its port (``lport`` on the
  instance's ports, or only those with the ACE's ``adapter`` label) to the app's address and
  ``appPort``.
- ``inet filter``: ``forward`` accepts replies (conntrack), then sends every packet of an app
  (by its address on the instance, which the plan fixes; by its MAC for IPv6 and on switch
  instances) through the app interface's own chains, by verdict maps (source → its egress
  chain, destination → its ingress chain), so the cost does not grow with the number of apps.
  An egress chain holds the interface's ACEs in order (:mod:`agent.reconcile.acerules`), each
  counted under ``ace:<app>:<n>:<id>``, then the implicit drop (ACE id 0); an allow returns.
  A packet from one of this node's apps (``@apps``) to another then meets the receiver's peer
  chain: its ACEs mirrored (EVE's ACEs work both ways, all but PORTMAP) with the PORTMAPs'
  accepts at their place, then its implicit drop, so both ACLs decide (an air-gapped
  instance's apps, which EVE gives no ingress ACL, have none).  A packet from elsewhere
  meets the ingress chain: what the PORTMAPs map, then the implicit drop, as behind NAT; a
  cluster instance relies on it (only the K3s ports reach a member from another node).
  Anything else the hook's policy accepts; app-to-app packets on one bridge pass this hook
  too (the bridge item turns bridge netfilter on).  Traffic to the gateway itself (DNS, DHCP,
  the metadata server) is input, not forward: :mod:`agent.reconcile.nodefirewall`'s.

A ``host`` match (an FQDN and its subdomains) is a set with a timeout that the instance's dnsmasq
fills with the addresses it resolves for the app (``nftset``); the rule matches the remote end
in it, so it follows the DNS answers.  Switch instances: :func:`_switch_chains`.

Flow logs: accepting rules mark their connections with the ACE's id, dropping rules log the
packet to NFLOG first (see :data:`agent.reconcile.acerules.FLOW_MARK`; :mod:`agent.reconcile.flows`
reads both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from agent.drivers.errors import NotFoundError, PermanentError
from agent.drivers.nft_api import Chain, Family, Map, Nft, Rule, Set, Table
from agent.reconcile import antispoof, dnslog, switchlearn
from agent.reconcile.acerules import (
    HOST_TIMEOUT,
    LOG_BURST,
    LOG_RATE,
    HostSet,
    ace_rules,
    l4_match,
    logged_rule,
    nft_match,
    portmap_in,
    portmap_nat,
    prefix,
)
from agent.reconcile.items import BaseConfigurator, NodeItem
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, VifPlan

KIND = "firewall"
NAT_TABLE, FILTER_TABLE = "nat", "filter"

#: The DHCP server answers crossing a bridge, logged for :mod:`agent.reconcile.switchlearn`
#: (the addresses of apps on switch instances).
DHCP_GROUP = 17751
#: The DNS answers the node sends apps of local instances (:mod:`agent.reconcile.dnslog`).
DNS_GROUP = 17752


@dataclass(frozen=True)
class FirewallItem(NodeItem):
    """The node's NAT and filter tables (names without our prefix; the configurator adds it)."""

    KIND = KIND
    tables: tuple[Table, ...]


def chain_names(vif: VifPlan, number: int) -> tuple[str, str]:
    return f"out{number}", f"in{number}"


def render(netplan: NetPlan) -> tuple[FirewallItem, list[tuple[str, str]], list[HostSet]]:
    """The node's firewall for ``netplan``, and (app id, error) for ACLs it cannot render (that
    app interface then gets only the implicit rules: everything but replies dropped)."""
    errors: list[tuple[str, str]] = []
    postrouting: list[Rule] = []
    prerouting: list[Rule] = []
    for ni in sorted(netplan.instances.values(), key=lambda n: n.id):
        if ni.kind != LOCAL or ni.addressing is None:
            continue
        if ni.cluster_port:
            # A cluster instance's subnet spans the members' nodes: its apps talk to each
            # other with their own addresses (K3s needs them), only the rest is NATed.
            subnet = prefix(str(ni.addressing.subnet))
            postrouting.append(Rule((
                nft_match("saddr", subnet), nft_match("daddr", subnet), {"accept": None},
            ), comment=f"nat:{ni.id}:cluster", counter=True))  # fmt: skip
        for port in ni.ports:
            postrouting.append(Rule((
                nft_match("saddr", prefix(str(ni.addressing.subnet))),
                nft_match("oifname", port.ifname),
                {"masquerade": None},
            ), comment=f"nat:{ni.id}:{port.name}", counter=True))  # fmt: skip
    chains: list[Chain] = []
    hosts: list[HostSet] = []
    # By the app's address: its egress chain (what it sends), its ingress chain for packets
    # from elsewhere (what its PORTMAPs map), its peer chain for packets from this node's
    # other apps (its ACEs mirrored, as EVE's work both ways: the receiver's ACL decides too).
    out_map: list[tuple[Any, Any]] = []
    in_map: list[tuple[Any, Any]] = []
    peer_map: list[tuple[Any, Any]] = []
    # The same chains for a local app's IPv6 (bridged between apps: the instances give no
    # IPv6 addresses, but apps have link-local ones), found by MAC: the IPv4 ACEs do not
    # match it, ip6 and protocol-only ones do, and the implicit drop ends it, as EVE's
    # ip6tables chains do.  Without them IPv6 between apps met no ACL at all.
    out6_map: list[tuple[Any, Any]] = []
    peer6_map: list[tuple[Any, Any]] = []
    vifs = sorted((v for v in netplan.vifs.values() if v.ip), key=lambda v: (v.app_id, v.index))
    for number, vif in enumerate(vifs):
        ni = netplan.instances[vif.ni_id]
        if ni.kind != LOCAL:
            continue
        out_name, in_name = chain_names(vif, number)
        out_rules: list[Rule] = []
        in_rules: list[Rule] = []
        peer_rules: list[Rule] = []
        nat_rules: list[Rule] = []
        vif_hosts: list[HostSet] = []
        try:
            for ace in vif.acls:
                out_rules += ace_rules(vif.app_id, vif, ace, number, vif_hosts)
                action = ace.actions[0] if ace.actions else None
                if action is not None and action.portmap:
                    in_rules += portmap_in(vif, ace)
                    peer_rules += portmap_in(vif, ace)
                    nat_rules += portmap_nat(vif, ace, ni.ports)
                else:
                    peer_rules += ace_rules(vif.app_id, vif, ace, number, [], inbound=True)
        except PermanentError as exc:
            # None of the interface's ACL then: not the ACEs before the bad one either.
            errors.append((vif.app_id, f"interface eth{vif.index}: {exc}"))
            out_rules, in_rules, peer_rules, nat_rules, vif_hosts = [], [], [], [], []
        prerouting += nat_rules
        hosts += vif_hosts
        out_drop, in_drop = f"ace:{vif.app_id}:{vif.index}:0", f"ace-in:{vif.app_id}:{vif.index}:0"
        for rules, drop in ((out_rules, out_drop), (in_rules, in_drop), (peer_rules, in_drop)):
            rules += [logged_rule((), drop), Rule(({"drop": None},), comment=drop, counter=True)]
        chains += [Chain(out_name, rules=tuple(out_rules)), Chain(in_name, rules=tuple(in_rules))]
        peer: dict[str, Any] = {"accept": None}  # air-gapped: no ingress ACL in EVE either
        if ni.ports:
            peer_name = f"peer{number}"
            chains.append(Chain(peer_name, rules=tuple(peer_rules)))
            peer = {"jump": {"target": peer_name}}
        out_map.append((vif.ip, {"jump": {"target": out_name}}))
        in_map.append((vif.ip, {"jump": {"target": in_name}}))
        peer_map.append((vif.ip, peer))
        out6_map.append((vif.mac, {"jump": {"target": out_name}}))
        peer6_map.append((vif.mac, peer))
    sw_chains, sw_maps, sw_errors = _switch_chains(netplan)
    chains += sw_chains
    errors += sw_errors
    established = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                             "right": ["established", "related"]}}  # fmt: skip
    ipv6 = {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}}
    forward_rules = []
    if sw_maps:
        # Before any verdict (a renewal's answer is an established flow): every DHCP answer
        # crossing a bridge, so that switch instances' app addresses can be learnt.
        limit = {"limit": {"rate": LOG_RATE, "burst": LOG_BURST, "per": "second"}}
        note = {"log": {"prefix": switchlearn.PREFIX, "group": DHCP_GROUP,
                        "snaplen": switchlearn.SNAPLEN}}  # fmt: skip
        forward_rules.append(Rule((*l4_match(17, sport=67, dport=68), limit, note)))
    forward_rules += [
        Rule((established, {"accept": None})),
        Rule(({"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "data": "@vif_out"}},)),
        # Past here a packet from one of this node's apps was allowed by its egress chain.
        Rule((nft_match("saddr", "@apps"),
              {"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "data": "@vif_peer"}})),
        Rule(({"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "data": "@vif_in"}},)),
        Rule((ipv6, {"vmap": {"key": {"payload": {"protocol": "ether", "field": "saddr"}},
                              "data": "@vif6_out"}})),
        Rule((ipv6, {"vmap": {"key": {"payload": {"protocol": "ether", "field": "daddr"}},
                              "data": "@vif6_peer"}})),
    ]  # fmt: skip
    for m in sw_maps:
        field = "saddr" if m.name == "sw_out" else "daddr"
        forward_rules.append(Rule(({"vmap": {
            "key": {"payload": {"protocol": "ether", "field": field}}, "data": f"@{m.name}",
        }},)))  # fmt: skip
    forward = Chain("forward", hook="forward", type="filter", priority=0, policy="accept",
                    rules=tuple(forward_rules))  # fmt: skip
    sets = tuple(
        Set(h.set_name, "ipv4_addr", flags={"timeout"}, timeout=HOST_TIMEOUT) for h in hosts
    )
    # The DNS answers dnsmasq sends the apps, for flow logs' dnsReqs (not a filter).
    dns_limit = {"limit": {"rate": 100, "burst": 200, "per": "second"}}
    dns_note = {"log": {"prefix": dnslog.PREFIX, "group": DNS_GROUP, "snaplen": dnslog.SNAPLEN}}
    output = Chain("output", hook="output", type="filter", priority=0, policy="accept", rules=(
        Rule((*l4_match(17, sport=53), nft_match("daddr", "@apps"), dns_limit, dns_note)),
    ))  # fmt: skip
    # This node's apps on local instances (by address).
    sets += (Set("apps", "ipv4_addr", elements=tuple(sorted(v for v, _ in out_map))),)
    filter_table = Table(Family.INET, FILTER_TABLE, chains=(forward, output, *chains), sets=sets,
                         maps=(
        Map("vif_out", "ipv4_addr", "verdict", tuple(out_map)),
        Map("vif_in", "ipv4_addr", "verdict", tuple(in_map)),
        Map("vif_peer", "ipv4_addr", "verdict", tuple(peer_map)),
        Map("vif6_out", "ether_addr", "verdict", tuple(out6_map)),
        Map("vif6_peer", "ether_addr", "verdict", tuple(peer6_map)),
        *sw_maps,
    ))  # fmt: skip
    nat_table = Table(Family.IP, NAT_TABLE, chains=(
        Chain("postrouting", hook="postrouting", type="nat", priority=100,
              rules=tuple(postrouting)),
        Chain("prerouting", hook="prerouting", type="nat", priority=-100,
              rules=tuple(prerouting)),
    ))  # fmt: skip
    guard = antispoof.render(netplan, learn_group=DHCP_GROUP)
    return FirewallItem((nat_table, filter_table, guard)), errors, hosts


#: Always allowed from and to an app on a switch instance (EVE's implicit allows): DHCP,
#: DHCPv6 and DNS to the outside network's servers, ICMPv6 (neighbour discovery).  The DHCP
#: servers' answers are let in by port: a client asks by broadcast or multicast, so conntrack
#: does not see the answer as a reply.  ARP is no IP packet: the IP hooks never see it.
_SWITCH_OUT = (
    Rule((*l4_match(17, dport=67), {"accept": None})),
    Rule((*l4_match(17, dport=547), {"accept": None})),
    Rule((*l4_match(17, dport=53), {"accept": None})),
    Rule((*l4_match(6, dport=53), {"accept": None})),
    Rule((*l4_match(58), {"accept": None})),
)
_SWITCH_IN = (
    Rule((*l4_match(17, sport=67), {"accept": None})),
    Rule((*l4_match(17, sport=547), {"accept": None})),
    Rule((*l4_match(58), {"accept": None})),
)


def _switch_chains(netplan: NetPlan) -> tuple[list[Chain], list[Map], list[tuple[str, str]]]:
    """The chains of the app interfaces on switch instances, their maps and the ACL errors.

    A switch instance's apps have the outside network's addresses (unknown to the plan), so
    their chains are reached by the interface's MAC (stable, planned): bridged IPv4 passes the
    ``forward`` hook with its Ethernet header (bridge netfilter), ``ether saddr`` picks the
    sender's egress chain and ``ether daddr`` the receiver's ingress chain.  EVE's ACEs are
    bidirectional on switch instances (all but PORTMAP): the ingress chain holds each ACE
    mirrored (the remote end is the source, ``lport`` the destination port).  An egress allow
    returns, so a packet between two apps on the instance meets both chains; replies pass on
    conntrack.  Each chain ends with its implicit drop (ACE id 0).  No maps when no app
    interface is on a switch instance."""
    chains: list[Chain] = []
    out_map: list[tuple[Any, Any]] = []
    in_map: list[tuple[Any, Any]] = []
    errors: list[tuple[str, str]] = []
    switched = sorted(
        (v for v in netplan.vifs.values() if netplan.instances[v.ni_id].kind == SWITCH),
        key=lambda v: (v.app_id, v.index),
    )
    for number, vif in enumerate(switched):
        out_rules, in_rules = list(_SWITCH_OUT), list(_SWITCH_IN)
        try:
            for ace in vif.acls:
                out_rules += ace_rules(vif.app_id, vif, ace, number, [], switch=True)
                in_rules += ace_rules(vif.app_id, vif, ace, number, [], switch=True,
                                      inbound=True)  # fmt: skip
        except PermanentError as exc:
            errors.append((vif.app_id, f"interface eth{vif.index}: {exc}"))
            out_rules, in_rules = list(_SWITCH_OUT), list(_SWITCH_IN)
        out_drop, in_drop = f"ace:{vif.app_id}:{vif.index}:0", f"ace-in:{vif.app_id}:{vif.index}:0"
        for rules, drop in ((out_rules, out_drop), (in_rules, in_drop)):
            rules += [logged_rule((), drop), Rule(({"drop": None},), comment=drop, counter=True)]
        out_name, in_name = f"sout{number}", f"sin{number}"
        chains += [Chain(out_name, rules=tuple(out_rules)), Chain(in_name, rules=tuple(in_rules))]
        out_map.append((vif.mac, {"jump": {"target": out_name}}))
        in_map.append((vif.mac, {"jump": {"target": in_name}}))
    if not switched:
        return chains, [], errors
    maps = [Map("sw_out", "ether_addr", "verdict", tuple(out_map)),
            Map("sw_in", "ether_addr", "verdict", tuple(in_map))]  # fmt: skip
    return chains, maps, errors


class TablesItem(Protocol):
    """An item that is nftables tables (the firewall, the node firewall)."""

    @property
    def tables(self) -> tuple[Table, ...]: ...


class FirewallConfigurator(BaseConfigurator):
    """Applies an item's tables (the app firewall's, or the node firewall's), all in one
    transaction.  Not observed (libnftables prints rules in its own words): after a restart
    the first apply makes the kernel match, chain by chain, touching only what differs."""

    def __init__(self, nft: Nft) -> None:
        self.nft = nft

    def _ours(self, item: TablesItem) -> list[Table]:
        return [replace(t, name=self.nft.table_name(t.name)) for t in item.tables]

    async def create(self, item: TablesItem) -> None:
        await self.nft.apply(self._ours(item))

    async def modify(self, old: TablesItem, new: TablesItem) -> None:
        # Only the chains that changed are flushed and refilled (an ACL edit: one chain, a few
        # ms at thousands of rules); the driver syncs map elements and falls back to a whole
        # table where the structure changed.
        before = {(t.family, t.name): t for t in old.tables}
        changed: set[tuple[str, str]] = set()
        for table in new.tables:
            prev = before.get((table.family, table.name))
            if prev is None:
                await self.nft.apply(self._ours(new))
                return
            names = {c.name for c in table.chains} | {c.name for c in prev.chains}
            for name in names:
                if table.chain(name) != prev.chain(name):
                    changed.add((self.nft.table_name(table.name), name))
        await self.nft.apply(self._ours(new), replace_chains=changed)

    async def delete(self, item: TablesItem) -> None:
        for table in self._ours(item):
            await self.nft.delete_table(table.family, table.name)

    async def counters(self) -> dict[str, tuple[int, int]]:
        """(packets, bytes) by rule comment (``ace:<app>:<n>:<id>`` and the like), summed over
        the chains that share one."""
        out: dict[str, tuple[int, int]] = {}
        for name, family in (
            (FILTER_TABLE, Family.INET), (NAT_TABLE, Family.IP),
            (antispoof.GUARD_TABLE, Family.BRIDGE),
        ):  # fmt: skip
            try:
                found = await self.nft.counters(family, self.nft.table_name(name))
            except NotFoundError:
                continue
            for (_chain, comment), value in found.items():
                # One comment in several chains (an ACE's mirror in the ingress and the peer
                # chain) is one ACE: its counts add up.
                packets, octets = out.get(comment, (0, 0))
                out[comment] = (packets + value[0], octets + value[1])
        return out


@dataclass(frozen=True)
class InterfaceDrops:
    """What the firewall dropped of one app interface (packets); fits the link layer's
    ``AclDrops``."""

    ifname: str
    tx: int
    rx: int
    tx_limited: int


def drops(
    netplan: NetPlan, counters: Mapping[str, tuple[int, int]]
) -> dict[str, list[InterfaceDrops]]:
    """Per app, its interfaces' drops from the rule counters (by comment): egress drops are the
    implicit drop and the DROP ACEs, LIMIT ACEs' excess is ``tx_limited``, ingress drops the
    ingress chain's implicit drop and the DROP ACEs' mirrors."""
    out: dict[str, list[InterfaceDrops]] = {}
    for vif in sorted(netplan.vifs.values(), key=lambda v: (v.app_id, v.index)):
        base = f"ace:{vif.app_id}:{vif.index}"
        dropping = [0] + [a.id for a in vif.acls if a.actions and a.actions[0].drop]
        tx = sum(counters.get(f"{base}:{i}", (0, 0))[0] for i in dropping)
        limited = sum(
            counters.get(f"{base}:{a.id}:over", (0, 0))[0]
            for a in vif.acls if a.actions and a.actions[0].limit
        )  # fmt: skip
        rx = sum(counters.get(f"ace-in:{vif.app_id}:{vif.index}:{i}", (0, 0))[0]
                 for i in dropping)  # fmt: skip
        out.setdefault(vif.app_id, []).append(InterfaceDrops(vif.guest_ifname, tx, rx, limited))
    return out
