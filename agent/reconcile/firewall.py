"""NAT and the apps' ACLs on network instances, as nftables tables.  Rendering is pure.

Three tables of the node (ours by name, :mod:`agent.drivers.nft_api`), applied together in one
transaction by the ``firewall`` item, so no packet ever meets half of a change:

- ``bridge guard``: the source guard (:mod:`agent.reconcile.antispoof`).
- ``ip nat``: ``postrouting`` masquerades each local instance's subnet out of its ports (EVE's
  NAT); ``prerouting`` turns each PORTMAP ACE into a DNAT from its port (``lport`` on the
  instance's ports, or only those with the ACE's ``adapter`` label) to the app's address and
  ``appPort``.
- ``inet filter``: ``forward`` sends every routed packet of an app (by its address on the
  instance: the plan fixes it) through the app interface's own chain, by verdict maps
  (``ip saddr`` → its egress chain, ``ip daddr`` → its ingress chain), so the cost does not
  grow with the number of apps.  An egress chain holds the interface's ACEs in order (EVE's
  model: the matches of an ACE are ANDed; ``ip`` and ``host`` match the remote end; ``lport``
  the app's port, ``fport`` the remote one; no action allows, ``drop`` drops, ``limit`` lets
  ``rate/unit`` with ``burst`` through and drops the rest), each rule counted under
  ``ace:<app>:<n>:<id>``, then the implicit drop (ACE id 0).  An ingress chain lets in what
  the app's PORTMAP ACEs map and drops the rest; replies to the app's own flows pass first
  (conntrack).  Traffic to the gateway itself (DNS, DHCP) is input, not forward: always
  allowed.

A ``host`` match (an FQDN and its subdomains) is a set with a timeout that the instance's dnsmasq
fills with the addresses it resolves for the app (``nftset``); the rule matches ``ip daddr``
in it, so it follows the DNS answers.

App-to-app packets on one bridge pass the same ``forward`` hook (the bridge item turns bridge
netfilter on), so the sender's egress chain decides them.  What reaches the node itself is
:mod:`agent.reconcile.nodefirewall`'s.  Switch instances: :func:`_switch_chains`.

Flow logs: accepting rules mark their connections with the ACE's id, dropping rules log the
packet to NFLOG first (see :data:`FLOW_MARK`; :mod:`agent.reconcile.flows` reads both).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from agent.drivers.errors import NotFoundError, PermanentError
from agent.drivers.nft_api import Chain, Family, Map, Nft, Rule, Set, Table
from agent.model.acl import Ace, protocol_number
from agent.reconcile import antispoof, dnslog, switchlearn
from agent.reconcile.items import BaseConfigurator, NodeItem
from agent.reconcile.netplan import LOCAL, SWITCH, NetPlan, VifPlan

KIND = "firewall"
NAT_TABLE, FILTER_TABLE = "nat", "filter"
_UNIT_SECONDS = {"second": "second", "minute": "minute", "hour": "hour", "day": "day"}

#: Flow logs (:mod:`agent.reconcile.flows`).  An accepting rule sets its connection's mark to
#: ``FLOW_MARK | ACE id`` (ids 1..ACE_ID_MASK, EVE's "non-zero, at most 24 bits"; others are
#: not marked), so conntrack tells which ACE let each flow through; the app is known from the
#: flow's addresses.  A dropping rule is preceded by one that logs the packet to NFLOG_GROUP
#: with the drop's comment as prefix, at most LOG_RATE packets a second per rule, so a flood
#: costs the agent little; the drop rule keeps its comment and counter.
FLOW_MARK, FLOW_MARK_MASK, ACE_ID_MASK = 0x45000000, 0xFF000000, 0x00FFFFFF
NFLOG_GROUP = 17750
#: The DHCP server answers crossing a bridge, logged for :mod:`agent.reconcile.switchlearn`
#: (the addresses of apps on switch instances).
DHCP_GROUP = 17751
#: The DNS answers the node sends apps of local instances (:mod:`agent.reconcile.dnslog`).
DNS_GROUP = 17752
LOG_RATE, LOG_BURST, LOG_SNAPLEN = 20, 40, 64


@dataclass(frozen=True)
class FirewallItem(NodeItem):
    """The node's NAT and filter tables (names without our prefix; the configurator adds it)."""

    KIND = KIND
    tables: tuple[Table, ...]


