"""EVE's state of each app, volume and content tree, read from the engine's item states.

EVE's zedmanager walks an app through INITIAL -> DOWNLOADING -> VERIFYING -> LOADING ->
CREATING_VOLUME -> BOOTING -> RUNNING, with HALTING/HALTED and ERROR beside them.  Here every
step is an item of the engine, so the app's state is the first step that is not done yet:

- an item in error anywhere on the app's path: ERROR (its errors carry text and time);
- the app should not run (``activate`` off, maintenance mode): HALTING while its container or
  domain goes away, then HALTED;
- a content tree downloading: DOWNLOAD_STARTED (with a percentage), at 100 % VERIFYING;
  waiting for one: INITIAL;
- an image volume being loaded: LOADING; a disk volume being made: CREATING_VOLUME;
- the container or domain: START_DELAYED while its start delay runs, BOOTING while it starts,
  RUNNING once it runs, HALTED when it went off by itself (it is started again), PENDING when it
  waits for something else (the vault).

The names are ``info.ZSwState`` names; the link layer turns them into the enum.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.reconcile import content, volumes
from agent.reconcile.apps import AppPlan, start_condition
from agent.reconcile.engine import Engine
from agent.reconcile.items import Action, ItemRef
from agent.reconcile.state import ItemState, ItemStatus


@dataclass(frozen=True)
class Phase:
    """One object's EVE state, with a progress percentage where one is known."""

    state: str
    progress: int | None = None


def _status(engine: Engine, ref: ItemRef) -> ItemStatus | None:
    return engine.status.get(ref)


def _failed(st: ItemStatus | None) -> bool:
    return st is not None and st.state is ItemState.FAILED


def _done(engine: Engine, ref: ItemRef) -> bool:
    st = engine.status.get(ref)
    return ref in engine.actual and (st is None or st.state is ItemState.CREATED)


def tree_phase(engine: Engine, tree_id: str, percent: int | None) -> Phase:
    ref = (content.KIND, tree_id)
    st = _status(engine, ref)
    if _failed(st):
        return Phase("ERROR")
    if _done(engine, ref):
        return Phase("DELIVERED", 100)
    if st is not None and st.state is ItemState.IN_PROGRESS:
        if percent is not None and percent >= 99:
            return Phase("VERIFYING", 99)
        return Phase("DOWNLOAD_STARTED", percent or 0)
    return Phase("INITIAL")


def volume_phase(engine: Engine, item: volumes.VolumeItem | None, vol_id: str) -> Phase:
    ref = (volumes.KIND, vol_id)
    st = _status(engine, ref)
    if _failed(st):
        return Phase("ERROR")
    if _done(engine, ref):
        return Phase("CREATED_VOLUME", 100)
    if st is not None and st.state is ItemState.IN_PROGRESS:
        if item is not None and item.vkind == volumes.IMAGE:
            return Phase("LOADING")
        return Phase("CREATING_VOLUME")
    return Phase("INITIAL")


def app_phase(engine: Engine, plan: AppPlan, percents: dict[str, int | None]) -> Phase:
    """The app's EVE state; see the module docstring."""
    ref: ItemRef = (plan.runtime, plan.app_id)
    path = [(content.KIND, t) for t in plan.trees] + [(volumes.KIND, v) for v in plan.volumes]
    if any(_failed(_status(engine, r)) for r in [*path, ref]):
        return Phase("ERROR")
    st = _status(engine, ref)
    if st is not None and st.action is Action.DELETE:
        return Phase("HALTING")
    if not plan.runs:
        return Phase("HALTING") if ref in engine.actual else Phase("HALTED")
    for tree_id in plan.trees:
        phase = tree_phase(engine, tree_id, percents.get(tree_id))
        if phase.state != "DELIVERED":
            return phase
    for vol_id in plan.volumes:
        vref = (volumes.KIND, vol_id)
        item = engine.desired.get(vref)
        phase = volume_phase(engine, item if isinstance(item, volumes.VolumeItem) else None, vol_id)
        if phase.state != "CREATED_VOLUME":
            return phase
    if st is not None and st.state is ItemState.IN_PROGRESS:
        return Phase("BOOTING")
    if _done(engine, ref):
        actual = engine.actual.get(ref)
        return Phase("RUNNING") if getattr(actual, "running", True) else Phase("HALTED")
    if engine.external.get(start_condition(plan.app_id)):
        return Phase("START_DELAYED")
    return Phase("PENDING")
