"""``eve-agent status``: a snapshot the daemon writes and a report for a person.

The daemon takes a snapshot every few seconds and writes ``<run>/status.json`` (atomically) when
it changed, timestamps aside, or at least every :data:`HEARTBEAT` snapshots (so a reader sees
the agent is alive); the status command reads it, so it works without any socket and shows the
last state if the agent has stopped.

The snapshot is bounded whatever the config: at most :data:`MAX_LISTED` errors and owners, and
:data:`MAX_PER_OWNER` errors and wait reasons per owner, each list followed by a count of what
was left out (``*_omitted``).  A config of tens of thousands of broken objects must not make a
file of megabytes rewritten every two seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agent.util.atomicfile import write_atomic
from agent.util.storagehealth import StorageHealth
from agent.wire.envelope import device_cert_hash

if TYPE_CHECKING:
    from agent.daemon import Node

log = logging.getLogger(__name__)

#: Errors and owners listed in the snapshot, at most; per owner, errors and wait reasons.
MAX_LISTED = 200
MAX_PER_OWNER = 10
#: An unchanged snapshot is written again after this many snapshots (a liveness sign).
HEARTBEAT = 30

T = TypeVar("T")


def _first(items: Sequence[T], limit: int) -> tuple[list[T], int]:
    """The first ``limit`` items and how many were left out."""
    return list(items[:limit]), max(0, len(items) - limit)


def _boot(node: Node) -> dict[str, Any]:
    """This boot's reason and the device-operation counters (agent.link.deviceops)."""
    if node.deviceops is None:
        return {}
    facts = node.deviceops.facts()
    boot = facts.boot
    return {
        "reason": boot.reason.name if boot else "",
        "text": boot.text if boot else "",
        "time": boot.time if boot else 0.0,
        "restart_counter": boot.restart_counter if boot else 0,
        "reboot_counter": facts.reboot_counter,
        "shutdown_counter": facts.shutdown_counter,
        "in_progress": facts.in_progress.value if facts.in_progress else "",
    }


def _io(node: Node) -> dict[str, Any]:
    """The I/O lockdown (agent.reconcile.iolockdown): what is off, and why."""
    state = node.iolock.state
    return {
        "managed": state.managed,
        "note": state.note,
        "usb_locked": state.usb_locked,
        "console_locked": state.console_locked,
        "disabled": [f"{d.kind} {d.name} ({d.description})" for d in state.disabled()],
    }


def snapshot(node: Node) -> dict[str, Any]:
    """Everything ``eve-agent status`` shows, as JSON-able data."""
    sync = node.sync.status if node.sync else None
    cfg = node.reconciler.current
    report = node.reconciler.report
    engine = node.reconciler.engine
    object_errors, object_errors_omitted = _first(report.object_errors, MAX_LISTED)
    apply_errors, apply_errors_omitted = _first(report.item_errors, MAX_LISTED)
    owners = node.reconciler.owners()
    if len(owners) > MAX_LISTED:  # those with something to say first: the bound hides the rest
        owners = sorted(owners, key=lambda o: o.state in ("ok", "pending"))
    listed_owners, owners_omitted = _first(owners, MAX_LISTED)
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "updated_at": time.time(),
        "phase": node.phase,
        "version": node.settings.version,
        "uuid": node.device_uuid,
        "server": node.identity.server if node.identity else None,
        "device_cert_sha256": (
            device_cert_hash(node.identity.device.certificate).hex() if node.identity else None
        ),
        "mode": (
            "software keys (no TPM)" if node.settings.no_tpm else f"TPM ({node.settings.tpm})"
        ),
        "measurements": {
            name: {"state": r.state.value, "problem": r.problem, "stale": r.stale}
            for name, r in (
                (("boot", node.boot.boot), ("config", node.boot.config)) if node.boot else ()
            )
        },
        "controller_reachable": bool(sync and sync.controller_reachable),
        "last_contact": sync.last_contact if sync else 0.0,
        "config_hash": sync.config_hash if sync else "",
        "config_version": cfg.version if cfg else "",
        "config_timestamp": sync.config_timestamp if sync else 0.0,
        "config_received_at": sync.received_at if sync else 0.0,
        "config_source": sync.source if sync else "",
        "config_applied_ok": bool(sync and sync.applied_ok),
        "config_rejected": sync.rejected if sync else 0,
        "last_config_error": sync.last_error if sync else "",
        "attestation": {
            "state": node.attestor.status.state.value if node.attestor else "unspecified",
            "error": node.attestor.status.error if node.attestor else "",
        },
        "vault": {
            "state": node.vault.status.state.value if node.vault else "disabled",
            "reason": node.vault.status.reason if node.vault else "",
            "mismatched_pcrs": list(node.vault.status.mismatched_pcrs) if node.vault else [],
        },
        "maintenance": list(node.maintenance_reasons()),
        "boot": _boot(node),
        "io_lockdown": _io(node),
        "config_items": node.items().explicit(),
        "object_errors": [
            {"kind": e.kind, "id": e.id, "name": e.name, "error": e.message} for e in object_errors
        ],
        "object_errors_omitted": object_errors_omitted,
        "apply_errors": apply_errors,
        "apply_errors_omitted": apply_errors_omitted,
        "owners": [_owner(o) for o in listed_owners],
        "owners_omitted": owners_omitted,
        "storage": [
            {"what": p.what, "error": p.error, "since": p.since, "attempts": p.attempts}
            for p in node.storage.problems()
        ],
        "engine": {
            "desired": len(engine.desired),
            "actual": len(engine.actual),
            "in_flight": engine.busy,
            "operations": engine.started_ops,
            "failed_operations": engine.failed_ops,
        },
        "hung": node.liveness.problems(),
        "apps": sorted(a.name or a.id for a in cfg.apps.values()) if cfg else [],
        "network_instances": (
            sorted(n.name or n.id for n in cfg.network_instances.values()) if cfg else []
        ),
        "reports": {
            "info_sent": node.reporter.sent_info if node.reporter else 0,
            "metrics_sent": node.reporter.sent_metrics if node.reporter else 0,
            "log_files_uploaded": node.uploader.uploaded if node.uploader else 0,
        },
    }
    return out


