"""The workload kinds together: content trees, volumes, container apps and VM apps.

:class:`Workloads` is what the node reconciler holds when the node runs apps: the four
configurators (sharing one workspace in the vault and each other's results), the render of a
config into their items, the EVE state of each app, volume and content tree, and the
housekeeping that runs beside the engine (watching running apps, collecting unused blobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from agent.model.config import NodeConfig
from agent.reconcile import apps, appstate, content, volumes
from agent.reconcile.apptelemetry import AppTarget
from agent.reconcile.containerapps import ContainerAppConfigurator
from agent.reconcile.engine import Engine
from agent.reconcile.items import Configurator, ItemRef, OwnerRef
from agent.reconcile.netplan import NetPlan
from agent.reconcile.vmapps import VmAppConfigurator
from agent.reconcile.workspace import WorkloadDrivers, Workspace

log = logging.getLogger(__name__)

#: How often unused blobs are looked for (each removed after ``timer.gc.download``).
GC_INTERVAL = 60.0


class Workloads:
    def __init__(self, drivers: WorkloadDrivers, workspace: Workspace) -> None:
        self.drivers = drivers
        self.ws = workspace
        self.contents = content.ContentConfigurator(workspace)
        self.vols = volumes.VolumeConfigurator(workspace, self.contents, drivers.containers)
        self.containers = ContainerAppConfigurator(workspace, drivers.containers, self.vols)
        self.vms = VmAppConfigurator(workspace, drivers.hypervisor, self.vols)
        self.plans: dict[str, apps.AppPlan] = {}
        self.names: dict[str, str] = {}
        #: Kinds observed again every watch round (the network kinds add the app interfaces).
        self.watch_kinds: tuple[str, ...] = (apps.CONTAINER, apps.DOMAIN)

    def configurators(self) -> dict[str, Configurator]:
        return {
            content.KIND: self.contents,
            volumes.KIND: self.vols,
            apps.CONTAINER: self.containers,
            apps.DOMAIN: self.vms,
        }

    def render(
        self,
        config: NodeConfig,
        *,
        halt_all: bool,
        delayed: Iterable[str],
        netplan: NetPlan | None = None,
    ) -> apps.Rendered:
        """The workload items of ``config`` (pure but for remembering the plans)."""
        rendered = apps.render(config, halt_all=halt_all, delayed=delayed, netplan=netplan)
        self.plans = rendered.plans
        self.names = {a.id: a.name for a in config.apps.values()}
        self.vols.claim(config.volumes)
        return rendered

    # ---- state --------------------------------------------------------------------------

    def phase(self, engine: Engine, owner: OwnerRef) -> appstate.Phase | None:
        """EVE's state of an app, volume or content tree (None for other owners)."""
        kind, obj_id = owner
        if kind == "app":
            plan = self.plans.get(obj_id)
            if plan is None:
                # No longer configured: its container or domain is on its way out.
                return appstate.Phase("HALTING")
            percents = {t: self.contents.percent(t) for t in plan.trees}
            return appstate.app_phase(engine, plan, percents)
        if kind == content.KIND:
            return appstate.tree_phase(engine, obj_id, self.contents.percent(obj_id))
        if kind == volumes.KIND:
            item = engine.desired.get((volumes.KIND, obj_id))
            vol = item if isinstance(item, volumes.VolumeItem) else None
            return appstate.volume_phase(engine, vol, obj_id)
        return None

    def path_refs(self, app_id: str) -> list[ItemRef]:
        """The content tree and volume items an app stands on (their errors are its errors)."""
        plan = self.plans.get(app_id)
        if plan is None:
            return []
        return [(content.KIND, t) for t in plan.trees] + [(volumes.KIND, v) for v in plan.volumes]

    def boot_time(self, app_id: str) -> float:
        plan = self.plans.get(app_id)
        if plan is None:
            return 0.0
        source = self.containers if plan.runtime == apps.CONTAINER else self.vms
        return source.boot_times.get(app_id, 0.0)

    def targets(self) -> list[AppTarget]:
        """Apps whose container or domain exists now."""
        out = []
        for app_id, plan in self.plans.items():
            running = (
                self.containers.boot_times
                if plan.runtime == apps.CONTAINER
                else self.vms.boot_times
            )
            if app_id in running:
                name = self.names.get(app_id, "")
                if plan.runtime == apps.CONTAINER:
                    out.append(AppTarget(app_id, name, "container"))
                else:
                    out.append(AppTarget(app_id, name, "vm"))
        return out

    # ---- housekeeping -------------------------------------------------------------------

    async def maintain(self, engine: Engine, stop: asyncio.Event) -> None:
        """Beside the engine until ``stop``: observe running apps every ``watch_interval`` (a
        container or domain that stopped by itself is started again) and collect unused blobs.
        """
        interval = self.ws.settings.watch_interval
        since_gc = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
            if any(p.runs for p in self.plans.values()):
                engine.request_resync(self.watch_kinds)
            since_gc += interval
            if since_gc >= GC_INTERVAL:
                since_gc = 0.0
                await self.ws.collect_garbage()

    async def close(self) -> None:
        await self.ws.close()


__all__ = ["AppTarget", "Workloads"]
