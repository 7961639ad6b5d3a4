"""``eve-agent status``: a snapshot the daemon writes and a report for a person.

The daemon rewrites ``<run>/status.json`` every few seconds (atomically); the status command
reads it, so it works without any socket and shows the last state if the agent has stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.util.atomicfile import write_atomic
from agent.wire.envelope import device_cert_hash

if TYPE_CHECKING:
    from agent.daemon import Node


def snapshot(node: Node) -> dict[str, Any]:
    """Everything ``eve-agent status`` shows, as JSON-able data."""
    sync = node.sync.status if node.sync else None
    cfg = node.reconciler.current
    report = node.reconciler.report
    engine = node.reconciler.engine
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
        "config_items": node.items().explicit(),
        "object_errors": [
            {"kind": e.kind, "id": e.id, "name": e.name, "error": e.message}
            for e in report.object_errors
        ],
        "apply_errors": list(report.item_errors),
        "owners": [
            {
                "kind": o.kind,
                "id": o.id,
                "name": o.name,
                "state": o.state,
                "errors": [{"error": msg, "time": when} for msg, when in o.errors],
                "pending": list(o.pending),
                "phase": o.phase,
                "progress": o.progress,
                "boot_time": o.boot_time,
                "interfaces": list(o.interfaces),
            }
            for o in node.reconciler.owners()
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


def write(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o644)


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
    items = data.get("config_items") or {}
    lines.append(f"config items: {len(items)} set")
    lines += [f"  {k} = {v}" for k, v in sorted(items.items())]
    for err in data.get("object_errors", []):
        lines.append(f"error:        {err['kind']} {err['id']} {err['name']}: {err['error']}")
    for owner in data.get("owners", []):
        if owner.get("state") in ("ok", None) or owner.get("kind") == "device":
            continue
        label = f"{owner['kind']} {owner.get('name') or owner['id']}"
        lines.append(f"{owner['state'] + ':':<14}{label}")
        lines += [f"  {e['error']}" for e in owner.get("errors", [])]
        lines += [f"  {p}" for p in owner.get("pending", [])[:5]]
    for err in data.get("apply_errors", []):
        lines.append(f"error:        {err}")
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
