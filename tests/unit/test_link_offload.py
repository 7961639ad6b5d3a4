# SPDX-License-Identifier: Apache-2.0
"""The controller link keeps the event loop free while the platform is slow.

A TPM signature or quote can wait a long time for the TPM (behind a vault seal or unseal that
holds the driver's lock, or on a slow discrete TPM).  Here the device key and the quote source
take 60 ms a call, longer than the stall the loop watchdog tolerates (50 ms), and a whole link
(onboarding, attestation, config sync with a large config, device info, log upload) runs against
the real controller: every one of those calls must be made in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.link.attestation import Attestor, NoTpmQuotes
from agent.link.checkpoint import CheckpointStore
from agent.link.configsync import ConfigSync
from agent.link.controllercerts import ControllerCertStore
from agent.link.logship import LogSpool, LogUploader
from agent.link.offload import seal_as_device_async
from agent.link.reporting import DeviceFacts, Outbox, Reporter
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems
from agent.util.timing import Backoff
from agent.wire import envelope
from agent.wire.envelope import Signer, SoftwareSigner
from agent.wire.pb.attest import attest_pb2
from tests.loopwatch import LoopWatch
from tests.unit.link_harness import ControllerPki, live_controller, make_pki, onboard_device
from tests.unit.test_controller_harness import software_signer

#: How long each slow platform call takes: past the watchdog's 50 ms.
SLOW = 0.060


class SlowSigner:
    """A device key that answers after SLOW seconds, as a TPM busy with the vault would."""

    def __init__(self, inner: SoftwareSigner) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def certificate(self) -> x509.Certificate:
        return self.inner.certificate

    def sign_digest(self, digest: bytes) -> bytes:
        self.calls += 1
        time.sleep(SLOW)
        return self.inner.sign_digest(digest)


class SlowQuotes(NoTpmQuotes):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def quote(self, nonce: bytes) -> attest_pb2.ZAttestQuote:
        self.calls += 1
        time.sleep(SLOW)
        return super().quote(nonce)


def _big_config(apps: int = 60) -> dict[str, Any]:
    """A config document with many apps (a large config takes a while to verify and model)."""
    ni = str(uuidlib.UUID(int=1))
    document: dict[str, Any] = {
        "networkInstances": [
            {
                "uuidandversion": {"uuid": ni, "version": "1"},
                "displayname": "ni",
                "instType": 2,  # local
                "activate": True,
                "ip": {"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"},
            }
        ],
        "apps": [],
    }
    for a in range(apps):
        document["apps"].append(
            {
                "uuidandversion": {"uuid": str(uuidlib.UUID(int=1000 + a)), "version": "1"},
                "displayname": f"app-{a}",
                "activate": False,
                "fixedresources": {"memory": 65536, "vcpus": 1},
                "interfaces": [
                    {
                        "name": "eth0",
                        "networkId": ni,
                        "acls": [
                            {"id": i + 1, "matches": [{"type": "ip", "value": f"10.9.{i}.0/24"}]}
                            for i in range(10)
                        ],
                    }
                ],
            }
        )
    return document


async def test_a_slow_signature_on_the_loop_is_caught() -> None:
    """The control: signing on the loop with the slow key is a stall the watchdog sees."""
    signer = SlowSigner(software_signer("device"))
    # A limit well under the 60 ms stall: the monitor thread polls every 5 ms, and on a loaded
    # machine it may not run inside the few milliseconds a stall spends past the default 50 ms
    # limit (CI missed it once); at 20 ms it has 40 ms to catch the stall in the act.
    async with LoopWatch(limit=0.020) as watch:
        await asyncio.sleep(0.02)
        envelope.seal_as_device(b"payload", signer)
        await asyncio.sleep(0.02)
    assert watch.longest >= SLOW * 0.9
    assert watch.worst_stack is not None and "sign_digest" in watch.worst_stack


async def test_seal_as_device_async_is_seal_as_device(loop_watch: LoopWatch) -> None:
    inner = software_signer("device")
    signer = SlowSigner(inner)
    body = await seal_as_device_async(b"payload", signer, include_cert=True)
    parsed = envelope.parse(body)
    assert parsed.payload == b"payload"
    assert parsed.sender_cert_hash == envelope.device_cert_hash(inner.certificate)
    assert parsed.sender_cert_pem is not None
    envelope.verify_signature(parsed, inner.certificate)
    # Many at once: they wait for the key in threads, the loop keeps beating.
    bodies = await asyncio.gather(*(seal_as_device_async(b"x", signer) for _ in range(5)))
    assert len(bodies) == 5 and signer.calls == 6


async def test_the_link_never_waits_for_the_platform_on_the_loop(
    tmp_path: Path, loop_watch: LoopWatch
) -> None:
    # The watch is about the link, and a loaded disk must not fail it through the controller
    # that shares its loop: the controller's certificates are made off the loop, and its
    # database lives in memory (tmpfs), since each of its commits (a nonce, say) is an fsync
    # on the loop, which took 185 ms on a loaded disk.  The agent's own files stay on disk.
    state = await asyncio.to_thread(_in_memory, tmp_path)
    try:
        pki = await asyncio.to_thread(make_pki, state / "controller")
        await _link_never_waits(tmp_path, pki)
    finally:
        await asyncio.to_thread(shutil.rmtree, state, True)


def _in_memory(fallback: Path) -> Path:
    """A new directory on tmpfs (``fallback`` if the machine has no /dev/shm)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="eve-link-", dir=shm if shm.is_dir() else fallback))


