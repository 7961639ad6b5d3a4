"""The generic reconciler: diff desired items against actual ones and apply the difference.

Each resource kind renders its desired state as :class:`Item` values (frozen, comparable, with a
key and the keys of the items it depends on) and provides a :class:`Configurator` that can create,
modify and delete one item.  :func:`plan` is pure: it orders deletes dependents-first and
creates/modifies dependencies-first (a bridge before the veth on it before the app using it).
:class:`Engine` runs a plan in waves: items whose dependencies are done run concurrently under a
global limit; one object at a time per key; a failed item blocks only its dependents.

Running the engine twice with the same desired state changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

log = logging.getLogger(__name__)

ItemRef = tuple[str, str]  # (kind, key)


class Item(Protocol):
    """One desired or actual object.  Implementations are frozen dataclasses."""

    @property
    def ref(self) -> ItemRef: ...

    def deps(self) -> Iterable[ItemRef]:
        """Items that must exist before this one (and outlive it)."""
        ...

    def needs_recreate(self, old: Any) -> bool:
        """True when going from ``old`` to self cannot be done in place."""
        ...


class Action(StrEnum):
    CREATE = "create"
    MODIFY = "modify"
    DELETE = "delete"


@dataclass(frozen=True)
class Op:
    action: Action
    ref: ItemRef
    new: Item | None = None
    old: Item | None = None


class PlanError(ValueError):
    """The desired state has a dependency cycle."""


def _topo_order(items: Mapping[ItemRef, Item]) -> list[ItemRef]:
    """Dependencies first; refs to items outside ``items`` are ignored here."""
    order: list[ItemRef] = []
    state: dict[ItemRef, int] = {}  # 1 = visiting, 2 = done

    def visit(ref: ItemRef, path: tuple[ItemRef, ...]) -> None:
        mark = state.get(ref)
        if mark == 2:
            return
        if mark == 1:
            raise PlanError("dependency cycle: " + " -> ".join(f"{k}/{n}" for k, n in (*path, ref)))
        state[ref] = 1
        for dep in items[ref].deps():
            if dep in items:
                visit(dep, (*path, ref))
        state[ref] = 2
        order.append(ref)

    for ref in sorted(items):
        visit(ref, ())
    return order


def plan(desired: Mapping[ItemRef, Item], actual: Mapping[ItemRef, Item]) -> list[Op]:
    """The operations that turn ``actual`` into ``desired``, in a safe order.  Pure.

    Deletes come first, dependents before what they depend on; then creates and modifies,
    dependencies first.  An item that must be recreated is a delete plus a create.
    Raises PlanError on a dependency cycle.
    """
    deletes: dict[ItemRef, Item] = {}
    upserts: list[Op] = []
    for ref in _topo_order(desired):
        new = desired[ref]
        old = actual.get(ref)
        if old is None:
            upserts.append(Op(Action.CREATE, ref, new=new))
        elif old != new:
            if new.needs_recreate(old):
                deletes[ref] = old
                upserts.append(Op(Action.CREATE, ref, new=new))
            else:
                upserts.append(Op(Action.MODIFY, ref, new=new, old=old))
    for ref, old in actual.items():
        if ref not in desired:
            deletes[ref] = old
    delete_ops = [
        Op(Action.DELETE, ref, old=deletes[ref]) for ref in reversed(_topo_order(deletes))
    ]
    return delete_ops + upserts


class Configurator(Protocol):
    """Applies one kind of item to the system.  Each method is idempotent and raises on failure.

    ``delete`` of something already gone must succeed.
    """

    async def create(self, item: Any) -> None: ...

    async def modify(self, old: Any, new: Any) -> None: ...

    async def delete(self, item: Any) -> None: ...


@dataclass(frozen=True)
class ItemFailure:
    ref: ItemRef
    action: Action
    message: str


@dataclass
class Result:
    done: list[Op] = field(default_factory=list)
    failed: list[ItemFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class Engine:
    """Keeps the actual state of the items it manages and reconciles it towards a desired state.

    ``actual`` starts from what the configurators observe on the system (passed to the
    constructor), so objects made before a restart are adopted rather than recreated.
    """

    def __init__(
        self,
        configurators: Mapping[str, Configurator],
        *,
        actual: Mapping[ItemRef, Item] | None = None,
        limit: int = 8,
    ) -> None:
        self._configurators = dict(configurators)
        self.actual: dict[ItemRef, Item] = dict(actual or {})
        self._limit = asyncio.Semaphore(limit)
        self._lock = asyncio.Lock()

    async def reconcile(self, desired: Mapping[ItemRef, Item]) -> Result:
        """Apply the difference.  Never raises for an item's failure: it is in ``Result.failed``.

        Raises PlanError for a cyclic desired state (nothing applied).
        """
        async with self._lock:
            ops = plan(desired, self.actual)
            result = Result()
            if ops:
                await self._run(ops, desired, result)
            return result

    async def _run(self, ops: list[Op], desired: Mapping[ItemRef, Item], result: Result) -> None:
        failed: set[ItemRef] = set()
        pending = list(ops)
        while pending:
            wave: list[Op] = []
            rest: list[Op] = []
            waiting_on = {op.ref for op in pending}
            for op in pending:
                if self._blocked(op, failed, result):
                    failed.add(op.ref)
                    continue
                if any(dep in waiting_on for dep in self._wave_deps(op, pending)):
                    rest.append(op)
                else:
                    wave.append(op)
            if not wave and rest:
                # Only reachable through a recreate whose delete and create share a ref; run one.
                wave, rest = rest[:1], rest[1:]
            outcomes = await asyncio.gather(*(self._apply(op) for op in wave))
            for op, error in zip(wave, outcomes, strict=True):
                if error is None:
                    result.done.append(op)
                else:
                    failed.add(op.ref)
                    result.failed.append(ItemFailure(op.ref, op.action, error))
            pending = rest

    def _wave_deps(self, op: Op, pending: list[Op]) -> list[ItemRef]:
        """Refs that must finish before ``op`` runs."""
        if op.action is Action.DELETE:
            # A delete waits for the deletes of its dependents.
            return [
                p.ref for p in pending
                if p.action is Action.DELETE and p.old is not None and op.ref in set(p.old.deps())
            ]  # fmt: skip
        assert op.new is not None
        deps = list(op.new.deps())
        # A recreate's create waits for its own delete.
        if any(p.ref == op.ref and p.action is Action.DELETE for p in pending if p is not op):
            deps.append(op.ref)
        return deps

    def _blocked(self, op: Op, failed: set[ItemRef], result: Result) -> bool:
        if op.action is Action.DELETE or op.new is None:
            return False
        # Its own ref failed too when this is the create half of a recreate whose delete failed.
        bad = [dep for dep in (*op.new.deps(), op.ref) if dep in failed]
        if bad:
            kind, key = bad[0]
            result.failed.append(ItemFailure(op.ref, op.action, f"blocked: {kind}/{key} failed"))
            return True
        return False

    async def _apply(self, op: Op) -> str | None:
        kind = op.ref[0]
        configurator = self._configurators.get(kind)
        if configurator is None:
            return f"no configurator for kind {kind!r}"
        async with self._limit:
            try:
                if op.action is Action.CREATE:
                    await configurator.create(op.new)
                    assert op.new is not None
                    self.actual[op.ref] = op.new
                elif op.action is Action.MODIFY:
                    await configurator.modify(op.old, op.new)
                    assert op.new is not None
                    self.actual[op.ref] = op.new
                else:
                    await configurator.delete(op.old)
                    self.actual.pop(op.ref, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is reported per item
                log.warning("%s %s/%s failed: %s", op.action, kind, op.ref[1], exc)
                return f"{type(exc).__name__}: {exc}"
        return None
