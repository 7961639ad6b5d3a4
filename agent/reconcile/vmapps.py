"""VM apps: one libvirt domain per app.

The domain gets the app's memory and vCPUs, its disk volumes as virtio disks (in the order of
the app's volume list; the first boots), and a NoCloud cloud-init seed with the user data and
meta-data (``instance-id`` changes with the cloud-init version, or with the app's version when
the controller sends none, so cloud-init runs again only then, as EVE's docs/CLOUD-INIT.md
says).  KVM or TCG is the hypervisor driver's choice.

What was made is recorded (the app item's digest) before the domain is defined, so a restarted
agent adopts a domain that is still what the config asks for.  A domain that went off by itself
is started again at the next watch round; a start that fails is retried after
``timer.boot.retry``.  Halting presses the power button and destroys the domain after the grace
period.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping

from agent.drivers.cloudinit import NoCloud
from agent.drivers.domainxml import Disk, DiskFormat, Nic
from agent.drivers.errors import PermanentError, TemporaryError
from agent.drivers.hypervisor import Hypervisor, VmSpec
from agent.reconcile import userdata
from agent.reconcile.apps import DOMAIN, AppItem
from agent.reconcile.items import Action, BaseConfigurator, Item, ItemRef, Op
from agent.reconcile.volumes import VolumeConfigurator
from agent.reconcile.workspace import Workspace

log = logging.getLogger(__name__)

_HOST_BAD = re.compile(r"[^a-z0-9-]+")


def hostname(name: str, app_id: str) -> str:
    """A DNS label from the app's name (the app UUID when nothing is left of it)."""
    label = _HOST_BAD.sub("-", name.lower()).strip("-")[:63].strip("-")
    return label or app_id


class VmAppConfigurator(BaseConfigurator):
    def __init__(
        self, workspace: Workspace, hypervisor: Hypervisor, vols: VolumeConfigurator
    ) -> None:
        self.ws = workspace
        self.hv = hypervisor
        self.vols = vols
        self.boot_times: dict[str, float] = {}

    def long_running(self, op: Op) -> bool:
        # A boot (or a halt that waits for the guest) takes seconds to minutes.
        return op.action in (Action.CREATE, Action.DELETE)

    def timeout(self, op: Op) -> float | None:
        if op.action is Action.DELETE:
            return self.ws.settings.vm_halt_grace + 60.0
        return self.ws.settings.boot_timeout

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        domains = await self.hv.list_owned()
        digests: dict[str, str] = {}
        if self.ws.ready:
            for key, rec in (await (await self.ws.records()).load(DOMAIN)).items():
                digests[key] = str(rec.get("digest", ""))
        out: dict[ItemRef, Item] = {}
        for info in domains:
            app_id = str(info.mark.app_uuid)
            running = info.state.active
            out[(DOMAIN, app_id)] = AppItem(DOMAIN, app_id, digests.get(app_id, ""), running)
            if running:
                self.boot_times.setdefault(app_id, time.time())
        return out

    def spec(self, item: AppItem) -> VmSpec:
        app = item.app
        assert app is not None
        disks = []
        for vol in item.volumes:
            made = self.vols.made.get(vol.id)
            if made is None or made.path is None:
                raise TemporaryError(f"volume {vol.id} is not ready")
            disks.append(Disk(made.path, DiskFormat.QCOW2, readonly=vol.readonly))
        version = str(app.cloud_init_version) if app.cloud_init_version else app.version
        seed = NoCloud(
            instance_id=f"{app.id}-{version}" if version else app.id,
            hostname=hostname(app.name, app.id),
            user_data=userdata.decode(app.user_data.reveal()),
        )
        return VmSpec(
            app_uuid=uuid.UUID(app.id),
            generation=app.purge_counter,
            memory_mib=max(1, app.memory_kib // 1024),
            vcpus=max(1, app.vcpus),
            disks=tuple(disks),
            nics=tuple(Nic(bridge, mac, tap) for bridge, mac, tap in item.nics),
            cloud_init=seed,
        )

    async def create(self, item: AppItem) -> None:
        spec = self.spec(item)
        records = await self.ws.records()
        await records.save(DOMAIN, item.app_id, {"digest": item.digest})
        await self._start(item, spec)

    async def _start(self, item: AppItem, spec: VmSpec) -> None:
        try:
            await self.hv.define_and_start(spec)
        except PermanentError as exc:
            retry = float(self.ws.items().int("timer.boot.retry"))
            raise TemporaryError(f"boot failed: {exc}", retry_after=retry) from None
        self.boot_times[item.app_id] = time.time()
        log.info("app %s: domain started", item.app.name if item.app else item.app_id)

    async def modify(self, old: AppItem, new: AppItem) -> None:
        # Only ``running`` differs: the guest went off by itself.
        log.warning("app %s: domain is off; starting it again", new.app_id)
        await self._start(new, self.spec(new))

    async def delete(self, item: AppItem) -> None:
        app_uuid = uuid.UUID(item.app_id)
        await self.hv.shutdown(app_uuid, self.ws.settings.vm_halt_grace)
        await self.hv.undefine(app_uuid)
        self.boot_times.pop(item.app_id, None)
        if self.ws.ready:
            await (await self.ws.records()).remove(DOMAIN, item.app_id)
