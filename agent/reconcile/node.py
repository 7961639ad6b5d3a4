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
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.model.config import NodeConfig, ObjectError, diff_configs
from agent.reconcile import cluster, configitems, netplan, nodefirewall, portconfig
from agent.reconcile.apps import start_condition
from agent.reconcile.engine import Engine, EngineSettings
from agent.reconcile.items import (
    DEVICE_OWNER,
    VAULT_READY,
    Configurator,
    Item,
    ItemRef,
    OwnerRef,
)
from agent.reconcile.networks import VIF, Networks
from agent.reconcile.portselect import PortManager
from agent.reconcile.state import ItemState, OwnerStatus
from agent.reconcile.workloads import Workloads

log = logging.getLogger(__name__)


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
class VifReport:
    """One app interface, for the app's and its network instance's info."""

    vif: str
    ifname: str
    mac: str
    ip: str
    gateway: str
    ni_id: str
    app_id: str


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
    #: EVE's state name (``info.ZSwState``) of an app, volume or content tree; "" otherwise.
    phase: str = ""
    #: Download or creation progress in percent, when known.
    progress: int | None = None
    #: Wall-clock time an app's container or domain last started (0 when not running).
    boot_time: float = 0.0
    #: The object's version as configured (an app's ``uuidandversion.version``).
    version: str = ""
    #: What it refers to: an app's volumes; a content tree's SHA-256 (one entry).
    refs: tuple[str, ...] = ()
    #: A volume's or content tree's generation counter.
    generation: int = 0
    #: An app's interfaces: ``eth<n> <address or MAC> on <instance>`` each.
    interfaces: tuple[str, ...] = ()
    #: An app's interfaces, or those on a network instance.
    vifs: tuple[VifReport, ...] = ()
    #: A network instance's bridge and its address.
    bridge: str = ""
    bridge_ip: str = ""