def _owner(o: Any) -> dict[str, Any]:
    errors, errors_omitted = _first(o.errors, MAX_PER_OWNER)
    pending, pending_omitted = _first(o.pending, MAX_PER_OWNER)
    return {
        "kind": o.kind,
        "id": o.id,
        "name": o.name,
        "state": o.state,
        "errors": [{"error": msg, "time": when} for msg, when in errors],
        "errors_omitted": errors_omitted,
        "pending": pending,
        "pending_omitted": pending_omitted,
        "phase": o.phase,
        "progress": o.progress,
        "boot_time": o.boot_time,
        "interfaces": list(o.interfaces),
    }


def write(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o644)


class StatusWriter:
    """Writes snapshots to the status file when they change (``updated_at`` aside) or every
    ``heartbeat`` snapshots.  A failed write is reported to ``health`` once (not every tick) and
    tried again at the next snapshot.  Blocking: call :meth:`offer` in a worker thread."""

    WHAT = "status file"

    def __init__(
        self, path: Path, *, health: StorageHealth | None = None, heartbeat: int = HEARTBEAT
    ) -> None:
        self.path = path
        self._health = health or StorageHealth()
        self._heartbeat = heartbeat
        self._last: bytes | None = None
        self._unchanged = 0
        #: Files written (for tests and benchmarks).
        self.writes = 0

    def offer(self, data: dict[str, Any], *, force: bool = False) -> bool:
        """Write ``data`` if it differs from the last written, the heartbeat is due, or
        ``force``.  True when it wrote.  Never raises OSError."""
        stable = {k: v for k, v in data.items() if k != "updated_at"}
        digest = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).digest()
        if not force and digest == self._last and self._unchanged + 1 < self._heartbeat:
            self._unchanged += 1
            return False
        try:
            write(self.path, data)
        except OSError as exc:
            self._health.failed(self.WHAT, exc)
            self._last = None
            return False
        self._health.ok(self.WHAT)
        self._last = digest
        self._unchanged = 0
        self.writes += 1
        return True

    def forget(self) -> None:
        """The next snapshot is written whatever it holds (after a snapshot failure)."""
        self._last = None


def read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(seconds_since_epoch: float, now: float) -> str:
    if not seconds_since_epoch:
        return "never"
    delta = max(0, int(now - seconds_since_epoch))
    if delta < 120:
        return f"{delta} s ago"
    if delta < 7200:
        return f"{delta // 60} min ago"
    return f"{delta // 3600} h ago"


