"""One ACE of EVE's model as nftables rules (pure): the building blocks of
:mod:`agent.reconcile.firewall`'s chains.

:func:`ace_rules` turns an ACE into its egress rules, or (``inbound``) their mirror for packets
to the app, whose remote end is the source: EVE's ACEs work both ways, all but PORTMAP.  An
allowing rule marks its connection for flow logs (:data:`FLOW_MARK`); an egress one returns, so
that a packet to another app meets the receiver's chain too; a dropping one is preceded by a
rate-limited NFLOG copy.  A PORTMAP is :func:`portmap_nat` (the DNAT from the node's ports) and
:func:`portmap_in` (the ingress accept after it).  Everything the ACE says is rendered or the
ACE is refused (PermanentError): no match is ever left out, since that would widen the rule.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.drivers.errors import PermanentError
from agent.drivers.nft_api import Rule
from agent.model.acl import Ace, protocol_number
from agent.reconcile.netplan import VifPlan

_UNIT_SECONDS = {"second": "second", "minute": "minute", "hour": "hour", "day": "day"}

#: Flow logs (:mod:`agent.reconcile.flows`).  An accepting rule sets its connection's mark to
#: ``FLOW_MARK | ACE id`` (ids 1..ACE_ID_MASK, EVE's "non-zero, at most 24 bits"; others are
#: not marked), so conntrack tells which ACE let each flow through; the app is known from the
#: flow's addresses.  A dropping rule is preceded by one that logs the packet to NFLOG_GROUP
#: with the drop's comment as prefix, at most LOG_RATE packets a second per rule, so a flood
#: costs the agent little; the drop rule keeps its comment and counter.
FLOW_MARK, FLOW_MARK_MASK, ACE_ID_MASK = 0x45000000, 0xFF000000, 0x00FFFFFF
NFLOG_GROUP = 17750
LOG_RATE, LOG_BURST, LOG_SNAPLEN = 20, 40, 64


def nft_match(field: str, value: Any, op: str = "==") -> dict[str, Any]:
    """A match of ``field`` (IPv4 ``saddr``/``daddr``, transport ``sport``/``dport``,
    ``l4proto``, ``iifname``/``oifname``) against ``value``; ValueError for any other field."""
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
def network(text: str) -> tuple[int, str, int, bool]:
    """(version, network address, prefix length, whether a host) of a validated ``ip`` match;
    cached: a config re-renders the same thousands of ACEs on every change."""
    net = ipaddress.ip_network(text, strict=False)
    host = net.prefixlen == net.max_prefixlen
    return net.version, str(net.network_address), net.prefixlen, host


def prefix(text: str) -> Any:
    """A validated address or prefix as libnftables lists it back (a host: the bare address)."""
    _version, addr, length, host = network(text)
    return addr if host else {"prefix": {"addr": addr, "len": length}}


def remote_match(field: str, text: str) -> dict[str, Any]:
    """An ``ip`` match on ``field`` (saddr, daddr) in its own family: an IPv6 remote is an
    ``ip6`` match, which no IPv4 packet meets (and the reverse), as EVE puts each in the
    iptables of its version.  Never the rule without the match: that would widen it."""
    protocol = "ip" if network(text)[0] == 4 else "ip6"
    left = {"payload": {"protocol": protocol, "field": field}}
    return {"match": {"op": "==", "left": left, "right": prefix(text)}}


#: Seconds an address dnsmasq resolved for a ``host`` match stays in its set.
HOST_TIMEOUT = 3600


@dataclass(frozen=True)
class HostSet:
    """A ``host`` match's set: dnsmasq adds the addresses it resolves for ``domain`` (and its
    subdomains) on the instance ``ni_id``."""

    ni_id: str
    domain: str
    set_name: str


def flow_mark(ace_id: int) -> tuple[dict[str, Any], ...]:
    """The statement marking a connection as accepted by ACE ``ace_id`` (none if out of range)."""
    if not 0 < ace_id <= ACE_ID_MASK:
        return ()
    return ({"mangle": {"key": {"ct": {"key": "mark"}}, "value": FLOW_MARK | ace_id}},)


def logged_rule(exprs: Iterable[dict[str, Any]], comment: str) -> Rule:
    """The rule before a drop: logs what the drop ``comment`` is about to drop (rate-limited:
    past the limit the packet goes on to the drop unlogged)."""
    limit = {"limit": {"rate": LOG_RATE, "burst": LOG_BURST, "per": "second"}}
    log = {"log": {"prefix": comment, "group": NFLOG_GROUP, "snaplen": LOG_SNAPLEN}}
    return Rule((*exprs, limit, log))


@functools.cache
def l4_names() -> dict[int, str]:
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


def l4_match(
    proto: int, sport: int | None = None, dport: int | None = None
) -> list[dict[str, Any]]:
    """Protocol and port matches as the kernel lists them back (so that a restarted agent finds
    its chains unchanged): with a port, the protocol's own header field (``tcp dport``: the
    protocol is implied); without, ``meta l4proto`` by name."""
    name = l4_names().get(proto)
    if proto in (6, 17, 132) and (sport is not None or dport is not None):
        name = {6: "tcp", 17: "udp", 132: "sctp"}[proto]
        out = []
        for field, port in (("sport", sport), ("dport", dport)):
            if port is not None:
                left = {"payload": {"protocol": name, "field": field}}
                out.append({"match": {"op": "==", "left": left, "right": port}})
        return out
    return [nft_match("l4proto", name if name is not None else proto)]


def ace_rules(
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

    An allowing rule marks the connection; an egress one then *returns*, so that a packet to
    another app meets the receiving app's chain too (EVE's ACEs work both ways: between two
    apps the receiver's ACE is the mark that stays), and to anywhere else the ``forward``
    chain's policy accepts it; an inbound one accepts (the receiver has the last word).
    ``switch``: a switch instance's chain (host matches and PORTMAP are errors there, as in
    EVE)."""
    remote = "saddr" if inbound else "daddr"
    exprs: list[dict[str, Any]] = []
    protocol: str | None = None
    ports: dict[str, str] = {}
    for m in ace.matches:
        if m.type == "ip":
            exprs.append(remote_match(remote, m.value))
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
            exprs.append(nft_match(remote, f"@{name}"))
        else:
            raise PermanentError(f"ACE {ace.id}: {m.type} matches are not supported yet")
    l4 = protocol_number(protocol) if protocol is not None else None
    if ports and l4 not in (6, 17, 132):
        raise PermanentError(f"ACE {ace.id}: ports need protocol tcp, udp or sctp")
    if l4 is not None:
        sport, dport = ports.get("lport"), ports.get("fport")
        if inbound:
            sport, dport = dport, sport
        exprs += l4_match(
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
    # Egress returns (the receiver's chain may follow); the receiver's word is the last.
    allow = (*flow_mark(ace.id), {"accept": None} if inbound else {"return": None})

    def logged(what: str) -> list[Rule]:
        return [logged_rule(exprs, what)]

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


@dataclass(frozen=True)
class Portmap:
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
        return self.source is None or network(self.source)[0] == 4

    def remote(self) -> list[dict[str, Any]]:
        return [remote_match("saddr", self.source)] if self.source is not None else []


def portmap_parts(ace: Ace) -> Portmap:
    """PermanentError for a portmap EVE refuses or this agent cannot render."""
    values = {m.type: m.value for m in ace.matches}
    number = protocol_number(values["protocol"]) if "protocol" in values else None
    if number not in (6, 17) or "lport" not in values:
        raise PermanentError(f"ACE {ace.id}: a portmap needs protocol tcp or udp and lport")
    if "host" in values or "eidset" in values:
        raise PermanentError(f"ACE {ace.id}: {'host' if 'host' in values else 'eidset'} "
                             "matches are not supported in a portmap yet")  # fmt: skip
    fport = values.get("fport")
    return Portmap(number, int(values["lport"]), ace.actions[0].app_port, values.get("ip"),
                    int(fport) if fport is not None else None)  # fmt: skip


def portmap_in(vif: VifPlan, ace: Ace) -> list[Rule]:
    """The ingress rule that lets a mapped connection in (after the DNAT: to the app's port)."""
    pm = portmap_parts(ace)
    if not pm.ipv4:
        return []
    return [Rule((*pm.remote(), *l4_match(pm.proto, sport=pm.sport, dport=pm.app_port),
                  *flow_mark(ace.id), {"accept": None}),
                 comment=f"ace-in:{vif.app_id}:{vif.index}:{ace.id}", counter=True)]  # fmt: skip


def portmap_nat(vif: VifPlan, ace: Ace, ports: Iterable[Any]) -> list[Rule]:
    pm = portmap_parts(ace)
    if not pm.ipv4:
        return []
    labels = {m.value for m in ace.matches if m.type == "adapter"}  # any of them (EVE)
    out = []
    for port in ports:
        if labels and not labels & {port.name, *port.shared_labels}:
            continue
        comment = f"portmap:{vif.app_id}:{vif.index}:{ace.id}:{port.name}"
        out.append(Rule((
            nft_match("iifname", port.ifname), *pm.remote(),
            *l4_match(pm.proto, sport=pm.sport, dport=pm.lport),
            {"dnat": {"addr": vif.ip, "port": pm.app_port}},
        ), comment=comment, counter=True))  # fmt: skip
    return out
