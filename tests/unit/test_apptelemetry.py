# SPDX-License-Identifier: Apache-2.0
"""agent.reconcile.apptelemetry: per-app CPU, memory, disks and new log lines, over the container
runtime's and the hypervisor's fakes, with a fake clock."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.containers import ContainerSpec, LogLine
from agent.drivers.docker_fake import HOST_MEMORY, FakeContainerRuntime
from agent.drivers.domainxml import Disk, KernelBoot
from agent.drivers.errors import TemporaryError
from agent.drivers.hypervisor import DomainState, DomainStats, HypervisorSettings, VmSpec
from agent.drivers.libvirt_fake import FakeHypervisor
from agent.model.configitems import ConfigItems, parse_items
from agent.reconcile.apptelemetry import AppLogLine, AppTarget, AppTelemetry
from tests.unit.link_harness import until

C_APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
V_APP = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
IMAGE = "127.0.0.1:5000/test/busybox@sha256:" + "ab" * 32
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: float = 1000.0
    wall: float = 1_900_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


@dataclass
class Sink:
    got: list[tuple[str, str, list[AppLogLine]]] = field(default_factory=list)
    fail: int = 0

    def __call__(self, app_uuid: str, lines: list[AppLogLine], /, *, app_name: str) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("sink full")
        self.got.append((app_uuid, app_name, lines))

    def texts(self, app_uuid: str) -> list[str]:
        return [line.text for app, _, lines in self.got if app == app_uuid for line in lines]


@dataclass
class Node:
    containers: FakeContainerRuntime
    hypervisor: FakeHypervisor
    clock: Clock
    sink: Sink
    targets: list[AppTarget]
    tmp: Path

    def telemetry(self, **kw: Any) -> AppTelemetry:
        kw.setdefault("containers", self.containers)
        kw.setdefault("hypervisor", self.hypervisor)
        return AppTelemetry(
            targets=lambda: self.targets,
            items=ConfigItems,
            sink=self.sink,
            clock=lambda: self.clock.now,
            wall=lambda: self.clock.wall,
            **kw,
        )

    def print(self, app: str, text: str, at: datetime) -> None:
        """The container ``app`` prints a line at ``at``."""
        container = self.containers.dockerd.containers[self.containers.prefix + app]
        container.log.append(LogLine(at, text))

    def console(self, app: str, text: str) -> None:
        with open(self.hypervisor.console_log(uuid.UUID(app)), "a") as f:
            f.write(text)


@pytest.fixture
async def node(tmp_path: Path) -> Node:
    containers = FakeContainerRuntime("node-a")
    containers.publish(IMAGE)
    await containers.pull(IMAGE)
    await containers.create(ContainerSpec(name=C_APP, image=IMAGE, app=C_APP))
    await containers.start(C_APP)
    settings = HypervisorSettings(node="node-a", state_dir=tmp_path / "vms", qemu_log_dir=None)
    hypervisor = FakeHypervisor(settings)
    kernel, disk = tmp_path / "vmlinuz", tmp_path / "disk.qcow2"
    kernel.write_bytes(b"k")
    disk.write_bytes(b"d" * 4096)
    spec = VmSpec(uuid.UUID(V_APP), 1, 128, 2, disks=(Disk(disk),), kernel=KernelBoot(kernel))
    await hypervisor.define_and_start(spec)
    targets = [AppTarget(C_APP, "web", "container"), AppTarget(V_APP, "db", "vm")]
    return Node(containers, hypervisor, Clock(), Sink(), targets, tmp_path)


async def test_a_round_samples_metrics_and_hands_over_new_lines(node: Node) -> None:
    tel = node.telemetry()
    await tel.sample_once()
    web, db = tel.latest()
    assert (web.app_uuid, web.name, web.runtime, web.cpus) == (C_APP, "web", "container", 1)
    assert web.cpu_ns == 2_000_000 and web.cpu_percent is None  # one sample: no rate yet
    assert (web.memory_bytes, web.memory_max_bytes) == (1 << 20, HOST_MEMORY)
    assert web.sampled_at == node.clock.wall
    assert (db.app_uuid, db.name, db.runtime, db.cpus) == (V_APP, "db", "vm", 2)
    assert (db.memory_bytes, db.memory_max_bytes) == (32 << 20, 128 << 20)
    [disk] = db.disks
    assert (disk.path, disk.format, disk.capacity_bytes) == (node.tmp / "disk.qcow2", "qcow2", 4096)

    # What each printed so far, in order, with its stream and the app's name.
    assert node.sink.texts(C_APP)[-1] == "ready"
    assert node.sink.texts(V_APP)[0] == "eve-test-guest: up, kernel fake"
    assert node.sink.texts(V_APP)[-1] == "eve-test-guest: running"
    names = {(app, name, line.stream) for app, name, lines in node.sink.got for line in lines}
    assert names == {(C_APP, "web", "output"), (V_APP, "db", "console")}

    # Ten seconds later: 1 ms more CPU each (the fakes' rate), new lines only.
    node.clock.advance(10)
    node.print(C_APP, "GET / 200", T0 + timedelta(days=1))
    node.console(V_APP, "guest: tick\n")
    before = len(node.sink.got)
    await tel.sample_once()
    web, db = tel.latest()
    assert web.cpu_ns == 3_000_000 and web.cpu_percent == pytest.approx(0.01)
    assert db.cpu_ns == 2_000_000 and db.cpu_percent == pytest.approx(0.01)
    assert [(a, [line.text for line in lines]) for a, _, lines in node.sink.got[before:]] == [
        (C_APP, ["GET / 200"]),
        (V_APP, ["guest: tick"]),
    ]
    # Nothing new: the sink is not called.
    before = len(node.sink.got)
    await tel.sample_once()
    assert len(node.sink.got) == before


async def test_console_lines_are_bounded_per_round(node: Node) -> None:
    node.console(V_APP, "".join(f"chatty {i:04d}\n" for i in range(1000)))
    tel = node.telemetry(max_bytes=4096)
    rounds = 0
    while "chatty 0999" not in node.sink.texts(V_APP):
        await tel.sample_once()
        rounds += 1
        assert rounds < 20
    assert rounds >= 3
    chatty = [t for t in node.sink.texts(V_APP) if t.startswith("chatty")]
    assert chatty == [f"chatty {i:04d}" for i in range(1000)]


async def test_a_vm_restart_starts_a_new_cpu_rate(node: Node) -> None:
    tel = node.telemetry()
    await tel.sample_once()
    await node.hypervisor.destroy(uuid.UUID(V_APP))
    node.clock.advance(10)
    await tel.sample_once()
    db = tel.latest()[1]
    assert (db.cpu_ns, db.memory_bytes, db.cpu_percent) == (0, 0, None)
    assert db.memory_max_bytes == 128 << 20
    domain = node.hypervisor.domains[node.hypervisor.domain_name(uuid.UUID(V_APP))]
    domain.state = DomainState.RUNNING  # started again
    node.clock.advance(10)
    await tel.sample_once()
    assert tel.latest()[1].cpu_percent is None  # the first sample of the new run
    node.clock.advance(10)
    await tel.sample_once()
    assert tel.latest()[1].cpu_percent == pytest.approx(0.01)


async def test_uptime_from_the_boot_time(node: Node) -> None:
    boots = {C_APP: node.clock.wall - 30, V_APP: 0.0}
    tel = node.telemetry(boot_time=boots.__getitem__)
    await tel.sample_once()
    web, db = tel.latest()
    assert web.uptime == 30 and db.uptime is None


async def test_an_app_failing_is_logged_once_and_the_others_go_on(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    tel = node.telemetry()
    node.containers.down = True
    with caplog.at_level(logging.INFO, logger="agent.reconcile.apptelemetry"):
        for _ in range(3):
            node.clock.advance(10)
            node.console(V_APP, "alive\n")
            await tel.sample_once()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and C_APP in warnings[0] and "dockerd unreachable" in warnings[0]
        assert node.sink.texts(V_APP).count("alive") == 3
        web, db = tel.latest()
        assert web.cpu_ns == 0 and web.name == "web"  # listed, without figures
        assert db.cpu_ns > 0
        node.containers.down = False
        await tel.sample_once()
        assert any("sampled again" in r.getMessage() for r in caplog.records)
    assert tel.latest()[0].cpu_ns > 0


async def test_a_failing_sink_gets_the_same_lines_again(node: Node) -> None:
    node.sink.fail = 2
    tel = node.telemetry()
    await tel.sample_once()  # both apps' lines refused
    assert node.sink.got == []
    await tel.sample_once()
    assert node.sink.texts(C_APP)[-1] == "ready"
    assert node.sink.texts(V_APP)[-1] == "eve-test-guest: running"
    assert len(node.sink.got) == 2


class SlowHypervisor(FakeHypervisor):
    """Its stats wait for ``release``."""

    def __init__(self, inner: FakeHypervisor) -> None:
        super().__init__(inner._settings)
        self.domains = inner.domains
        self.release = asyncio.Event()
        self.calls_waiting = 0

    async def stats(self, app_uuid: uuid.UUID) -> DomainStats:
        self.calls_waiting += 1
        try:
            await self.release.wait()
        finally:
            self.calls_waiting -= 1
        return await super().stats(app_uuid)


async def test_a_slow_app_delays_no_one(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    slow = SlowHypervisor(node.hypervisor)
    tel = node.telemetry(hypervisor=slow, app_timeout=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await tel.sample_once()
    assert loop.time() - started < 1.0
    web, db = tel.latest()
    assert web.cpu_ns > 0 and db.cpu_ns == 0
    # Still stuck: the next rounds skip it (one sample in flight at most) and say so once.
    with caplog.at_level(logging.WARNING, logger="agent.reconcile.apptelemetry"):
        await tel.sample_once()
        await tel.sample_once()
    assert slow.calls_waiting == 1
    assert sum("still busy" in r.getMessage() for r in caplog.records) == 1
    # Once it answers, its sample lands and the following rounds sample it again.
    slow.release.set()
    await until(lambda: tel.latest()[1].cpu_ns > 0, what="the late sample")
    await tel.sample_once()
    assert slow.calls_waiting == 0


async def test_apps_that_leave_are_forgotten(node: Node) -> None:
    slow = SlowHypervisor(node.hypervisor)
    tel = node.telemetry(hypervisor=slow, app_timeout=0.01)
    await tel.sample_once()
    assert [m.app_uuid for m in tel.latest()] == [C_APP, V_APP]
    node.targets = [node.targets[0]]
    await tel.sample_once()
    assert [m.app_uuid for m in tel.latest()] == [C_APP]
    await until(lambda: slow.calls_waiting == 0, what="the cancelled sample")
    # Back again: sampled from scratch (the console read from its start once more).
    node.targets.append(AppTarget(V_APP, "db2", "vm"))
    slow.release.set()
    await tel.sample_once()
    assert tel.latest()[1].name == "db2"


async def test_other_runtimes_and_missing_drivers(node: Node) -> None:
    node.targets.append(AppTarget("6ba7b812-9dad-11d1-80b4-00c04fd430c8", "k", "kubevirt"))  # type: ignore[arg-type]
    tel = node.telemetry(hypervisor=None)
    await tel.sample_once()
    assert [m.app_uuid for m in tel.latest()] == [C_APP, V_APP]
    assert tel.latest()[1].cpu_ns == 0
    assert V_APP not in {app for app, _, _ in node.sink.got}


def state_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def test_read_positions_survive_a_restart(node: Node) -> None:
    state = node.tmp / "telemetry.json"
    tel = node.telemetry(state_file=state)
    await tel.sample_once()
    saved = state_of(state)["apps"]
    assert set(saved) == {C_APP, V_APP}
    assert saved[V_APP]["offset"] == node.hypervisor.console_log(uuid.UUID(V_APP)).stat().st_size
    await tel.close()

    # While the agent is down, both apps print more.
    node.print(C_APP, "while away", T0 + timedelta(days=2))
    node.console(V_APP, "while away too\n")
    node.sink.got.clear()
    again = node.telemetry(state_file=state)
    await again.sample_once()
    assert node.sink.texts(C_APP) == ["while away"]
    assert node.sink.texts(V_APP) == ["while away too"]


async def test_saved_positions_wait_for_their_apps(node: Node) -> None:
    state = node.tmp / "telemetry.json"
    tel = node.telemetry(state_file=state)
    await tel.sample_once()
    before = state_of(state)
    # After a restart the reconciler has not found the apps yet: nothing is lost meanwhile.
    targets, node.targets = node.targets, []
    again = node.telemetry(state_file=state)
    await again.sample_once()
    assert state_of(state) == before
    node.targets = targets
    node.sink.got.clear()
    await again.sample_once()
    assert node.sink.got == []  # resumed where the first run stopped
    # An app gone for good (not back within the grace time) loses its saved position.
    node.targets = [targets[0]]
    node.clock.advance(7200)
    third = node.telemetry(state_file=state)
    await third.sample_once()
    node.clock.advance(7200)
    await third.sample_once()
    assert set(state_of(state)["apps"]) == {C_APP}


async def test_a_corrupt_state_file_starts_over(node: Node) -> None:
    state = node.tmp / "telemetry.json"
    state.write_text("{not json")
    tel = node.telemetry(state_file=state)
    await tel.sample_once()
    assert node.sink.texts(C_APP)[-1] == "ready"
    assert set(state_of(state)["apps"]) == {C_APP, V_APP}


async def test_run_rounds_until_stopped(node: Node) -> None:
    items = parse_items([("timer.metric.interval", "5")])
    state = node.tmp / "telemetry.json"
    tel = AppTelemetry(
        targets=lambda: node.targets,
        containers=node.containers,
        hypervisor=node.hypervisor,
        items=lambda: items,
        sink=node.sink,
        state_file=state,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(tel.run(stop))
    await until(lambda: tel.rounds == 1, what="the first round")
    stop.set()
    await asyncio.wait_for(task, 2)
    assert tel.rounds == 1 and state.exists()


async def test_container_failure_does_not_lose_lines(node: Node) -> None:
    tel = node.telemetry()
    await tel.sample_once()
    node.print(C_APP, "one", T0 + timedelta(days=1))
    node.containers.down = True
    await tel.sample_once()
    node.print(C_APP, "two", T0 + timedelta(days=1, seconds=1))
    node.containers.down = False
    await tel.sample_once()
    assert node.sink.texts(C_APP)[-2:] == ["one", "two"]


async def test_a_transient_driver_error_is_one_warning(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    tel = node.telemetry()
    node.hypervisor.fail_next("stats", TemporaryError("libvirt busy"))
    with caplog.at_level(logging.WARNING, logger="agent.reconcile.apptelemetry"):
        await tel.sample_once()
        await tel.sample_once()
    assert [r.getMessage() for r in caplog.records] == [
        f"app telemetry: {V_APP}: metrics: libvirt busy"
    ]
