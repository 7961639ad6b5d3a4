# SPDX-License-Identifier: Apache-2.0
"""agent.link.appmetrics and the reporter's ``am`` entries: what EVE fills in each ``appMetric``,
and the collector's samples through the reporter and the real controller app to
``eve-controller metrics``."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from agent.drivers.containers import ContainerSpec
from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.domainxml import Disk, KernelBoot
from agent.drivers.hypervisor import DiskStats, HypervisorSettings, VmSpec
from agent.drivers.libvirt_fake import FakeHypervisor
from agent.link.appmetrics import add_app_metrics, app_metric
from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.link.reporting import DeviceFacts, Outbox, Reporter
from agent.model.configitems import ConfigItems
from agent.reconcile.apptelemetry import AppMetric, AppTarget, AppTelemetry
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.metrics import metrics_pb2
from controller.cli import main
from controller.records import ReportKind
from tests.unit.link_harness import live_controller, onboard_device, until

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
VM = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
DEVICE = "11111111-1111-4111-8111-111111111111"
IMAGE = "127.0.0.1:5000/test/busybox@sha256:" + "ab" * 32
MB = 1 << 20


def sample(**changes: object) -> AppMetric:
    base = AppMetric(
        app_uuid=VM,
        name="db",
        runtime="vm",
        cpu_ns=7_500_000_000,
        cpus=2,
        cpu_percent=12.5,
        uptime=90.25,
        memory_bytes=300 * MB,
        memory_max_bytes=1024 * MB,
        disks=(DiskStats(Path("/persist/vols/db.qcow2"), "qcow2", 10 * 1024 * MB, 1536 * MB),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def facts(device_uuid: str = DEVICE) -> DeviceFacts:
    return DeviceFacts(
        uuid=device_uuid,
        version="1.0",
        boot_time=1_700_000_000.0,
        attestation_state="complete",
        attestation_error="",
        items=ConfigItems(),
    )


def test_app_metric_is_filled_as_eve_fills_it() -> None:
    msg = app_metric(sample())
    assert (msg.AppID, msg.AppName) == (VM, "db")
    # CPU time per vCPU, as domainmgr scales it; whole seconds in the deprecated field.
    assert msg.cpu.total_ns == 3_750_000_000 and msg.cpu.total == 3
    assert (msg.cpu.upTime.seconds, msg.cpu.upTime.nanos) == (90, 250_000_000)
    assert (msg.appMemory.allocatedMB, msg.appMemory.usedMB) == (1024, 300)
    assert (msg.memory.usedMem, msg.memory.availMem) == (300, 724)
    assert msg.memory.usedPercentage == pytest.approx(29.296875)
    assert msg.memory.availPercentage == pytest.approx(70.703125)
    [disk] = msg.disk
    assert (disk.disk, disk.provisioned, disk.used, disk.diskType) == (
        "/persist/vols/db.qcow2",
        10240,
        1536,
        "qcow2",
    )


def test_an_app_without_figures_is_still_listed() -> None:
    msg = app_metric(AppMetric(APP, "web", "container"))
    assert (msg.AppID, msg.AppName) == (APP, "web")
    # As EVE: the CPU and memory messages are there, zero.
    assert msg.HasField("cpu") and msg.HasField("appMemory") and msg.HasField("memory")
    assert msg.cpu.total_ns == 0 and not msg.cpu.HasField("upTime")
    assert (msg.appMemory.allocatedMB, msg.appMemory.usedMB) == (0, 0)
    assert msg.memory.usedPercentage == 0 and list(msg.disk) == []


def test_megabytes_round_to_nearest() -> None:
    msg = app_metric(sample(memory_bytes=MB + MB // 2, memory_max_bytes=MB + MB // 2 - 1))
    assert (msg.appMemory.usedMB, msg.appMemory.allocatedMB) == (2, 1)
    assert msg.memory.availMem == 0 and msg.memory.usedPercentage == 100.0


def test_one_entry_per_app() -> None:
    msg = metrics_pb2.ZMetricMsg()
    add_app_metrics(msg, [sample(), sample(name="again"), sample(app_uuid=APP)])
    assert [(a.AppID, a.AppName) for a in msg.am] == [(VM, "db"), (APP, "db")]


async def test_reporter_metrics_carry_the_apps(device_signer: SoftwareSigner) -> None:
    samples = [sample()]
    reporter = Reporter(
        None,  # type: ignore[arg-type]  # metrics() builds the message only
        device=device_signer,
        outbox=Outbox(Path("/nonexistent")),
        facts=facts,
        items=ConfigItems,
        app_metrics=lambda: samples,
    )
    msg = reporter.metrics(facts())
    assert msg.devID == DEVICE and msg.HasField("dm")
    assert [a.AppID for a in msg.am] == [VM]
    # A provider that fails costs only the apps' entries.
    samples = None  # type: ignore[assignment]
    msg = reporter.metrics(facts())
    assert msg.HasField("dm") and list(msg.am) == []
    # Without a provider: the device only, as before.
    plain = Reporter(
        None,  # type: ignore[arg-type]
        device=device_signer,
        outbox=Outbox(Path("/nonexistent")),
        facts=facts,
        items=ConfigItems,
    )
    assert list(plain.metrics(facts()).am) == []


async def test_collected_metrics_reach_eve_controller_metrics(
    tmp_path: Path, device_signer: SoftwareSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    containers = FakeContainerRuntime("node-a")
    containers.publish(IMAGE)
    await containers.pull(IMAGE)
    await containers.create(ContainerSpec(name=APP, image=IMAGE, app=APP))
    await containers.start(APP)
    hypervisor = FakeHypervisor(
        HypervisorSettings(node="node-a", state_dir=tmp_path / "vms", qemu_log_dir=None)
    )
    (tmp_path / "vmlinuz").write_bytes(b"k")
    (tmp_path / "disk.qcow2").write_bytes(b"d" * (3 * MB))
    await hypervisor.define_and_start(
        VmSpec(
            uuid.UUID(VM),
            1,
            256,
            2,
            disks=(Disk(tmp_path / "disk.qcow2"),),
            kernel=KernelBoot(tmp_path / "vmlinuz"),
        )
    )
    telemetry = AppTelemetry(
        targets=lambda: [AppTarget(APP, "web", "container"), AppTarget(VM, "db", "vm")],
        containers=containers,
        hypervisor=hypervisor,
        items=ConfigItems,
    )
    await telemetry.sample_once()

    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        try:
            certs = ControllerCertStore(
                CheckpointStore(tmp_path / "checkpoint", "controllercerts"), ctl.pki.root_pem
            )
            device_uuid = await onboard_device(client, device_signer, certs, ctl.pki.onboard)
            reporter = Reporter(
                client,
                device=device_signer,
                outbox=Outbox(tmp_path / "outbox"),
                facts=lambda: facts(device_uuid),
                items=ConfigItems,
                app_metrics=telemetry.latest,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(reporter.run(stop))
            try:
                await until(lambda: reporter.sent_metrics == 1, what="a metrics report")
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
            [stored] = ctl.store.reports(device_uuid, ReportKind.METRICS)
            message = metrics_pb2.ZMetricMsg.FromString(stored.raw)
            web, db = message.am
            assert (web.AppID, web.AppName, web.cpu.total_ns) == (APP, "web", 2_000_000)
            assert (db.AppID, db.appMemory.allocatedMB, db.appMemory.usedMB) == (VM, 256, 64)
            assert db.cpu.total_ns == 500_000  # 1 ms over 2 vCPUs
            assert [(d.disk, d.provisioned, d.diskType) for d in db.disk] == [
                (str(tmp_path / "disk.qcow2"), 3, "qcow2")
            ]

            capsys.readouterr()
            state = str(ctl.pki.state.root)
            assert main(["metrics", "--state", state, device_uuid]) == 0
            [line] = capsys.readouterr().out.splitlines()
            shown = json.loads(line)["message"]["am"]
            assert [(a["AppID"], a["AppName"]) for a in shown] == [(APP, "web"), (VM, "db")]
        finally:
            await client.close()
