"""The nftables interface: :class:`Nft`, the tables it takes and returns, the naming and the
checks every implementation shares, so the libnftables driver (:mod:`agent.drivers.nft`) and the
fake (:mod:`agent.drivers.nft_fake`) cannot drift apart.  How tables are applied, namespaces and
errors are in :mod:`agent.drivers.nft`.

Ownership.  Only tables named ``<prefix><name>`` (:func:`table_prefix`: ``eveagent_``, a slug
of the node name with a hash, ``_``) are listed, changed or deleted, in the families inet, ip,
ip6, bridge and netdev.  Any other table (docker's, the host's, another node's) is never read
into a result nor written; an operation naming one fails with ``PermanentError``.

Model.  Frozen values, compared by value: :class:`Table` holds :class:`Chain` s (base chains
have hook, type, priority and a policy, ``accept`` when not given), :class:`Set` s and
:class:`Map` s (``interval`` for prefixes and ranges, ``timeout`` for dynamic sets such as the
FQDN sets dnsmasq fills through ``nftset``), and a chain's :class:`Rule` s.  A rule is a tuple of
libnftables JSON statements (libnftables-json(5): ``match``, ``accept``, ``jump``, ``vmap``,
``limit``, ``dnat``, ``masquerade``...), an optional comment (the key of its counter, e.g.
``ace:<app>:<if>:<id>``) and ``counter``: the driver puts an anonymous counter right after the
rule's leading ``match`` statements, so it counts every packet the rule matches; ``expr`` itself
must not hold anonymous counters.  Chains, sets, maps and elements are kept sorted by name
or value, so order never makes two tables differ; rule order does.  The statements are dicts:
treat them as immutable.

:meth:`Nft.list_owned` returns tables as libnftables prints them: write expressions in that form
to compare desired with actual (numeric ports, ``limit`` with its ``burst``, prefixes as
``{"prefix": ...}`` objects, no ``meta l4proto`` match that a port match already implies).  A
``/32`` prefix comes back as an address and a range that is a prefix as a prefix.  libnftables
1.0.6 does not print a netdev chain's device: listed chains have ``device=None``.  Elements of
``timeout`` sets change on their own: :meth:`Table.without_dynamic_elements` compares without.

:func:`validate` checks input before libnftables sees it: names, base chain fields, jump
targets, set references, no anonymous counter, unique comments per chain, set flags, and
address literals (libnftables 1.0.6 resolves any other string in an address through DNS, and
has no switch to stop it): in ``ip``/``ip6`` ``saddr``/``daddr`` matches, ``dnat``/``snat``
addresses and the elements of address sets and maps.  Addresses elsewhere (``ct`` keys,
concatenations) are not checked: keep them literal.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Any, Protocol

from agent.drivers.errors import PermanentError

#: One libnftables JSON statement or expression.
Expr = dict[str, Any]
#: A set element: an immediate, or an expression object (prefix, range, concat, elem...).
Elem = str | int | dict[str, Any]
#: (chain, rule comment) -> (packets, bytes).
Counters = dict[tuple[str, str], tuple[int, int]]

PREFIX = "eveagent_"
MAX_COMMENT = 128
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,254}")
_SET_FLAGS = frozenset({"constant", "interval", "timeout", "dynamic"})
_ADDRESS_TYPES = {"ipv4_addr", "ipv6_addr"}


class Family(enum.StrEnum):
    INET = "inet"
    IP = "ip"
    IP6 = "ip6"
    BRIDGE = "bridge"
    NETDEV = "netdev"


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def elem_key(elem: object) -> str:
    """What identifies a set element (an ``elem`` object by its ``val``) or a map key."""
    if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):
        return _canon(elem["elem"].get("val"))
    return _canon(elem)


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule: ``expr`` in libnftables JSON (no anonymous ``counter``; see ``counter``)."""

    expr: tuple[Expr, ...]
    comment: str | None = None
    counter: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "expr", tuple(self.expr))

    def __hash__(self) -> int:
        return hash((_canon(self.expr), self.comment, self.counter))


@dataclass(frozen=True)
class Chain:
    """A regular chain, or a base chain (``hook``, ``type``, ``priority``; policy ``accept``
    unless given; ``device`` for netdev hooks)."""

    name: str
    hook: str | None = None
    type: str | None = None
    priority: int | None = None
    policy: str | None = None
    rules: tuple[Rule, ...] = ()
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if self.hook is not None and self.policy is None:
            object.__setattr__(self, "policy", "accept")

    @property
    def definition(self) -> tuple[object, ...]:
        """What cannot change without deleting the chain (the policy can)."""
        return (self.hook, self.type, self.priority)


