"""Workloads on the real runtimes for ``make bench``: each figure beside a reference measured in
the same run, on the same image, XML and disks.

1. Config received -> container running (goal: within 0.3 s of ``docker run``).  The agent's
   time runs from ``NodeReconciler.accept(config)`` (the engine task running, the node's stores
   open, as on a node already up) to the container's ``State.StartedAt`` as dockerd records
   it; the reference runs from the first SDK call to the ``StartedAt`` of its container, so
   both ends are read off the same clock the same way.  Two cases:

   - cached: the image is already loaded (a second app on the same content tree, with its own
     volume), beside ``docker run -d --network none <image ID>`` (create + start);
   - cold: nothing in the blob store nor in dockerd: content tree download from the local
     registry, verify, image load, create, start; beside ``docker pull`` + run of the same image
     from the same registry.  The bench image is removed from dockerd before each cold run.

   Reference and agent runs alternate (reference first), so drift on a shared host hits both.

2. Config received -> VM domain running, beside ``virDomainCreateXML`` of the XML the agent
   defined (``XMLDesc`` of its domain, which is then undefined; same disks and seed).  The
   agent's time runs from ``accept`` until it reports the app RUNNING (polled every 5 ms, then
   checked with libvirt); the reference is the ``createXML`` call.  Cached: a second VM app on
   the same content tree (qcow2 overlay, cloud-init seed, define, start) while the first is
   halted; cold: the disk (the test guest's qcow2) downloaded from a local HTTPS datastore
   served by this process, verified, then the same.  KVM/TCG detection, once per agent, is done
   before the clock starts.  The reference runs last (the domain it starts again is the
   agent's last one), so that domain's guest never competes with an agent run.

3. and 4. Agent RSS and CPU with container apps running: tools/bench_appload.py.

Everything runs under one node name of its own (``bench<random>``) and one directory in
/var/tmp; :meth:`~tools.bench_workload_env.Scene.purge` removes it all at the end, also after a
failure or Ctrl-C.  A missing service raises :class:`ServiceMissing` (an error row in
``make bench``).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.drivers.containers import NODE_LABEL, parse_time
from agent.drivers.docker import DockerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.libvirt import LibvirtHypervisor
from agent.model.config import NodeConfig
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from tests.integration.images import container_image, vm_images
from tests.unit.blob_server import Blob, blob_server
from tools.bench_appload import measure_load
from tools.bench_workload_env import (
    LIBVIRT_URI,
    REGISTRY,
    BenchImage,
    DiskSource,
    Documents,
    Row,
    Scene,
    ServiceMissing,
    docker_api,
    ensure_services,
    oid,
    push_bench_image,
)


@dataclass(frozen=True)
class Runs:
    """How many times each case runs (medians are reported)."""

    ct_cold: int = 3
    ct_warm: int = 5
    vm_cold: int = 2
    vm_warm: int = 3
    vm_ref: int = 5


@dataclass
class Agent:
    """One node's reconciler on the real runtimes, its engine task running, as in the daemon."""

    rec: NodeReconciler
    workloads: Workloads
    containers: DockerRuntime
    hypervisor: LibvirtHypervisor
    stop: asyncio.Event
    task: asyncio.Task[None]

    @classmethod
    async def start(cls, scene: Scene, vault_name: str, config: NodeConfig) -> Agent:
        """A fresh node (empty vault) that has applied ``config`` and observed the system."""
        vault = scene.subdir(vault_name)
        runtime = RuntimeItems()
        containers = DockerRuntime(scene.node)
        hypervisor = LibvirtHypervisor(
            HypervisorSettings(scene.node, state_dir=scene.base / "domains")
        )
        await hypervisor.detect_accel()
        settings = WorkloadSettings(vm_halt_grace=0.5, container_halt_grace=0.5)
        ws = Workspace(root=lambda: vault, items=lambda: runtime.current, settings=settings)
        await ws.open()
        workloads = Workloads(WorkloadDrivers(containers, hypervisor), ws)
        rec = NodeReconciler(runtime, workloads=workloads)
        rec.set_condition(VAULT_READY, None)
        await rec.accept(config)
        stop = asyncio.Event()
        task = asyncio.create_task(rec.run(stop), name=f"engine {vault_name}")
        await asyncio.sleep(1.0)  # the engine's first observation of dockerd and libvirt
        await rec.engine.settle(30)
        return cls(rec, workloads, containers, hypervisor, stop, task)

    async def until_phase(self, app_id: str, phase: str, within: float = 180.0) -> None:
        """Wait until the app's EVE state is ``phase``; RuntimeError on an error or timeout."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for owner in self.rec.owners():
                if owner.kind != "app" or owner.id != app_id:
                    continue
                if owner.phase == phase:
                    return
                if owner.errors:
                    raise RuntimeError(f"app {app_id}: {owner.errors[0][0]}")
            if self.task.done():
                self.task.result()
                raise RuntimeError("the engine task ended")
            await asyncio.sleep(0.005)
        raise RuntimeError(f"app {app_id} not {phase} within {within:.0f} s")

    async def settle(self, config: NodeConfig) -> None:
        await self.rec.accept(config)
        await self.rec.engine.settle(120)

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.workloads.close()
        await self.containers.close()
        await self.hypervisor.close()


# --- containers --------------------------------------------------------------------------


async def _agent_container(agent: Agent, config: NodeConfig, app_id: str) -> float:
    t0 = time.time()
    await agent.rec.accept(config)
    await agent.until_phase(app_id, "RUNNING")
    state = await agent.containers.inspect(app_id)
    if not state.running or state.started_at is None:
        raise RuntimeError(f"app {app_id} reported RUNNING but its container is {state.status}")
    return state.started_at.timestamp() - t0


def _docker_run(api: Any, scene: Scene, image: BenchImage, name: str, *, pull: bool) -> float:
    """``[docker pull +] docker run -d --network none <image ID>``: seconds from the first call
    to the container's StartedAt.  The container carries the bench's node label."""
    t0 = time.time()
    if pull:
        repo = f"{REGISTRY}/{image.repo}"
        for event in api.pull(repo, tag=f"sha256:{image.manifest}", stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise RuntimeError(f"docker pull {image.ref}: {event['error']}")
    created = api.create_container(
        image.image_id,
        name=scene.container_prefix + name,
        labels={NODE_LABEL: scene.node},
        host_config=api.create_host_config(network_mode="none"),
    )
    api.start(created["Id"])
    started = parse_time(api.inspect_container(created["Id"])["State"]["StartedAt"])
    api.remove_container(created["Id"], force=True)
    if started is None:
        raise RuntimeError(f"docker run {image.image_id}: no StartedAt")
    return started.timestamp() - t0


async def bench_containers(
    scene: Scene, image: BenchImage, docs: Documents, runs: Runs
) -> list[Row]:
    api = await asyncio.to_thread(docker_api)
    cold_agent: list[float] = []
    cold_ref: list[float] = []
    warm_agent: list[float] = []
    warm_ref: list[float] = []
    agent: Agent | None = None
    try:
        for i in range(runs.ct_cold):
            await asyncio.to_thread(scene.remove_image)
            cold_ref.append(
                await asyncio.to_thread(_docker_run, api, scene, image, f"ref-{i}", pull=True)
            )
            await asyncio.to_thread(scene.remove_image)
            agent = await Agent.start(scene, f"vault-ct-{i}", docs.config())
            config = docs.config(containers=[0])
            cold_agent.append(await _agent_container(agent, config, oid("ct", 0)))
            if i < runs.ct_cold - 1:
                await agent.close()
                agent = None
                await asyncio.to_thread(scene.remove_containers)
        assert agent is not None
        for j in range(1, runs.ct_warm + 1):
            warm_ref.append(
                await asyncio.to_thread(_docker_run, api, scene, image, f"ref-{j}", pull=False)
            )
            config = docs.config(containers=[0, j])
            warm_agent.append(await _agent_container(agent, config, oid("ct", j)))
            await agent.settle(docs.config(containers=[0]))
    finally:
        if agent is not None:
            await agent.close()
        await asyncio.to_thread(api.close)
        await asyncio.to_thread(scene.remove_containers)
    size = f"{image.size / 1e6:.1f} MB layer"
    return [
        _latency_row("container app: config -> running, image loaded (goal: within 0.3 s of "
                     "docker run)", warm_agent, warm_ref, "docker run -d --network none <ID>"),
        _latency_row(f"container app: config -> running, cold (registry download {size}, "
                     "verify, load, create, start)", cold_agent, cold_ref,
                     "docker pull + run, same registry"),
    ]  # fmt: skip


# --- VMs ---------------------------------------------------------------------------------


async def _agent_vm(agent: Agent, config: NodeConfig, app_id: str) -> float:
    t0 = time.perf_counter()
    await agent.rec.accept(config)
    await agent.until_phase(app_id, "RUNNING")
    elapsed = time.perf_counter() - t0
    info = await agent.hypervisor.state(uuid.UUID(app_id))
    if not info.state.active:
        raise RuntimeError(f"app {app_id} reported RUNNING but its domain is {info.state}")
    return elapsed


def _libvirt_do(fn: Callable[[Any, Any], Any]) -> Any:
    import libvirt

    conn = libvirt.open(LIBVIRT_URI)
    try:
        return fn(libvirt, conn)
    finally:
        conn.close()


def _inactive_xml(name: str) -> str:
    def get(lv: Any, conn: Any) -> str:
        return str(conn.lookupByName(name).XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))

    return str(_libvirt_do(get))


def _create_xml(xml: str, runs: int) -> list[float]:
    """``virsh create``: seconds of each ``virDomainCreateXML`` (destroyed after each)."""

    def run(lv: Any, conn: Any) -> list[float]:
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            dom = conn.createXML(xml, 0)
            out.append(time.perf_counter() - t0)
            dom.destroy()
        return out

    return list(_libvirt_do(run))


async def bench_vms(scene: Scene, disk_file: Path, docs: Documents, runs: Runs) -> list[Row]:
    disk = await asyncio.to_thread(disk_file.read_bytes)
    cold: list[float] = []
    warm: list[float] = []
    agent: Agent | None = None
    async with blob_server(scene.subdir("tls")) as server:
        server.blobs["disk.qcow2"] = Blob(disk)
        docs.disk = DiskSource(server.port, server.ca_pem, Blob(disk).sha256)
        try:
            for i in range(runs.vm_cold):
                agent = await Agent.start(scene, f"vault-vm-{i}", docs.config())
                cold.append(await _agent_vm(agent, docs.config(vms=[0]), oid("vm", 0)))
                if i < runs.vm_cold - 1:
                    await agent.close()
                    agent = None
                    await asyncio.to_thread(scene.remove_domains)
            assert agent is not None
            # The first VM halted: no other guest competes for the CPU (nor in the reference).
            await agent.settle(docs.config(vms=[0], halted=[0]))
            for j in range(1, runs.vm_warm + 1):
                config = docs.config(vms=[0, j], halted=[0])
                warm.append(await _agent_vm(agent, config, oid("vm", j)))
                if j < runs.vm_warm:
                    await agent.settle(docs.config(vms=[0], halted=[0]))
            name = agent.hypervisor.domain_name(uuid.UUID(oid("vm", runs.vm_warm)))
            xml = await asyncio.to_thread(_inactive_xml, name)
        finally:
            if agent is not None:
                await agent.close()
        # Undefined, its files (overlay, seed, console log) kept for the reference.
        await asyncio.to_thread(scene.remove_domains, keep_files=True)
        ref = await asyncio.to_thread(_create_xml, xml, runs.vm_ref)
    create = "virDomainCreateXML of the agent's XML"
    return [
        _latency_row("VM app: config -> domain running, disk in the blob store (2nd app on "
                     "the content tree: overlay, seed, define, start)", warm, ref, create),
        _latency_row(f"VM app: config -> domain running, cold (HTTPS download "
                     f"{len(disk) / 1e6:.0f} MB, verify, then the same)", cold, ref, create),
    ]  # fmt: skip


def _latency_row(label: str, agent: list[float], ref: list[float], ref_label: str) -> Row:
    a, r = statistics.median(agent), statistics.median(ref)
    return (
        f"{label} [median of {len(agent)}]",
        f"{a * 1e3:.0f} ms",
        f"{r * 1e3:.0f} ms ({ref_label}, median of {len(ref)})",
        f"{(a - r) * 1e3:+.0f} ms",
    )


# --- all of it ---------------------------------------------------------------------------


async def _latencies(scene: Scene, image: BenchImage, disk: Path, runs: Runs) -> list[Row]:
    docs = Documents(image=image)
    rows = await bench_containers(scene, image, docs, runs)
    rows += await bench_vms(scene, disk, docs, runs)
    return rows


def bench_workloads(*, quick: bool = False, window: float | None = None) -> list[Row]:
    """Every workload figure as table rows.  ``quick``: fewer runs and 15 s CPU windows;
    ``window``: the CPU windows' length in seconds (default 60).

    Raises ServiceMissing when a service, the test images or root are missing.  Whatever the
    outcome, everything made under the bench's node name is removed before returning; what
    could not be is printed on stderr.
    """
    ensure_services()
    test_ref = container_image()
    if test_ref.startswith("!"):
        raise ServiceMissing(f"test container image: {test_ref[1:]}")
    guest = vm_images()
    if isinstance(guest, str):
        raise ServiceMissing(f"test VM image: {guest}")
    runs = Runs(ct_cold=2, ct_warm=3, vm_cold=1, vm_warm=2, vm_ref=3) if quick else Runs()
    seconds = window if window is not None else (15.0 if quick else 60.0)
    scene = Scene.make()
    try:
        image = push_bench_image(test_ref)
        scene.image_id = image.image_id
        scene.remove_image()  # a leftover of an earlier bench run: nothing cached
        rows = asyncio.run(_latencies(scene, image, guest.disk, runs))
        rows += measure_load(scene, image, window=seconds, counts=(20, 50))
        return rows
    finally:
        problems = scene.purge()
        for problem in problems:
            print(f"workload bench: could not remove its {problem}", file=sys.stderr)


if __name__ == "__main__":
    for row in bench_workloads(quick="--quick" in sys.argv):
        print(" | ".join(row))