def render(data: dict[str, Any], now: float | None = None) -> str:
    """The human report."""
    now = now or time.time()
    running = pid_alive(int(data.get("pid", 0))) and data.get("phase") != "stopped"
    lines = [
        f"agent:        {'running' if running else 'NOT running'} ({data.get('phase')}, "
        f"status {_age(data.get('updated_at', 0), now)}), version {data.get('version')}",
        f"device:       {data.get('uuid') or 'not onboarded yet'}",
        f"identity:     {data.get('mode')}; device cert sha256 "
        f"{(data.get('device_cert_sha256') or '')[:16]}",
        f"controller:   {data.get('server')} - "
        f"{'reachable' if data.get('controller_reachable') else 'UNREACHABLE'}, "
        f"last contact {_age(data.get('last_contact', 0), now)}",
        *(
            f"measured:     {name} {m['state']}"
            + (f" ({m['problem']})" if m.get("problem") else "")
            + (f" [{m['stale']}]" if m.get("stale") else "")
            for name, m in (data.get("measurements") or {}).items()
        ),
        f"vault:        {data.get('vault', {}).get('state', '?')}"
        + (f" ({data['vault']['reason']})" if data.get("vault", {}).get("reason") else ""),
        *([f"MAINTENANCE:  {', '.join(data['maintenance'])}"] if data.get("maintenance") else []),
        f"attestation:  {data['attestation']['state']}"
        + (f" ({data['attestation']['error']})" if data["attestation"].get("error") else ""),
        f"config:       {(data.get('config_hash') or 'none')[:16]} version "
        f"{data.get('config_version')!r} from {data.get('config_source') or '-'}, received "
        f"{_age(data.get('config_received_at', 0), now)}, "
        f"{'applied' if data.get('config_applied_ok') else 'applied with errors'}",
    ]
    if data.get("last_config_error"):
        lines.append(f"last reject:  {data['last_config_error']}")
    boot = data.get("boot") or {}
    if boot:
        now_doing = f"; {boot['in_progress'].upper()} NOW" if boot["in_progress"] else ""
        lines.append(
            f"boot:         #{boot['restart_counter'] + 1}, {boot['reason'] or '?'}; reboot "
            f"counter {boot['reboot_counter']}, shutdown counter {boot['shutdown_counter']}"
            f"{now_doing}"
        )
    io = data.get("io_lockdown") or {}
    if io:
        lines.append(
            f"I/O:          USB {'locked' if io['usb_locked'] else 'allowed'}, serial console "
            f"{'locked' if io['console_locked'] else 'allowed'}; {len(io['disabled'])} off"
            if io["managed"] else f"I/O:          {io['note']}"
        )  # fmt: skip
    items = data.get("config_items") or {}
    lines.append(f"config items: {len(items)} set")
    lines += [f"  {k} = {v}" for k, v in sorted(items.items())]
    for problem in data.get("storage", []):
        lines.append(f"STORAGE:      {problem['what']} not written: {problem['error']}")
    for err in data.get("object_errors", []):
        lines.append(f"error:        {err['kind']} {err['id']} {err['name']}: {err['error']}")
    if data.get("object_errors_omitted"):
        lines.append(f"error:        ... and {data['object_errors_omitted']} more objects")
    for owner in data.get("owners", []):
        if owner.get("state") in ("ok", None) or owner.get("kind") == "device":
            continue
        label = f"{owner['kind']} {owner.get('name') or owner['id']}"
        lines.append(f"{owner['state'] + ':':<14}{label}")
        lines += [f"  {e['error']}" for e in owner.get("errors", [])]
        lines += [f"  {p}" for p in owner.get("pending", [])[:5]]
    for err in data.get("apply_errors", []):
        lines.append(f"error:        {err}")
    if data.get("apply_errors_omitted"):
        lines.append(f"error:        ... and {data['apply_errors_omitted']} more failed items")
    for owner in data.get("owners", []):
        if owner.get("kind") == "device":
            lines += [f"pending:      {p}" for p in owner.get("pending", [])[:5]]
    eng = data.get("engine")
    if eng:
        lines.append(
            f"reconciler:   {eng['actual']}/{eng['desired']} items, {eng['in_flight']} in flight, "
            f"{eng['operations']} operations ({eng['failed_operations']} failed)"
        )
    for problem in data.get("hung", []):
        lines.append(f"HUNG:         {problem}")
    lines.append(f"apps:         {', '.join(data.get('apps', [])) or 'none'}")
    for owner in data.get("owners", []):
        if owner.get("kind") != "app" or not owner.get("phase"):
            continue
        line = f"  {owner.get('name') or owner['id']:<20} {owner['phase']}"
        if owner.get("progress") is not None and owner["phase"] != "RUNNING":
            line += f" {owner['progress']}%"
        if owner.get("boot_time"):
            line += f", started {_age(owner['boot_time'], now)}"
        lines.append(line)
        lines += [f"    {iface}" for iface in owner.get("interfaces", [])]
    lines.append(f"networks:     {', '.join(data.get('network_instances', [])) or 'none'}")
    rep = data.get("reports", {})
    lines.append(
        f"reports:      info {rep.get('info_sent', 0)}, metrics {rep.get('metrics_sent', 0)}, "
        f"log files {rep.get('log_files_uploaded', 0)}"
    )
    return "\n".join(lines)
