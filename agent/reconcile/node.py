"""The node reconciler: one engine for every resource kind, fed from the validated config.

``accept`` (what config sync calls) only renders the desired items and hands them to the engine;
it never waits for the system, so a long apply never stops the config poll.  ``run`` is the
engine's own supervised task: it observes and adopts what exists at start, then works whenever a
new config, a retry coming due, a resync or a driver event wakes it.

Kinds join this as later issues add them (networks, firewall, volumes, apps, cluster): each brings
a ``render`` function and a configurator, and the engine orders them by dependencies.  Conditions
outside the engine (the vault, an uplink port) are external items that kinds depend on:
``set_condition`` tells the engine whether they are met.

Failures roll up to their owner (an app, a network instance, a volume, the device) together with
the config's own validation errors, for ``eve-agent status`` and the reports to the controller.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agent.model.config import NodeConfig, ObjectError, diff_configs
from agent.reconcile import configitems
from agent.reconcile.engine import Engine, EngineSettings
from agent.reconcile.items import DEVICE_OWNER, Configurator, Item, ItemRef, OwnerRef
from agent.reconcile.state import OwnerStatus

log = logging.getLogger(__name__)

#: External conditions kinds may depend on (refs in the engine's "condition" namespace).
VAULT_READY: ItemRef = ("condition", "vault")


@dataclass
class ApplyReport:
    """The outcome of the current config so far, for status output and device info."""

    version: str = ""
    object_errors: list[ObjectError] = field(default_factory=list)
    item_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.object_errors and not self.item_errors


@dataclass(frozen=True)
class OwnerReport:
    """What the node tells about one app, network instance, volume or the device itself."""

    kind: str
    id: str
    name: str
    #: ``ok``, ``pending``, ``in-progress`` or ``error``.
    state: str
    #: (message, wall-clock time) of each failure: the config's validation errors and the
    #: failed items.
    errors: tuple[tuple[str, float], ...] = ()
    #: Why items wait ("waiting for condition/vault not ready: locked").
    pending: tuple[str, ...] = ()


class NodeReconciler:
    """Owns the engine, its configurators and the runtime config items."""

    def __init__(
        self,
        runtime: configitems.RuntimeItems,
        *,
        settings: EngineSettings | None = None,
        configurators: dict[str, Configurator] | None = None,
    ) -> None:
        self.runtime = runtime
        self._items_cfg = configitems.ConfigItemConfigurator(runtime)
        kinds: dict[str, Configurator] = {configitems.KIND: self._items_cfg}
        kinds.update(configurators or {})
        self.engine = Engine(kinds, settings=settings)
        self.current: NodeConfig | None = None
        self._object_errors: list[ObjectError] = []
        self._observed = False

    # ---- inputs ---------------------------------------------------------------------------

    def render(self, config: NodeConfig) -> dict[ItemRef, Item]:
        """Every desired item of ``config``.  Pure."""
        desired: dict[ItemRef, Item] = {}
        desired.update(configitems.render(config.items))
        return desired

    async def accept(self, config: NodeConfig) -> bool:
        """Make ``config`` the desired state and return at once (the engine task applies it).

        True when the config had no invalid objects.  Idempotent: the same config again changes
        nothing.
        """
        changes = {k: d for k, d in diff_configs(self.current, config).items() if not d.empty}
        if changes:
            log.info(
                "applying config %r: %s",
                config.version,
                "; ".join(
                    f"{k} +{len(d.added)} ~{len(d.changed)} -{len(d.removed)}"
                    for k, d in changes.items()
                ),
            )
        for err in config.errors:
            log.error("config %s %s (%s): %s", err.kind, err.id, err.name, err.message)
        self._items_cfg.set_unknown(config.items.unknown)
        self.engine.set_desired(self.render(config))
        self.current = config
        self._object_errors = list(config.errors)
        return not config.errors

    async def apply(self, config: NodeConfig, within: float | None = None) -> bool:
        """``accept`` and wait until the engine has settled; True when nothing failed.

        For tests and tools that run without the engine task; the daemon uses ``accept``.
        """
        if not self._observed:
            await self.engine.resync()
            self._observed = True
        await self.accept(config)
        await self.engine.settle(within)
        return self.report.ok

    def set_condition(self, ref: ItemRef, not_ready: str | None) -> None:
        """An external condition changed: None when met, else why not."""
        self.engine.set_external(ref, not_ready)

    async def run(self, stop: asyncio.Event) -> None:
        """The engine task: observe, adopt, reconcile until ``stop``."""
        self._observed = True
        await self.engine.run(stop)

    # ---- outputs --------------------------------------------------------------------------

    @property
    def report(self) -> ApplyReport:
        errors = [
            f"{e.ref[0]}/{e.ref[1]}: {e.message}"
            for o in self.engine.owners().values()
            for e in o.errors
        ]
        return ApplyReport(
            version=self.current.version if self.current else "",
            object_errors=list(self._object_errors),
            item_errors=sorted(errors),
        )

    def owners(self) -> list[OwnerReport]:
        """Per owner: state, errors (validation and items) and pending reasons.  Sorted.

        Every object the config names is an owner, also before any of its items exists (it is
        then ``pending``): a report must never make a configured object look deleted.
        """
        rolled = self.engine.owners()
        names = self._names()
        by_owner: dict[OwnerRef, OwnerStatus] = dict(rolled)
        invalid: dict[OwnerRef, list[ObjectError]] = {}
        for err in self._object_errors:
            owner = DEVICE_OWNER if err.kind == "configitem" else (err.kind, err.id)
            invalid.setdefault(owner, []).append(err)
            names.setdefault(owner, err.name)
        out = []
        configured = {o for o in names if o != DEVICE_OWNER}
        for owner in sorted(set(by_owner) | set(invalid) | configured):
            st = by_owner.get(owner)
            errors = [(f"{e.kind} {e.id}: {e.message}", 0.0) for e in invalid.get(owner, [])]
            if st is not None:
                errors += [(f"{e.ref[0]}/{e.ref[1]}: {e.message}", e.time) for e in st.errors]
            pending = tuple(f"{k}/{n}: {r}" for (k, n), r in st.pending) if st else ()
            if errors:
                state = "error"
            elif st is not None:
                state = st.state
            else:
                state = "ok" if owner == DEVICE_OWNER else "pending"
            out.append(
                OwnerReport(owner[0], owner[1], names.get(owner, ""), state, tuple(errors), pending)
            )
        return out

    def _names(self) -> dict[OwnerRef, str]:
        cfg = self.current
        names: dict[OwnerRef, str] = {DEVICE_OWNER: ""}
        if cfg is None:
            return names
        for kind, objects in (
            ("app", cfg.apps),
            ("networkinstance", cfg.network_instances),
            ("volume", cfg.volumes),
            ("contenttree", cfg.content_trees),
        ):
            for obj_id, obj in objects.items():
                names[(kind, obj_id)] = str(getattr(obj, "name", "") or "")
        return names
