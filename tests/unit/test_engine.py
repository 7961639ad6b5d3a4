# SPDX-License-Identifier: Apache-2.0
"""agent.reconcile.engine: plan ordering and the wave-running Engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.reconcile.engine import (
    Action,
    Configurator,
    Engine,
    Item,
    ItemRef,
    Op,
    PlanError,
    plan,
)


@dataclass(frozen=True)
class Thing:
    """A test item: ``value`` changes in place, ``shape`` forces a recreate."""

    kind: str
    key: str
    value: int = 0
    shape: str = ""
    depends: tuple[ItemRef, ...] = ()

    @property
    def ref(self) -> ItemRef:
        return (self.kind, self.key)

    def deps(self) -> Iterable[ItemRef]:
        return self.depends

    def needs_recreate(self, old: Any) -> bool:
        assert isinstance(old, Thing)
        return old.shape != self.shape


def t(name: str, *deps: str, value: int = 0, shape: str = "", kind: str = "x") -> Thing:
    return Thing(kind, name, value, shape, tuple((kind, d) for d in deps))


def state(*things: Thing) -> dict[ItemRef, Item]:
    return {th.ref: th for th in things}


def steps(ops: list[Op]) -> list[tuple[str, str]]:
    return [(op.action.value, op.ref[1]) for op in ops]


@dataclass
class Recorder:
    """A fake configurator over a fake 'system' (a dict), recording every call in order."""

    system: dict[str, Thing] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    fail: set[tuple[str, str]] = field(default_factory=set)
    slow: bool = False

    async def _step(self, action: str, key: str) -> None:
        self.log.append((action, key))
        if self.slow:
            await asyncio.sleep(0.001)
        if (action, key) in self.fail:
            raise RuntimeError(f"{action} {key} refused")
        self.log.append((action + "d", key))

    async def create(self, item: Thing) -> None:
        await self._step("create", item.key)
        self.system[item.key] = item

    async def modify(self, old: Thing, new: Thing) -> None:
        assert self.system.get(old.key) == old
        await self._step("modify", new.key)
        self.system[new.key] = new

    async def delete(self, item: Thing) -> None:
        await self._step("delete", item.key)
        self.system.pop(item.key, None)  # deleting something already gone succeeds


def engine(rec: Recorder, actual: Mapping[ItemRef, Item] | None = None, limit: int = 8) -> Engine:
    cfg: Configurator = rec
    return Engine({"x": cfg}, actual=actual, limit=limit)


def before(log: list[tuple[str, str]], first: tuple[str, str], second: tuple[str, str]) -> bool:
    return log.index(first) < log.index(second)


# ---------------------------------------------------------------- plan


def test_plan_creates_dependencies_first() -> None:
    desired = state(t("app", "veth"), t("veth", "bridge"), t("bridge"), t("alone"))
    ops = plan(desired, {})
    assert all(op.action is Action.CREATE for op in ops)
    order = [op.ref[1] for op in ops]
    assert sorted(order) == ["alone", "app", "bridge", "veth"]
    assert order.index("bridge") < order.index("veth") < order.index("app")
    assert ops[order.index("app")].new == desired[("x", "app")]


def test_plan_deletes_dependents_first() -> None:
    actual = state(t("bridge"), t("veth", "bridge"), t("app", "veth"))
    ops = plan({}, actual)
    assert steps(ops) == [("delete", "app"), ("delete", "veth"), ("delete", "bridge")]
    assert ops[0].old == actual[("x", "app")]
    assert ops[0].new is None


def test_plan_modify_vs_recreate() -> None:
    actual = state(t("a", value=1), t("b", shape="round"), t("c"))
    desired = state(t("a", value=2), t("b", shape="square"), t("c"))
    ops = plan(desired, actual)
    assert steps(ops) == [("delete", "b"), ("modify", "a"), ("create", "b")]
    modify = ops[1]
    assert modify.old == t("a", value=1) and modify.new == t("a", value=2)
    assert ops[0].old == t("b", shape="round")
    assert ops[2].new == t("b", shape="square")


def test_plan_nothing_to_do() -> None:
    things = state(t("a"), t("b", "a"))
    assert plan(things, dict(things)) == []
    assert plan({}, {}) == []


def test_plan_deletes_come_before_upserts() -> None:
    actual = state(t("old"))
    desired = state(t("new"))
    assert steps(plan(desired, actual)) == [("delete", "old"), ("create", "new")]


def test_plan_ignores_deps_outside_the_set() -> None:
    desired = state(t("a", "external"))
    assert steps(plan(desired, {})) == [("create", "a")]


def test_plan_cycle() -> None:
    desired = state(t("a", "c"), t("b", "a"), t("c", "b"))
    with pytest.raises(PlanError, match="dependency cycle"):
        plan(desired, {})
    with pytest.raises(PlanError):
        plan(state(t("self", "self")), {})


def test_plan_is_pure() -> None:
    actual = state(t("a", value=1))
    desired = state(t("a", value=2), t("b"))
    snapshot_a, snapshot_d = dict(actual), dict(desired)
    plan(desired, actual)
    assert actual == snapshot_a and desired == snapshot_d


def test_plan_deterministic() -> None:
    desired = state(*(t(f"n{i}") for i in range(20)))
    assert plan(desired, {}) == plan(dict(reversed(list(desired.items()))), {})


# ---------------------------------------------------------------- engine


async def test_engine_applies_and_is_idempotent() -> None:
    rec = Recorder()
    eng = engine(rec)
    desired = state(t("bridge"), t("veth", "bridge"), t("app", "veth"))
    result = await eng.reconcile(desired)
    assert result.ok
    assert [op.ref[1] for op in result.done] == ["bridge", "veth", "app"]
    assert before(rec.log, ("created", "bridge"), ("create", "veth"))
    assert before(rec.log, ("created", "veth"), ("create", "app"))
    assert eng.actual == desired
    assert set(rec.system) == {"bridge", "veth", "app"}

    calls = len(rec.log)
    again = await eng.reconcile(desired)
    assert again.ok and again.done == [] and again.failed == []
    assert len(rec.log) == calls


async def test_engine_adopts_actual_state() -> None:
    rec = Recorder()
    existing = state(t("a"), t("b", "a"))
    eng = engine(rec, actual=existing)
    result = await eng.reconcile(existing)
    assert result.done == [] and rec.log == []


async def test_failing_item_blocks_only_dependents() -> None:
    rec = Recorder(fail={("create", "bridge")})
    eng = engine(rec)
    desired = state(
        t("bridge"), t("veth", "bridge"), t("app", "veth"), t("other"), t("other-app", "other")
    )
    result = await eng.reconcile(desired)
    assert not result.ok
    failures = {f.ref[1]: f for f in result.failed}
    assert set(failures) == {"bridge", "veth", "app"}
    assert failures["bridge"].message == "RuntimeError: create bridge refused"
    assert failures["bridge"].action is Action.CREATE
    assert failures["veth"].message == "blocked: x/bridge failed"
    assert failures["app"].message == "blocked: x/veth failed"
    assert {op.ref[1] for op in result.done} == {"other", "other-app"}
    assert ("create", "veth") not in rec.log and ("create", "app") not in rec.log
    assert set(eng.actual) == {("x", "other"), ("x", "other-app")}

    # Once the failure is gone, the next reconcile finishes the job (and only that).
    rec.fail.clear()
    rec.log.clear()
    retry = await eng.reconcile(desired)
    assert retry.ok
    assert [op.ref[1] for op in retry.done] == ["bridge", "veth", "app"]
    assert {k for a, k in rec.log} == {"bridge", "veth", "app"}
    assert eng.actual == desired


async def test_failed_modify_keeps_old_actual() -> None:
    rec = Recorder(fail={("modify", "a")})
    old = t("a", value=1)
    rec.system["a"] = old
    eng = engine(rec, actual=state(old))
    result = await eng.reconcile(state(t("a", value=2), t("b", "a")))
    assert [(f.ref[1], f.action) for f in result.failed] == [
        ("a", Action.MODIFY),
        ("b", Action.CREATE),
    ]
    assert eng.actual == state(old)
    assert rec.system == {"a": old}


async def test_modify_in_place() -> None:
    rec = Recorder()
    old = t("a", value=1)
    rec.system["a"] = old
    eng = engine(rec, actual=state(old))
    result = await eng.reconcile(state(t("a", value=2)))
    assert result.ok
    assert rec.log == [("modify", "a"), ("modifyd", "a")]
    assert eng.actual == state(t("a", value=2))


async def test_recreate_is_delete_then_create() -> None:
    rec = Recorder(slow=True)
    old = t("a", shape="v1")
    rec.system["a"] = old
    eng = engine(rec, actual=state(old))
    new = t("a", shape="v2")
    result = await eng.reconcile(state(new))
    assert result.ok
    assert rec.log == [("delete", "a"), ("deleted", "a"), ("create", "a"), ("created", "a")]
    assert [op.action for op in result.done] == [Action.DELETE, Action.CREATE]
    assert eng.actual == state(new)
    assert rec.system == {"a": new}


async def test_recreate_with_failed_delete_does_not_create() -> None:
    rec = Recorder(fail={("delete", "a")})
    old = t("a", shape="v1")
    rec.system["a"] = old
    eng = engine(rec, actual=state(old))
    result = await eng.reconcile(state(t("a", shape="v2")))
    assert [(f.action, f.message) for f in result.failed] == [
        (Action.DELETE, "RuntimeError: delete a refused"),
        (Action.CREATE, "blocked: x/a failed"),
    ]
    assert ("create", "a") not in rec.log
    assert eng.actual == state(old)


async def test_recreate_of_dependency_before_dependent_create() -> None:
    rec = Recorder(slow=True)
    old = t("bridge", shape="v1")
    rec.system["bridge"] = old
    eng = engine(rec, actual=state(old))
    result = await eng.reconcile(state(t("bridge", shape="v2"), t("veth", "bridge")))
    assert result.ok
    assert before(rec.log, ("deleted", "bridge"), ("create", "bridge"))
    assert before(rec.log, ("created", "bridge"), ("create", "veth"))


async def test_deletes_dependents_first() -> None:
    rec = Recorder(slow=True)
    things = state(t("bridge"), t("veth", "bridge"), t("app", "veth"))
    rec.system.update({ref[1]: th for ref, th in things.items() if isinstance(th, Thing)})
    eng = engine(rec, actual=things)
    result = await eng.reconcile({})
    assert result.ok
    assert before(rec.log, ("deleted", "app"), ("delete", "veth"))
    assert before(rec.log, ("deleted", "veth"), ("delete", "bridge"))
    assert eng.actual == {} and rec.system == {}


async def test_delete_of_missing_thing() -> None:
    """The engine believes it exists; the system lost it; delete still succeeds."""
    rec = Recorder()
    eng = engine(rec, actual=state(t("ghost")))
    result = await eng.reconcile({})
    assert result.ok
    assert rec.log == [("delete", "ghost"), ("deleted", "ghost")]
    assert eng.actual == {}


async def test_failed_delete_stays_actual_and_is_retried() -> None:
    rec = Recorder(fail={("delete", "a")})
    eng = engine(rec, actual=state(t("a")))
    first = await eng.reconcile({})
    assert [f.ref for f in first.failed] == [("x", "a")]
    assert eng.actual == state(t("a"))
    rec.fail.clear()
    assert (await eng.reconcile({})).ok
    assert eng.actual == {}


async def test_missing_configurator() -> None:
    rec = Recorder()
    eng = engine(rec)
    result = await eng.reconcile(state(t("a"), t("b", kind="unknown"), t("c", kind="unknown")))
    assert [op.ref for op in result.done] == [("x", "a")]
    assert {f.ref: f.message for f in result.failed} == {
        ("unknown", "b"): "no configurator for kind 'unknown'",
        ("unknown", "c"): "no configurator for kind 'unknown'",
    }
    assert set(eng.actual) == {("x", "a")}


async def test_cycle_applies_nothing() -> None:
    rec = Recorder()
    eng = engine(rec)
    with pytest.raises(PlanError):
        await eng.reconcile(state(t("a", "b"), t("b", "a"), t("c")))
    assert rec.log == [] and eng.actual == {}


async def test_independent_items_run_concurrently() -> None:
    started = {"a": asyncio.Event(), "b": asyncio.Event()}

    class Rendezvous:
        async def create(self, item: Thing) -> None:
            started[item.key].set()
            other = "b" if item.key == "a" else "a"
            await asyncio.wait_for(started[other].wait(), 2.0)

        async def modify(self, old: Thing, new: Thing) -> None:
            raise AssertionError("not used")

        async def delete(self, item: Thing) -> None:
            raise AssertionError("not used")

    eng = Engine({"x": Rendezvous()})
    result = await eng.reconcile(state(t("a"), t("b")))
    assert result.ok, result.failed


async def test_limit_bounds_concurrency() -> None:
    running = 0
    peak = 0

    class Counting:
        async def create(self, item: Thing) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.002)
            running -= 1

        async def modify(self, old: Thing, new: Thing) -> None:
            raise AssertionError("not used")

        async def delete(self, item: Thing) -> None:
            raise AssertionError("not used")

    eng = Engine({"x": Counting()}, limit=2)
    result = await eng.reconcile(state(*(t(f"n{i}") for i in range(6))))
    assert result.ok and len(result.done) == 6
    assert peak == 2


async def test_cancellation_propagates() -> None:
    class Hanging:
        async def create(self, item: Thing) -> None:
            await asyncio.sleep(10)

        async def modify(self, old: Thing, new: Thing) -> None:
            raise AssertionError("not used")

        async def delete(self, item: Thing) -> None:
            raise AssertionError("not used")

    eng = Engine({"x": Hanging()})
    task = asyncio.ensure_future(eng.reconcile(state(t("a"))))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert eng.actual == {}
