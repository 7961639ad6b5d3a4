"""The agent daemon: startup order and the supervised task tree.

Task tree (every task supervised: the first to fail or end unexpectedly stops the daemon, and
systemd restarts it; SIGTERM stops it within ``stop_grace`` seconds)::

    watchdog    READY=1 once the link runs, WATCHDOG=1 only while nothing is hung
    status      the snapshot for ``eve-agent status``, external conditions for the reconciler
    main        startup, then:
      reconciler    the engine: observe, adopt, reconcile on every wake-up (never in the poll)
      link          saved config -> onboarding if needed -> config sync (with attestation),
                    reporting, log upload

Startup, off the event loop: TPM and measured boot (or the explicit software mode) -> identity
(config partition; device key in the TPM or on disk) -> vault (unsealed locally when the PCRs
still match, else it waits for attestation to bring the escrowed key) -> controller certificates
from the checkpoint.  READY goes to systemd as soon as the link task runs, whether or not the
controller has answered: a node the controller has not admitted yet is up and working, and must
not be killed by the start timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from agent import nodefacts, nodeparts, nodepower, nodetasks
from agent import status as status_mod
from agent.boot import BootResult, TpmMode, boot
from agent.drivers.bootslots import BootSlots
from agent.drivers.errors import TemporaryError
from agent.link.applogs import AppLogSpool, AppLogUploader
from agent.link.appmeta import queue_app_meta
from agent.link.attestation import Attestor, NoTpmQuotes, QuoteSource
from agent.link.checkpoint import CheckpointStore
from agent.link.configsync import ConfigSync
from agent.link.controllercerts import ControllerCertError, ControllerCertStore
from agent.link.devicecipher import DeviceEcdh, load_software_ecdh
from agent.link.deviceops import DeviceOps
from agent.link.identity import (
    NodeIdentity,
    load_identity,
    load_uuid,
    record_registration,
    store_uuid,
)
from agent.link.logship import LogSpool, LogUploader
from agent.link.onboarding import OnboardingError, UuidResult, fetch_uuid, onboard
from agent.link.reporting import DeviceFacts, Outbox, Reporter
from agent.link.tpmidentity import TpmQuotes, load_tpm_identity
from agent.link.transport import ControllerClient, TransportError
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems
from agent.model.iolockdown import IoPolicy
from agent.reconcile.appmeta import AppMetaStore
from agent.reconcile.apptelemetry import AppTelemetry
from agent.reconcile.baseos import BaseOsManager
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.firewall import InterfaceDrops
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.settings import AgentSettings
from agent.util import atomicfile
from agent.util.liveness import Liveness
from agent.util.storagehealth import StorageHealth
from agent.util.supervise import supervise
from agent.util.timing import Backoff, wait_or_stop
from agent.vault.manager import VaultManager, VaultNotOpen
from agent.vault.store import VaultPaths
from agent.wire.envelope import EnvelopeError, Signer, UnknownSigner, device_cert_hash
from agent.wire.pb.attest import attest_pb2

log = logging.getLogger(__name__)

#: EVE re-asks /uuid after a config 404 at most this often (``potentialUUIDUpdate``).
UUID_RECHECK_INTERVAL = 600.0


class Node:
    """One emulated or real EVE node.  ``await run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.paths = settings.paths
        self.boot_time = time.time()
        self.runtime = RuntimeItems()
        self.vault: VaultManager | None = None
        self.workloads = (
            nodeparts.make_workloads(settings, self.vault_root, self.items)
            if settings.workloads
            else None
        )
        self.networks = (
            nodeparts.make_networks(
                settings,
                self.workloads,
                # The metadata server answers from the reconciler (made just after).
                current=lambda: self.reconciler.current,
                layout=lambda: self.reconciler.layout,
                posted=self._app_meta_posted,
            )
            if self.workloads is not None and settings.networks
            else None
        )
        self.ports = (
            nodeparts.make_ports(settings, self.networks, self.items, self._controller_server)
            if self.networks is not None
            else None
        )
        self.iolock = nodeparts.make_iolock(self.paths)
        self.reconciler = NodeReconciler(
            self.runtime, workloads=self.workloads, networks=self.networks, ports=self.ports,
            configurators=self.iolock.configurators(),
        )  # fmt: skip
        self.reconciler.renderers.append(
            lambda cfg: self.iolock.render(IoPolicy.from_config(cfg.items, cfg.ports))
        )
        self.identity: NodeIdentity | None = None
        self.client: ControllerClient | None = None
        self.certs: ControllerCertStore | None = None
        self.attestor: Attestor | None = None
        self.sync: ConfigSync | None = None
        self.reporter: Reporter | None = None
        self.outbox: Outbox | None = None
        #: What apps posted to the metadata server (kubeconfigs), in the vault.
        self.app_meta = AppMetaStore(self.vault_root)
        self.uploader: LogUploader | None = None
        self.telemetry: AppTelemetry | None = None
        #: Per app, what the firewall dropped of its interfaces (for the metrics report).
        self.acl_drops: dict[str, list[InterfaceDrops]] = {}
        self.spool: LogSpool | None = None
        self.device_uuid: str | None = None
        self.phase = "starting"
        self.boot: BootResult | None = None
        self.stop_event = asyncio.Event()
        self._last_uuid_check = -UUID_RECHECK_INTERVAL
        self._stopped_abnormally = False
        self.liveness = Liveness()
        self.liveness.add_check("reconciler", self.reconciler.engine.overdue)
        #: Persistent writes failing now (full disk): reported, retried, never fatal.
        self.storage = StorageHealth()
        self._status_writer = status_mod.StatusWriter(self.paths.status_file, health=self.storage)
        #: A UUID the controller gave that the disk has not taken yet.
        self._unsaved_uuid: UuidResult | None = None
        #: A vault that failed to open because the disk refused a write is opened again.
        self._vault_backoff = Backoff(initial=10.0, maximum=300.0)
        self._vault_retry_at = 0.0
        #: Set once the link task runs: the watchdog task tells systemd READY=1.
        self.ready = asyncio.Event()
        #: Set when an app posts a new kubeconfig: the cluster status is read at once.
        self.kubeconfig_posted = asyncio.Event()
        #: The controller's reboot and shutdown commands, and this boot's reason (set at start).
        self.deviceops: DeviceOps | None = None
        self.boot_id: str | None = None
        #: True while the saved config (the checkpoint) is being run at start.
        self.running_saved = False
        #: Base OS A/B updates (agent.reconcile.baseos); a node without slots reports so.
        self.baseos = BaseOsManager(
            BootSlots(nodeparts.slot_paths(self.paths)),
            config=lambda: self.reconciler.current,
            content=lambda tree_id: nodepower.baseos_content(self, tree_id),
            items=self.items,
            contacted=lambda: self.client.last_answer if self.client is not None else 0.0,
            healthy=lambda: not self.liveness.problems(),
            reboot=lambda reason: nodepower.baseos_reboot(self, reason),
        )

    # ---- helpers used by components ------------------------------------------------------

    def _controller_server(self) -> str | None:
        return self.identity.server if self.identity else None

    async def _app_meta_posted(self, app_id: str, kind: int, data: bytes) -> None:
        """An app posted its kubeconfig or custom status: kept in the vault, and reported to
        the controller as EVE does (ZInfoAppInstMetaData) when it changed.  Raises
        TemporaryError while the vault is locked (the metadata server answers 500; the app
        posts again)."""
        if not await asyncio.to_thread(self.app_meta.save, app_id, kind, data):
            return
        log.info("app %s posted its %s (%d bytes)", app_id,
                 "kubeconfig" if kind == 1 else f"metadata of type {kind}", len(data))  # fmt: skip
        if kind == 1:
            self.kubeconfig_posted.set()
        if self.outbox is not None and self.device_uuid is not None:
            await asyncio.to_thread(
                queue_app_meta, self.outbox, self.device_uuid, app_id, kind, data
            )

    async def _accept(self, config: NodeConfig) -> bool:
        """The config to the reconciler; what removed apps posted is forgotten (and reported
        gone), as EVE drops an app's AppInstMetaData with the app.  A raised reboot or
        shutdown counter starts that operation (:mod:`agent.link.deviceops`)."""
        await nodepower.offer_ops(self, config)
        accepted = await self.reconciler.accept(config)
        try:
            gone = await asyncio.to_thread(self.app_meta.forget, config.apps)
        except (TemporaryError, OSError):
            gone = []
        for app_id, kind in gone:
            if self.outbox is not None and self.device_uuid is not None:
                await asyncio.to_thread(
                    queue_app_meta, self.outbox, self.device_uuid, app_id, kind, b""
                )
        return accepted

    def vault_root(self) -> Path | None:
        """The open vault's directory, None while it is locked (nothing at rest goes there)."""
        if self.vault is None or self.vault.status.state.value not in ("unlocked", "disabled"):
            return None
        try:
            return self.vault.root
        except VaultNotOpen:
            return None

    def items(self) -> ConfigItems:
        return self.runtime.current

    def facts(self) -> DeviceFacts | None:
        """The device info's facts (:func:`agent.nodefacts.device_facts`)."""
        return nodefacts.device_facts(self)

    def maintenance_reasons(self) -> tuple[str, ...]:
        """Why the node is in maintenance mode (:func:`agent.nodefacts.maintenance_reasons`)."""
        return nodefacts.maintenance_reasons(self)

    def _on_items_changed(self, changed: set[str]) -> None:
        if self.client is not None:
            self.client.send_timeout = float(self.items().int("timer.send.timeout") or 120)
            self.client.dial_timeout = float(self.items().int("timer.dial.timeout") or 10)
        if "timer.config.interval" in changed and self.sync is not None:
            self.sync.wake.set()

    async def _recheck_uuid(self) -> None:
        """Config answered 404/400: is our UUID still ours?  At most every 10 min, as EVE.

        Only when ``/uuid`` says the controller does not know this device at all does the node
        register again (the record was deleted on the controller).
        """
        assert self.identity is not None and self.client is not None and self.certs is not None
        now = time.monotonic()
        if now - self._last_uuid_check < UUID_RECHECK_INTERVAL:
            return
        self._last_uuid_check = now
        try:
            try:
                result = await fetch_uuid(self.client, self.identity.device, self.certs)
            except UnknownSigner:
                await self.certs.refresh(self.client)
                result = await fetch_uuid(self.client, self.identity.device, self.certs)
        except (TransportError, OnboardingError, EnvelopeError, ControllerCertError) as exc:
            log.warning("UUID re-check failed: %s", exc)
            return
        if result is None:
            log.warning("the controller does not know this device any more: onboarding again")
            result = await onboard(
                self.client,
                device=self.identity.device,
                onboard_signer=self.identity.onboard,
                certs=self.certs,
                serial=self.identity.serial,
                soft_serial=self.identity.soft_serial,
                stop=self.stop_event,
                record=self._record_registration,
            )
        if result is not None and result.uuid != self.device_uuid:
            log.warning(
                "controller gave a new device UUID %s (was %s)", result.uuid, self.device_uuid
            )
            await self._set_uuid(result)
            if self.attestor is not None:
                self.attestor.restart("device UUID changed")

    async def _set_uuid(self, result: UuidResult) -> None:
        """Take the UUID the controller gave; when the disk refuses it, keep it in memory and
        let the status loop write it later (:meth:`_save_uuid`)."""
        self._unsaved_uuid = result
        await self._save_uuid()
        self.device_uuid = result.uuid
        assert self.client is not None
        self.client.device_uuid = result.uuid

    async def _save_uuid(self) -> None:
        result = self._unsaved_uuid
        if result is None:
            return
        try:
            await asyncio.to_thread(
                store_uuid,
                self.paths,
                result.uuid,
                manufacturer=result.manufacturer,
                product_name=result.product_name,
            )
        except OSError as exc:
            self.storage.failed("device UUID", exc)
            return
        self.storage.ok("device UUID")
        if self._unsaved_uuid is result:
            self._unsaved_uuid = None

    async def _retry_vault(self) -> None:
        """Open the vault again, with backoff, while its last failure was the disk's."""
        vault = self.vault
        if vault is None or not vault.status.storage_error:
            self._vault_backoff.reset()
            return
        now = time.monotonic()
        if now < self._vault_retry_at:
            return
        status = await asyncio.to_thread(vault.open_local)
        if status.storage_error:
            self._vault_retry_at = now + self._vault_backoff.next()
        else:
            log.info("vault after the storage problem: %s %s", status.state.value, status.reason)

    def _record_registration(self) -> None:
        assert self.identity is not None
        record_registration(self.paths, self.identity.device.certificate)

    # ---- main --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run the node until ``stop``.  Raises IdentityError when the node cannot start at all."""
        self.stop_event = stop
        previous = status_mod.read(self.paths.status_file)
        # A clean stop writes phase "stopped"; anything else means the last run crashed, was
        # killed or lost power.  (/run is a tmpfs on real nodes: a reboot leaves no status.)
        self._stopped_abnormally = previous is not None and previous.get("phase") != "stopped"
        if self._stopped_abnormally:
            log.warning("the previous run did not stop cleanly: preferring lastconfig.bak")
        self.paths.run.mkdir(parents=True, exist_ok=True)
        self.spool = LogSpool(self.paths.newlog, self._log_meta)
        logging.getLogger().addHandler(self.spool)
        try:
            await self._run(stop)
        finally:
            nodepower.mark_clean_stop(self)
            logging.getLogger().removeHandler(self.spool)
            if self.client is not None:
                await self.client.close()
            if self.boot is not None:
                # The swtpm keeps running: an agent restart is not a power cycle.
                self.boot.tpm.close()

    def _log_meta(self) -> dict[str, str]:
        return {
            "devID": self.device_uuid or "",
            "image": "IMGA",
            "eveVersion": self.settings.version,
        }

    def _open_platform(self) -> tuple[Signer | None, QuoteSource | None, DeviceEcdh | None]:
        """TPM, measured boot and the TPM identity (device signer, quotes, ECDH key); or the
        explicit software mode, whose keys are on disk (all None: made after the identity)."""
        if self.settings.no_tpm:
            if self.phase == "starting":  # not again at each retry after a full disk
                log.warning(
                    "software-only mode (--no-tpm): device and ECDH keys on disk, empty "
                    "attestation quote, vault disabled"
                )
            return None, None, None
        if self.boot is None:  # retried after a full disk: boot once
            self.boot = boot(
                self.paths, TpmMode(self.settings.tpm), agent_version=self.settings.version,
                tcti=self.settings.tcti,
            )  # fmt: skip
        result = self.boot
        tpm_identity = load_tpm_identity(self.paths, result.tpm)
        quotes = TpmQuotes(
            result.tpm,
            tpm_identity,
            boot_log=result.boot_log,
            config_log=result.config_log,
            versions={attest_pb2.ATTEST_VERSION_TYPE_EVE: self.settings.version},
        )
        ecdh = DeviceEcdh(cert_pem=tpm_identity.ecdh_pem, shared_point=result.tpm.ecdh_shared_point)
        return tpm_identity.signer, quotes, ecdh

    async def _run(self, stop: asyncio.Event) -> None:
        try:
            await supervise(
                stop,
                {
                    "watchdog": nodetasks.feed_watchdog(self, stop),
                    "status": self._status_loop(stop),
                    "main": self._main(stop),
                },
                grace=self.settings.stop_grace,
            )
        finally:
            self.phase = "stopped"
            self.write_status()

    def _remove_leftovers(self) -> None:
        """The temporary files of writes a kill interrupted, in the agent's own state
        directories: each kill mid-write would leave one more for ever."""
        persist = self.paths.persist
        dirs = ("status", "checkpoint", "outbox", "newlog", "certs")
        removed = atomicfile.remove_leftovers(persist / d for d in dirs)
        for path in removed:
            log.info("removed %s, left by an interrupted write", path)
        # One line per start: it also tells a reader of the log (and the fault tests) that a
        # kill after this point found no earlier leftovers in its way.
        log.info("checked the state directories for interrupted writes: %d removed", len(removed))

    async def _start_identity(
        self, stop: asyncio.Event
    ) -> tuple[NodeIdentity, QuoteSource, DeviceEcdh] | None:
        """Platform and identity (blocking parts in threads).  A disk that refuses the first
        boot's files (full, I/O errors) is waited for, reported once and retried with backoff,
        READY told to systemd meanwhile (the agent is up, waiting); None if ``stop`` comes
        first.  Raises IdentityError, BootError, TpmError."""
        backoff = Backoff(initial=5.0, maximum=300.0)
        while True:
            try:
                device_signer, quotes, ecdh = await asyncio.to_thread(self._open_platform)
                identity = await asyncio.to_thread(load_identity, self.paths, device_signer)
                if quotes is None or ecdh is None:
                    ecdh = await asyncio.to_thread(load_software_ecdh, self.paths, identity.device)
                    quotes = NoTpmQuotes([ecdh.zcert()])
            except OSError as exc:
                self.storage.failed("node identity", exc)
                self.phase = "waiting for storage"
                self.ready.set()
                if await wait_or_stop(stop, backoff.next()):
                    return None
                continue
            self.storage.ok("node identity")
            self.phase = "starting"
            return identity, quotes, ecdh

    async def _main(self, stop: asyncio.Event) -> None:
        """Startup (blocking parts in threads), then the reconciler and the link."""
        await asyncio.to_thread(self._remove_leftovers)
        started = await self._start_identity(stop)
        if started is None:
            return
        identity, quotes, ecdh = started
        self.identity = identity
        await nodepower.start_deviceops(self)
        self.vault = VaultManager(
            VaultPaths(self.paths.persist), self.boot.tpm if self.boot else None
        )
        vault_status = await asyncio.to_thread(self.vault.open_local)
        log.info("vault: %s %s", vault_status.state.value, vault_status.reason)
        self.update_conditions()
        log.info(
            "device certificate %s, controller %s",
            device_cert_hash(identity.device.certificate).hex()[:16],
            identity.server,
        )
        self.client = client = ControllerClient(
            identity.server,
            identity.root_pem,
            serial=identity.serial,
            soft_serial=identity.soft_serial,
            tls_roots_pem=identity.tls_roots_pem,
        )
        client.liveness = self.liveness
        self.certs = certs = ControllerCertStore(
            CheckpointStore(self.paths.checkpoint, "controllercerts"),
            identity.root_pem,
            health=self.storage,
        )
        await asyncio.to_thread(certs.load_checkpoint)
        self.runtime.subscribe(self._on_items_changed)
        self.attestor = Attestor(
            client,
            device=identity.device,
            certs=certs,
            quotes=quotes,
            escrow=self.vault if self.boot else None,
        )
        self.device_uuid = await asyncio.to_thread(load_uuid, self.paths)
        if self.device_uuid:
            client.device_uuid = self.device_uuid
        self.sync = ConfigSync(
            client,
            device=identity.device,
            device_uuid=lambda: self.device_uuid,
            certs=certs,
            attestor=self.attestor,
            checkpoints=CheckpointStore(self.paths.checkpoint, "lastconfig"),
            apply=self._accept,
            items=self.items,
            on_unknown_device=self._recheck_uuid,
            ecdh=ecdh,
            liveness=self.liveness,
            health=self.storage,
        )
        try:
            await supervise(
                stop,
                {"reconciler": self.reconciler.run(stop), "link": self._link(stop)},
                grace=self.settings.stop_grace,
            )
        finally:
            if self.workloads is not None:
                # Apps keep running: a restarted agent adopts them.
                await self.workloads.close()
                await self.workloads.drivers.containers.close()
                await self.workloads.drivers.hypervisor.close()
            if self.networks is not None:
                await self.networks.netlink.close()
                if self.networks.firewall is not None:
                    await self.networks.firewall.nft.close()
                if self.networks.metadata is not None:
                    await self.networks.metadata.server.stop()
            if self.ports is not None:
                await self.ports.prober.close()  # DHCP clients keep running: adopted later

    async def _link(self, stop: asyncio.Event) -> None:
        """The saved config first, onboarding if the node has none, then the link tasks."""
        assert self.sync is not None and self.client is not None and self.identity is not None
        assert self.certs is not None and self.spool is not None
        identity, client = self.identity, self.client
        # Start-up objects live for ever: keep them out of every later full collection, whose
        # pause would otherwise grow with them (gc.freeze, as long-running CPython servers do).
        gc.collect()
        gc.freeze()
        self.ready.set()
        if self.device_uuid:
            self.phase = "running saved config"
            self.running_saved = True
            try:
                await self.sync.load_checkpoint(prefer_backup=self._stopped_abnormally)
            finally:
                self.running_saved = False
        else:
            self.phase = "onboarding"
            result = await onboard(
                client,
                device=identity.device,
                onboard_signer=identity.onboard,
                certs=self.certs,
                serial=identity.serial,
                soft_serial=identity.soft_serial,
                stop=stop,
                record=self._record_registration,
            )
            if result is None:
                return
            await self._set_uuid(result)
            log.info("onboarded: device UUID %s", result.uuid)
        self.phase = "running"
        tasks: dict[str, Coroutine[Any, Any, None]] = {}
        if self.workloads is not None:
            # Each app's console and stdout/stderr to the controller, its figures in metrics.
            app_spool = AppLogSpool(self.paths.newlog / "apps")
            self.telemetry = AppTelemetry(
                targets=self.workloads.targets,
                containers=self.workloads.drivers.containers,
                hypervisor=self.workloads.drivers.hypervisor,
                items=self.items,
                sink=app_spool.add,
                boot_time=self.workloads.boot_time,
                state_file=self.paths.newlog / "apptelemetry.json",
                liveness=self.liveness,
            )
            tasks["app telemetry"] = self.telemetry.run(stop)
            tasks["app logs"] = AppLogUploader(
                client,
                device=identity.device,
                spool=app_spool,
                liveness=self.liveness,
                health=self.storage,
            ).run(stop)
        if self.networks is not None:
            tasks["acl counters"] = nodetasks.read_acl_counters(self, stop)
            tasks["cluster status"] = nodetasks.report_cluster(self, stop)
            tasks.update(nodetasks.flow_log_tasks(self, stop, client, identity.device))
        self.outbox = Outbox(self.paths.outbox, health=self.storage)
        self.reporter = Reporter(
            client,
            device=identity.device,
            outbox=self.outbox,
            facts=self.facts,
            items=self.items,
            owners=self.reconciler.owners,
            liveness=self.liveness,
            app_metrics=self.telemetry.latest if self.telemetry is not None else None,
            acl_drops=lambda: self.acl_drops,
        )
        self.uploader = LogUploader(
            client,
            device=identity.device,
            spool=self.spool,
            liveness=self.liveness,
            health=self.storage,
        )
        await supervise(
            stop,
            {
                "config": self.sync.run(stop),
                "base os": self.baseos.run(stop),
                "reporter": self.reporter.run(stop),
                "logs": self.uploader.run(stop),
                **tasks,
            },
            grace=self.settings.stop_grace,
        )

    def update_conditions(self) -> None:
        """Tell the reconciler about conditions outside it (idempotent; cheap)."""
        vault = self.vault.status if self.vault is not None else None
        if vault is None or vault.state.value in ("unlocked", "disabled"):
            self.reconciler.set_condition(VAULT_READY, None)
        else:
            self.reconciler.set_condition(
                VAULT_READY,
                f"vault {vault.state.value}" + (f": {vault.reason}" if vault.reason else ""),
            )

    def write_status(self) -> None:
        """Rewrite the status snapshot now (blocking).  Never raises."""
        data = self._snapshot()
        if data is not None:
            self._status_writer.offer(data, force=True)

    def _snapshot(self) -> dict[str, Any] | None:
        # Taken on the loop: it reads state that only the loop changes.
        try:
            return status_mod.snapshot(self)
        except Exception:  # a status bug must not stop the node; the next tick tries again
            log.exception("cannot take the status snapshot")
            self._status_writer.forget()
            return None

    def _write_snapshot(self, data: dict[str, Any]) -> None:
        """Write when changed (or the heartbeat is due); failures go to the storage health,
        reported once."""
        self._status_writer.offer(data)

    async def _status_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with self.liveness.activity("status snapshot", limit=30):
                self.update_conditions()
                data = self._snapshot()
                if data is not None:
                    await asyncio.to_thread(self._write_snapshot, data)
                await self._save_uuid()
                await nodepower.retry_boot_reason(self)
            await self._retry_vault()  # outside the activity: making a store may take a while
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.status_interval)
