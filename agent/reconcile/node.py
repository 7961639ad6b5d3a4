"""Applies a whole NodeConfig: renders every kind, reconciles, and remembers what failed.

Kinds join this as later issues add them (networks, firewall, volumes, apps, cluster); each
brings a ``render`` function and a configurator, and the engine orders them by dependencies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent.model.config import NodeConfig, ObjectError, diff_configs
from agent.reconcile import configitems
from agent.reconcile.engine import Engine, Item, ItemRef, PlanError

log = logging.getLogger(__name__)


@dataclass
class ApplyReport:
    """The outcome of the last apply, for status output and device info."""

    version: str = ""
    object_errors: list[ObjectError] = field(default_factory=list)
    item_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.object_errors and not self.item_errors


class NodeReconciler:
    """Owns the engine and the runtime config items.  ``apply`` is idempotent."""

    def __init__(self, runtime: configitems.RuntimeItems) -> None:
        self.runtime = runtime
        self._items_cfg = configitems.ConfigItemConfigurator(runtime)
        self._engine = Engine(
            {configitems.KIND: self._items_cfg},
            actual=configitems.render(runtime.current),
        )
        self.current: NodeConfig | None = None
        self.report = ApplyReport()

    async def apply(self, config: NodeConfig) -> bool:
        """Reconcile the node to ``config``; True when everything applied without error."""
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
        desired: dict[ItemRef, Item] = {}
        desired.update(configitems.render(config.items))
        report = ApplyReport(version=config.version, object_errors=list(config.errors))
        for err in config.errors:
            log.error("config %s %s (%s): %s", err.kind, err.id, err.name, err.message)
        try:
            result = await self._engine.reconcile(desired)
        except PlanError as exc:
            report.item_errors.append(str(exc))
            log.error("config not applied: %s", exc)
        else:
            report.item_errors += [f"{f.ref[0]}/{f.ref[1]}: {f.message}" for f in result.failed]
        self._items_cfg.commit(config.items)
        self.current = config
        self.report = report
        return report.ok
