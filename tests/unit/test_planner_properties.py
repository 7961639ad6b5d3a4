"""Property tests of the planner and the engine (Hypothesis).

For random desired and actual graphs: repeatedly applying the planner's decisions to a simulated
system reaches the desired state, never deletes an item while a dependent exists and never
creates one before its dependencies.  Items whose dependencies cannot be met (missing from the
desired graph, directly or further down) end up absent and pending.
"""

from __future__ import annotations

import asyncio
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.reconcile.engine import Engine
from agent.reconcile.items import Action, Item, ItemRef
from agent.reconcile.planner import View, actual_dependents, decide
from agent.reconcile.state import ItemState
from tests.unit.engine_fakes import Recorder, Thing

KEYS = [f"k{i}" for i in range(8)]


@st.composite
def graphs(draw: st.DrawFn) -> dict[ItemRef, Item]:
    """A random acyclic graph over KEYS: an item may depend on lower-numbered keys, which may be
    absent from the graph (a missing dependency)."""
    chosen = draw(st.sets(st.sampled_from(KEYS)))
    out: dict[ItemRef, Item] = {}
    for key in sorted(chosen):
        i = KEYS.index(key)
        deps = draw(st.sets(st.sampled_from(KEYS[:i]), max_size=2)) if i else set()
        out[("x", key)] = Thing(
            "x",
            key,
            value=draw(st.integers(0, 1)),
            shape=draw(st.sampled_from(["", "s"])),
            depends=tuple(("x", d) for d in sorted(deps)),
        )
    return out


def consistent(system: dict[ItemRef, Item]) -> dict[ItemRef, Item]:
    """Drop items whose dependencies are not on the system (a real system cannot hold them)."""
    out = dict(system)
    changed = True
    while changed:
        changed = False
        for ref, item in list(out.items()):
            if any(d not in out for d in item.deps()):
                del out[ref]
                changed = True
    return out


def reachable(desired: dict[ItemRef, Item]) -> set[ItemRef]:
    """Desired items whose dependencies can all be met, transitively."""
    ok: set[ItemRef] = set()
    changed = True
    while changed:
        changed = False
        for ref, item in desired.items():
            if ref not in ok and all(d in ok for d in item.deps()):
                ok.add(ref)
                changed = True
    return ok


@given(desired=graphs(), actual=graphs(), seed=st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_applying_decisions_reaches_the_desired_state(
    desired: dict[ItemRef, Item], actual: dict[ItemRef, Item], seed: int
) -> None:
    rng = random.Random(seed)
    system = consistent(actual)
    for _ in range(200):
        view = View(desired, system, actual_dependents=actual_dependents(system))
        ops = [d.op for ref in sorted(set(desired) | set(system)) if (d := decide(view, ref)).op]
        if not ops:
            break
        # Any non-empty subset, in any order, as concurrent completion would give.
        rng.shuffle(ops)
        for op in ops[: rng.randint(1, len(ops))]:
            assert op is not None
            if op.action is Action.DELETE:
                users = [r for r, i in system.items() if op.ref in set(i.deps())]
                assert not users, f"{op} while {users} depend on it"
                del system[op.ref]
            else:
                missing = [d for d in op.new.deps() if d not in system]
                assert not missing, f"{op} before {missing}"
                assert (op.action is Action.CREATE) == (op.ref not in system)
                system[op.ref] = op.new
    else:
        raise AssertionError("did not converge in 200 rounds")
    want = {r: desired[r] for r in reachable(desired)}
    assert system == want
    view = View(desired, system, actual_dependents=actual_dependents(system))
    for ref in set(desired) - set(want):
        assert decide(view, ref).state is ItemState.PENDING


@given(desired=graphs(), actual=graphs(), seed=st.integers(0, 2**16))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_engine_reaches_desired_state_on_a_fake_system(
    desired: dict[ItemRef, Item], actual: dict[ItemRef, Item], seed: int
) -> None:
    """The same through the engine and the recording fake (which flags ordering violations),
    with operations completing in random order."""
    system = consistent(actual)

    async def go() -> Recorder:
        rec = Recorder(system={r[1]: i for r, i in system.items()})  # type: ignore[misc]
        engine = Engine({"x": rec}, rng=random.Random(seed))
        await engine.resync()
        engine.set_desired(desired)
        await engine.settle(within=10)
        return rec

    rec = asyncio.run(go())
    assert rec.violations == []
    assert {("x", k): v for k, v in rec.system.items()} == {
        r: desired[r] for r in reachable(desired)
    }
