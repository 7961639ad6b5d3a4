"""Where the workload kinds keep their state: downloads, volumes and records, in the vault.

Everything an app leaves on disk (verified blobs, volume files, the records of what was made)
is under the vault's root, so it is encrypted at rest.  The vault opens after the agent starts
(and may never open), so the stores open lazily, on the first operation that needs them; every
such operation depends on the vault condition, so the engine never starts one while the vault
is locked.  ``ready`` tells observers whether they can look yet.

Layout under the vault root::

    downloads/   the blob store (blobs/sha256, partial, refs)
    volumes/     volume files and directories (``<uuid>#<generation>.qcow2`` / ``.dir``)
    apps/<uuid>/ per-app files: the cloud-init seed's inputs, files injected into containers
    records/     what each kind made (:mod:`agent.reconcile.records`)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agent.drivers import download as dl
from agent.drivers.blobstore import BlobStore
from agent.drivers.containers import ContainerRuntime
from agent.drivers.errors import TemporaryError
from agent.drivers.hypervisor import Hypervisor
from agent.drivers.volumes import VolumeStore
from agent.model.configitems import ConfigItems
from agent.reconcile.records import RecordBook

log = logging.getLogger(__name__)


def _let_qemu_through(base: Path) -> None:
    """QEMU runs as its own user (libvirt-qemu): it must pass the directories to a VM's disks
    and their backing blobs.  Search only (0711): nobody can list them, and libvirt gives the
    disk files themselves to QEMU's user while the domain runs."""
    for directory in (
        base, base / "volumes", base / "downloads", base / "downloads" / "blobs",
        base / "downloads" / "blobs" / "sha256",
    ):  # fmt: skip
        mode = directory.stat().st_mode & 0o777
        if mode & 0o011 != 0o011:
            directory.chmod(mode | 0o011)


@dataclass(frozen=True)
class WorkloadSettings:
    """Static settings of the workload kinds (runtime ones are config items)."""

    #: Downloads at once over all datastores, and per datastore host.
    max_downloads: int = 4
    per_host: int = 2
    #: Bytes of the vault's file system that downloads and copies leave free.
    reserve: int = 64 * 1024 * 1024
    #: Seconds a VM gets to power off after the ACPI button before it is destroyed.
    vm_halt_grace: float = 30.0
    #: Seconds a container gets after SIGTERM before SIGKILL.
    container_halt_grace: float = 10.0
    #: How often running apps are looked at (a container or VM that stopped by itself is
    #: noticed and started again within this).
    watch_interval: float = 10.0
    #: Seconds an image pull or a volume copy may take before it is cancelled and retried.
    download_timeout: float = 3600.0
    #: Seconds a domain or container start may take.
    boot_timeout: float = 300.0


@dataclass
class WorkloadDrivers:
    """The drivers the workload kinds use."""

    containers: ContainerRuntime
    hypervisor: Hypervisor


@dataclass
class Workspace:
    """The vault-backed stores, opened on first use.  ``root`` gives the vault's directory, None
    while the vault is not open; ``items`` gives the current runtime config items."""

    root: Callable[[], Path | None]
    items: Callable[[], ConfigItems]
    settings: WorkloadSettings = field(default_factory=WorkloadSettings)
    #: Monotonic time the agent started (unclaimed volumes wait ``timer.gc.vdisk`` from it).
    started: float = field(default_factory=time.monotonic)
    _blobs: BlobStore | None = None
    _volumes: VolumeStore | None = None
    _records: RecordBook | None = None
    _session: aiohttp.ClientSession | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def base(self) -> Path | None:
        """The vault root, or None while the vault is not open."""
        return self.root()

    @property
    def ready(self) -> bool:
        return self.base() is not None

    def _base_or_wait(self) -> Path:
        base = self.base()
        if base is None:
            raise TemporaryError("the vault is not open", retry_after=5.0)
        return base

    async def open(self) -> None:
        """Open the stores (idempotent).  TemporaryError while the vault is not open."""
        async with self._lock:
            if self._records is not None:
                return
            base = self._base_or_wait()
            blobs = BlobStore(
                base / "downloads",
                max_downloads=self.settings.max_downloads,
                per_host=self.settings.per_host,
                reserve=self.settings.reserve,
            )
            await blobs.open()
            volumes = VolumeStore(base / "volumes")
            await volumes.open()
            await asyncio.to_thread(_let_qemu_through, base)
            self._blobs, self._volumes = blobs, volumes
            self._records = RecordBook(base / "records")

    def verified_blob(self, digest: str) -> Path | None:
        """The path of a verified blob, None when the store is not open or lacks it."""
        if self._blobs is None or not self._blobs.has(digest):
            return None
        return self._blobs.path(digest)

    async def blobs(self) -> BlobStore:
        await self.open()
        assert self._blobs is not None
        return self._blobs

    async def volumes(self) -> VolumeStore:
        await self.open()
        assert self._volumes is not None
        return self._volumes

    async def records(self) -> RecordBook:
        await self.open()
        assert self._records is not None
        return self._records

    def app_dir(self, app_id: str) -> Path:
        """The per-app directory in the vault (not created here)."""
        return self._base_or_wait() / "apps" / app_id

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = dl.new_session()
        return self._session

    def opened_blobs(self) -> BlobStore | None:
        return self._blobs

    def opened_volumes(self) -> VolumeStore | None:
        return self._volumes

    async def collect_garbage(self) -> None:
        """Remove blobs no content tree has used for ``timer.gc.download``.  Never raises."""
        if self._blobs is None:
            return
        try:
            removed = await self._blobs.gc(float(self.items().int("timer.gc.download")))
        except (OSError, RuntimeError) as exc:
            log.warning("blob garbage collection failed: %s", exc)
            return
        if removed:
            log.info("removed %d unused blob(s)", len(removed))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._blobs is not None:
            await self._blobs.close()
