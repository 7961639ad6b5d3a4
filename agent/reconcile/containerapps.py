"""Container apps: one container per app through the container runtime (dockerd).

The container is made from the app's root volume (an image loaded from the verified blob
store), with the app's memory and CPU limits, the environment and files of its user data (EVE's
container cloud-init), its blank volumes bound at their mount points, restart policy off (this
agent restarts apps) and no Docker networking.  It is named after the app UUID and labelled
with the digest of the app item, so a restarted agent adopts a container that is still what the
config asks for and recreates one that is not.

A container that stopped by itself is seen at the next watch round and started again, as EVE
restarts a crashed app.  A start that fails is retried after ``timer.boot.retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from agent.drivers.containers import (
    BindMount,
    ContainerRuntime,
    ContainerSpec,
    container_prefix,
)
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.reconcile import userdata
from agent.reconcile.apps import CONTAINER, AppItem
from agent.reconcile.items import BaseConfigurator, Item, ItemRef, Op
from agent.reconcile.volumes import VolumeConfigurator
from agent.reconcile.workspace import Workspace

log = logging.getLogger(__name__)

#: Our label with the app item's digest (the runtime adds its own node/app/spec labels).
ITEM_LABEL = "io.lfedge.eve-agent.item"


#: The file under the app's ``files`` directory bound as ``/etc/resolv.conf`` of a container
#: whose DNS servers come from its switch instance's DHCP lease.
LEASE_RESOLV = "resolv.lease"
_LEASE_HEADER = "# the DNS servers of the DHCP lease on the app's switch network instance\n"


class ContainerAppConfigurator(BaseConfigurator):
    def __init__(
        self, workspace: Workspace, runtime: ContainerRuntime, vols: VolumeConfigurator
    ) -> None:
        self.ws = workspace
        self.runtime = runtime
        self.vols = vols
        #: app id -> wall-clock time its container was last started by us or seen running.
        self.boot_times: dict[str, float] = {}

    def timeout(self, op: Op) -> float | None:
        return self.ws.settings.boot_timeout

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        out: dict[ItemRef, Item] = {}
        for state in await self.runtime.list_owned():
            app_id = state.app or ""
            if not app_id or state.name.removeprefix(container_prefix(self.runtime.node)) != app_id:
                continue
            digest = state.labels.get(ITEM_LABEL, "")
            out[(CONTAINER, app_id)] = AppItem(CONTAINER, app_id, digest, running=state.running)
            if state.running and state.started_at is not None:
                self.boot_times.setdefault(app_id, state.started_at.timestamp())
        return out

    async def spec(self, item: AppItem) -> ContainerSpec:
        """The container of ``item``: PermanentError when the user data cannot be applied."""
        app = item.app
        assert app is not None
        root = self.vols.made.get(item.volumes[0].id) if item.volumes else None
        if root is None or not root.image_id:
            raise PermanentError("the app's image volume is not loaded")
        try:
            data = userdata.for_container(app.user_data.reveal())
        except userdata.UserDataError as exc:
            raise PermanentError(f"user data: {exc}") from None
        mounts: list[BindMount] = []
        for vol, target in zip(item.volumes[1:], item.mounts[1:], strict=True):
            made = self.vols.made.get(vol.id)
            if made is None or made.path is None:
                raise TemporaryError(f"volume {vol.id} is not ready")
            mounts.append(BindMount(str(made.path), target, read_only=vol.readonly))
        files = list(data.files)
        if item.resolvers and not any(f.path == "/etc/resolv.conf" for f in files):
            # The app resolves through its instances' dnsmasq (app names, host ACLs).
            text = "".join(f"nameserver {r}\n" for r in item.resolvers)
            files.append(userdata.InjectedFile("/etc/resolv.conf", text.encode(), 0o644))
        if files:
            mounts += await asyncio.to_thread(self._write_files, app.id, tuple(files))
        if item.lease_dns and not any(f.path == "/etc/resolv.conf" for f in files):
            mounts.append(await asyncio.to_thread(self._lease_resolv, app.id))
        return ContainerSpec(
            name=app.id,
            image=root.image_id,
            app=app.id,
            generation=app.purge_counter,
            env=data.env,
            mounts=tuple(mounts),
            memory_bytes=app.memory_kib * 1024 if app.memory_kib else None,
            nano_cpus=app.vcpus * 1_000_000_000 if app.vcpus else None,
            labels=((ITEM_LABEL, item.digest),),
        )

    def _write_files(
        self, app_id: str, files: tuple[userdata.InjectedFile, ...]
    ) -> list[BindMount]:
        # Written in the vault and bound one by one: the image itself is never changed.
        directory = self.ws.app_dir(app_id) / "files"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        mounts = []
        for index, injected in enumerate(files):
            path = directory / str(index)
            tmp = directory / f".{index}.tmp"
            tmp.write_bytes(injected.content)
            os.chmod(tmp, injected.mode)
            os.replace(tmp, path)
            mounts.append(BindMount(str(path), injected.path))
        return mounts

    def _lease_resolv(self, app_id: str) -> BindMount:
        """The app's ``/etc/resolv.conf`` for the DNS servers of its switch instance's lease:
        made empty here if missing, filled by :meth:`lease_dns` (written in place: the bind
        mount holds the file, not its name)."""
        directory = self.ws.app_dir(app_id) / "files"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / LEASE_RESOLV
        if not path.exists():
            path.write_text(_LEASE_HEADER)
            os.chmod(path, 0o644)
        return BindMount(str(path), "/etc/resolv.conf")

    async def lease_dns(self, app_id: str, servers: tuple[str, ...]) -> None:
        """The DNS servers of the app's DHCP lease into its ``/etc/resolv.conf`` (at most
        three, as the resolver reads), when it has the file :meth:`spec` binds for that; the
        running container sees the change at once.  Idempotent.  Raises OSError."""
        path = self.ws.app_dir(app_id) / "files" / LEASE_RESOLV
        text = _LEASE_HEADER + "".join(f"nameserver {s}\n" for s in servers[:3])

        def write() -> None:
            with contextlib.suppress(FileNotFoundError), open(path, "r+") as f:
                if f.read() != text:
                    f.seek(0)
                    f.truncate()
                    f.write(text)

        await asyncio.to_thread(write)

    async def create(self, item: AppItem) -> None:
        spec = await self.spec(item)
        await self.runtime.create(spec)
        await self._start(item)

    async def _start(self, item: AppItem) -> None:
        try:
            await self.runtime.start(item.app_id)
        except PermanentError as exc:
            # A start that fails (bad entrypoint, missing mount) is retried as EVE retries a
            # failed boot, after timer.boot.retry.
            retry = float(self.ws.items().int("timer.boot.retry"))
            raise TemporaryError(f"start failed: {exc}", retry_after=retry) from None
        self.boot_times[item.app_id] = time.time()
        log.info("app %s: container started", item.app.name if item.app else item.app_id)

    async def modify(self, old: AppItem, new: AppItem) -> None:
        # Only ``running`` differs: the container stopped by itself.
        log.warning("app %s: container stopped; starting it again", new.app_id)
        await self._start(new)

    async def delete(self, item: AppItem) -> None:
        with contextlib.suppress(NotFoundError):
            await self.runtime.stop(item.app_id, grace=self.ws.settings.container_halt_grace)
        await self.runtime.remove(item.app_id)
        self.boot_times.pop(item.app_id, None)
        files = self.ws.base()
        if files is not None:
            await asyncio.to_thread(_remove_tree, files / "apps" / item.app_id / "files")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
