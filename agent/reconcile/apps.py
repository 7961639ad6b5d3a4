"""App instances (EVE's zedmanager): the desired items of every app, its volumes and content.

Rendering is pure.  For each app the config names it makes, in EVE's order:

    content tree (download, verify)  ->  volume (load, create)  ->  the app's container or domain

The runtime is chosen as EVE does: an app whose first volume is a container image runs as a
container (through dockerd), any other app as a VM (through libvirt).  The runtime item is
rendered only while the app should run: ``activate`` is true and the node is not in maintenance
mode; a halted app keeps its volumes.  The runtime item compares on a digest of everything that
decides the instance (resources, user data, volumes, the restart and purge counters), so a
restart or a purge recreates it, and nothing else does.

Objects the node cannot run (an unsupported datastore, a container volume used by a VM, an app
without memory) become errors on that object; the rest of the config still applies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.drivers.errors import PermanentError
from agent.model.config import AppInstance, NodeConfig, ObjectError
from agent.reconcile import content, volumes
from agent.reconcile.items import VAULT_READY, Item, ItemRef, OwnerRef
from agent.reconcile.netplan import SWITCH, NetPlan

CONTAINER, DOMAIN = "container", "domain"
ISO_FORMAT = 9
MIN_VM_MEMORY_KIB = 32 * 1024
#: Bounds on what one app may ask for (a hostile or mistyped config must not reach the runtime).
MAX_VCPUS = 256
MAX_MEMORY_KIB = 1024 * 1024 * 1024


def start_condition(app_id: str) -> ItemRef:
    """The external condition that holds an app until its ``start_delay_in_seconds`` passed."""
    return ("condition", f"start-delay/{app_id}")


@dataclass(frozen=True)
class AppItem:
    """The container or the domain of one app."""

    kind: str
    app_id: str
    #: Digest of everything that decides the instance: a change recreates it.
    digest: str
    #: Desired: always True; observed: whether it runs now (one that stopped is started again).
    running: bool = True
    app: AppInstance | None = field(default=None, compare=False, repr=False)
    volumes: tuple[volumes.VolumeItem, ...] = field(default=(), compare=False, repr=False)
    #: Per volume, where a container mounts it ("" for the root image / VM disks).
    mounts: tuple[str, ...] = field(default=(), compare=False)
    delayed: bool = field(default=False, compare=False)
    #: A VM's interfaces: (bridge, MAC, tap name) each; the bridges are dependencies.
    nics: tuple[tuple[str, str, str], ...] = field(default=(), compare=False)
    #: The network instances whose bridges it needs.
    networks: tuple[str, ...] = field(default=(), compare=False)
    #: A container's DNS servers: its instances' gateways (their dnsmasq).
    resolvers: tuple[str, ...] = field(default=(), compare=False)
    #: A container with no local instance but one on a switch instance: its DNS servers are
    #: those of its DHCP lease (``/etc/resolv.conf`` written when the lease comes).
    lease_dns: bool = field(default=False, compare=False)

    @property
    def ref(self) -> ItemRef:
        return (self.kind, self.app_id)

    @property
    def owner(self) -> OwnerRef:
        return ("app", self.app_id)

    def deps(self) -> Iterable[ItemRef]:
        deps: list[ItemRef] = [VAULT_READY]
        deps += [v.ref for v in self.volumes]
        if self.delayed:
            deps.append(start_condition(self.app_id))
        deps += [("bridge", ni) for ni in self.networks]
        return deps

    def needs_recreate(self, old: Any) -> bool:
        return not isinstance(old, AppItem) or old.digest != self.digest


@dataclass(frozen=True)
class AppPlan:
    """How one app is made, for state reports: its runtime and the volumes and trees it uses."""

    app_id: str
    runtime: str
    volumes: tuple[str, ...]
    trees: tuple[str, ...]
    runs: bool


@dataclass
class Rendered:
    items: dict[ItemRef, Item] = field(default_factory=dict)
    errors: list[ObjectError] = field(default_factory=list)
    plans: dict[str, AppPlan] = field(default_factory=dict)


def _digest(
    app: AppInstance,
    vols: tuple[volumes.VolumeItem, ...],
    mounts: tuple[str, ...],
    nics: tuple[tuple[str, str, str], ...] = (),
    resolvers: tuple[str, ...] = (),
    lease_dns: bool = False,
) -> str:
    doc = [
        app.memory_kib, app.vcpus, app.virtualization_mode, app.runtime_type,
        app.restart_counter, app.purge_counter, app.cloud_init_version,
        hashlib.sha256(app.user_data.reveal().encode()).hexdigest(),
        [[v.id, v.generation, v.purge, v.vkind, v.tree_content, v.readonly] for v in vols],
        list(mounts),
        [list(n) for n in nics],
        list(resolvers),
    ]  # fmt: skip
    if lease_dns:  # only then: the digests of every other app stay what they were
        doc.append("lease-dns")
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:32]


def render(
    config: NodeConfig,
    *,
    halt_all: bool = False,
    delayed: Iterable[str] = (),
    netplan: NetPlan | None = None,
) -> Rendered:
    """Every workload item of ``config``.  Pure.

    ``halt_all`` (maintenance mode) renders no running app; ``delayed`` names apps still held
    by their start delay; ``netplan`` (when the node runs networks) gives VMs their interfaces
    and keeps apps whose interfaces cannot be made from running.
    """
    out = Rendered()
    delayed_ids = set(delayed)
    trees: dict[str, content.ContentItem] = {}
    for tree in config.content_trees.values():
        try:
            trees[tree.id] = content.render_tree(tree, config.datastores)
        except PermanentError as exc:
            out.errors.append(ObjectError("contenttree", tree.id, tree.name, str(exc)))

    users: dict[str, list[AppInstance]] = {}
    for app in config.apps.values():
        for ref in app.volumes:
            users.setdefault(ref.id, []).append(app)
    runtime = {app.id: _runtime(app, config, trees) for app in config.apps.values()}

    vols: dict[str, volumes.VolumeItem] = {}
    for vol in config.volumes.values():
        try:
            vols[vol.id] = _volume(vol.id, config, trees, users.get(vol.id, []), runtime)
        except PermanentError as exc:
            out.errors.append(ObjectError("volume", vol.id, vol.name, str(exc)))
    for tree_item in trees.values():
        out.items[tree_item.ref] = tree_item
    for vol_item in vols.values():
        out.items[vol_item.ref] = vol_item

    for app in config.apps.values():
        kind = runtime[app.id]
        try:
            app_vols, mounts = _app_volumes(app, kind, vols)
            if app.vcpus > MAX_VCPUS or app.vcpus < 0:
                raise PermanentError(f"vcpus {app.vcpus} outside 0..{MAX_VCPUS}")
            if app.memory_kib > MAX_MEMORY_KIB or app.memory_kib < 0:
                raise PermanentError(f"memory {app.memory_kib} KiB outside 0..1 TiB")
            if kind == DOMAIN and app.memory_kib < MIN_VM_MEMORY_KIB:
                raise PermanentError(f"a VM needs at least {MIN_VM_MEMORY_KIB // 1024} MiB memory")
        except PermanentError as exc:
            out.errors.append(ObjectError("app", app.id, app.name, str(exc)))
            continue
        runs = app.activate and not halt_all
        nics: tuple[tuple[str, str, str], ...] = ()
        networks: tuple[str, ...] = ()
        resolvers: tuple[str, ...] = ()
        lease_dns = False
        if netplan is not None:
            if any(e.kind == "app" and e.id == app.id for e in netplan.errors):
                continue  # the plan's error on the app says why
            vifs = sorted((v for v in netplan.vifs.values() if v.app_id == app.id),
                          key=lambda v: v.index)  # fmt: skip
            networks = tuple(dict.fromkeys(v.ni_id for v in vifs))
            if kind == DOMAIN:
                nics = tuple((netplan.instances[v.ni_id].bridge, v.mac, v.host_name)
                             for v in vifs)  # fmt: skip
            else:
                resolvers = tuple(dict.fromkeys(
                    str(a.gateway) for v in vifs if v.ip
                    and (a := netplan.instances[v.ni_id].addressing) is not None
                ))  # fmt: skip
                lease_dns = not resolvers and any(
                    netplan.instances[v.ni_id].kind == SWITCH for v in vifs
                )
        out.plans[app.id] = AppPlan(
            app.id, kind, tuple(v.id for v in app_vols),
            tuple(dict.fromkeys(v.tree for v in app_vols if v.tree)), runs,
        )  # fmt: skip
        if runs:
            app_item = AppItem(
                kind, app.id, _digest(app, app_vols, mounts, nics, resolvers, lease_dns),
                app=app, volumes=app_vols, mounts=mounts, delayed=app.id in delayed_ids,
                nics=nics, networks=networks if kind == DOMAIN else (), resolvers=resolvers,
                lease_dns=lease_dns,
            )  # fmt: skip
            out.items[app_item.ref] = app_item
    return out


def _runtime(app: AppInstance, config: NodeConfig, trees: Mapping[str, content.ContentItem]) -> str:
    if app.volumes:
        first = config.volumes.get(app.volumes[0].id)
        if first is not None and first.content_tree_id:
            tree = trees.get(first.content_tree_id)
            if tree is not None and tree.oci:
                return CONTAINER
    return DOMAIN


def _volume(
    vol_id: str,
    config: NodeConfig,
    trees: Mapping[str, content.ContentItem],
    users: list[AppInstance],
    runtime: Mapping[str, str],
) -> volumes.VolumeItem:
    vol = config.volumes[vol_id]
    purge = max((a.purge_counter for a in users), default=0)
    kinds = {runtime[a.id] for a in users}
    if vol.content_tree_id:
        tree = trees.get(vol.content_tree_id)
        if tree is None:
            raise PermanentError(f"its content tree {vol.content_tree_id} cannot be downloaded")
        if tree.format == ISO_FORMAT:
            raise PermanentError("ISO volumes are not supported")
        vkind = volumes.IMAGE if tree.oci else volumes.DISK
        if vkind == volumes.IMAGE and DOMAIN in kinds:
            raise PermanentError("a container image cannot be a VM's disk")
        return volumes.VolumeItem(
            vol.id, vol.generation, purge, vkind, tree=tree.id,
            tree_content=tree.sha256 or tree.location, tree_format=tree.format,
            size=vol.max_size, readonly=vol.readonly, name=vol.name,
        )  # fmt: skip
    if len(kinds) > 1:
        raise PermanentError("a blank volume cannot be used by a VM and a container at once")
    vkind = volumes.DIR if kinds == {CONTAINER} else volumes.DISK
    if vkind == volumes.DISK and vol.max_size <= 0:
        raise PermanentError("a blank disk needs maxsizebytes")
    return volumes.VolumeItem(
        vol.id, vol.generation, purge, vkind, size=vol.max_size, readonly=vol.readonly,
        name=vol.name,
    )  # fmt: skip


def _app_volumes(
    app: AppInstance, kind: str, vols: Mapping[str, volumes.VolumeItem]
) -> tuple[tuple[volumes.VolumeItem, ...], tuple[str, ...]]:
    found: list[volumes.VolumeItem] = []
    mounts: list[str] = []
    for index, ref in enumerate(app.volumes):
        item = vols.get(ref.id)
        if item is None:
            raise PermanentError(f"its volume {ref.id} cannot be made")
        if kind == CONTAINER:
            if index == 0:
                mounts.append("")
            elif item.vkind != volumes.DIR:
                raise PermanentError(
                    f"volume {ref.id}: a container mounts blank volumes only, not a {item.vkind}"
                )
            else:
                mounts.append(_mount_dir(ref.mount_dir, index))
        else:
            if index == 0 and item.vkind != volumes.DISK:
                raise PermanentError("a VM's first volume must be a disk")
            mounts.append("")
        found.append(item)
    if not found and kind == DOMAIN:
        raise PermanentError("a VM needs at least one disk volume")
    return tuple(found), tuple(mounts)


def _mount_dir(mount_dir: str, index: int) -> str:
    if not mount_dir:
        # EVE mounts a container's extra volumes under /mnt when the config names no place.
        return "/mnt" if index == 1 else f"/mnt/volume{index}"
    if not mount_dir.startswith("/") or "\x00" in mount_dir or ".." in mount_dir.split("/"):
        raise PermanentError(f"mount_dir {mount_dir[:80]!r} is not an absolute path")
    return mount_dir