async def _link_never_waits(tmp_path: Path, pki: ControllerPki) -> None:
    async with live_controller(tmp_path, pki=pki) as ctl:
        client = ctl.client()
        device = SlowSigner(software_signer("device"))
        certs = ControllerCertStore(
            CheckpointStore(tmp_path / "checkpoint", "controllercerts"), ctl.pki.root_pem
        )
        try:
            device_uuid = await onboard_device(client, device, certs, ctl.pki.onboard)  # type: ignore[arg-type]
            quotes = SlowQuotes()
            attestor = Attestor(
                client,
                device=device,
                certs=certs,
                quotes=quotes,
                backoff=Backoff(initial=0.005, maximum=0.02),
            )
            applied: list[NodeConfig] = []

            async def apply(config: NodeConfig) -> bool:
                applied.append(config)
                return True

            async def unknown() -> None:
                raise AssertionError("the controller knows this device")

            sync = ConfigSync(
                client,
                device=device,
                device_uuid=lambda: device_uuid,
                certs=certs,
                attestor=attestor,
                checkpoints=CheckpointStore(tmp_path / "checkpoint", "lastconfig"),
                apply=apply,
                items=ConfigItems,
                on_unknown_device=unknown,
            )
            ctl.set_config(device_uuid, _big_config(), timestamp=time.time())
            stop = asyncio.Event()
            await asyncio.wait_for(sync.poll_once(stop), 20)
            assert len(applied) == 1 and len(applied[0].apps) == 60
            assert quotes.calls == 1

            facts = DeviceFacts(
                uuid=device_uuid,
                version="1.0",
                boot_time=time.time(),
                attestation_state="complete",
                attestation_error="",
                items=ConfigItems(),
            )
            reporter = Reporter(
                client,
                device=device,
                outbox=Outbox(tmp_path / "outbox"),
                facts=lambda: facts,
                items=ConfigItems,
            )
            await reporter.queue_info_async(facts)
            await asyncio.wait_for(reporter.flush(), 20)
            assert reporter.sent_info == 1

            spool = LogSpool(tmp_path / "newlog", lambda: {"devID": device_uuid})
            record = logging.LogRecord("agent.test", logging.INFO, __file__, 1, "x" * 200, (), None)
            for _ in range(500):
                spool.emit(record)
            uploader = LogUploader(client, device=device, spool=spool)
            await asyncio.to_thread(spool.roll, force=True)
            assert await asyncio.wait_for(uploader.upload_pending(), 20)
            assert uploader.uploaded >= 1
        finally:
            await client.close()
    signer: Signer = device
    assert isinstance(signer, SlowSigner) and device.calls >= 6
