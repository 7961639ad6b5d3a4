"""The planner: what one item needs next, decided from the desired and actual graphs.  Pure.

The engine does not compute a whole plan and run it in waves.  It keeps the two graphs and asks
:func:`decide` about each item whose neighbourhood changed; the answer is one operation to start
now, or why the item waits.  Re-deciding after every completed operation gives the ordering
rules without a global schedule, so a slow item never holds up an unrelated one:

- an item is created (or modified) only when every dependency exists as desired, is not being
  worked on and is not about to go away; external conditions (the vault, an uplink) must be ready;
- an item is *leaving* when it exists but must go: not desired any more, desired in a shape that
  needs a recreate, a dependency gone or not ready, or something it sits on is itself leaving
  (this is the cascade: recreating a bridge recreates the veth on it and the app behind that);
- a leaving item is deleted only when nothing that exists still depends on it, so a failed
  delete of a dependent blocks the delete of what it sits on;
- a failed operation is retried when its backoff is due (temporary) or when the desired item
  changes (permanent).

These rules are what the property tests check: for any desired and actual graphs, repeatedly
applying decisions reaches the desired state, never deletes an item while a dependent exists and
never creates one before its dependencies.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from agent.reconcile.items import Action, Item, ItemRef, Op
from agent.reconcile.state import ItemState, ItemStatus


def fmt(ref: ItemRef) -> str:
    return f"{ref[0]}/{ref[1]}"


@dataclass
class View:
    """The graphs one decision reads.  The engine keeps these up to date; tests build them."""

    desired: Mapping[ItemRef, Item]
    actual: Mapping[ItemRef, Item]
    status: Mapping[ItemRef, ItemStatus] = field(default_factory=dict)
    #: External conditions by ref: None when ready, else why not.  A dependency on a ref that is
    #: neither desired nor external is a missing dependency.
    external: Mapping[ItemRef, str | None] = field(default_factory=dict)
    #: Refs with an operation in flight.
    busy: Container[ItemRef] = frozenset()
    #: ref -> refs of *actual* items that list it as a dependency.
    actual_dependents: Mapping[ItemRef, Set[ItemRef]] = field(default_factory=dict)
    #: Monotonic now, for retry times.
    now: float = 0.0
    #: Memos of :func:`leaving` and :func:`viable` for one pass (the graphs do not change
    #: within a pass).
    memo: dict[ItemRef, bool] = field(default_factory=dict)
    viable_memo: dict[ItemRef, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """``op`` to start now, or the state and reason the item waits in."""

    state: ItemState
    reason: str = ""
    op: Op | None = None
    #: True when the item exists and must go (its actual dependents must be re-decided).
    leaving: bool = False
    #: True when a failed operation is not retried yet (keep the failure in the status).
    held: bool = False


def actual_dependents(actual: Mapping[ItemRef, Item]) -> dict[ItemRef, set[ItemRef]]:
    """The reverse dependency index over ``actual``.  Pure; the engine keeps one incrementally."""
    index: dict[ItemRef, set[ItemRef]] = {}
    for ref, item in actual.items():
        for dep in item.deps():
            index.setdefault(dep, set()).add(ref)
    return index


def _external_gone(view: View, dep: ItemRef) -> str | None:
    """Why the external condition ``dep`` is not met, or None when it is (or is not external)."""
    if dep in view.external:
        reason = view.external[dep]
        return None if reason is None else f"{fmt(dep)} not ready: {reason}"
    return None


def viable(view: View, ref: ItemRef) -> bool:
    """True when ``ref`` is desired and all its dependencies can be met, all the way down:
    each is desired and viable itself, or an external condition that is ready.  An item that is
    not viable cannot stay: what it needs is gone for good (until the config changes)."""
    memo = view.viable_memo
    if ref in memo:
        return memo[ref]
    item = view.desired.get(ref)
    if item is None:
        return False
    memo[ref] = False  # a cycle is not viable
    ok = True
    for dep in item.deps():
        ok = view.external[dep] is None if dep in view.external else viable(view, dep)
        if not ok:
            break
    memo[ref] = ok
    return ok


def leaving(view: View, ref: ItemRef) -> bool:
    """True when ``ref`` exists and must be deleted (for good, or to be made again)."""
    memo = view.memo
    if ref in memo:
        return memo[ref]
    actual = view.actual.get(ref)
    if actual is None:
        return False
    memo[ref] = False  # guards against cycles in an observed graph
    memo[ref] = result = _leaving(view, ref, actual)
    return result


def _leaving(view: View, ref: ItemRef, actual: Item) -> bool:
    desired = view.desired.get(ref)
    if desired is None:
        return True
    if desired is not actual and desired != actual and desired.needs_recreate(actual):
        return True
    if not viable(view, ref):
        return True
    for dep in actual.deps():
        if dep in view.actual:
            if leaving(view, dep):
                return True
        elif dep in view.external:
            if view.external[dep] is not None:
                return True
        else:
            return True  # what it sits on vanished
    return False


def unmet(view: View, item: Item) -> str | None:
    """Why ``item`` cannot be created or modified yet, or None when all its dependencies are in
    place."""
    for dep in item.deps():
        if dep in view.external:
            reason = _external_gone(view, dep)
            if reason is not None:
                return f"waiting for {reason}"
            continue
        want = view.desired.get(dep)
        if want is None:
            return f"missing dependency {fmt(dep)}"
        if dep in view.busy:
            return f"waiting for {fmt(dep)} (in progress)"
        have = view.actual.get(dep)
        st = view.status.get(dep)
        if have is None:
            if st is not None and st.state is ItemState.FAILED:
                return f"waiting for {fmt(dep)} (failed: {st.last_error})"
            return f"waiting for {fmt(dep)}"
        if leaving(view, dep):
            return f"waiting for {fmt(dep)} to be recreated"
        if have is not want and have != want:
            if st is not None and st.state is ItemState.FAILED:
                return f"waiting for {fmt(dep)} to be updated (failed: {st.last_error})"
            return f"waiting for {fmt(dep)} to be updated"
    return None


def _held(st: ItemStatus | None, target: Any, now: float) -> str | None:
    """Why a failed operation is not retried yet, or None."""
    if st is None or st.state is not ItemState.FAILED:
        return None
    if st.permanent:
        if st.failed_for is target or st.failed_for == target:
            return f"failed permanently: {st.last_error}"
        return None
    if now < st.next_retry:
        return f"failed, retry in {st.next_retry - now:.1f} s: {st.last_error}"
    return None


def decide(view: View, ref: ItemRef) -> Decision:
    """What ``ref`` needs next.  Pure (fills ``view.memo``)."""
    if ref in view.busy:
        return Decision(ItemState.IN_PROGRESS)
    desired = view.desired.get(ref)
    actual = view.actual.get(ref)
    st = view.status.get(ref)
    if actual is not None and leaving(view, ref):
        blockers = sorted(view.actual_dependents.get(ref, ()))
        if blockers:
            failed = [
                b
                for b in blockers
                if (bst := view.status.get(b)) is not None and bst.state is ItemState.FAILED
            ]
            if failed:
                bst = view.status[failed[0]]
                reason = f"blocked: dependent {fmt(failed[0])} not deleted: {bst.last_error}"
            else:
                reason = "waiting for dependents to go: " + ", ".join(fmt(b) for b in blockers[:3])
            return Decision(ItemState.DELETING, reason, leaving=True)
        why = _held(st, actual, view.now) if st and st.error_action is Action.DELETE else None
        if why:
            return Decision(ItemState.FAILED, why, leaving=True, held=True)
        return Decision(ItemState.IN_PROGRESS, op=Op(Action.DELETE, ref, old=actual), leaving=True)
    if desired is None:
        return Decision(ItemState.PENDING, "not wanted")  # and not there: nothing to do
    if actual is not None and (actual is desired or actual == desired):
        return Decision(ItemState.CREATED)
    waiting = unmet(view, desired)
    if waiting is not None:
        if st is not None and st.state is ItemState.FAILED and _held(st, desired, view.now):
            return Decision(ItemState.FAILED, waiting, held=True)
        return Decision(ItemState.PENDING, waiting)
    held = _held(st, desired, view.now)
    if held:
        return Decision(ItemState.FAILED, held, held=True)
    if actual is None:
        return Decision(ItemState.IN_PROGRESS, op=Op(Action.CREATE, ref, new=desired))
    return Decision(ItemState.IN_PROGRESS, op=Op(Action.MODIFY, ref, new=desired, old=actual))


def find_cycle(desired: Mapping[ItemRef, Item], start: Iterable[ItemRef]) -> list[ItemRef] | None:
    """A dependency cycle among desired items reachable from ``start``, or None.  Pure.

    Iterative DFS, so deep chains do not hit the recursion limit.
    """
    done: set[ItemRef] = set()
    for root in start:
        if root not in done and root in desired:
            cycle = _cycle_from(desired, root, done)
            if cycle is not None:
                return cycle
    return None


def _cycle_from(
    desired: Mapping[ItemRef, Item], root: ItemRef, done: set[ItemRef]
) -> list[ItemRef] | None:
    path: list[ItemRef] = [root]
    on_path: set[ItemRef] = {root}
    stack: list[Iterator[ItemRef]] = [iter([d for d in desired[root].deps() if d in desired])]
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            stack.pop()
            ref = path.pop()
            on_path.discard(ref)
            done.add(ref)
        elif nxt in on_path:
            return [*path[path.index(nxt) :], nxt]
        elif nxt not in done:
            path.append(nxt)
            on_path.add(nxt)
            stack.append(iter([d for d in desired[nxt].deps() if d in desired]))
    return None
