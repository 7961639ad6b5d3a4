"""controller.deviceops: raising the reboot and shutdown counters, keeping them across config
files, and the device's own report of its boots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.wire import envelope, pki
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.info import info_pb2
from controller import configs, deviceops
from controller.deviceops import Operation
from controller.records import ReportKind
from controller.store import Store, UnknownDevice


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "db.sqlite") as opened:
        yield opened


def register(store: Store) -> str:
    cert = pki.make_certificate(pki.new_ec_key(), "device")
    _outcome, device = store.register_device(
        onboard_sha256="aa", serial="s1", cert_pem=cert.public_bytes(Encoding.PEM),
        cert_sha256=envelope.device_cert_hash(cert), default_config=configs.default_config,
    )  # fmt: skip
    return device.uuid


def current(store: Store, uuid: str) -> devconfig_pb2.EdgeDevConfig:
    found = store.current_config(uuid)
    assert found is not None
    return devconfig_pb2.EdgeDevConfig.FromString(found.config)


def device_info(store: Store, uuid: str, *, reboot: int, reason: int) -> None:
    msg = info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, devId=uuid)
    msg.dinfo.rebootConfigCounter = reboot
    msg.dinfo.last_boot_reason = reason  # type: ignore[assignment]
    msg.dinfo.restartCounter = 4
    msg.dinfo.lastRebootTime.seconds = 1_700_000_000
    msg.dinfo.state = info_pb2.ZDEVICE_STATE_ONLINE
    store.add_report(uuid, ReportKind.INFO, msg.SerializeToString(), None)
    other = info_pb2.ZInfoMsg(ztype=info_pb2.ZiApp, devId=uuid)  # newer, not a device info
    store.add_report(uuid, ReportKind.INFO, other.SerializeToString(), None)


def test_bump_raises_above_config_and_report(store: Store) -> None:
    uuid = register(store)
    counter, stored = deviceops.bump(store, uuid, Operation.REBOOT, now=1_800_000_000)
    assert (counter, stored.version) == (1, 1)
    config = current(store, uuid)
    assert (config.reboot.counter, config.reboot.desiredState) == (1, True)
    assert config.reboot.opsTime.startswith("2027-01-15")
    assert config.id.version == "1" and config.shutdown.counter == 0
    # The device reports it handled 7 (an older controller database): the next is 8.
    device_info(store, uuid, reboot=7, reason=info_pb2.BOOT_REASON_REBOOT_CMD)
    assert deviceops.bump(store, uuid, Operation.REBOOT)[0] == 8
    assert deviceops.bump(store, uuid, Operation.SHUTDOWN)[0] == 1
    assert (current(store, uuid).reboot.counter, current(store, uuid).shutdown.counter) == (8, 1)
    with pytest.raises(UnknownDevice):
        deviceops.bump(store, "00000000-0000-4000-8000-000000000000", Operation.REBOOT)


def test_a_new_config_file_keeps_the_counters(store: Store) -> None:
    uuid = register(store)
    deviceops.bump(store, uuid, Operation.REBOOT)
    deviceops.bump(store, uuid, Operation.REBOOT)
    new = devconfig_pb2.EdgeDevConfig()
    deviceops.carry_counters(store, uuid, new)
    assert new.reboot.counter == 2 and not new.HasField("shutdown")
    explicit = devconfig_pb2.EdgeDevConfig()
    explicit.reboot.counter = 9
    deviceops.carry_counters(store, uuid, explicit)
    assert explicit.reboot.counter == 9


def test_power_summary(store: Store) -> None:
    uuid = register(store)
    summary = deviceops.power_summary(store, uuid)
    assert summary == {"asked": {"reboot": 0, "shutdown": 0}, "reported": None}
    assert deviceops.power_text(summary).endswith("no device info yet")
    deviceops.bump(store, uuid, Operation.REBOOT)
    device_info(store, uuid, reboot=1, reason=info_pb2.BOOT_REASON_POWER_FAIL)
    summary = deviceops.power_summary(store, uuid)
    reported = summary["reported"]
    assert (reported["reboot"], reported["last_boot_reason"], reported["state"]) == (
        1, "POWER_FAIL", "ONLINE")  # fmt: skip
    assert reported["restart_counter"] == 4
    assert reported["last_reboot_time"] == "2023-11-14T22:13:20.000Z"
    text = deviceops.power_text(summary)
    assert "asked reboot 1 shutdown 0; handled reboot 1 shutdown 0; ONLINE" in text
    assert "last boot POWER_FAIL (#5, 2023-11-14T22:13:20.000Z)" in text
