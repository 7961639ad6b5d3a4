"""Why the node booted, and how many times: EVE's boot reason and restart counter.

EVE's nodeagent works out at each boot why the previous one ended and reports it in the device
info (``last_boot_reason``, ``lastRebootReason``, ``lastRebootTime``, ``restartCounter``).  Who
takes a node down on purpose writes the reason to ``/persist`` first; a boot that finds none
reconstructs one.  The files, all in ``<persist>/status`` (written atomically):

* ``boot-reason.json`` - the reason recorded before a deliberate reboot or power-off
  (:func:`record_boot_reason`: the controller's reboot and shutdown commands, and a base-OS update
  or fallback).  Taken, and removed, at the next boot.
* ``restartcounter`` - EVE's file of the same name: the number of boots seen so far, as decimal
  text.  The value reported is the count *before* this boot, as EVE's ``incrementRestartCounter``.
* ``boot.json`` - this boot's outcome (its id, reason, text, time, restart counter) and whether
  the agent stopped cleanly since, so that an agent restart within one boot keeps the boot's
  reason instead of inventing a new one.

Reconstruction when nothing was recorded (what EVE does with ``/run/global/first-boot`` and the
disk's S.M.A.R.T. power-cycle count; this agent has no S.M.A.R.T. source, so the clean-stop mark
plays that part):

* no restart counter yet: ``FIRST`` (the first boot of this installation);
* the agent was still running when the previous boot ended (it never stopped cleanly): the node
  lost power, or its kernel crashed: ``POWER_FAIL``.  EVE tells the two apart by the power-cycle
  count (a crash is ``KERNEL``); without it a crash is reported as a power failure too;
* the agent stopped cleanly but nobody recorded why: the host was shut down or rebooted by
  someone else than the controller (a person, the OS): ``UNKNOWN``.

A *boot* is identified by the kernel's boot id on a real node; an emulated node (``--root``) has
its own in its run directory, which its "reboot" removes (:func:`forget_boot_id`), as a real
reboot empties ``/run``.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.util.atomicfile import read_optional, write_atomic

#: The kernel's id of the running boot (a new random UUID at each boot).
KERNEL_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class BootReason(enum.IntEnum):
    """EVE's ``BootReason`` (``info.BootReason``), with the wire values."""

    UNSPECIFIED = 0
    FIRST = 1
    REBOOT_CMD = 2
    UPDATE = 3
    FALLBACK = 4
    DISCONNECT = 5
    FATAL = 6
    OOM = 7
    WATCHDOG_HUNG = 8
    WATCHDOG_PID = 9
    KERNEL = 10
    POWER_FAIL = 11
    UNKNOWN = 12
    VAULT_FAILED = 13
    POWEROFF_CMD = 14


@dataclass(frozen=True)
class BootRecord:
    """What the device info says about the last boot."""

    reason: BootReason
    #: EVE's ``lastRebootReason``: a sentence.
    text: str
    #: EVE's ``lastRebootTime`` (Unix time): when the reason was recorded, or, for a
    #: reconstructed one, when this boot noticed it.
    time: float
    #: Boots before this one (EVE's ``restartCounter``).
    restart_counter: int


def _status(persist: Path) -> Path:
    return persist / "status"


def _json(path: Path) -> dict[str, Any] | None:
    data = read_optional(path)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurd nesting
        return None
    return value if isinstance(value, dict) else None


def record_boot_reason(
    persist: Path, reason: BootReason, text: str, *, now: float | None = None
) -> None:
    """Record why the node is about to go down, for the next boot to report.  Call it right
    before rebooting or powering off (the last one recorded wins).  Blocking (fsync); raises
    OSError (:class:`agent.util.atomicfile.StorageError` when the disk refuses it)."""
    entry = {"reason": int(reason), "text": text, "time": time.time() if now is None else now}
    write_atomic(_status(persist) / "boot-reason.json", json.dumps(entry).encode())