def _sorted_elems(elements: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(sorted({_canon(e): e for e in elements}.values(), key=_canon))


@dataclass(frozen=True)
class Set:
    """A named set: ``type`` a datatype (``ipv4_addr``...) or a tuple of them (concatenation);
    ``timeout`` the default element timeout in seconds (``timeout`` flag)."""

    name: str
    type: str | tuple[str, ...]
    flags: AbstractSet[str] = frozenset()
    elements: tuple[Elem, ...] = ()
    timeout: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, str):
            object.__setattr__(self, "type", tuple(self.type))
        object.__setattr__(self, "flags", frozenset(self.flags))
        object.__setattr__(self, "elements", _sorted_elems(self.elements))

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.flags, _canon(self.elements), self.timeout))

    @property
    def definition(self) -> tuple[object, ...]:
        return ("set", self.type, self.flags, self.timeout)

    @property
    def dynamic(self) -> bool:
        return "timeout" in self.flags


@dataclass(frozen=True)
class Map:
    """A named map from ``type`` keys to ``map`` values (``verdict``: a verdict map, whose values
    are ``{"jump": {"target": chain}}`` and the like)."""

    name: str
    type: str | tuple[str, ...]
    map: str
    elements: tuple[tuple[Elem, Elem], ...] = ()
    flags: AbstractSet[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.type, str):
            object.__setattr__(self, "type", tuple(self.type))
        object.__setattr__(self, "flags", frozenset(self.flags))
        pairs = (tuple(p) for p in self.elements)
        object.__setattr__(self, "elements", _sorted_elems(pairs))

    def __hash__(self) -> int:
        return hash((self.name, self.type, self.map, _canon(self.elements), self.flags))

    @property
    def definition(self) -> tuple[object, ...]:
        return ("map", self.type, self.map, self.flags)

    @property
    def dynamic(self) -> bool:
        return "timeout" in self.flags


