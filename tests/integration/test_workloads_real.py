"""A VM app and a container app through the real runtimes: dockerd, libvirtd + QEMU, the local
registry and an HTTPS datastore on loopback.

The VM boots the test guest of images/vm (its disk served by a local HTTPS datastore, made a
qcow2 overlay in the workspace); the container runs the test image of images/container
(pulled from the local registry into the blob store and loaded into dockerd from there).
Everything a test makes carries its own node name (``wl<random>``) and lives under its own
directory in /var/tmp (QEMU, as libvirt-qemu, must reach the disks); teardown removes the
test's domains and containers by that name, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.containers import DockerSettings
from agent.drivers.docker import DockerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.libvirt import LibvirtHypervisor
from agent.reconcile.configitems import RuntimeItems
from tests.integration.conftest import service_missing
from tests.integration.images import container_image, vm_images
from tests.unit.blob_server import Blob, blob_server
from tests.unit.workload_env import APP_CT, APP_VM, VOL_DISK, Env, Registry

MARKER = "eve-agent-userdata-marker-7f3a"


@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[Env]:
    image = container_image()
    if image.startswith("!"):
        service_missing("dockerd + registry + test image", image[1:])
    guest = vm_images()
    if isinstance(guest, str):
        service_missing("test VM image", guest)
    repo, _, digest = image.partition("@")
    node = f"wl{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="eve-wl-", dir="/var/tmp"))
    os.chmod(base, 0o711)
    containers = DockerRuntime(node, DockerSettings())
    hypervisor = LibvirtHypervisor(HypervisorSettings(node, state_dir=base / "domains"))
    try:
        await hypervisor.list_owned()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable libvirtd
        service_missing("libvirtd", str(exc))
    async with blob_server(tmp_path / "tls") as server:
        disk = await asyncio.to_thread(guest.disk.read_bytes)
        server.blobs["disk.raw"] = Blob(disk)
        registry = Registry(port=5000, repository=repo.split("/", 1)[1])
        env = Env(base, server, registry, digest.removeprefix("sha256:"), disk, RuntimeItems(),
                  containers, hypervisor)  # fmt: skip
        env.disk_format = "QCOW2"
        env.vm_memory_kib = 128 * 1024
        env.vm_user_data = f"#cloud-config\n# {MARKER}\n".encode()
        try:
            yield env
        finally:
            await _purge(env)
            for made in env.made:
                await made.close()
            await containers.close()
            await hypervisor.close()
            shutil.rmtree(base, ignore_errors=True)


async def _purge(env: Env) -> None:
    """Remove whatever the test left (by its node name), whatever state it is in."""
    for state in await env.containers.list_owned():
        with contextlib.suppress(Exception):
            await env.containers.remove(state.name.removeprefix(env.containers.prefix))
    for info in await env.hypervisor.list_owned():
        with contextlib.suppress(Exception):
            await env.hypervisor.undefine(info.mark.app_uuid)


async def wait_for(what: str, check: Any, seconds: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def test_vm_and_container_run_and_go(real: Env) -> None:
    env = real
    assert await env.apply(within=180), env.reconciler.report  # type: ignore[union-attr]
    phases = env.phases()
    assert phases[("app", APP_VM)] == "RUNNING"
    assert phases[("app", APP_CT)] == "RUNNING"

    # The VM's console shows the user data it was given.
    console = env.hypervisor.console_log(uuid.UUID(APP_VM))

    async def console_has_marker() -> bool:
        if not console.exists():
            return False
        text = await asyncio.to_thread(console.read_text, errors="replace")
        return MARKER in text

    try:
        await wait_for("the guest to print its user data", console_has_marker, 90)
    except AssertionError:
        tail = console.read_text(errors="replace")[-2000:] if console.exists() else "(none)"
        raise AssertionError(f"no user data on the console; it shows: {tail}") from None

    # The container's environment holds the user data's variables.
    async def container_env() -> bool:
        lines = await env.containers.logs(APP_CT)
        text = "\n".join(line.text for line in lines)
        return "GREETING=hello world" in text and "ready" in text

    await wait_for("the container to print its environment", container_env, 30)
    state = await env.containers.inspect(APP_CT)
    assert state.running and state.restart_policy in ("no", "")

    # Restart the container and purge the VM: a new container, a fresh overlay.
    store = await env.workloads.ws.volumes()  # type: ignore[union-attr]
    made = (await store.info(VOL_DISK, 0)).created
    doc = env.document()
    changed = copy.deepcopy(doc)
    env.app(changed, APP_CT)["restart"] = {"counter": 1}
    env.app(changed, APP_VM)["purge"] = {"counter": 1}
    assert await env.apply(changed, within=180)
    assert (await env.containers.inspect(APP_CT)).id != state.id
    assert (await store.info(VOL_DISK, 0)).created > made
    assert env.phases()[("app", APP_VM)] == "RUNNING"

    # A restarted agent adopts both: nothing made twice.
    domain = await env.hypervisor.state(uuid.UUID(APP_VM))
    ct_id = (await env.containers.inspect(APP_CT)).id
    env.new_reconciler()
    assert await env.apply(changed, within=120)
    assert (await env.containers.inspect(APP_CT)).id == ct_id
    assert len(await env.hypervisor.list_owned()) == 1
    assert (await env.hypervisor.state(uuid.UUID(APP_VM))).name == domain.name

    # Delete: no domain, container, volume, record or referenced blob is left.
    assert await env.apply(env.document(apps=[], volumes=[], contentInfo=[]), within=120)
    assert not await env.hypervisor.list_owned()
    assert not await env.containers.list_owned()
    assert not list((env.vault / "volumes").iterdir())
    assert not list((env.vault / "records").rglob("*.json"))
    blobs = await env.workloads.ws.blobs()  # type: ignore[union-attr]
    await blobs.gc(0.0)
    assert not blobs.blobs()
    assert not (env.root / "domains").exists() or not list((env.root / "domains").iterdir())