def boot_id(run: Path | None) -> str:
    """The id of the running boot: the kernel's (``run`` None: a real node), else an emulated
    node's own, made on first use in its run directory."""
    if run is None:
        return KERNEL_BOOT_ID.read_text().strip()
    path = run / "boot_id"
    data = read_optional(path)
    if data:
        return data.decode().strip()
    made = str(uuid.uuid4())
    write_atomic(path, made.encode() + b"\n")
    return made


def forget_boot_id(run: Path) -> None:
    """An emulated node's reboot: its next start is a new boot."""
    (run / "boot_id").unlink(missing_ok=True)


def establish(persist: Path, current_boot: str, *, now: float | None = None) -> BootRecord:
    """At the agent's start: this boot's record.  The first start in a boot takes the recorded
    reason (or reconstructs one, see the module), counts the boot and marks the agent running;
    a later start in the same boot returns the same record.  Blocking; raises OSError when
    ``/persist`` cannot be written (the caller may report it and carry on with the result of
    :func:`reconstruct`)."""
    now = time.time() if now is None else now
    status = _status(persist)
    state = _json(status / "boot.json")
    if state is not None and state.get("boot_id") == current_boot:
        record = _record(state)
        if record is not None:
            _save_state(persist, current_boot, record, clean_stop=False)
            return record
    counter_text = read_optional(status / "restartcounter")
    try:
        counter = int(counter_text) if counter_text is not None else None
    except ValueError:
        counter = 0
    recorded = _json(status / "boot-reason.json")
    clean = bool(state.get("clean_stop")) if state is not None else None
    record = reconstruct(recorded, counter, clean, now)
    write_atomic(status / "restartcounter", str(record.restart_counter + 1).encode())
    _save_state(persist, current_boot, record, clean_stop=False)
    (status / "boot-reason.json").unlink(missing_ok=True)
    return record


def reconstruct(
    recorded: dict[str, Any] | None, counter: int | None, clean_stop: bool | None, now: float
) -> BootRecord:
    """The reason of a new boot from what the previous one left (pure): the recorded reason,
    else the rules of the module's docstring.  ``counter`` None: no boot was counted before."""
    restarts = counter or 0
    if recorded is not None:
        try:
            return BootRecord(
                BootReason(int(recorded["reason"])),
                str(recorded.get("text", "")),
                float(recorded.get("time", now)),
                restarts,
            )
        except (KeyError, TypeError, ValueError):
            pass  # unreadable: reconstructed as if nothing was recorded
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    if counter is None:
        return BootRecord(BootReason.FIRST, f"NORMAL: First boot of device - at {stamp}", now, 0)
    if clean_stop:
        text = f"Unknown reboot reason - shut down or rebooted, not by the controller - at {stamp}"
        return BootRecord(BootReason.UNKNOWN, text, now, restarts)
    text = (
        f"Reboot reason - the node stopped without shutting down (power failure or crash) "
        f"- at {stamp}"
    )
    return BootRecord(BootReason.POWER_FAIL, text, now, restarts)


def mark_clean_stop(persist: Path, current_boot: str) -> None:
    """The agent stops cleanly (SIGTERM, a shutdown): the next boot finding no recorded reason
    then knows the host went down in order.  Blocking; raises OSError."""
    state = _json(_status(persist) / "boot.json")
    if state is None or state.get("boot_id") != current_boot:
        return
    record = _record(state)
    if record is not None:
        _save_state(persist, current_boot, record, clean_stop=True)


def _record(state: dict[str, Any]) -> BootRecord | None:
    try:
        return BootRecord(
            BootReason(int(state["reason"])),
            str(state["text"]),
            float(state["time"]),
            int(state["restart_counter"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _save_state(persist: Path, current_boot: str, record: BootRecord, *, clean_stop: bool) -> None:
    entry = {**asdict(record), "reason": int(record.reason), "boot_id": current_boot,
             "clean_stop": clean_stop}  # fmt: skip
    write_atomic(_status(persist) / "boot.json", json.dumps(entry).encode())