def _match(field: str, value: Any, op: str = "==") -> dict[str, Any]:
    left: dict[str, Any]
    if field in ("saddr", "daddr"):
        left = {"payload": {"protocol": "ip", "field": field}}
    elif field in ("sport", "dport"):
        left = {"payload": {"protocol": "th", "field": field}}
    elif field == "l4proto":
        left = {"meta": {"key": "l4proto"}}
    elif field in ("iifname", "oifname"):
        left = {"meta": {"key": field}}
    else:
        raise ValueError(field)
    return {"match": {"op": op, "left": left, "right": value}}


@functools.lru_cache(maxsize=16384)
def _network(text: str) -> tuple[int, str, int, bool]:
    """(version, network address, prefix length, whether a host) of a validated ``ip`` match;
    cached: a config re-renders the same thousands of ACEs on every change."""
    net = ipaddress.ip_network(text, strict=False)
    host = net.prefixlen == net.max_prefixlen
    return net.version, str(net.network_address), net.prefixlen, host


def _prefix(text: str) -> Any:
    _version, addr, length, host = _network(text)
    return addr if host else {"prefix": {"addr": addr, "len": length}}


def _remote(field: str, text: str) -> dict[str, Any]:
    """An ``ip`` match on ``field`` (saddr, daddr) in its own family: an IPv6 remote is an
    ``ip6`` match, which no IPv4 packet meets (and the reverse), as EVE puts each in the
    iptables of its version.  Never the rule without the match: that would widen it."""
    protocol = "ip" if _network(text)[0] == 4 else "ip6"
    left = {"payload": {"protocol": protocol, "field": field}}
    return {"match": {"op": "==", "left": left, "right": _prefix(text)}}


def chain_names(vif: VifPlan, number: int) -> tuple[str, str]:
    return f"out{number}", f"in{number}"


#: Seconds an address dnsmasq resolved for a ``host`` match stays in its set.
HOST_TIMEOUT = 3600


@dataclass(frozen=True)
class HostSet:
    """A ``host`` match's set: dnsmasq adds the addresses it resolves for ``domain`` (and its
    subdomains) on the instance ``ni_id``."""

    ni_id: str
    domain: str
    set_name: str


def _mark(ace_id: int) -> tuple[dict[str, Any], ...]:
    """The statement marking a connection as accepted by ACE ``ace_id`` (none if out of range)."""
    if not 0 < ace_id <= ACE_ID_MASK:
        return ()
    return ({"mangle": {"key": {"ct": {"key": "mark"}}, "value": FLOW_MARK | ace_id}},)


def _logged(exprs: Iterable[dict[str, Any]], comment: str) -> Rule:
    """The rule before a drop: logs what the drop ``comment`` is about to drop (rate-limited:
    past the limit the packet goes on to the drop unlogged)."""
    limit = {"limit": {"rate": LOG_RATE, "burst": LOG_BURST, "per": "second"}}
    log = {"log": {"prefix": comment, "group": NFLOG_GROUP, "snaplen": LOG_SNAPLEN}}
    return Rule((*exprs, limit, log))


@functools.cache
def _l4_names() -> dict[int, str]:
    """How libnftables names the protocols it lists back: the first name ``/etc/protocols``
    gives a number (its getprotobynumber), the number when the file has none (or is missing),
    so that a restarted agent finds its chains unchanged."""
    names: dict[int, str] = {}
    try:
        text = Path("/etc/protocols").read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1].isascii() and fields[1].isdigit():
            names.setdefault(int(fields[1]), fields[0])
    return names


def _l4(proto: int, sport: int | None = None, dport: int | None = None) -> list[dict[str, Any]]:
    """Protocol and port matches as the kernel lists them back (so that a restarted agent finds
    its chains unchanged): with a port, the protocol's own header field (``tcp dport``: the
    protocol is implied); without, ``meta l4proto`` by name."""
    name = _l4_names().get(proto)
    if proto in (6, 17, 132) and (sport is not None or dport is not None):
        name = {6: "tcp", 17: "udp", 132: "sctp"}[proto]
        out = []
        for field, port in (("sport", sport), ("dport", dport)):
            if port is not None:
                left = {"payload": {"protocol": name, "field": field}}
                out.append({"match": {"op": "==", "left": left, "right": port}})
        return out
    return [_match("l4proto", name if name is not None else proto)]


