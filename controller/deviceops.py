"""Reboot and shutdown commands for a device, and what it reports of its boots.

EVE's device operations are counters in the config (``EdgeDevConfig.reboot`` and ``.shutdown``,
``DeviceOpsCmd.counter``): the device acts when one rises above the last it handled, and reports
the counters it handled (``rebootConfigCounter``, ``shutdown_config_counter``) with why it last
booted (``last_boot_reason``, ``lastRebootReason``, ``lastRebootTime``, ``restartCounter``).

* :func:`bump` stores a new config version: the current one with the counter raised.  The new
  counter is above both the current config's and the one the device last reported, so it is an
  increase for the device even when someone replaced the config with one without counters.
* :func:`carry_counters`: ``config set`` keeps the current counters when the operator's file has
  none (a new file must not lower them: the device would only record a lower counter).
* :func:`power_summary`: for ``device show``, from the newest device info stored.

The CLI (``device reboot|shutdown UUID``) is :mod:`controller.poweradmin`.
"""

from __future__ import annotations

import enum
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.info import info_pb2
from controller import configs
from controller.records import ConfigVersion, ReportKind, rfc3339
from controller.store import Store, UnknownDevice

#: How many of the newest info reports to search for a device info (the others are per object).
INFO_SEARCH = 500


class Operation(enum.StrEnum):
    REBOOT = "reboot"
    SHUTDOWN = "shutdown"


def _current(store: Store, device_uuid: str) -> devconfig_pb2.EdgeDevConfig:
    current = store.current_config(device_uuid)
    config = devconfig_pb2.EdgeDevConfig()
    if current is not None:
        config.ParseFromString(current.config)
    return config


def latest_device_info(store: Store, device_uuid: str) -> tuple[float, info_pb2.ZInfoDevice] | None:
    """The newest stored device info (``ZInfoMsg`` of type ``ZiDevice``) and when it came."""
    for report in reversed(store.reports(device_uuid, ReportKind.INFO, last=INFO_SEARCH)):
        msg = info_pb2.ZInfoMsg()
        try:
            msg.ParseFromString(report.raw)
        except ValueError:
            continue
        if msg.ztype == info_pb2.ZiDevice and msg.HasField("dinfo"):
            return report.received_at, msg.dinfo
    return None


def bump(
    store: Store, device_uuid: str, operation: Operation, *, now: float | None = None
) -> tuple[int, ConfigVersion]:
    """Store the device's next config version with ``operation``'s counter raised; returns the
    new counter and the stored version.  Raises UnknownDevice."""
    store.require_device(device_uuid)
    config = _current(store, device_uuid)
    field = config.reboot if operation is Operation.REBOOT else config.shutdown
    reported = 0
    latest = latest_device_info(store, device_uuid)
    if latest is not None:
        dinfo = latest[1]
        reported = (
            dinfo.rebootConfigCounter
            if operation is Operation.REBOOT
            else dinfo.shutdown_config_counter
        )
    counter = max(field.counter, reported) + 1
    field.counter = counter
    field.desiredState = True
    stamp = configs.timestamp_from_unix(store.now() if now is None else now)
    field.opsTime = stamp.ToJsonString()
    stored = store.add_config(
        device_uuid,
        lambda version: configs.stamp(
            config, device_uuid=device_uuid, version=version, timestamp=stamp
        ),
    )
    return counter, stored


def carry_counters(store: Store, device_uuid: str, config: devconfig_pb2.EdgeDevConfig) -> None:
    """Copy the current config's reboot and shutdown commands into ``config`` where it has
    none (in place)."""
    try:
        current = _current(store, device_uuid)
    except UnknownDevice:
        return
    for name in ("reboot", "shutdown"):
        if not config.HasField(name) and current.HasField(name):
            getattr(config, name).CopyFrom(getattr(current, name))


def _time(stamp: Timestamp) -> str | None:
    """The device's time as RFC 3339; None when unset or out of the range a date can hold
    (the device chooses it)."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return None
    try:
        return rfc3339(stamp.seconds + stamp.nanos / 1e9)
    except (OverflowError, OSError, ValueError):
        return None


def _name(enum_type: Any, value: int, prefix: str) -> str:
    """An enum value's name without ``prefix``, or ``UNKNOWN(value)`` for a number this
    schema lacks (proto3 enums are open: a device may send any)."""
    try:
        return str(enum_type.Name(value)).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN({value})"


def reported_power(received: float, dinfo: info_pb2.ZInfoDevice) -> dict[str, Any]:
    """What a device info says about power operations; any decodable message gives a value."""
    return {
        "at": rfc3339(received),
        "reboot": dinfo.rebootConfigCounter,
        "shutdown": dinfo.shutdown_config_counter,
        "state": _name(info_pb2.ZDeviceState, dinfo.state, "ZDEVICE_STATE_"),
        "last_boot_reason": _name(info_pb2.BootReason, dinfo.last_boot_reason, "BOOT_REASON_"),
        "last_reboot_reason": dinfo.lastRebootReason,
        "last_reboot_time": _time(dinfo.lastRebootTime),
        "restart_counter": dinfo.restartCounter,
        "reboot_inprogress": dinfo.reboot_inprogress,
    }


def power_summary(store: Store, device_uuid: str) -> dict[str, Any]:
    """The asked counters (current config) and what the device reported last (its newest
    device info): counters handled, state, boot reason, restart counter."""
    config = _current(store, device_uuid)
    out: dict[str, Any] = {
        "asked": {"reboot": config.reboot.counter, "shutdown": config.shutdown.counter},
        "reported": None,
    }
    latest = latest_device_info(store, device_uuid)
    if latest is not None:
        out["reported"] = reported_power(*latest)
    return out


def power_text(summary: dict[str, Any]) -> str:
    """One line for ``device show``."""
    asked = summary["asked"]
    text = f"asked reboot {asked['reboot']} shutdown {asked['shutdown']}"
    reported = summary.get("reported")
    if reported is None:
        return text + "; no device info yet"
    return (
        f"{text}; handled reboot {reported['reboot']} shutdown {reported['shutdown']}; "
        f"{reported['state']}; last boot {reported['last_boot_reason']}"
        f" (#{reported['restart_counter'] + 1}, {reported['last_reboot_time'] or '-'})"
    )