class NodeReconciler:
    """Owns the engine, its configurators and the runtime config items."""

    def __init__(
        self,
        runtime: configitems.RuntimeItems,
        *,
        settings: EngineSettings | None = None,
        configurators: dict[str, Configurator] | None = None,
        workloads: Workloads | None = None,
        networks: Networks | None = None,
        ports: PortManager | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self._items_cfg = configitems.ConfigItemConfigurator(runtime)
        kinds: dict[str, Configurator] = {configitems.KIND: self._items_cfg}
        self.workloads = workloads
        self.networks = networks
        if workloads is not None:
            kinds.update(workloads.configurators())
        if networks is not None:
            kinds.update(networks.configurators())
            if workloads is not None:
                workloads.watch_kinds += (VIF,)
                if networks.leases is not None:
                    networks.leases.on_dns = workloads.containers.lease_dns
        #: The node's ports, managed only beside the networks (in their namespace).
        self.ports = ports if networks is not None else None
        if self.ports is not None:
            kinds[portconfig.KIND] = self.ports.configurator
            self.ports.on_change = self._ports_changed
        kinds.update(configurators or {})
        self.engine = Engine(kinds, settings=settings)
        self.current: NodeConfig | None = None
        self._object_errors: list[ObjectError] = []
        self._render_errors: list[ObjectError] = []
        self._layout: netplan.NetPlan | None = None
        self._observed = False
        self._clock = clock
        self._started = clock()
        #: Apps whose start delay has not passed yet, with its timer.
        self._delay_timers: dict[str, asyncio.TimerHandle] = {}
        self._delays_done: set[str] = set()
        #: Set before a reboot or power-off: every app halts, none starts (:meth:`halt_apps`).
        self.halting = False
        #: More kinds' renderers (config -> desired items), beside their ``configurators``:
        #: the I/O lockdown (:mod:`agent.reconcile.iolockdown`).
        self.renderers: list[Callable[[NodeConfig], Mapping[ItemRef, Item]]] = []
        runtime.subscribe(self._items_changed)

    # ---- inputs ---------------------------------------------------------------------------

    def render(self, config: NodeConfig) -> dict[ItemRef, Item]:
        """Every desired item of ``config``.  Pure but for the start-delay timers it arms."""
        desired: dict[ItemRef, Item] = {}
        desired.update(configitems.render(config.items))
        for extra in self.renderers:
            desired.update(extra(config))
        # A cluster member's K3s VM gets its K3s configuration before anything renders it.
        config, self._render_errors = cluster.prepare(config)
        layout = None
        if self.networks is not None:
            effective = self.ports.effective() if self.ports is not None else None
            layout = netplan.plan(config, self.networks.node, effective)
            self._render_errors += layout.errors
        self._layout = layout
        if self.workloads is not None:
            rendered = self.workloads.render(
                config,
                halt_all=self.maintenance(config) or self.halting,
                delayed=self._delayed(config),
                netplan=layout,
            )
            desired.update(rendered.items)
            self._render_errors += rendered.errors
        if self.networks is not None and layout is not None:
            containers = [ref[1] for ref in desired if ref[0] == "container"]
            policy = nodefirewall.NodePolicy.from_items(config.items)
            items, problems = self.networks.render(layout, containers, policy)
            desired.update(items)
            self._render_errors += problems
            if self.ports is not None:
                desired.update(self.ports.render(layout))
        return desired

    @property
    def layout(self) -> netplan.NetPlan | None:
        """The network plan of the current config (None without networks)."""
        return self._layout

    def maintenance(self, config: NodeConfig | None = None) -> bool:
        """Maintenance mode asked for (config or ``maintenance.mode``): apps stop, none start."""
        cfg = config or self.current
        return bool(cfg and cfg.maintenance_mode) or self.runtime.current.bool("maintenance.mode")

    def _delayed(self, config: NodeConfig) -> list[str]:
        """Apps with a start delay (``start_delay_in_seconds``), counted from the agent's start
        as EVE does: each depends on a condition met once its delay has passed."""
        out = []
        now = self._clock()
        for app in config.apps.values():
            if app.start_delay <= 0:
                continue
            out.append(app.id)
            ref = start_condition(app.id)
            left = self._started + app.start_delay - now
            if left <= 0 or app.id in self._delays_done:
                self.engine.set_external(ref, None)
                continue
            self.engine.set_external(ref, f"start delayed by {app.start_delay} s")
            if app.id not in self._delay_timers:
                self._delay_timers[app.id] = asyncio.get_running_loop().call_later(
                    left, self._delay_over, app.id
                )
        return out

    def _delay_over(self, app_id: str) -> None:
        self._delay_timers.pop(app_id, None)
        self._delays_done.add(app_id)
        self.engine.set_external(start_condition(app_id), None)

    def _items_changed(self, changed: set[str]) -> None:
        if "maintenance.mode" in changed and self.current is not None:
            log.info("maintenance mode %s", "on" if self.maintenance() else "off")
            self.engine.set_desired(self.render(self.current))

    def _ports_changed(self) -> None:
        """The effective ports changed outside a config (a test passed or failed)."""
        if self.current is not None:
            self.engine.set_desired(self.render(self.current))

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
        self.current = config
        if self.ports is not None:
            self.ports.offer(config.ports, config.version)
        self.engine.set_desired(self.render(config))
        self._object_errors = list(config.errors) + self._render_errors
        return not self._object_errors

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

    async def halt_apps(self, within: float) -> None:
        """Halt every app for good (the node is about to reboot or power off, as EVE's
        ``shutdownAppsGlobal``) and wait until the engine has settled.  Raises TimeoutError
        after ``within`` seconds (the apps go on halting meanwhile)."""
        self.halting = True
        if self.current is not None:
            self.engine.set_desired(self.render(self.current))
        await self.engine.settle(within)

    def set_condition(self, ref: ItemRef, not_ready: str | None) -> None:
        """An external condition changed: None when met, else why not."""
        self.engine.set_external(ref, not_ready)

    async def run(self, stop: asyncio.Event) -> None:
        """The engine task: observe, adopt, reconcile until ``stop`` (and, with workloads,
        watch running apps beside it)."""
        self._observed = True
        beside = []
        if self.workloads is not None:
            beside.append(asyncio.create_task(self.workloads.maintain(self.engine, stop),
                                              name="watch"))  # fmt: skip
        if self.ports is not None:
            beside.append(asyncio.create_task(self.ports.run(self.engine, stop), name="ports"))
        if self.networks is not None and self.networks.leases is not None:
            nets, engine = self.networks, self.engine
            beside.append(asyncio.create_task(
                self.networks.leases.run(lambda: nets.dhcp_vifs(engine.actual), stop),
                name="app dhcp"))  # fmt: skip
        if self.networks is not None and self.networks.switch_addresses is not None:
            beside.append(asyncio.create_task(
                self.networks.switch_addresses.run(lambda: self._layout, stop),
                name="switch addresses"))  # fmt: skip
        try:
            await self.engine.run(stop)
        finally:
            for task in beside:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for handle in self._delay_timers.values():
                handle.cancel()
            self._delay_timers.clear()

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
            owner = DEVICE_OWNER if err.kind in ("configitem", "device") else (err.kind, err.id)
            invalid.setdefault(owner, []).append(err)
            names.setdefault(owner, err.name)
        out = []
        configured = {o for o in names if o != DEVICE_OWNER}
        port_errors = self.ports.errors() if self.ports is not None else []
        if port_errors:
            configured.add(DEVICE_OWNER)
        for owner in sorted(set(by_owner) | set(invalid) | configured):
            st = by_owner.get(owner)
            errors = [(f"{e.kind} {e.id}: {e.message}", 0.0) for e in invalid.get(owner, [])]
            if st is not None:
                errors += [(f"{e.ref[0]}/{e.ref[1]}: {e.message}", e.time) for e in st.errors]
            if owner == DEVICE_OWNER:
                errors += port_errors
            pending = tuple(f"{k}/{n}: {r}" for (k, n), r in st.pending) if st else ()
            if owner[0] == "app":
                errors += self._path_errors(owner[1])
            if errors:
                state = "error"
            elif st is not None:
                state = st.state
            else:
                state = "ok" if owner == DEVICE_OWNER else "pending"
            phase = progress = None
            boot = 0.0
            if self.workloads is not None:
                found = self.workloads.phase(self.engine, owner)
                if found is not None:
                    phase, progress = found.state, found.progress
                    if errors:
                        phase = "ERROR"
                if owner[0] == "app" and phase == "RUNNING":
                    boot = self.workloads.boot_time(owner[1])
            out.append(
                OwnerReport(
                    owner[0],
                    owner[1],
                    names.get(owner, ""),
                    state,
                    tuple(errors),
                    pending,
                    phase=phase or "",
                    progress=progress,
                    boot_time=boot,
                    **self._config_facts(owner),
                )
            )
        return out

    def _config_facts(self, owner: OwnerRef) -> dict[str, Any]:
        """Version, references and generation of a configured object, for its report."""
        cfg = self.current
        if cfg is None:
            return {}
        kind, obj_id = owner
        if kind == "app" and (app := cfg.apps.get(obj_id)) is not None:
            facts: dict[str, Any] = {
                "version": app.version,
                "refs": tuple(v.id for v in app.volumes),
            }
            if self._layout is not None:
                facts["interfaces"] = tuple(
                    f"{v.guest_ifname} {v.ip or self._leased(v)[0] or v.mac} on "
                    f"{self._layout.instances[v.ni_id].name or v.ni_id}"
                    for v in sorted(self._layout.vifs.values(), key=lambda v: v.index)
                    if v.app_id == obj_id
                )
                facts["vifs"] = self._vifs(lambda v: v.app_id == obj_id)
            return facts
        if kind == "networkinstance" and self._layout is not None:
            ni = self._layout.instances.get(obj_id)
            if ni is None:
                return {}
            gateway = str(ni.addressing.gateway) if ni.addressing is not None else ""
            return {
                "bridge": ni.bridge,
                "bridge_ip": gateway,
                "vifs": self._vifs(lambda v: v.ni_id == obj_id),
            }
        if kind == "volume" and (vol := cfg.volumes.get(obj_id)) is not None:
            return {"generation": vol.generation}
        if kind == "contenttree" and (tree := cfg.content_trees.get(obj_id)) is not None:
            return {"generation": tree.generation, "refs": (tree.sha256,) if tree.sha256 else ()}
        return {}

    def _vifs(self, which: Callable[[netplan.VifPlan], bool]) -> tuple[VifReport, ...]:
        layout = self._layout
        if layout is None:
            return ()
        out = []
        for v in sorted(layout.vifs.values(), key=lambda v: (v.app_id, v.index)):
            if not which(v):
                continue
            ni = layout.instances[v.ni_id]
            ip = v.ip
            gateway = str(ni.addressing.gateway) if ni.addressing is not None and v.ip else ""
            if not ip:
                ip, gateway = self._leased(v)
            out.append(VifReport(v.host_name, v.guest_ifname, v.mac, ip, gateway, v.ni_id,
                                 v.app_id))  # fmt: skip
        return tuple(out)

    def _leased(self, v: netplan.VifPlan) -> tuple[str, str]:
        """A switch instance's app interface: (address, router) from the outside's DHCP: the
        lease the agent holds for a container, else the answer a VM was seen to get."""
        nets = self.networks
        if nets is None:
            return "", ""
        found = nets.leases.address(v.app_id, v.index) if nets.leases is not None else ("", "")
        if not found[0] and nets.switch_addresses is not None:
            found = (nets.switch_addresses.address(v.app_id, v.index), "")
        return found

    def _path_errors(self, app_id: str) -> list[tuple[str, float]]:
        """The errors of the content trees and volumes an app stands on: EVE shows them on
        the app too."""
        if self.workloads is None:
            return []
        out = []
        for ref in self.workloads.path_refs(app_id):
            st = self.engine.status.get(ref)
            if st is not None and st.state is ItemState.FAILED:
                out.append((f"{ref[0]}/{ref[1]}: {st.last_error}", st.error_time))
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


__all__ = ["VAULT_READY", "ApplyReport", "NodeReconciler", "OwnerReport"]
