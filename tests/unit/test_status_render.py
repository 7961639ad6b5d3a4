"""agent.status.render: what ``eve-agent status`` shows of the reconciler and liveness."""

from __future__ import annotations

import os
import time
from typing import Any

from agent.status import render


def snapshot(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "pid": os.getpid(),
        "updated_at": time.time(),
        "phase": "running",
        "version": "0.1.0",
        "uuid": "d2a3b9f0-0000-4000-8000-000000000001",
        "attestation": {"state": "complete", "error": ""},
        "owners": [
            {"kind": "device", "id": "", "name": "", "state": "pending", "errors": [],
             "pending": ["configitem/x: waiting for condition/vault not ready: vault locked"]},
            {"kind": "app", "id": "a1", "name": "web", "state": "error",
             "errors": [{"error": "ctr/a1: PermanentError: no such image", "time": 1.0}],
             "pending": []},
            {"kind": "networkinstance", "id": "n1", "name": "lan", "state": "pending",
             "errors": [], "pending": ["bridge/n1: waiting for condition/uplink not ready"]},
            {"kind": "volume", "id": "v1", "name": "data", "state": "ok", "errors": [],
             "pending": []},
        ],
        "engine": {"desired": 12, "actual": 9, "in_flight": 2, "operations": 40,
                   "failed_operations": 3},
        "hung": ["reconciler: create ctr/a1 running for 400 s"],
    }  # fmt: skip
    data.update(extra)
    return data


def test_failing_and_waiting_owners_are_shown_by_name() -> None:
    text = render(snapshot())
    assert "error:        app web\n  ctr/a1: PermanentError: no such image" in text
    assert "pending:      networkinstance lan\n  bridge/n1: waiting for condition/uplink" in text
    assert "volume data" not in text  # fine objects are not listed
    assert "pending:      configitem/x: waiting for condition/vault not ready" in text
    assert "reconciler:   9/12 items, 2 in flight, 40 operations (3 failed)" in text
    assert "HUNG:         reconciler: create ctr/a1 running for 400 s" in text


def test_old_snapshots_without_the_new_fields_still_render() -> None:
    data = snapshot()
    for key in ("owners", "engine", "hung"):
        del data[key]
    text = render(data)
    assert "reconciler:" not in text and "HUNG" not in text


def test_apps_show_their_eve_state() -> None:
    now = time.time()
    data = snapshot(apps=["web", "vm"])
    data["owners"] += [
        {"kind": "app", "id": "a2", "name": "vm", "state": "in-progress", "errors": [],
         "pending": [], "phase": "DOWNLOAD_STARTED", "progress": 42, "boot_time": 0.0},
        {"kind": "app", "id": "a3", "name": "db", "state": "ok", "errors": [], "pending": [],
         "phase": "RUNNING", "progress": None, "boot_time": now - 30},
    ]  # fmt: skip
    text = render(data, now=now)
    assert "  vm                   DOWNLOAD_STARTED 42%" in text
    assert "  db                   RUNNING, started 30 s ago" in text


def test_io_lockdown_line() -> None:
    locked = {"managed": True, "note": "", "usb_locked": True, "console_locked": False,
              "disabled": ["usb 1-1 (QEMU USB HARDDRIVE (46f4:0001))"]}  # fmt: skip
    assert "I/O:          USB locked, serial console allowed; 1 off" in render(
        snapshot(io_lockdown=locked)
    )
    emulated = {"managed": False, "note": "not managed here", "usb_locked": False,
                "console_locked": False, "disabled": []}  # fmt: skip
    assert "I/O:          not managed here" in render(snapshot(io_lockdown=emulated))
    assert "I/O:" not in render(snapshot())
