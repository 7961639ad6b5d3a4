# SPDX-License-Identifier: Apache-2.0
"""An emulated TPM node's controller link under load, watched for event-loop stalls.

Shared by ``tests/integration/test_loop_stalls.py`` and ``tools/bench.py`` (no tests here).

:func:`run_agent_load` onboards a node whose keys are in its own swtpm against a real
``eve-controller`` process (so the controller's work never runs in our loop), then for
``duration`` seconds, all at once:

- the link loop: attestation from scratch (nonce, TPM quote, verdict) then a config poll, back
  to back; the controller gets a new config (60 apps) every few rounds, which the agent
  verifies, models and checkpoints and hands to an applier (a recorder: the reconcilers are not
  part of this measurement);
- device info queued and delivered, log records spooled, compressed and uploaded;
- vault key seal and unseal loops in worker threads on the same TPM (its driver lock is the one
  the device signatures and quotes need).

Every request the agent sends is signed by the TPM's device key.  A :class:`LoopWatch` measures
the loop over the loaded phase only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.drivers.swtpm import SwtpmProcess
from agent.link.attestation import Attestor
from agent.link.checkpoint import CheckpointStore
from agent.link.configsync import ConfigSync
from agent.link.controllercerts import ControllerCertStore
from agent.link.identity import load_identity
from agent.link.logship import LogSpool, LogUploader
from agent.link.onboarding import onboard
from agent.link.reporting import DeviceFacts, Outbox, Reporter
from agent.link.tpmidentity import TpmQuotes, load_tpm_identity
from agent.link.transport import ControllerClient
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems
from agent.settings import NodePaths
from agent.util.timing import Backoff
from agent.vault import keys
from agent.wire.pb.config import devconfig_pb2
from controller import configs
from controller.state import StateDir
from controller.store import Store
from tests.loopwatch import LIMIT, LoopWatch, frozen_heap

if TYPE_CHECKING:
    from agent.drivers.tpm_device import DeviceTpm

#: Apps in each config pushed during the load.
APPS = 60
#: Config polls between two new configs.
POLLS_PER_CONFIG = 3


@dataclass
class LoadCounts:
    """What got done during the loaded phase (a load that did nothing proves nothing)."""

    attestations: int = 0
    config_polls: int = 0
    configs_applied: int = 0
    configs_pushed: int = 0
    info_sent: int = 0
    log_files_uploaded: int = 0
    seals: int = 0
    unseals: int = 0
    vault_errors: list[str] = field(default_factory=list)


@dataclass
class LoadResult:
    watch: LoopWatch
    counts: LoadCounts
    duration: float


def config_document(generation: int, apps: int = APPS) -> dict[str, Any]:
    """A config with ``apps`` apps (ten ACEs each) on one network instance."""
    ni = str(uuidlib.UUID(int=1))
    app_list = []
    for a in range(apps):
        app_list.append({
            "uuidandversion": {"uuid": str(uuidlib.UUID(int=1000 + a)), "version": str(generation)},
            "displayname": f"app-{a}",
            "activate": False,
            "fixedresources": {"memory": 65536, "vcpus": 1},
            "interfaces": [{
                "name": "eth0",
                "networkId": ni,
                "acls": [
                    {"id": i + 1, "matches": [{"type": "ip", "value": f"10.9.{i}.0/24"}]}
                    for i in range(10)
                ],
            }],
        })  # fmt: skip
    return {
        "networkInstances": [{
            "uuidandversion": {"uuid": ni, "version": "1"},
            "displayname": "ni",
            "instType": 2,  # local
            "activate": True,
            "ip": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"},
        }],
        "apps": app_list,
    }  # fmt: skip


def push_config(
    controller_state: Path, device_uuid: str, config: devconfig_pb2.EdgeDevConfig
) -> None:
    """``eve-controller config set`` straight into the controller's store (blocking: call it in
    a thread; the server process serves it on the next poll)."""
    stamp = configs.timestamp_from_unix(time.time())
    with Store.open(StateDir(controller_state).database) as store:
        store.add_config(
            device_uuid,
            lambda version: configs.stamp(
                config, device_uuid=device_uuid, version=version, timestamp=stamp
            ),
        )


def _device_tpm_class() -> type[DeviceTpm]:
    from agent.drivers.tpm_device import DeviceTpm

    return DeviceTpm


async def run_agent_load(
    controller_state: Path,
    node_root: Path,
    *,
    duration: float = 3.0,
    vault_threads: int = 2,
    limit: float = LIMIT,
) -> LoadResult:
    """Onboard the node at ``node_root`` (its config partition made by the e2e harness's
    ``Node``), run the load for ``duration`` seconds and return what the watch measured (its
    ``worst_stack`` is where the loop was during the longest stall past ``limit``).

    The objects that exist when the load starts are frozen out of the cyclic collector for its
    duration (:func:`tests.loopwatch.frozen_heap`), as the daemon freezes its own once start-up
    is done (agent/daemon.py): the process running this one (pytest with every collected test,
    or the bench) holds more than the agent would."""
    paths = NodePaths.from_root(node_root)
    swtpm = SwtpmProcess(paths.persist / "tpm")
    await asyncio.to_thread(swtpm.start)
    # Importing tpm2-pytss takes a good part of a second: not on the loop either.
    device_tpm = await asyncio.to_thread(_device_tpm_class)
    tpm = device_tpm(swtpm.tcti)
    client: ControllerClient | None = None
    try:
        tpm_id = await asyncio.to_thread(load_tpm_identity, paths, tpm)
        ident = await asyncio.to_thread(load_identity, paths, tpm_id.signer)
        client = ControllerClient(ident.server, ident.root_pem, soft_serial=ident.soft_serial)
        certs = ControllerCertStore(
            CheckpointStore(paths.checkpoint, "controllercerts"), ident.root_pem
        )
        never = asyncio.Event()
        result = await onboard(
            client, device=ident.device, onboard_signer=ident.onboard, certs=certs,
            serial="", soft_serial=ident.soft_serial, stop=never,
            backoff=Backoff(initial=0.05, maximum=0.5),
        )  # fmt: skip
        assert result is not None
        device_uuid = client.device_uuid = result.uuid
        quotes = TpmQuotes(
            tpm, tpm_id, boot_log=paths.run / "no-boot-log", config_log=None, versions={}
        )
        attestor = Attestor(
            client, device=ident.device, certs=certs, quotes=quotes,
            backoff=Backoff(initial=0.05, maximum=0.5),
        )  # fmt: skip
        counts = LoadCounts()

        async def apply(config: NodeConfig) -> bool:
            counts.configs_applied += 1
            return True

        async def unknown_device() -> None:
            raise AssertionError("the controller forgot the device")

        sync = ConfigSync(
            client,
            device=ident.device,
            device_uuid=lambda: device_uuid,
            certs=certs,
            attestor=attestor,
            checkpoints=CheckpointStore(paths.checkpoint, "lastconfig"),
            apply=apply,
            items=ConfigItems,
            on_unknown_device=unknown_device,
        )
        facts = DeviceFacts(
            uuid=device_uuid,
            version="bench",
            boot_time=time.time(),
            attestation_state="complete",
            attestation_error="",
            items=ConfigItems(),
            tpm=True,
        )
        reporter = Reporter(
            client,
            device=ident.device,
            outbox=Outbox(paths.outbox),
            facts=lambda: facts,
            items=ConfigItems,
        )
        spool = LogSpool(paths.newlog, lambda: {"devID": device_uuid})
        uploader = LogUploader(client, device=ident.device, spool=spool)
        # Warm up outside the measurement: the first attestation sends the certificates.
        assert await attestor.token(never) is not None
        vault_key = await asyncio.to_thread(keys.new_vault_key, tpm)
        sealed = await asyncio.to_thread(keys.seal_key, tpm, vault_key)

        # The controller's side of the load, made before it: its work is not the agent's.
        generations = [
            configs.config_from_document(config_document(generation)) for generation in (1, 2)
        ]
        stop = asyncio.Event()
        stop_threads = threading.Event()
        counting = threading.Lock()

        def vault_loop() -> None:
            record = sealed
            rounds = 0
            while not stop_threads.is_set():
                try:
                    if keys.unseal_key(tpm, record) != vault_key:
                        raise AssertionError("unsealed a different key")
                    rounds += 1
                    sealing = rounds % 3 == 0
                    if sealing:
                        record = keys.seal_key(tpm, vault_key)
                except Exception as exc:  # noqa: BLE001 - reported in the result
                    with counting:
                        counts.vault_errors.append(repr(exc))
                    return
                with counting:
                    counts.unseals += 1
                    counts.seals += sealing

        async def link_loop() -> None:
            # One attestor, one nonce at a time: attestation and config polls take turns, as
            # in the agent (a poll waits for the token).
            generation = 0
            while not stop.is_set():
                if counts.config_polls % POLLS_PER_CONFIG == 0:
                    generation += 1
                    config = generations[generation % 2]
                    await asyncio.to_thread(push_config, controller_state, device_uuid, config)
                    counts.configs_pushed += 1
                attestor.restart("load")
                if await attestor.token(stop) is None:
                    break
                counts.attestations += 1
                await sync.poll_once(stop)
                counts.config_polls += 1
                await asyncio.sleep(0.02)

        async def report_loop() -> None:
            record = logging.LogRecord(
                "agent.load", logging.INFO, __file__, 1, "load %d %s", (0, "x" * 120), None
            )
            while not stop.is_set():
                await reporter.queue_info_async(facts, force=True)
                await reporter.flush()
                for _ in range(200):
                    spool.emit(record)
                await asyncio.to_thread(spool.roll, force=True)
                await uploader.upload_pending()
                await asyncio.sleep(0.1)

        threads = [
            threading.Thread(target=vault_loop, name=f"vault-{i}", daemon=True)
            for i in range(vault_threads)
        ]
        with frozen_heap():
            async with LoopWatch(limit=limit) as watch:
                for thread in threads:
                    thread.start()
                tasks = [
                    asyncio.create_task(loop(), name=loop.__name__)
                    for loop in (link_loop, report_loop)
                ]
                started = time.perf_counter()
                await asyncio.sleep(duration)
                stop.set()
                stop_threads.set()
                await asyncio.gather(*tasks)
                for thread in threads:
                    await asyncio.to_thread(thread.join)
                elapsed = time.perf_counter() - started
        counts.info_sent = reporter.sent_info
        counts.log_files_uploaded = uploader.uploaded
        return LoadResult(watch=watch, counts=counts, duration=elapsed)
    finally:
        if client is not None:
            await client.close()
        await asyncio.to_thread(tpm.close)
        await asyncio.to_thread(swtpm.stop)


async def idle_reference(duration: float) -> LoopWatch:
    """The same watch over an idle loop (only the heartbeat): the floor of the measurement."""
    async with LoopWatch() as watch:
        await asyncio.sleep(duration)
    return watch


__all__ = ["LoadCounts", "LoadResult", "idle_reference", "push_config", "run_agent_load"]