@dataclass(frozen=True)
class Table:
    family: Family
    name: str
    chains: tuple[Chain, ...] = ()
    sets: tuple[Set, ...] = ()
    maps: tuple[Map, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", Family(self.family))
        for attr in ("chains", "sets", "maps"):
            object.__setattr__(self, attr, tuple(sorted(getattr(self, attr), key=_by_name)))

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    @property
    def containers(self) -> tuple[Set | Map, ...]:
        """Sets and maps (one namespace of names in the kernel)."""
        return (*self.sets, *self.maps)

    def without_dynamic_elements(self) -> Table:
        """This table with the elements of its ``timeout`` sets and maps left out."""
        return replace(
            self,
            sets=tuple(replace(s, elements=()) if s.dynamic else s for s in self.sets),
            maps=tuple(replace(m, elements=()) if m.dynamic else m for m in self.maps),
        )


def _by_name(obj: Chain | Set | Map) -> str:
    return obj.name


# --- naming and validation -----------------------------------------------------------------------


def table_prefix(node: str) -> str:
    """``eveagent_<slug>_``: the slug (no ``_``) is the node name's letters and digits and six
    hex digits of its SHA-256, so no node's prefix starts another's."""
    base = re.sub(r"[^a-z0-9]+", "-", node.lower()).strip("-")[:24].strip("-") or "node"
    return f"{PREFIX}{base}-{hashlib.sha256(node.encode()).hexdigest()[:6]}_"


class Naming:
    """The node's prefix and the ownership check, shared by the driver and its fake."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.prefix = table_prefix(node)

    def table_name(self, name: str) -> str:
        """The full name of the node's table ``name`` (``<prefix><name>``)."""
        return f"{self.prefix}{name}"

    def is_ours(self, name: str) -> bool:
        return name.startswith(self.prefix) and len(name) > len(self.prefix)

    def check_ours(self, family: Family | str, name: str) -> None:
        if not self.is_ours(name):
            raise PermanentError(f"table {family} {name} is not ours (prefix {self.prefix})")


def _bad(table: Table, where: str, why: str) -> PermanentError:
    return PermanentError(f"table {table.family} {table.name}: {where}: {why}")


def _walk(value: object) -> Iterator[tuple[str | None, object]]:
    """Every (key, value) of the JSON tree (key None for list items), depth first."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            pairs: Iterable[tuple[str | None, object]] = node.items()
        elif isinstance(node, list | tuple):
            pairs = ((None, item) for item in node)
        else:
            continue
        for key, item in pairs:
            yield key, item
            if isinstance(item, dict | list | tuple):
                stack.append(item)


def _addresses(value: object) -> Iterator[str]:
    """The address literals of an address expression (plain, prefix, range, set, list)."""
    if isinstance(value, str):
        if not value.startswith("@"):
            yield value
    elif isinstance(value, dict):
        if "prefix" in value:
            yield from _addresses(value["prefix"].get("addr"))
        for key in ("range", "set"):
            if key in value:
                yield from _addresses(value[key])
        if "elem" in value:
            yield from _addresses(value["elem"].get("val"))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _addresses(item)


@functools.lru_cache(maxsize=16384)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_addresses(value: object, fail: Callable[[str], PermanentError]) -> None:
    for text in _addresses(value):
        if not isinstance(text, str) or not _is_ip(text):
            raise fail(f"{text!r} is not an IP address (a prefix is a 'prefix' object)")


def _is_address(expr: object) -> bool:
    """Whether ``expr`` is ``ip saddr``, ``ip6 daddr`` and the like."""
    payload = expr.get("payload") if isinstance(expr, dict) else None
    return (
        isinstance(payload, dict)
        and payload.get("protocol") in ("ip", "ip6")
        and payload.get("field") in ("saddr", "daddr")
    )


#: Statements whose bodies hold no reference to a chain, set or map.
_NO_REFERENCES = frozenset(
    {"accept", "drop", "return", "continue", "masquerade", "limit", "log", "reject", "counter"}
)


def _check_rule(
    table: Table, chain: Chain, index: int, rule: Rule, chains: set[str], names: set[str]
) -> None:
    def fail(why: str) -> PermanentError:
        return _bad(table, f"chain {chain.name}: rule {rule.comment or index}", why)

    if rule.comment is not None and len(rule.comment) > MAX_COMMENT:
        raise fail(f"comment longer than {MAX_COMMENT} characters")
    for stmt in rule.expr:
        if not isinstance(stmt, dict) or len(stmt) != 1:
            raise fail(f"a statement is an object with one key, not {_canon(stmt)[:80]}")
        if "counter" in stmt and not isinstance(stmt["counter"], str):
            raise fail("anonymous counter in expr: set Rule.counter instead")
        [(kind, body)] = stmt.items()
        if kind in _NO_REFERENCES or (kind == "mangle" and isinstance(body.get("value"), int)):
            continue  # (a log prefix is text, not a reference)
        if kind == "match" and isinstance(body, dict):
            # The common shapes without walking the tree (thousands of rules per apply).
            right = body.get("right")
            if _is_address(body.get("left")):
                _check_addresses(right, fail)
            # A match holds no jump: only its right side may name a set or map.
            refs = (right,) if isinstance(right, str) else (
                v for _, v in _walk(right) if isinstance(v, str))  # fmt: skip
            for ref in refs:
                if ref.startswith("@") and ref[1:] not in names:
                    raise fail(f"no set or map {ref[1:]!r}")
            continue
        for key, value in _walk(stmt):
            if key in ("jump", "goto") and isinstance(value, dict):
                if value.get("target") not in chains:
                    raise fail(f"{key} to {value.get('target')!r}, no such chain")
            elif isinstance(value, str) and value.startswith("@") and value[1:] not in names:
                raise fail(f"no set or map {value[1:]!r}")
            elif key == "match" and isinstance(value, dict) and _is_address(value.get("left")):
                _check_addresses(value.get("right"), fail)
            elif key in ("dnat", "snat") and isinstance(value, dict):
                _check_addresses(value.get("addr"), fail)


def check_elements(
    table: Table, obj: Set | Map, elements: Iterable[Any], chains: Collection[str] | None
) -> None:
    """PermanentError naming the first element of ``obj`` (in ``table``) that is refused: a
    prefix or range without ``interval``, a timeout without ``timeout``, an address (key or value
    of an ``ipv4_addr``/``ipv6_addr`` set or map) that is not a literal, a verdict to a chain
    not in ``chains`` (None: not checked)."""
    what = f"{'set' if isinstance(obj, Set) else 'map'} {obj.name}"
    for elem in elements:
        key, value = (elem, None) if isinstance(obj, Set) else tuple(elem)
        interval = isinstance(key, dict) and ("prefix" in key or "range" in key)
        if interval and "interval" not in obj.flags:
            raise _bad(table, what, "prefixes and ranges need the 'interval' flag")
        if isinstance(key, dict) and "timeout" in key.get("elem", {}) and not obj.dynamic:
            raise _bad(table, what, "element timeouts need the 'timeout' flag")
        if obj.type in _ADDRESS_TYPES:
            _check_addresses(key, lambda why: _bad(table, what, why))
        if isinstance(obj, Map) and obj.map in _ADDRESS_TYPES:
            _check_addresses(value, lambda why: _bad(table, what, why))
        if chains is None:
            continue
        for k, v in _walk(value):
            if k in ("jump", "goto") and isinstance(v, dict) and v.get("target") not in chains:
                raise _bad(table, what, f"{k} to {v.get('target')!r}, no such chain")


def validate(table: Table, chains: Collection[str] | None = None) -> None:
    """PermanentError naming what is wrong with ``table`` (only the rules of ``chains`` when
    given).  What libnftables and the kernel check besides is theirs to refuse."""
    if not _TABLE_NAME.fullmatch(table.name):
        raise PermanentError(f"invalid table name {table.name!r}")
    containers = table.containers
    names = {o.name for o in containers}
    if len(names) != len(table.sets) + len(table.maps):
        raise _bad(table, "sets and maps", "two share a name")
    chain_names = {c.name for c in table.chains}
    if len(chain_names) != len(table.chains):
        raise _bad(table, "chains", "two share a name")
    for name in (*names, *(c.name for c in table.chains)):
        if not _NAME.fullmatch(name):
            raise _bad(table, repr(name), "invalid name")
    for chain in table.chains:
        base = (chain.hook, chain.type, chain.priority)
        if chain.hook is None and (any(base) or chain.policy or chain.device):
            raise _bad(table, f"chain {chain.name}", "type, priority, policy need a hook")
        if chain.hook is not None and None in base:
            raise _bad(table, f"chain {chain.name}", "a base chain has hook, type and priority")
        if chain.policy not in (None, "accept", "drop"):
            raise _bad(table, f"chain {chain.name}", f"policy {chain.policy!r}")
        if chains is not None and chain.name not in chains:
            continue
        comments = [r.comment for r in chain.rules if r.comment is not None]
        if len(set(comments)) != len(comments):
            raise _bad(table, f"chain {chain.name}", "two rules share a comment")
        for index, rule in enumerate(chain.rules):
            _check_rule(table, chain, index, rule, chain_names, names)
    for obj in containers:
        if not obj.flags <= _SET_FLAGS:
            raise _bad(table, obj.name, f"flags {sorted(obj.flags - _SET_FLAGS)}")
        if isinstance(obj, Set) and obj.timeout is not None and not obj.dynamic:
            raise _bad(table, f"set {obj.name}", "a default timeout needs the 'timeout' flag")
        check_elements(table, obj, obj.elements, chain_names)


# --- the interface -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NftSettings:
    node: str
    #: A network namespace (name under /run/netns, or a path); None: the process's own.
    netns: str | None = None


class Nft(Protocol):
    """The node's nftables tables; see the module docstring."""

    @property
    def prefix(self) -> str: ...

    def table_name(self, name: str) -> str: ...

    async def apply(
        self, tables: Sequence[Table], *, replace_chains: Collection[tuple[str, str]] | None = None
    ) -> None:
        """Make the kernel hold ``tables`` (one transaction for all; idempotent).
        ``replace_chains``: (table name, chain name) pairs, see the module docstring."""
        ...

    async def delete_table(self, family: Family, name: str) -> None:
        """Delete one of our tables; gone already is success."""
        ...

    async def list_owned(self) -> list[Table]:
        """Our tables, sorted by (family, name), as the kernel holds them."""
        ...

    async def counters(self, family: Family, name: str) -> Counters:
        """(packets, bytes) of each counted rule with a comment.  NotFoundError: no table."""
        ...

    async def add_elements(
        self, family: Family, table: str, name: str, elements: Sequence[Any]
    ) -> None:
        """Add elements (pairs for a map) to a set or map; present ones are left as they are.
        NotFoundError when the set or map does not exist."""
        ...

    async def delete_elements(
        self, family: Family, table: str, name: str, elements: Sequence[Any]
    ) -> None:
        """Delete elements (keys for a map); absent ones, sets and tables are fine."""
        ...

    async def close(self) -> None: ...


def check_request(
    naming: Naming, tables: Sequence[Table], replace_chains: Collection[tuple[str, str]] | None
) -> dict[str, set[str]] | None:
    """The checks of :meth:`Nft.apply` before anything is applied: every table ours, none twice,
    ``replace_chains`` naming only tables of the request, each table valid (only the named
    chains' rules when ``replace_chains`` is given).  The named chains by table name, or None
    for whole tables.  PermanentError otherwise."""
    seen: set[tuple[Family, str]] = set()
    for table in tables:
        naming.check_ours(table.family, table.name)
        if (table.family, table.name) in seen:
            raise PermanentError(f"table {table.family} {table.name} given twice")
        seen.add((table.family, table.name))
    if replace_chains is None:
        for table in tables:
            validate(table)
        return None
    named: dict[str, set[str]] = {}
    for table_name, chain in replace_chains:
        named.setdefault(table_name, set()).add(chain)
    unknown = named.keys() - {t.name for t in tables}
    if unknown:
        raise PermanentError(f"replace_chains names tables that are not applied: {sorted(unknown)}")
    for table in tables:
        validate(table, named.get(table.name, set()))
    return named
