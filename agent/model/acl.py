"""Access control entries of an app interface (``config.ACE``), validated.

Match types and semantics as in ``eve:docs/NETWORK-ACLS.md``: the matches of one ACE are ANDed,
and an ACE with no match matches everything; an ACE with no action allows; ``drop``, ``limit``
(rate/unit/burst) and ``portmap`` (to ``appPort``) are the actions, one per ACE (EVE refuses
several actions, and one action that sets more than one of them).  One match of each type,
as EVE's documentation says (``adapter`` aside: several name more ports).  A ``host`` match
whose value is an address or a prefix is an ``ip`` match (EVE's zedrouter does the same, with
a warning).
Every value is checked here, so the firewall reconciler never has to render something it
cannot trust.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

MATCH_TYPES = frozenset({"ip", "host", "eidset", "protocol", "lport", "fport", "adapter"})
#: Protocol names an ACE may give, as EVE allows any of ``/etc/protocols`` (iptables resolves
#: them): netbase's names and aliases, fixed here so that a config means the same on every
#: node.  ``all`` (and ``ip``, and 0: iptables' ``-p all``) is no protocol match at all.
PROTOCOLS = {
    "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "ip-encap": 4, "st": 5, "tcp": 6, "egp": 8,
    "igp": 9, "pup": 12, "udp": 17, "hmp": 20, "xns-idp": 22, "rdp": 27, "iso-tp4": 29,
    "dccp": 33, "xtp": 36, "ddp": 37, "idpr-cmtp": 38, "ipv6": 41, "ipv6-route": 43,
    "ipv6-frag": 44, "idrp": 45, "rsvp": 46, "gre": 47, "esp": 50, "ipsec-esp": 50, "ah": 51,
    "ipsec-ah": 51, "skip": 57, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59,
    "ipv6-opts": 60, "rspf": 73, "vmtp": 81, "eigrp": 88, "ospf": 89, "ospfigp": 89,
    "ax.25": 93, "ipip": 94, "etherip": 97, "encap": 98, "pim": 103, "ipcomp": 108,
    "vrrp": 112, "l2tp": 115, "isis": 124, "sctp": 132, "fc": 133, "mobility-header": 135,
    "udplite": 136, "mpls-in-ip": 137, "manet": 138, "hip": 139, "shim6": 140, "wesp": 141,
    "rohc": 142, "ethernet": 143,
}  # fmt: skip
ANY_PROTOCOL = frozenset({"all", "ip", "0"})


def protocol_number(value: str) -> int | None:
    """The IP protocol number of a validated ``protocol`` match's value; None for any."""
    if value in ANY_PROTOCOL:
        return None
    return PROTOCOLS[value] if value in PROTOCOLS else int(value)


LIMIT_UNITS = {"s": "second", "second": "second", "m": "minute", "minute": "minute",
               "h": "hour", "hour": "hour", "d": "day", "day": "day"}  # fmt: skip
_HOST_RE = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                      r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?$")  # fmt: skip
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class AceMatch:
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class AceAction:
    drop: bool = False
    limit: bool = False
    limit_rate: int = 0
    limit_unit: str = ""
    limit_burst: int = 0
    portmap: bool = False
    app_port: int = 0


@dataclass(frozen=True, slots=True)
class Ace:
    id: int
    name: str
    direction: int
    matches: tuple[AceMatch, ...]
    actions: tuple[AceAction, ...]


def _port(value: str, what: str) -> str:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{what} {value!r} is not a port number")
    return str(int(value))


def _match(msg: Any) -> AceMatch:
    return _match_values(msg.type, msg.value)


# A config repeats the same few match values across thousands of ACEs, and the result is
# immutable: caching by the raw strings saves most of the ipaddress parsing.
@functools.lru_cache(maxsize=8192)
def _match_values(raw_type: str, raw_value: str) -> AceMatch:
    kind = raw_type.strip().lower()
    value = raw_value.strip()
    if kind not in MATCH_TYPES:
        raise ValueError(f"unknown ACE match type {raw_type!r}")
    if kind == "ip":
        try:
            value = str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"ACE ip {raw_value!r} is not an address or prefix") from None
    elif kind == "host":
        try:
            return AceMatch("ip", str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            pass  # a name, as it should be
        if not _HOST_RE.match(value):
            raise ValueError(f"ACE host {raw_value!r} is not a host name")
        value = value.lower().rstrip(".")
    elif kind == "protocol":
        lowered = value.lower()
        if lowered in PROTOCOLS or lowered in ANY_PROTOCOL:
            value = lowered
        elif not value.isascii() or not value.isdigit() or not 0 <= int(value) <= 255:
            raise ValueError(f"ACE protocol {raw_value!r} is not a protocol name or number")
        else:
            value = str(int(value))  # "006" is 6
    elif kind in ("lport", "fport"):
        value = _port(value, f"ACE {kind}")
    elif kind == "adapter" and not _LABEL_RE.match(value):
        raise ValueError(f"ACE adapter {raw_value!r} is not a label")
    return AceMatch(kind, value)


def _action(msg: Any) -> AceAction:
    unit = ""
    if msg.limit:
        if msg.limitrate <= 0:
            raise ValueError("ACE limit without a positive limitrate")
        unit = LIMIT_UNITS.get(msg.limitunit.strip().lower() or "s", "")
        if not unit:
            raise ValueError(f"ACE limitunit {msg.limitunit!r} unknown")
    if sum((bool(msg.drop), bool(msg.limit), bool(msg.portmap))) > 1:
        raise ValueError("ACE action combines drop, limit and portmap (EVE refuses it)")
    if msg.portmap and not 1 <= msg.appPort <= 65535:
        raise ValueError(f"ACE portmap appPort {msg.appPort} is not a port number")
    return AceAction(
        drop=bool(msg.drop),
        limit=bool(msg.limit),
        limit_rate=int(msg.limitrate),
        limit_unit=unit,
        limit_burst=int(msg.limitburst),
        portmap=bool(msg.portmap),
        app_port=int(msg.appPort),
    )


def parse_ace(msg: Any) -> Ace:
    """Validate one ``config.ACE``; raises ValueError naming the bad part."""
    matches = tuple(_match(m) for m in msg.matches)
    kinds = [m.type for m in matches if m.type != "adapter"]  # adapters add up, as in EVE
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        # EVE's documentation forbids it (its zedrouter keeps the last one, silently).
        raise ValueError(f"ACE {msg.id} has more than one {' and '.join(twice)} match")
    if len(msg.actions) > 1:
        raise ValueError(f"ACE {msg.id} has {len(msg.actions)} actions (EVE supports one)")
    actions = tuple(_action(a) for a in msg.actions)
    if any(a.portmap for a in actions) and not any(m.type == "lport" for m in matches):
        raise ValueError(f"ACE {msg.id} has a portmap action without an lport match")
    if len(msg.name) > 256:
        raise ValueError(f"ACE {msg.id} name longer than 256 characters")
    return Ace(
        id=int(msg.id), name=msg.name, direction=int(msg.dir), matches=matches, actions=actions
    )