def _ace_rule(
    app_id: str,
    vif: VifPlan,
    ace: Ace,
    number: int,
    hosts: list[HostSet],
    *,
    switch: bool = False,
    inbound: bool = False,
) -> list[Rule]:
    """The egress rule(s) of one ACE (``inbound``: its mirror for packets to the app, the
    remote end their source).  PermanentError for what EVE refuses or this agent does not do
    yet.  A ``host`` match adds its set to ``hosts`` (egress only: the mirror uses the same).

    An allowing rule marks the connection and *returns*, so that a packet to another app
    meets the receiving app's ingress chain too (EVE's ACEs work both ways: between two apps
    the receiver's ACE is the mark that stays); to anywhere else the ``forward`` chain's
    policy accepts it.  ``switch``: a switch instance's chain (host matches and PORTMAP are
    errors there, as in EVE)."""
    remote = "saddr" if inbound else "daddr"
    exprs: list[dict[str, Any]] = []
    protocol: str | None = None
    ports: dict[str, str] = {}
    for m in ace.matches:
        if m.type == "ip":
            exprs.append(_remote(remote, m.value))
        elif m.type == "protocol":
            protocol = m.value
        elif m.type in ("lport", "fport"):
            ports[m.type] = m.value
        elif m.type == "adapter":
            action = ace.actions[0] if ace.actions else None
            if action is None or not action.portmap:
                # Ignoring it would widen the ACE to every port (EVE refuses it too).
                raise PermanentError(f"ACE {ace.id}: an adapter match is for a portmap only")
        elif m.type == "host" and switch:
            raise PermanentError(f"ACE {ace.id}: host matches are not supported on a switch "
                                 "network instance (EVE neither)")  # fmt: skip
        elif m.type == "host":
            name = f"h{number}_{ace.id}"
            if not inbound:
                hosts.append(HostSet(vif.ni_id, m.value.removeprefix("*."), name))
            exprs.append(_match(remote, f"@{name}"))
        else:
            raise PermanentError(f"ACE {ace.id}: {m.type} matches are not supported yet")
    l4 = protocol_number(protocol) if protocol is not None else None
    if ports and l4 not in (6, 17, 132):
        raise PermanentError(f"ACE {ace.id}: ports need protocol tcp, udp or sctp")
    if l4 is not None:
        sport, dport = ports.get("lport"), ports.get("fport")
        if inbound:
            sport, dport = dport, sport
        exprs += _l4(
            l4,
            int(sport) if sport is not None else None,
            int(dport) if dport is not None else None,
        )
    comment = f"ace{'-in' if inbound else ''}:{app_id}:{vif.index}:{ace.id}"
    action = ace.actions[0] if ace.actions else None
    if action is not None and action.portmap:
        if switch:
            raise PermanentError(f"ACE {ace.id}: a portmap needs a local network instance")
        return []  # inbound: the ingress chain and the NAT table
    allow = (*_mark(ace.id), {"return": None})

    def logged(what: str) -> list[Rule]:
        return [_logged(exprs, what)]

    if action is not None and action.drop:
        return [*logged(comment), Rule((*exprs, {"drop": None}), comment=comment, counter=True)]
    if action is not None and action.limit:
        unit = _UNIT_SECONDS.get(action.limit_unit or "second", "second")
        limit = {"limit": {"rate": max(1, action.limit_rate), "per": unit,
                           "burst": max(0, action.limit_burst)}}  # fmt: skip
        return [
            Rule((*exprs, limit, *allow), comment=comment, counter=True),
            *logged(f"{comment}:over"),
            Rule((*exprs, {"drop": None}), comment=f"{comment}:over", counter=True),
        ]
    return [Rule((*exprs, *allow), comment=comment, counter=True)]


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
            subnet = _prefix(str(ni.addressing.subnet))
            postrouting.append(Rule((
                _match("saddr", subnet), _match("daddr", subnet), {"accept": None},
            ), comment=f"nat:{ni.id}:cluster", counter=True))  # fmt: skip
        for port in ni.ports:
            postrouting.append(Rule((
                _match("saddr", _prefix(str(ni.addressing.subnet))),
                _match("oifname", port.ifname),
                {"masquerade": None},
            ), comment=f"nat:{ni.id}:{port.name}", counter=True))  # fmt: skip
    chains: list[Chain] = []
    hosts: list[HostSet] = []
    out_map: list[tuple[Any, Any]] = []
    in_map: list[tuple[Any, Any]] = []
    # The same chains for a local app's IPv6 (bridged between apps: the instances give no
    # IPv6 addresses, but apps have link-local ones), found by MAC: the IPv4 ACEs do not
    # match it, ip6 and protocol-only ones do, and the implicit drop ends it, as EVE's
    # ip6tables chains do.  Without them IPv6 between apps met no ACL at all.
    out6_map: list[tuple[Any, Any]] = []
    in6_map: list[tuple[Any, Any]] = []
    vifs = sorted((v for v in netplan.vifs.values() if v.ip), key=lambda v: (v.app_id, v.index))
    for number, vif in enumerate(vifs):
        ni = netplan.instances[vif.ni_id]
        if ni.kind != LOCAL:
            continue
        out_name, in_name = chain_names(vif, number)
        out_rules: list[Rule] = []
        in_rules: list[Rule] = []
        nat_rules: list[Rule] = []
        vif_hosts: list[HostSet] = []
        if not ni.ports:
            # Air-gapped: as in EVE, no ingress ACL (nothing outside can reach it); the
            # sender's egress chain decided for a packet from another app of the instance.
            in_rules.append(Rule((_match("iifname", ni.bridge), {"accept": None})))
        try:
            for ace in vif.acls:
                out_rules += _ace_rule(vif.app_id, vif, ace, number, vif_hosts)
                action = ace.actions[0] if ace.actions else None
                if action is not None and action.portmap:
                    in_rules += _portmap_in(vif, ace)
                    nat_rules += _portmap_nat(vif, ace, ni.ports)
                elif ni.ports:
                    in_rules += _ace_rule(vif.app_id, vif, ace, number, [], inbound=True)
        except PermanentError as exc:
            # None of the interface's ACL then: not the ACEs before the bad one either.
            errors.append((vif.app_id, f"interface eth{vif.index}: {exc}"))
            out_rules, nat_rules, vif_hosts = [], [], []
            in_rules = in_rules[:1] if not ni.ports else []
        prerouting += nat_rules
        hosts += vif_hosts
        out_drop, in_drop = f"ace:{vif.app_id}:{vif.index}:0", f"ace-in:{vif.app_id}:{vif.index}:0"
        for rules, drop in ((out_rules, out_drop), (in_rules, in_drop)):
            rules += [_logged((), drop), Rule(({"drop": None},), comment=drop, counter=True)]
        chains += [Chain(out_name, rules=tuple(out_rules)), Chain(in_name, rules=tuple(in_rules))]
        out_map.append((vif.ip, {"jump": {"target": out_name}}))
        in_map.append((vif.ip, {"jump": {"target": in_name}}))
        out6_map.append((vif.mac, {"jump": {"target": out_name}}))
        in6_map.append((vif.mac, {"jump": {"target": in_name}}))
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
        forward_rules.append(Rule((*_l4(17, sport=67, dport=68), limit, note)))
    forward_rules += [
        Rule((established, {"accept": None})),
        Rule(({"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}},
                        "data": "@vif_out"}},)),
        Rule(({"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "data": "@vif_in"}},)),
        Rule((ipv6, {"vmap": {"key": {"payload": {"protocol": "ether", "field": "saddr"}},
                              "data": "@vif6_out"}})),
        Rule((ipv6, {"vmap": {"key": {"payload": {"protocol": "ether", "field": "daddr"}},
                              "data": "@vif6_in"}})),
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
        Rule((*_l4(17, sport=53), _match("daddr", "@dns_apps"), dns_limit, dns_note)),
    ))  # fmt: skip
    sets += (Set("dns_apps", "ipv4_addr", elements=tuple(sorted(v for v, _ in out_map))),)
    filter_table = Table(Family.INET, FILTER_TABLE, chains=(forward, output, *chains), sets=sets,
                         maps=(
        Map("vif_out", "ipv4_addr", "verdict", tuple(out_map)),
        Map("vif_in", "ipv4_addr", "verdict", tuple(in_map)),
        Map("vif6_out", "ether_addr", "verdict", tuple(out6_map)),
        Map("vif6_in", "ether_addr", "verdict", tuple(in6_map)),
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
    Rule((*_l4(17, dport=67), {"accept": None})),
    Rule((*_l4(17, dport=547), {"accept": None})),
    Rule((*_l4(17, dport=53), {"accept": None})),
    Rule((*_l4(6, dport=53), {"accept": None})),
    Rule((*_l4(58), {"accept": None})),
)
_SWITCH_IN = (
    Rule((*_l4(17, sport=67), {"accept": None})),
    Rule((*_l4(17, sport=547), {"accept": None})),
    Rule((*_l4(58), {"accept": None})),
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
                out_rules += _ace_rule(vif.app_id, vif, ace, number, [], switch=True)
                in_rules += _ace_rule(vif.app_id, vif, ace, number, [], switch=True,
                                      inbound=True)  # fmt: skip
        except PermanentError as exc:
            errors.append((vif.app_id, f"interface eth{vif.index}: {exc}"))
            out_rules, in_rules = list(_SWITCH_OUT), list(_SWITCH_IN)
        out_drop, in_drop = f"ace:{vif.app_id}:{vif.index}:0", f"ace-in:{vif.app_id}:{vif.index}:0"
        for rules, drop in ((out_rules, out_drop), (in_rules, in_drop)):
            rules += [_logged((), drop), Rule(({"drop": None},), comment=drop, counter=True)]
        out_name, in_name = f"sout{number}", f"sin{number}"
        chains += [Chain(out_name, rules=tuple(out_rules)), Chain(in_name, rules=tuple(in_rules))]
        out_map.append((vif.mac, {"jump": {"target": out_name}}))
        in_map.append((vif.mac, {"jump": {"target": in_name}}))
    if not switched:
        return chains, [], errors
    maps = [Map("sw_out", "ether_addr", "verdict", tuple(out_map)),
            Map("sw_in", "ether_addr", "verdict", tuple(in_map))]  # fmt: skip
    return chains, maps, errors


@dataclass(frozen=True)
class _Portmap:
    """A PORTMAP ACE's parts: ``lport`` on the node's ports to ``app_port`` of the app, for
    connections from ``source`` (an ``ip`` match; None: anyone) and ``sport`` (the ``fport``
    match: the remote's port), as EVE's pre- and post-DNAT ingress matches."""

    proto: int
    lport: int
    app_port: int
    source: str | None
    sport: int | None

    @property
    def ipv4(self) -> bool:
        """Whether IPv4 can meet it: an IPv6 source never does (and there is no IPv6 NAT)."""
        return self.source is None or _network(self.source)[0] == 4

    def remote(self) -> list[dict[str, Any]]:
        return [_remote("saddr", self.source)] if self.source is not None else []


def _portmap_parts(ace: Ace) -> _Portmap:
    """PermanentError for a portmap EVE refuses or this agent cannot render."""
    values = {m.type: m.value for m in ace.matches}
    number = protocol_number(values["protocol"]) if "protocol" in values else None
    if number not in (6, 17) or "lport" not in values:
        raise PermanentError(f"ACE {ace.id}: a portmap needs protocol tcp or udp and lport")
    if "host" in values or "eidset" in values:
        raise PermanentError(f"ACE {ace.id}: {'host' if 'host' in values else 'eidset'} "
                             "matches are not supported in a portmap yet")  # fmt: skip
    fport = values.get("fport")
    return _Portmap(number, int(values["lport"]), ace.actions[0].app_port, values.get("ip"),
                    int(fport) if fport is not None else None)  # fmt: skip


def _portmap_in(vif: VifPlan, ace: Ace) -> list[Rule]:
    """The ingress rule that lets a mapped connection in (after the DNAT: to the app's port)."""
    pm = _portmap_parts(ace)
    if not pm.ipv4:
        return []
    return [Rule((*pm.remote(), *_l4(pm.proto, sport=pm.sport, dport=pm.app_port),
                  *_mark(ace.id), {"accept": None}),
                 comment=f"ace-in:{vif.app_id}:{vif.index}:{ace.id}", counter=True)]  # fmt: skip


def _portmap_nat(vif: VifPlan, ace: Ace, ports: Iterable[Any]) -> list[Rule]:
    pm = _portmap_parts(ace)
    if not pm.ipv4:
        return []
    labels = {m.value for m in ace.matches if m.type == "adapter"}  # any of them (EVE)
    out = []
    for port in ports:
        if labels and not labels & {port.name, *port.shared_labels}:
            continue
        comment = f"portmap:{vif.app_id}:{vif.index}:{ace.id}:{port.name}"
        out.append(Rule((
            _match("iifname", port.ifname), *pm.remote(),
            *_l4(pm.proto, sport=pm.sport, dport=pm.lport),
            {"dnat": {"addr": vif.ip, "port": pm.app_port}},
        ), comment=comment, counter=True))  # fmt: skip
    return out


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
        """(packets, bytes) by rule comment (``ace:<app>:<n>:<id>`` and the like)."""
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
                out[comment] = value
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
