"""App telemetry on real runtimes: what a container prints (dockerd) and what a VM prints on its
serial console (libvirtd, the test guest of ``images/vm``) reaches the controller as that app's
logs, through the collector, the app log spool and uploader, and the real controller app; the
metrics report carries the app's CPU and memory.

The container test uses the test image of ``images/container`` (as the docker contract does);
the VM test boots the test guest's kernel and initramfs.  Each test has a node name of its own
and removes its container or domain at the end, also when it fails.  Without root or the services
the tests fail when services are required (CI, ``make test``) and skip otherwise.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent.drivers.containers import ContainerSpec, DockerSettings
from agent.drivers.docker import DockerRuntime
from agent.drivers.domainxml import KernelBoot
from agent.drivers.hypervisor import HypervisorSettings, VmSpec
from agent.drivers.libvirt import LibvirtHypervisor
from agent.link.applogs import AppLogSpool, AppLogUploader
from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.link.reporting import DeviceFacts, Outbox, Reporter
from agent.link.transport import ControllerClient
from agent.model.configitems import ConfigItems
from agent.reconcile.apptelemetry import AppTarget, AppTelemetry
from agent.wire import pki
from agent.wire.envelope import SoftwareSigner
from tests.integration.test_docker_contract import DOCKER_SOCK, real_image
from tests.integration.test_libvirt_contract import Images, vm_images
from tests.unit.link_harness import LiveController, live_controller, onboard_device

__all__ = ["real_image", "vm_images"]  # session fixtures shared with the driver contracts

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@dataclass
class Link:
    """A controller with an onboarded device, and the agent's app log path to it."""

    ctl: LiveController
    client: ControllerClient
    device_uuid: str
    signer: SoftwareSigner
    spool: AppLogSpool
    uploader: AppLogUploader

    def facts(self) -> DeviceFacts:
        return DeviceFacts(
            uuid=self.device_uuid,
            version="1.0",
            boot_time=1_700_000_000.0,
            attestation_state="complete",
            attestation_error="",
            items=ConfigItems(),
        )

    def reporter(self, telemetry: AppTelemetry, tmp: Path) -> Reporter:
        return Reporter(
            self.client,
            device=self.signer,
            outbox=Outbox(tmp / "outbox"),
            facts=self.facts,
            items=ConfigItems,
            app_metrics=telemetry.latest,
        )

    async def ship_until(
        self, telemetry: AppTelemetry, done: Callable[[list[str]], bool], limit: float = 60.0
    ) -> list[str]:
        """Collect, spool and upload rounds until the controller's log of APP satisfies
        ``done``; returns its contents."""
        deadline = time.monotonic() + limit
        contents: list[str] = []
        while time.monotonic() < deadline:
            await telemetry.sample_once()
            await asyncio.to_thread(self.spool.roll, force=True)
            assert await self.uploader.upload_pending()
            stored = self.ctl.store.log_entries(self.device_uuid, app_uuid=APP)
            contents = [json.loads(r.entry)["content"] for r in stored]
            if done(contents):
                return contents
            await asyncio.sleep(0.5)
        raise AssertionError(f"not at the controller within {limit:g} s; it has: {contents[-20:]}")


@pytest.fixture(scope="module")
def device_signer() -> SoftwareSigner:
    key = ec.generate_private_key(ec.SECP256R1())
    return SoftwareSigner(key, pki.make_certificate(key, "telemetry-device"))


@pytest.fixture
async def link(tmp_path: Path, device_signer: SoftwareSigner) -> AsyncIterator[Link]:
    async with live_controller(tmp_path / "ctl") as ctl:
        client = ctl.client()
        certs = ControllerCertStore(
            CheckpointStore(tmp_path / "checkpoint", "controllercerts"), ctl.pki.root_pem
        )
        try:
            device_uuid = await onboard_device(client, device_signer, certs, ctl.pki.onboard)
            spool = AppLogSpool(tmp_path / "persist" / "applogs")
            uploader = AppLogUploader(client, device=device_signer, spool=spool)
            yield Link(ctl, client, device_uuid, device_signer, spool, uploader)
        finally:
            await client.close()


async def test_container_output_reaches_the_controller(
    link: Link,
    tmp_path: Path,
    real_image: str,
    require_service: Callable[[str, str], NoReturn],
) -> None:
    if real_image.startswith("!"):
        require_service("dockerd + registry", real_image[1:])
    node = f"telemetry-{uuid.uuid4().hex[:10]}"
    runtime = DockerRuntime(node, DockerSettings(base_url=f"unix://{DOCKER_SOCK}"))
    marker = f"marker-{uuid.uuid4().hex}"
    try:
        await runtime.pull(real_image)
        script = f"echo {marker}-out; echo {marker}-err >&2; exec sleep 3600"
        spec = ContainerSpec(name=APP, image=real_image, app=APP, command=("sh", "-c", script))
        await runtime.create(spec)
        await runtime.start(APP)
        telemetry = AppTelemetry(
            targets=lambda: [AppTarget(APP, "web", "container")],
            containers=runtime,
            hypervisor=None,
            items=ConfigItems,
            sink=link.spool.add,
            state_file=tmp_path / "persist" / "apptelemetry.json",
        )
        contents = await link.ship_until(
            telemetry, lambda c: {f"{marker}-out", f"{marker}-err"} <= set(c)
        )
        assert contents.count(f"{marker}-out") == 1  # rounds after the first add nothing
        [web] = telemetry.latest()
        assert web.memory_bytes > 0 and web.cpu_ns > 0
        am = link.reporter(telemetry, tmp_path).metrics(link.facts()).am
        assert [(a.AppID, a.AppName) for a in am] == [(APP, "web")]
        assert am[0].appMemory.allocatedMB > 0
    finally:
        await runtime.remove(APP, force=True)
        await runtime.close()


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """The domains' directory: under /var/tmp, which QEMU (libvirt-qemu) can enter."""
    base = Path(tempfile.mkdtemp(prefix="eve-agent-telemetry-", dir="/var/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_vm_console_reaches_the_controller(
    link: Link,
    tmp_path: Path,
    vm_images: Images | str,
    vm_dir: Path,
    require_service: Callable[[str, str], NoReturn],
) -> None:
    if isinstance(vm_images, str):
        require_service("test VM image", vm_images)
    node = f"telemetry-{uuid.uuid4().hex[:10]}"
    try:
        hv = LibvirtHypervisor(HypervisorSettings(node=node, state_dir=vm_dir / "state"))
    except Exception as exc:  # noqa: BLE001 - libvirt-python missing: no libvirtd either
        require_service("libvirt", str(exc))
    app = uuid.UUID(APP)
    try:
        kernel = KernelBoot(vm_images.kernel, vm_images.initrd, "console=ttyS0")
        await hv.define_and_start(VmSpec(app, 1, 128, 1, kernel=kernel))
        telemetry = AppTelemetry(
            targets=lambda: [AppTarget(APP, "guest", "vm")],
            containers=None,
            hypervisor=hv,
            items=ConfigItems,
            sink=link.spool.add,
        )
        contents = await link.ship_until(
            telemetry, lambda c: any("eve-test-guest: running" in line for line in c), 90
        )
        assert any(line.startswith("eve-test-guest: up") for line in contents)
        [guest] = telemetry.latest()
        assert guest.cpus == 1 and guest.memory_max_bytes == 128 << 20 and guest.cpu_ns > 0
    finally:
        await hv.undefine(app)
        await hv.close()
