"""agent.reconcile.engine: the engine's semantics, as scenarios against a recording fake system.

Each scenario starts from objects on the fake system (observed and adopted, as after an agent
restart), reconciles to a desired graph and checks the order of operations, what is left on the
system, and the per-item state.  The fake system refuses out-of-order work the way the kernel
would, so every test also asserts that it saw no violation.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from agent.reconcile.engine import Engine, EngineSettings
from agent.reconcile.state import Backoff, ItemState
from tests.unit.engine_fakes import GONE, PERM, TEMP, Recorder, Thing, graph, t


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    rec: Recorder
    engine: Engine
    clock: Clock = field(default_factory=Clock)

    async def reconcile(self, *things: Thing, observe: bool = False) -> None:
        if observe:
            await self.engine.resync()
        self.engine.set_desired(graph(*things))
        await self.engine.settle(within=5)

    def state(self, key: str) -> ItemState:
        return self.engine.status[("x", key)].state

    def reason(self, key: str) -> str:
        return self.engine.status[("x", key)].reason


def rig(*on_system: Thing, settings: EngineSettings | None = None, **rec_args: object) -> Rig:
    rec = Recorder(system={th.key: th for th in on_system}, **rec_args)  # type: ignore[arg-type]
    clock = Clock()
    engine = Engine(
        {"x": rec},
        settings=settings or EngineSettings(backoff=Backoff(base=1.0, cap=60.0)),
        clock=clock,
        rng=random.Random(7),
    )
    return Rig(rec, engine, clock)


def before(log: list[tuple[str, str]], first: tuple[str, str], then: tuple[str, str]) -> bool:
    return log.index(first) < log.index(then)


# ---------------------------------------------------------------- the scenario table


@dataclass(frozen=True)
class Scenario:
    """Objects on the system (observed and adopted first, as after a restart), the desired graph,
    the operations that fail; then the operations expected in order, what is left on the system
    and the state (and reason prefix) of chosen items."""

    name: str
    system: tuple[Thing, ...]
    desired: tuple[Thing, ...]
    ops: list[tuple[str, str]]
    left: set[str]
    states: dict[str, tuple[ItemState, str]] = field(default_factory=dict)
    fail: dict[tuple[str, str], object] = field(default_factory=dict)
    unmarked: frozenset[str] = frozenset()


BR, VETH, APP = t("br"), t("veth", "br"), t("app", "veth")
SCENARIOS = [
    Scenario("creates dependencies first", (), (APP, VETH, BR),
             [("create", "br"), ("create", "veth"), ("create", "app")], {"br", "veth", "app"},
             {"app": (ItemState.CREATED, "")}),
    Scenario("adopts what is already right", (BR, VETH), (BR, VETH), [], {"br", "veth"},
             {"veth": (ItemState.CREATED, "")}),
    Scenario("modify in place leaves dependents alone", (BR, VETH), (t("br", value=2), VETH),
             [("modify", "br")], {"br", "veth"}),
    Scenario("recreate cascades to dependents", (BR, VETH, APP, t("other")),
             (t("br", shape="v2"), VETH, APP, t("other")),
             [("delete", "app"), ("delete", "veth"), ("delete", "br"),
              ("create", "br"), ("create", "veth"), ("create", "app")],
             {"br", "veth", "app", "other"}),
    Scenario("deletes dependents first", (BR, VETH, APP), (),
             [("delete", "app"), ("delete", "veth"), ("delete", "br")], set()),
    Scenario("failed delete of a dependent blocks the delete of its base", (BR, VETH), (),
             [("delete", "veth")], {"br", "veth"},
             {"veth": (ItemState.FAILED, "failed permanently: refused"),
              "br": (ItemState.DELETING, "blocked: dependent x/veth not deleted: refused")},
             fail={("delete", "veth"): PERM}),
    Scenario("missing dependency is not created", (), (VETH, t("lone")),
             [("create", "lone")], {"lone"},
             {"veth": (ItemState.PENDING, "missing dependency x/br")}),
    Scenario("dependency removed from the config takes its dependents down", (BR, VETH, APP),
             (VETH, APP), [("delete", "app"), ("delete", "veth"), ("delete", "br")], set(),
             {"veth": (ItemState.PENDING, "missing dependency x/br"),
              "app": (ItemState.PENDING, "waiting for x/veth")}),
    Scenario("failed dependency: dependents wait, unrelated items apply", (), (BR, VETH, t("o")),
             [("create", "br"), ("create", "o")], {"o"},
             {"br": (ItemState.FAILED, "failed permanently: refused"),
              "veth": (ItemState.PENDING, "waiting for x/br (failed: refused)")},
             fail={("create", "br"): PERM}),
    Scenario("marked orphans removed, unmarked objects untouched",
             (t("mine-old"), t("foreign"), BR), (BR,), [("delete", "mine-old")],
             {"foreign", "br"}, unmarked=frozenset({"foreign"})),
    Scenario("an unmarked object is never adopted, even under a desired name",
             (t("br", value=7),), (BR,), [("create", "br")], {"br"},
             unmarked=frozenset({"br"})),
    Scenario("dependency cycle fails its members only", (), (t("a", "b"), t("b", "a"), t("c")),
             [("create", "c")], {"c"},
             {"a": (ItemState.FAILED, "dependency cycle: x/a -> x/b -> x/a")}),
    Scenario("temporary failure waits for its retry", (), (t("a"), t("b")),
             [("create", "a"), ("create", "b")], {"b"},
             {"a": (ItemState.FAILED, "failed, retry in")}, fail={("create", "a"): [TEMP]}),
]  # fmt: skip


@pytest.mark.parametrize("sc", SCENARIOS, ids=[sc.name for sc in SCENARIOS])
async def test_scenario(sc: Scenario) -> None:
    r = rig(*sc.system, fail=dict(sc.fail), unmarked=set(sc.unmarked))
    await r.reconcile(*sc.desired, observe=True)
    assert r.rec.steps() == sc.ops
    assert set(r.rec.system) == sc.left
    for key, (state, reason) in sc.states.items():
        assert r.state(key) is state, key
        assert r.reason(key).startswith(reason), (key, r.reason(key))
    assert r.rec.violations == []


# ---------------------------------------------------------------- ordering and cascades


async def test_second_run_changes_nothing() -> None:
    r = rig()
    want = (t("br"), t("veth", "br"))
    await r.reconcile(*want)
    r.rec.log.clear()
    await r.reconcile(*want)
    assert r.rec.log == []


async def test_dependency_removed_from_config_takes_dependent_down() -> None:
    r = rig(t("br"), t("veth", "br"))
    await r.reconcile(t("veth", "br"), observe=True)
    assert r.rec.steps() == [("delete", "veth"), ("delete", "br")]
    assert r.state("veth") is ItemState.PENDING
    assert r.reason("veth") == "missing dependency x/br"
    # The dependency comes back: so does the dependent.
    await r.reconcile(t("veth", "br"), t("br"))
    assert set(r.rec.system) == {"br", "veth"}


async def test_dependency_cycle_fails_its_members_only() -> None:
    r = rig()
    await r.reconcile(t("a", "b"), t("b", "a"), t("c"))
    assert r.rec.steps() == [("create", "c")]
    assert r.state("a") is ItemState.FAILED
    assert "dependency cycle" in r.engine.status[("x", "a")].last_error
    # Breaking the cycle lets both apply.
    await r.reconcile(t("a", "b"), t("b"), t("c"))
    assert set(r.rec.system) == {"a", "b", "c"}


# ---------------------------------------------------------------- external conditions


async def test_external_condition_holds_items_pending() -> None:
    r = rig(externals={("condition", "vault"): False})
    r.engine.set_external(("condition", "vault"), "locked")
    await r.reconcile(t("vol", "condition:vault"), t("app", "vol"))
    assert r.rec.log == []
    assert r.reason("vol") == "waiting for condition/vault not ready: locked"
    assert r.reason("app") == "waiting for x/vol"
    r.rec.externals = {("condition", "vault"): True}
    r.engine.set_external(("condition", "vault"), None)
    await r.engine.settle(5)
    assert r.rec.steps() == [("create", "vol"), ("create", "app")]


async def test_unknown_external_is_a_missing_dependency() -> None:
    r = rig()
    await r.reconcile(t("vol", "condition:uplink"))
    assert r.reason("vol") == "missing dependency condition/uplink"


# ---------------------------------------------------------------- failures and retries


async def test_temporary_failure_retried_with_backoff() -> None:
    r = rig(fail={("create", "a"): [TEMP, TEMP]})
    await r.reconcile(t("a"), t("b"))
    st = r.engine.status[("x", "a")]
    assert (st.state, st.attempts, st.last_error) == (ItemState.FAILED, 1, "busy")
    first = st.next_retry - r.clock.now
    assert 0.5 <= first <= 1.0
    # Not due yet: nothing happens.
    await r.engine.settle(5)
    assert r.rec.steps("create").count(("create", "a")) == 1
    r.clock.now += first
    await r.engine.settle(5)
    assert st.attempts == 2
    assert 1.0 <= st.next_retry - r.clock.now <= 2.0
    r.clock.now += 2.0
    await r.engine.settle(5)
    assert r.state("a") is ItemState.CREATED
    assert st.attempts == 0 and st.last_error == ""
    assert r.rec.steps("create").count(("create", "a")) == 3


async def test_retry_after_hint_is_honoured() -> None:
    from agent.drivers.errors import TemporaryError

    r = rig(fail={("create", "a"): [TemporaryError("rate limited", retry_after=42.0)]})
    await r.reconcile(t("a"))
    assert r.engine.status[("x", "a")].next_retry == pytest.approx(r.clock.now + 42.0)


async def test_permanent_failure_retried_only_when_desired_changes() -> None:
    r = rig(fail={("create", "a"): [PERM]})
    await r.reconcile(t("a"))
    r.clock.now += 10_000
    await r.reconcile(t("a"))
    assert r.rec.steps() == [("create", "a")]
    assert r.engine.status[("x", "a")].permanent
    await r.reconcile(t("a", value=1))
    assert r.rec.steps() == [("create", "a"), ("create", "a")]
    assert r.state("a") is ItemState.CREATED


async def test_untyped_exception_counts_as_temporary() -> None:
    r = rig(fail={("create", "a"): [RuntimeError("boom")]})
    await r.reconcile(t("a"))
    st = r.engine.status[("x", "a")]
    assert not st.permanent and st.last_error == "RuntimeError: boom"
    r.clock.now += 5
    await r.engine.settle(5)
    assert r.state("a") is ItemState.CREATED


async def test_not_found_on_delete_is_success_and_on_modify_recreates() -> None:
    r = rig(t("a"), t("b"), fail={("delete", "a"): GONE})
    await r.reconcile(t("b", value=1), observe=True)
    assert "a" not in r.engine.status and ("x", "a") not in r.engine.actual
    # b vanished behind our back: modify says not found, the engine creates it again.
    del r.rec.system["b"]
    await r.reconcile(t("b", value=2))
    assert r.rec.steps()[-2:] == [("modify", "b"), ("create", "b")]
    assert r.rec.system["b"].value == 2


async def test_timeout_fails_the_operation_temporarily() -> None:
    r = rig(op_timeout=0.05, gates={"slow": asyncio.Event()})
    await r.reconcile(t("slow"), t("fast"))
    st = r.engine.status[("x", "slow")]
    assert st.state is ItemState.FAILED and "timed out" in st.last_error
    assert r.state("fast") is ItemState.CREATED


# ---------------------------------------------------------------- scheduling


async def test_slow_item_does_not_delay_unrelated_ones() -> None:
    gate = asyncio.Event()
    r = rig(gates={"slow": gate})
    r.engine.set_desired(graph(t("slow"), t("dep", "slow"), t("fast"), t("fast2", "fast")))
    for _ in range(20):
        r.engine.step()
        await asyncio.sleep(0)
    assert r.state("fast2") is ItemState.CREATED
    assert r.state("slow") is ItemState.IN_PROGRESS
    assert r.reason("dep") == "waiting for x/slow (in progress)"
    gate.set()
    await r.engine.settle(5)
    assert r.state("dep") is ItemState.CREATED


async def test_one_operation_per_item_at_a_time() -> None:
    gate = asyncio.Event()
    r = rig(gates={"a": gate})
    r.engine.set_desired(graph(t("a")))
    r.engine.step()
    await asyncio.sleep(0)
    r.engine.set_desired(graph(t("a", value=5)))
    r.engine.step()
    await asyncio.sleep(0)
    assert r.rec.steps() == [("create", "a")]
    gate.set()
    await r.engine.settle(5)
    assert r.rec.steps() == [("create", "a"), ("modify", "a")]
    assert r.rec.system["a"].value == 5
    assert not r.rec.violations


async def test_global_limit_bounds_concurrency() -> None:
    gates = {f"i{n}": asyncio.Event() for n in range(12)}
    r = rig(settings=EngineSettings(limit=3), gates=gates)
    r.engine.set_desired(graph(*(t(k) for k in gates)))
    r.engine.step()
    for _ in range(10):
        await asyncio.sleep(0)
    assert r.rec.max_running == 3
    for g in gates.values():
        g.set()
    await r.engine.settle(5)
    assert len(r.rec.system) == 12
    assert r.rec.max_running == 3


async def test_long_operations_never_take_the_slots_of_quick_ones() -> None:
    """Image pulls and VM boots run under their own limit: with every long slot and more taken,
    a config item still applies at once."""
    pulls = {f"pull{n}": asyncio.Event() for n in range(5)}
    r = rig(settings=EngineSettings(limit=1, long_limit=2), gates=dict(pulls), long=set(pulls))
    r.engine.set_desired(graph(*(t(k) for k in pulls), t("quick"), t("after", "pull0")))
    await _until_settled_quick(r)
    assert r.state("quick") is ItemState.CREATED
    assert r.rec.max_running == 3  # two pulls and the quick one
    for gate in pulls.values():
        gate.set()
    await r.engine.settle(within=5)
    assert set(r.rec.system) == {*pulls, "quick", "after"}


async def _until_settled_quick(r: Rig) -> None:
    for _ in range(50):
        r.engine.step()
        await asyncio.sleep(0)
        if ("x", "quick") in r.engine.actual:
            return


# ---------------------------------------------------------------- observe and adopt


async def test_nothing_happens_before_the_first_desired_state() -> None:
    """After a restart, observed objects wait for the saved config instead of being deleted."""
    r = rig(t("br"))
    await r.engine.resync()
    assert r.engine.step() == 0
    assert r.rec.log == []


async def test_drift_is_repaired_on_resync() -> None:
    r = rig()
    await r.reconcile(t("br"), t("veth", "br"), t("x2"))
    r.rec.log.clear()
    # Someone deletes the bridge (the kernel takes the veth with it) and edits x2.
    del r.rec.system["br"]
    del r.rec.system["veth"]
    r.rec.system["x2"] = t("x2", value=9)
    await r.engine.resync()
    await r.engine.settle(5)
    assert sorted(r.rec.steps()) == [("create", "br"), ("create", "veth"), ("modify", "x2")]
    assert r.rec.system["x2"].value == 0


async def test_driver_event_wakes_a_repair() -> None:
    r = rig()
    await r.reconcile(t("ctr"))
    del r.rec.system["ctr"]
    r.engine.notify(("x", "ctr"), None)
    await r.engine.settle(5)
    assert r.rec.steps() == [("create", "ctr"), ("create", "ctr")]


async def test_event_during_an_operation_is_checked_after_it() -> None:
    """A container that dies just after its create wrote it, while the create has not returned:
    the event cannot be merged then, so the kind is observed again once the create is over, and
    the container is made again."""
    written, release = asyncio.Event(), asyncio.Event()

    class Racy(Recorder):
        async def create(self, item: Thing) -> None:
            await super().create(item)
            if not release.is_set():
                written.set()
                await release.wait()

    rec = Racy()
    engine = Engine({"x": rec}, settings=EngineSettings(resync_interval=3600))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        engine.set_desired(graph(t("ctr")))
        await asyncio.wait_for(written.wait(), 5)
        del rec.system["ctr"]  # it died
        engine.notify(("x", "ctr"), None)  # while the create is still in flight
        release.set()
        await _until(lambda: rec.steps("create") == [("create", "ctr")] * 2 and engine.busy == 0)
        assert "ctr" in rec.system
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


# ---------------------------------------------------------------- owners, liveness, the loop


async def test_failures_roll_up_to_owner() -> None:
    r = rig(fail={("create", "disk"): PERM})
    bad = Thing("x", "disk", owned_by=("volume", "v1"))
    good = Thing("x", "ok", owned_by=("app", "a1"))
    waiting = Thing("x", "vm", depends=(("x", "disk"),), owned_by=("app", "a2"))
    r.engine.set_desired({th.ref: th for th in (bad, good, waiting)})
    await r.engine.settle(5)
    owners = r.engine.owners()
    assert owners[("volume", "v1")].state == "error"
    (err,) = owners[("volume", "v1")].errors
    assert (err.ref, err.action, err.message, err.permanent) == (("x", "disk"), "create",
                                                                  "refused", True)  # fmt: skip
    assert err.time > 0
    assert owners[("app", "a1")].state == "ok"
    assert owners[("app", "a2")].state == "pending"
    assert owners[("app", "a2")].pending == [(("x", "vm"), "waiting for x/disk (failed: refused)")]


async def test_overdue_reports_stuck_operation() -> None:
    clock = Clock()
    release = asyncio.Event()

    class Stuck(Recorder):
        async def create(self, item: Thing) -> None:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue  # swallows cancellation: a hung operation

    engine = Engine(
        {"x": Stuck()}, settings=EngineSettings(op_timeout=1.0, hang_grace=2.0), clock=clock
    )
    engine.set_desired(graph(t("a")))
    engine.step()
    await asyncio.sleep(0)
    assert engine.overdue() == []
    clock.now += 10
    assert engine.overdue() == ["create x/a running for 10 s"]
    release.set()
    await engine.settle(5)
    assert engine.overdue() == []


async def test_run_loop_retries_and_resyncs_by_itself() -> None:
    rec = Recorder(fail={("create", "a"): [TEMP]})
    engine = Engine(
        {"x": rec},
        settings=EngineSettings(backoff=Backoff(base=0.02, cap=0.05), resync_interval=0.1),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    engine.set_desired(graph(t("a")))
    await _until(lambda: "a" in rec.system)
    assert rec.steps() == [("create", "a"), ("create", "a")]
    del rec.system["a"]  # drift, noticed by the periodic resync
    await _until(lambda: "a" in rec.system)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_stop_cancels_operations_in_flight() -> None:
    rec = Recorder(gates={"a": asyncio.Event()})
    engine = Engine({"x": rec})
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    engine.set_desired(graph(t("a")))
    await _until(lambda: engine.busy == 1)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert engine.busy == 0


async def test_no_configurator_for_a_kind_is_a_permanent_item_error() -> None:
    engine = Engine({})
    engine.set_desired(graph(t("a", kind="nope")))
    await engine.settle(5)
    st = engine.status[("nope", "a")]
    assert st.permanent and "no configurator" in st.last_error


async def _until(cond: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - polls a plain predicate of the fakes
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------- the event loop


async def test_applying_5000_items_never_stalls_the_loop(loop_watch: object) -> None:
    """``step`` decides within a time budget and yields: a big config never blocks the loop for
    long (the fixture fails the test past 50 ms)."""
    rec = Recorder(trust_deletes=True)  # the fake's own O(n) check would stall the loop
    engine = Engine({"x": rec})
    want = graph(*(t(f"n{i}", *([f"n{i - 1}"] if i % 5 else [])) for i in range(5000)))
    await asyncio.sleep(0.01)  # building the graph is the test's work, not the engine's
    engine.set_desired(want)
    await engine.settle(within=60)
    assert len(rec.system) == 5000
    assert not rec.violations
    engine.set_desired({})
    await engine.settle(within=60)
    assert rec.system == {}
