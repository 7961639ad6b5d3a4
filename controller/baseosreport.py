"""What a device reports of its base OS partitions, for ``device show`` and ``baseos show``:
the ``swList`` of its latest device info (EVE's ZInfoDevSW), ``baseos_update_counter`` and the
device state.  Hostile text: every string is escaped and bounded before it is printed."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from controller.logsafe import printable


def device_partitions(conn: sqlite3.Connection, device_uuid: str) -> dict[str, Any] | None:
    """The partitions (``swList``), ``baseos_update_counter`` and state of the device's latest
    device info, as plain values (strings escaped for printing); None before any."""
    row = conn.execute(
        "SELECT json FROM report WHERE device_uuid = ? AND kind = 'info' AND json_valid(json)"
        " AND json_extract(json, '$.ztype') = 'ZiDevice' ORDER BY id DESC LIMIT 1",
        (device_uuid,),
    ).fetchone()
    if row is None:
        return None
    try:
        dinfo = json.loads(row[0]).get("dinfo") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(dinfo, dict):
        return None
    sw_list = dinfo.get("swList")
    out = []
    for sw in sw_list if isinstance(sw_list, list) else []:
        if not isinstance(sw, dict):
            continue
        err = sw.get("swErr")
        out.append({
            "partition": _text(sw.get("partitionLabel")),
            "state": _text(sw.get("partitionState")),
            "version": _text(sw.get("shortVersion")),
            "activated": bool(sw.get("activated", False)),
            "status": _text(sw.get("userStatus", "NONE")),
            "sub_status": _text(sw.get("subStatus", "NONE_SUBSTATUS")),
            "detail": _text(sw.get("subStatusStr")),
            "progress": sw.get("subStatusProgress", 0) if isinstance(
                sw.get("subStatusProgress", 0), int) else 0,
            "error": _text(err.get("description")) if isinstance(err, dict) else "",
        })  # fmt: skip
    counter = dinfo.get("baseosUpdateCounter", dinfo.get("baseos_update_counter", 0))
    return {
        "partitions": out,
        "update_counter": counter if isinstance(counter, int) else 0,
        "state": _text(dinfo.get("state", "")),
    }


def _text(value: Any) -> str:
    return printable(value, 512) if value is not None else ""


def partitions_text(report: dict[str, Any] | None) -> str:
    """One line per partition for ``device show``."""
    if report is None or not report["partitions"]:
        return "-"
    lines = []
    for p in report["partitions"]:
        line = f"{p['partition']} {p['state']} {p['version'] or '-'}"
        if p["activated"]:
            line += " (running)"
        if p["status"] not in ("NONE", ""):
            line += f" {p['status']}"
            if p["sub_status"] not in ("NONE_SUBSTATUS", ""):
                line += f"/{p['sub_status']}"
        if p["detail"]:
            line += f": {p['detail']}"
        if p["error"]:
            line += f" error: {p['error']}"
        lines.append(line)
    return "\n".join(lines)
