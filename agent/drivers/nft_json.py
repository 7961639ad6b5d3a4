"""libnftables' JSON and the nftables model (:mod:`agent.drivers.nft_api`), both ways, for
:mod:`agent.drivers.nft`: the commands that add and delete chains, sets, maps, elements and
rules, the model parsed back from a listing (``list ruleset``, ``list table``...), and the
element differences that the driver turns into ``add element`` and ``delete element``.  Pure
functions: nothing here talks to the kernel.

A counted rule (:attr:`~agent.drivers.nft_api.Rule.counter`) gets its anonymous counter right
after its leading ``match`` statements, optionally starting from given values; a listed rule's
anonymous counter becomes ``counter=True`` and its values.  A listed element loses its
``expires``; an ``elem`` object left with only its value is the value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.drivers.nft_api import (
    Chain,
    Counters,
    Expr,
    Family,
    Map,
    Rule,
    Set,
    Table,
    elem_key,
)


def table_ref(table: Table) -> Expr:
    """The ``family`` and ``table`` of an object in ``table``."""
    return {"family": table.family.value, "table": table.name}


def chain_cmd(verb: str, table: Table, chain: Chain) -> Expr:
    """``add`` (with the base chain's hook, type, priority, policy), ``delete``, ``flush``."""
    body: Expr = {**table_ref(table), "name": chain.name}
    if verb == "add" and chain.hook is not None:
        body.update(type=chain.type, hook=chain.hook, prio=chain.priority, policy=chain.policy)
        if chain.device is not None:
            body["dev"] = chain.device
    return {verb: {"chain": body}}


def container_cmd(verb: str, table: Table, obj: Set | Map) -> Expr:
    """``add`` (definition and elements), ``delete`` or ``flush`` a set or map."""
    kind = "map" if isinstance(obj, Map) else "set"
    body: Expr = {**table_ref(table), "name": obj.name}
    if verb == "add":
        body["type"] = obj.type if isinstance(obj.type, str) else list(obj.type)
        if isinstance(obj, Map):
            body["map"] = obj.map
        elif obj.timeout is not None:
            body["timeout"] = obj.timeout
        if obj.flags:
            body["flags"] = sorted(obj.flags)
        if obj.elements:
            body["elem"] = list(obj.elements)
    return {verb: {kind: body}}


def elements_cmd(verb: str, table: Table, name: str, elements: Sequence[Any]) -> Expr:
    """``add`` or ``delete`` elements of a set or map (pairs, or keys to delete, for a map)."""
    return {verb: {"element": {**table_ref(table), "name": name, "elem": list(elements)}}}


def rule_cmd(table: Table, chain: str, rule: Rule, seed: tuple[int, int] | None) -> Expr:
    """``add rule``; a counted rule's counter starts from ``seed`` (packets, bytes) if given."""
    expr = list(rule.expr)
    if rule.counter:
        at = next((i for i, stmt in enumerate(expr) if "match" not in stmt), len(expr))
        expr.insert(at, {"counter": {"packets": seed[0], "bytes": seed[1]} if seed else None})
    body: Expr = {**table_ref(table), "chain": chain, "expr": expr}
    if rule.comment is not None:
        body["comment"] = rule.comment
    return {"add": {"rule": body}}


def parse_elem(elem: Any) -> Any:
    """An element as listed, without its ``expires`` (an ``elem`` object with only a value is
    the value)."""
    if isinstance(elem, dict) and isinstance(elem.get("elem"), dict):
        inner = {k: v for k, v in elem["elem"].items() if k != "expires"}
        return inner["val"] if list(inner) == ["val"] else {"elem": inner}
    return elem


def parse_container(body: Expr) -> Set | Map:
    """A listed ``set`` or ``map`` object."""
    flags = body.get("flags", ())
    flags = (flags,) if isinstance(flags, str) else flags
    elems = body.get("elem", [])
    elems = elems if isinstance(elems, list) else [elems]
    kind = body["type"] if isinstance(body["type"], str) else tuple(body["type"])
    if "map" in body:
        pairs = tuple((parse_elem(k), v) for k, v in elems)
        return Map(body["name"], kind, body["map"], pairs, frozenset(flags))
    return Set(
        body["name"], kind, frozenset(flags), tuple(map(parse_elem, elems)), body.get("timeout")
    )


def parse_rule(body: Expr) -> tuple[Rule, tuple[int, int] | None]:
    """A listed rule; its anonymous counter becomes ``counter=True`` and its values."""
    expr = list(body.get("expr", ()))
    at = next((i for i, s in enumerate(expr) if isinstance(s.get("counter", ""), dict)), None)
    count = None
    if at is not None:
        found = expr.pop(at)["counter"]
        count = (int(found.get("packets", 0)), int(found.get("bytes", 0)))
    return Rule(tuple(expr), body.get("comment"), count is not None), count


@dataclass
class Listed:
    """One table's objects as a listing goes by (rules come after their chains)."""

    chains: dict[str, Chain] = field(default_factory=dict)
    rules: dict[str, list[Rule]] = field(default_factory=dict)
    containers: list[Set | Map] = field(default_factory=list)
    counters: Counters = field(default_factory=dict)

    def table(self, family: Family, name: str) -> Table:
        chains = (replace(c, rules=tuple(self.rules.get(n, ()))) for n, c in self.chains.items())
        sets = tuple(o for o in self.containers if isinstance(o, Set))
        maps = tuple(o for o in self.containers if isinstance(o, Map))
        return Table(family, name, tuple(chains), sets, maps)


def parse_tables(
    objects: Iterable[Expr], keep: Callable[[str, str], bool]
) -> dict[tuple[Family, str], tuple[Table, Counters]]:
    """The tables in libnftables' listing that ``keep(family, name)`` selects (others are not
    looked at), with the counters of their commented rules."""
    families = {f.value for f in Family}
    found: dict[tuple[str, str], Listed] = {}
    for obj in objects:
        [(kind, body)] = obj.items()
        family, name = body.get("family"), body.get("name" if kind == "table" else "table")
        if family not in families or not keep(family, name):
            continue
        listed = found.setdefault((family, name), Listed())
        if kind == "chain":
            dev = body.get("dev")
            listed.chains[body["name"]] = Chain(
                body["name"], body.get("hook"), body.get("type"), body.get("prio"),
                body.get("policy"), device=dev if isinstance(dev, str) else None,
            )  # fmt: skip
        elif kind == "rule":
            rule, count = parse_rule(body)
            listed.rules.setdefault(body["chain"], []).append(rule)
            if count is not None and rule.comment is not None:
                listed.counters[(body["chain"], rule.comment)] = count
        elif kind in ("set", "map"):
            listed.containers.append(parse_container(body))
    return {
        (Family(f), n): (listed.table(Family(f), n), listed.counters)
        for (f, n), listed in found.items()
    }


def describe(cmd: Expr) -> str:
    """Which object a command is about, for an error message."""
    [(verb, body)] = cmd.items()
    [(kind, obj)] = body.items()
    where = f"table {obj.get('family')} {obj.get('table', obj.get('name'))}"
    if kind == "rule":
        what = obj.get("comment") or json.dumps(obj.get("expr"))[:160]
        return f"{where}: chain {obj.get('chain')}: rule {what}"
    if kind == "table":
        return f"{where}: {verb} table"
    return f"{where}: {verb} {kind} {obj.get('name')}"


def element_diff(current: Set | Map, wanted: Set | Map) -> tuple[list[Any], list[Any]]:
    """Elements to delete (by key) and to add to make ``current`` hold ``wanted``'s elements
    (a ``timeout`` set keeps its other elements)."""
    if isinstance(current, Map) and isinstance(wanted, Map):
        have = {elem_key(k): (k, v) for k, v in current.elements}
        want = {elem_key(k): (k, v) for k, v in wanted.elements}
        changed = {k for k in have.keys() & want.keys() if have[k][1] != want[k][1]}
        gone = set() if wanted.dynamic else have.keys() - want.keys()
        deletes = [have[k][0] for k in sorted(gone | changed)]
        return deletes, [want[k] for k in sorted(want.keys() - have.keys() | changed)]
    old = {elem_key(e): e for e in current.elements}
    new = {elem_key(e): e for e in wanted.elements}
    gone = set() if wanted.dynamic else old.keys() - new.keys()
    return [key_form(old[k]) for k in sorted(gone)], [new[k] for k in sorted(new.keys() - old)]


def counts_rules(chain: Chain | None) -> bool:
    """Whether ``chain`` has counted rules with comments (whose counters an apply carries)."""
    return chain is not None and any(r.counter and r.comment for r in chain.rules)


def key_form(elem: Any) -> Any:
    """An element as ``delete element`` takes it: an ``elem`` object by its value."""
    return elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
