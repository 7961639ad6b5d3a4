"""An in-memory :class:`~agent.drivers.nft_api.Nft`: the same ownership rules, input checks,
apply semantics and errors as :class:`~agent.drivers.nft.LibNft`, no kernel.

What it checks is :func:`~agent.drivers.nft_api.check_request` and
:func:`~agent.drivers.nft_api.check_elements`, shared with the real driver (names, ownership,
base chains, jump targets, set references, counters, comments, set flags, address literals).
It does not evaluate expressions: a rule libnftables or the kernel would refuse (a ``dnat`` in a
filter chain, a misspelt payload field, a type mismatch) is accepted here, and it never
normalises expressions the way the kernel prints them (a ``limit`` without ``burst``, a service
name for a port).  What it keeps as the real driver does: dynamic (``timeout``) sets keep their
other elements through an apply, counters survive for rules with the same chain and comment,
``replace_chains`` falls back to a whole-table apply in the same cases, and deleting a named
chain that unnamed ones still jump to fails with ``TemporaryError`` (the kernel's EBUSY).

Test hooks: :meth:`FakeNft.add_foreign` puts a table the agent did not make;
:meth:`FakeNft.count` counts packets on a rule as traffic would; :meth:`FakeNft.fail_next`
makes the next call of an operation raise the given error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from agent.drivers.errors import DriverError, NotFoundError, TemporaryError
from agent.drivers.nft_api import (
    Counters,
    Family,
    Map,
    Naming,
    NftSettings,
    Set,
    Table,
    check_elements,
    check_request,
    elem_key,
    validate,
)


def _merge(
    current: Iterable[Any], wanted: Iterable[Any], key: Callable[[Any], str] = elem_key
) -> tuple[Any, ...]:
    """``wanted`` plus the elements of ``current`` whose keys it lacks."""
    merged = {key(e): e for e in wanted}
    for elem in current:
        merged.setdefault(key(elem), elem)
    return tuple(merged.values())


def _pair_key(pair: Any) -> str:
    return elem_key(pair[0])


def _keep_dynamic(current: Set | Map, wanted: Set | Map) -> Set | Map:
    if not wanted.dynamic:
        return wanted
    if isinstance(wanted, Map):
        return replace(wanted, elements=_merge(current.elements, wanted.elements, _pair_key))
    return replace(wanted, elements=_merge(current.elements, wanted.elements))


def _jumps(table: Table) -> set[str]:
    """Chains that a rule or a map element of ``table`` jumps or goes to."""
    targets: set[str] = set()
    stack: list[Any] = [[r.expr for c in table.chains for r in c.rules]]
    stack += [m.elements for m in table.maps]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("jump", "goto") and isinstance(item, dict):
                    targets.add(str(item.get("target")))
                stack.append(item)
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return targets


class FakeNft(Naming):
    """See the module docstring."""

    def __init__(self, settings: NftSettings) -> None:
        super().__init__(settings.node)
        self.settings = settings
        #: Every table of the fake kernel, ours and foreign, by (family, name).
        self.tables: dict[tuple[Family, str], Table] = {}
        self._counts: dict[tuple[Family, str], Counters] = {}
        self._failures: dict[str, DriverError] = {}
        self.calls: list[str] = []

    # --- test hooks
    def add_foreign(self, table: Table) -> None:
        self.tables[(table.family, table.name)] = table

    def count(
        self, family: Family, table: str, chain: str, comment: str, packets: int, nbytes: int
    ) -> None:
        """Count traffic on the counted rule ``comment`` of ``chain`` (KeyError: no such rule)."""
        counts = self._counts[(family, table)]
        old = counts[(chain, comment)]
        counts[(chain, comment)] = (old[0] + packets, old[1] + nbytes)

    def fail_next(self, operation: str, error: DriverError) -> None:
        """``operation``: a method name (``apply``, ``delete_table``...)."""
        self._failures[operation] = error

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error

    # --- apply
    async def apply(
        self, tables: Sequence[Table], *, replace_chains: Collection[tuple[str, str]] | None = None
    ) -> None:
        self._enter("apply")
        tables = list(tables)
        named = check_request(self, tables, replace_chains)
        results: dict[tuple[Family, str], Table] = {}
        for table in tables:  # everything is decided before anything changes
            key = (table.family, table.name)
            current = self.tables.get(key)
            result = None
            if named is not None and current is not None:
                result = self._incremental(current, table, named.get(table.name, set()))
            if result is None:
                if named is not None:
                    validate(table)
                result = self._whole(current, table)
            results[key] = result
        for key, result in results.items():
            old = self._counts.get(key, {})
            self.tables[key] = result
            self._counts[key] = {
                (c.name, r.comment): old.get((c.name, r.comment), (0, 0))
                for c in result.chains
                for r in c.rules
                if r.counter and r.comment is not None
            }
        await asyncio.sleep(0)

    @staticmethod
    def _whole(current: Table | None, table: Table) -> Table:
        if current is None:
            return table
        have = {o.name: o for o in current.containers}
        kept = [
            _keep_dynamic(have[o.name], o)
            if o.name in have and have[o.name].definition == o.definition
            else o
            for o in table.containers
        ]
        return replace(
            table,
            sets=tuple(o for o in kept if isinstance(o, Set)),
            maps=tuple(o for o in kept if isinstance(o, Map)),
        )

    @staticmethod
    def _incremental(current: Table, table: Table, names: set[str]) -> Table | None:
        """The table after replacing ``names``; None when it must be applied whole."""
        have = {o.name: o for o in current.containers}
        want = {o.name: o for o in table.containers}
        if not current.chains and not have:
            return None
        if have.keys() != want.keys() or any(
            have[n].definition != o.definition for n, o in want.items()
        ):
            return None
        chains = {c.name: c for c in current.chains}
        for name in names:
            new, old = table.chain(name), chains.get(name)
            if new is not None and old is not None and new.definition != old.definition:
                return None
        for name in names:
            new = table.chain(name)
            if new is not None:
                chains[name] = new
            else:
                chains.pop(name, None)
        kept = [_keep_dynamic(have[o.name], o) for o in table.containers]
        result = replace(
            table,
            chains=tuple(chains.values()),
            sets=tuple(o for o in kept if isinstance(o, Set)),
            maps=tuple(o for o in kept if isinstance(o, Map)),
        )
        deleted = {c.name for c in current.chains if c.name in names} - set(chains)
        busy = deleted & _jumps(result)
        if busy:
            raise TemporaryError(
                f"nftables transaction: table {table.family} {table.name}: delete chain "
                f"{sorted(busy)[0]}: Error: Could not process rule: Device or resource busy"
            )
        validate(result, names)
        return result

    # --- the rest of the interface
    async def delete_table(self, family: Family, name: str) -> None:
        self._enter("delete_table")
        self.check_ours(family, name)
        self.tables.pop((Family(family), name), None)
        self._counts.pop((Family(family), name), None)

    async def list_owned(self) -> list[Table]:
        self._enter("list_owned")
        return [t for key, t in sorted(self.tables.items()) if self.is_ours(key[1])]

    async def counters(self, family: Family, name: str) -> Counters:
        self._enter("counters")
        self.check_ours(family, name)
        if (Family(family), name) not in self.tables:
            raise NotFoundError(f"no table {family} {name}")
        return dict(self._counts.get((Family(family), name), {}))

    def _container(self, family: Family, table: str, name: str) -> Set | Map | None:
        found = self.tables.get((Family(family), table))
        if found is None:
            return None
        return next((o for o in found.containers if o.name == name), None)

    def _put(self, family: Family, table: str, obj: Set | Map) -> None:
        key = (Family(family), table)
        old = self.tables[key]
        if isinstance(obj, Set):
            sets = tuple(obj if o.name == obj.name else o for o in old.sets)
            self.tables[key] = replace(old, sets=sets)
        else:
            self.tables[key] = replace(
                old, maps=tuple(obj if o.name == obj.name else o for o in old.maps)
            )

    async def add_elements(
        self, family: Family, table: str, name: str, elements: Sequence[Any]
    ) -> None:
        self._enter("add_elements")
        self.check_ours(family, table)
        obj = self._container(family, table, name)
        if obj is None:
            raise NotFoundError(f"table {family} {table}: no set or map {name}")
        check_elements(Table(family, table), obj, elements, None)
        if isinstance(obj, Map):
            pairs = _merge(obj.elements, [tuple(e) for e in elements], _pair_key)
            self._put(family, table, replace(obj, elements=pairs))
        else:
            self._put(family, table, replace(obj, elements=_merge(obj.elements, elements)))
        await asyncio.sleep(0)

    async def delete_elements(
        self, family: Family, table: str, name: str, elements: Sequence[Any]
    ) -> None:
        self._enter("delete_elements")
        self.check_ours(family, table)
        obj = self._container(family, table, name)
        if obj is None:
            return
        keys = {elem_key(e[0] if isinstance(e, tuple) else e) for e in elements}
        if isinstance(obj, Map):
            kept_pairs = tuple(p for p in obj.elements if elem_key(p[0]) not in keys)
            self._put(family, table, replace(obj, elements=kept_pairs))
        else:
            kept = tuple(e for e in obj.elements if elem_key(e) not in keys)
            self._put(family, table, replace(obj, elements=kept))
        await asyncio.sleep(0)

    async def close(self) -> None:
        return None
