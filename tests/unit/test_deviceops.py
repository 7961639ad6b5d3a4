"""agent.link.deviceops (the controller's reboot and shutdown counters) and agent.drivers.power
(its drivers: systemd through a stand-in systemctl, the emulated node's, the fake)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from agent.drivers.power import EmulatedPower, FakePower, PowerError, SystemdPower
from agent.link.deviceops import DeviceOps, Operation, PowerFacts, add_power_info
from agent.model.config import NodeConfig, OpsCounter
from agent.model.configitems import ConfigItems
from agent.util.bootreason import BootReason, BootRecord, boot_id, establish
from agent.wire.pb.info import info_pb2


def config(reboot: int = 0, shutdown: int = 0) -> NodeConfig:
    return NodeConfig("dev", "1", 0.0, ConfigItems(), reboot=OpsCounter(reboot),
                      shutdown=OpsCounter(shutdown))  # fmt: skip


class Harness:
    def __init__(self, persist: Path, power: FakePower | None = None) -> None:
        self.power = power or FakePower()
        self.events: list[str] = []
        self.stopped = asyncio.Event()
        self.ops = DeviceOps(persist, self.power, announce=self.announce,
                             halt_apps=self.halt, stopped=self.stopped.set)  # fmt: skip
        self.ops.load()

    async def announce(self) -> None:
        facts = self.ops.facts()
        self.events.append(f"announce {facts.reboot_counter} {facts.in_progress}")

    async def halt(self, within: float) -> None:
        self.events.append(f"halt {within:.0f}")


async def test_first_config_only_records_then_an_increase_reboots(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert await h.ops.offer(config(reboot=5, shutdown=2)) is None
    assert h.power.calls == [] and h.ops.in_progress is None
    assert json.loads(h.ops.file.read_text()) == {"reboot": 5, "shutdown": 2}
    assert await h.ops.offer(config(reboot=5, shutdown=2)) is None
    assert await h.ops.offer(config(reboot=6, shutdown=2)) is Operation.REBOOT
    await h.ops.wait()
    assert h.events == ["announce 6 reboot", "halt 120"]
    assert [c[0] for c in h.power.calls] == ["reboot"]
    assert h.stopped.is_set()
    # Recorded before anything else; the boot reason is there for the next boot.
    assert json.loads(h.ops.file.read_text())["reboot"] == 6
    record = establish(tmp_path, "next-boot")
    assert record.reason is BootReason.REBOOT_CMD and "counter 6" in record.text


async def test_a_restart_does_not_redo_the_command(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.ops.offer(config(reboot=1))
    await h.ops.offer(config(reboot=2))
    await h.ops.wait()
    again = Harness(tmp_path)  # after the reboot: the same config comes from the checkpoint
    assert await again.ops.offer(config(reboot=2)) is None
    assert again.power.calls == [] and again.ops.facts().reboot_counter == 2


async def test_shutdown_halts_the_apps_and_the_node_stays_up(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.ops.offer(config(reboot=3, shutdown=3))
    assert await h.ops.offer(config(reboot=1, shutdown=3)) is None  # went back: recorded
    assert h.ops.facts().reboot_counter == 1
    assert await h.ops.offer(config(reboot=1, shutdown=4)) is Operation.SHUTDOWN
    assert h.ops.facts().in_progress is Operation.SHUTDOWN
    # While it runs, another raise is recorded and ignored.
    assert await h.ops.offer(config(reboot=1, shutdown=5)) is None
    await h.ops.wait()
    # EVE's shutdown: every app halted, announced before and after, no power request.
    assert h.events == ["announce 1 shutdown", "halt 120", "announce 1 None"]
    assert h.power.calls == [] and not h.stopped.is_set()
    facts = h.ops.facts()
    assert facts.apps_shut_down and facts.in_progress is None and facts.shutdown_counter == 5
    # A reboot afterwards (how an operator brings the apps back) is taken.
    assert await h.ops.offer(config(reboot=2, shutdown=5)) is Operation.REBOOT
    await h.ops.wait()
    assert [c[0] for c in h.power.calls] == ["reboot"]
    assert establish(tmp_path, "b").reason is BootReason.REBOOT_CMD


async def test_both_raised_at_once_reboot_wins(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.ops.offer(config(reboot=1, shutdown=1))
    assert await h.ops.offer(config(reboot=2, shutdown=2)) is Operation.REBOOT


async def test_a_reboot_waits_for_the_base_os_test(tmp_path: Path) -> None:
    testing = True
    h = Harness(tmp_path)
    h.ops = DeviceOps(tmp_path, h.power, announce=h.announce, halt_apps=h.halt,
                      stopped=h.stopped.set, deferred=lambda: testing)  # fmt: skip
    await h.ops.offer(config(reboot=1))
    assert await h.ops.offer(config(reboot=2)) is None
    assert h.ops.pending is Operation.REBOOT and h.ops.facts().reboot_counter == 2
    assert await h.ops.offer(config(reboot=2)) is None  # still testing
    testing = False
    assert await h.ops.offer(config(reboot=2)) is Operation.REBOOT
    await h.ops.wait()
    assert [c[0] for c in h.power.calls] == ["reboot"] and h.ops.pending is None


async def test_a_refused_power_request_leaves_the_node_up(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakePower(fail="systemd said no"))
    await h.ops.offer(config(reboot=1))
    await h.ops.offer(config(reboot=2))
    await h.ops.wait()
    assert h.ops.in_progress is None and not h.stopped.is_set()
    assert h.ops.facts().reboot_counter == 2  # taken: raising it again asks again
    assert await h.ops.offer(config(reboot=3)) is Operation.REBOOT


async def test_a_failed_record_starts_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "status"
    blocker.write_text("a file where the directory should be")
    h = Harness(tmp_path)
    with pytest.raises(OSError):
        await h.ops.offer(config(reboot=1))
    assert h.ops.in_progress is None and h.power.calls == []


def test_device_info_fields() -> None:
    dinfo = info_pb2.ZInfoDevice(state=info_pb2.ZDEVICE_STATE_ONLINE)
    boot = BootRecord(BootReason.POWER_FAIL, "lost power", 1700000000.5, 7)
    add_power_info(dinfo, PowerFacts(boot, 4, 2))
    assert dinfo.last_boot_reason == info_pb2.BOOT_REASON_POWER_FAIL
    assert (dinfo.lastRebootReason, dinfo.restartCounter) == ("lost power", 7)
    assert dinfo.lastRebootTime.seconds == 1700000000
    assert (dinfo.rebootConfigCounter, dinfo.shutdown_config_counter) == (4, 2)
    assert dinfo.state == info_pb2.ZDEVICE_STATE_ONLINE and not dinfo.reboot_inprogress
    add_power_info(dinfo, PowerFacts(boot, 5, 2, Operation.REBOOT))
    assert dinfo.state == info_pb2.ZDEVICE_STATE_REBOOTING and dinfo.reboot_inprogress
    add_power_info(dinfo, PowerFacts(None, 5, 3, Operation.SHUTDOWN))
    assert dinfo.state == info_pb2.ZDEVICE_STATE_PREPARING_POWEROFF and not dinfo.reboot_inprogress
    add_power_info(dinfo, PowerFacts(None, 5, 3, None, apps_shut_down=True))
    assert dinfo.state == info_pb2.ZDEVICE_STATE_PREPARED_POWEROFF
    # Maintenance mode and a base OS update say more (EVE's precedence).
    dinfo.state = info_pb2.ZDEVICE_STATE_BASEOS_UPDATING
    add_power_info(dinfo, PowerFacts(None, 5, 3, Operation.REBOOT))
    assert dinfo.state == info_pb2.ZDEVICE_STATE_BASEOS_UPDATING


async def test_emulated_power_records_and_starts_a_new_boot(tmp_path: Path) -> None:
    power = EmulatedPower(tmp_path / "run")
    before = boot_id(power.run)
    await power.reboot("asked")
    await power.poweroff("asked again")
    assert [(r.action, r.reason) for r in power.requests()] == [
        ("reboot", "asked"), ("poweroff", "asked again")]  # fmt: skip
    assert boot_id(power.run) != before


async def test_systemd_power_asks_systemctl(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" != poweroff ] || exit 3\n')
    os.chmod(systemctl, 0o755)
    power = SystemdPower(str(systemctl))
    await power.reboot("because")
    assert calls.read_text() == "reboot --no-block --no-wall\n"
    with pytest.raises(PowerError, match="systemctl poweroff"):
        await power.poweroff("because")
    with pytest.raises(PowerError):
        await SystemdPower(str(tmp_path / "missing")).reboot("x")


async def test_an_older_saved_config_does_not_lower_the_counter(tmp_path: Path) -> None:
    """After an unclean stop the node may run lastconfig.bak, older than the last config: its
    lower counter must not be recorded, or the controller's next config would repeat the
    command."""
    h = Harness(tmp_path)
    await h.ops.offer(config(reboot=0))
    await h.ops.offer(config(reboot=1))
    await h.ops.wait()
    again = Harness(tmp_path)
    assert await again.ops.offer(config(reboot=0), saved=True) is None
    assert await again.ops.offer(config(reboot=1)) is None
    assert again.power.calls == [] and again.ops.facts().reboot_counter == 1
    # A saved config with a counter the node never handled is a command still to do.
    assert await again.ops.offer(config(reboot=2), saved=True) is Operation.REBOOT
