"""agent.util.bootreason: the boot reason recorded or reconstructed, the restart counter, and
agent restarts within one boot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.util.bootreason import (
    BootReason,
    boot_id,
    establish,
    forget_boot_id,
    mark_clean_stop,
    reconstruct,
    record_boot_reason,
)
from agent.wire.pb.info import info_pb2


def test_reason_values_are_the_wire_enum() -> None:
    for reason in BootReason:
        assert info_pb2.BootReason.Value(f"BOOT_REASON_{reason.name}") == reason.value


def test_first_boot_then_power_failure_then_a_recorded_reboot(tmp_path: Path) -> None:
    first = establish(tmp_path, "boot-1", now=100.0)
    assert (first.reason, first.restart_counter, first.time) == (BootReason.FIRST, 0, 100.0)
    assert "First boot" in first.text
    # No clean stop and no recorded reason: the previous boot ended with the agent running.
    lost = establish(tmp_path, "boot-2", now=200.0)
    assert (lost.reason, lost.restart_counter) == (BootReason.POWER_FAIL, 1)
    record_boot_reason(tmp_path, BootReason.REBOOT_CMD, "controller reboot", now=250.0)
    mark_clean_stop(tmp_path, "boot-2")
    commanded = establish(tmp_path, "boot-3", now=300.0)
    assert (commanded.reason, commanded.text, commanded.time, commanded.restart_counter) == (
        BootReason.REBOOT_CMD, "controller reboot", 250.0, 2)  # fmt: skip
    assert not (tmp_path / "status" / "boot-reason.json").exists(), "taken once"
    assert (tmp_path / "status" / "restartcounter").read_text() == "3"


def test_clean_stop_without_a_reason_is_unknown(tmp_path: Path) -> None:
    establish(tmp_path, "boot-1", now=1.0)
    mark_clean_stop(tmp_path, "boot-1")
    assert establish(tmp_path, "boot-2", now=2.0).reason is BootReason.UNKNOWN


def test_an_agent_restart_in_the_same_boot_keeps_the_record(tmp_path: Path) -> None:
    establish(tmp_path, "boot-1", now=1.0)
    record_boot_reason(tmp_path, BootReason.UPDATE, "new base OS", now=5.0)
    mark_clean_stop(tmp_path, "boot-1")
    booted = establish(tmp_path, "boot-2", now=10.0)
    # The agent crashes and systemd restarts it: same boot, same reason and counter.
    again = establish(tmp_path, "boot-2", now=20.0)
    assert again == booted and again.reason is BootReason.UPDATE
    # ... and the crash made the stop unclean again: a power loss now is a power failure.
    assert establish(tmp_path, "boot-3", now=30.0).reason is BootReason.POWER_FAIL


def test_unreadable_files_are_reconstructed(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.mkdir()
    (status / "restartcounter").write_text("garbage")
    (status / "boot-reason.json").write_text("{not json")
    (status / "boot.json").write_text("[]")
    record = establish(tmp_path, "boot-9", now=1.0)
    assert (record.reason, record.restart_counter) == (BootReason.POWER_FAIL, 0)
    assert json.loads((status / "boot.json").read_text())["boot_id"] == "boot-9"


def test_reconstruct_rules() -> None:
    assert reconstruct(None, None, None, 0.0).reason is BootReason.FIRST
    assert reconstruct(None, 4, False, 0.0).reason is BootReason.POWER_FAIL
    assert reconstruct(None, 4, None, 0.0).reason is BootReason.POWER_FAIL
    assert reconstruct(None, 4, True, 0.0).reason is BootReason.UNKNOWN
    recorded = {"reason": int(BootReason.FALLBACK), "text": "t", "time": 3.0}
    assert reconstruct(recorded, 4, True, 9.0).reason is BootReason.FALLBACK
    assert reconstruct({"reason": 999}, 4, True, 9.0).reason is BootReason.UNKNOWN


def test_emulated_boot_id_lives_in_the_run_directory(tmp_path: Path) -> None:
    first = boot_id(tmp_path)
    assert boot_id(tmp_path) == first
    forget_boot_id(tmp_path)
    assert boot_id(tmp_path) != first


def test_real_boot_id_is_the_kernels() -> None:
    path = Path("/proc/sys/kernel/random/boot_id")
    if not path.exists():
        pytest.skip("no /proc boot id here")
    assert boot_id(None) == path.read_text().strip()
