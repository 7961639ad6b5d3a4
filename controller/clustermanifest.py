"""The manifest URL's result, from a server's K3s VM to the cluster's event history.

``cluster create --manifest-url URL`` gives every server's K3s VM a ``bootcmd`` (rendered by
:func:`controller.clusterconfig.manifest_user_data`) that fetches the URL into K3s's
auto-deploy directory and then posts the result to the node's metadata server as the app's
custom status, EVE's ``POST /eve/v1/app/appCustomStatus``; the node sends it on as app instance
metadata (``ZInfoAppInstMetaData``, type ``APP_INST_META_DATA_TYPE_CUSTOM_STATUS``), which the
controller stores with the device's other info reports.  The status is a JSON object::

    {"eve-cluster-manifest": {"result": "applied" | "failed", "detail": "...",
                              "url-sha256": "<hex SHA-256 of the URL>"}}

:func:`manifest_events` reads the members' newest such statuses (hostile: types checked, text
bounded) and says what to add to the history: ``manifest applied`` or ``manifest failed:
DETAIL``, only when it differs from the last manifest event the cluster has, and only for a
status whose ``url-sha256`` is the cluster's URL's (the URL itself is never in an event or a
log: an import URL often carries a registration token).  So a cluster records its manifest
once, however often its servers boot and post again; a result that changes (a failure, then
success after a retry) is recorded again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from controller import clusterconfig
from controller.clusters import ClusterRecord, ClusterStore, MemberRecord
from controller.composer import Event, Role

#: The custom status's key for the manifest's result.
STATUS_KEY = "eve-cluster-manifest"
#: The newest custom status reports searched per member's VM.
_SEARCH = 20
_DETAIL = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class ManifestResult:
    applied: bool
    detail: str
    url_sha256: str


def url_hash(url: str) -> str:
    """What a VM reports as ``url-sha256``: the hex SHA-256 of the URL's UTF-8 bytes."""
    return hashlib.sha256(url.encode()).hexdigest()


def parse_status(data: bytes) -> ManifestResult | None:
    """The manifest result in an app's custom status, or None (none there, or malformed)."""
    if len(data) > 64 * 1024:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting
        return None
    part = doc.get(STATUS_KEY) if isinstance(doc, dict) else None
    if not isinstance(part, dict):
        return None
    result, detail, digest = part.get("result"), part.get("detail", ""), part.get("url-sha256")
    if result not in ("applied", "failed") or not isinstance(digest, str):
        return None
    text = _DETAIL.sub("?", detail[:200]) if isinstance(detail, str) else ""
    return ManifestResult(result == "applied", text, digest.lower()[:64])


def _statuses(cs: ClusterStore, device_uuid: str, app_id: str) -> list[tuple[float, bytes]]:
    """The device's newest custom statuses of app ``app_id``: (received, data), newest first."""
    out = []
    for at, data in cs.app_custom_statuses(device_uuid, app_id, last=_SEARCH):
        try:
            out.append((at, base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError):
            continue
    return out


def latest_result(
    cs: ClusterStore, record: ClusterRecord, members: Sequence[MemberRecord]
) -> tuple[str, ManifestResult] | None:
    """The newest manifest result any server's K3s VM reported for the cluster's current URL:
    (device, result); None without a URL or such a report."""
    if not record.manifest_url:
        return None
    want = url_hash(record.manifest_url)
    newest: tuple[float, str, ManifestResult] | None = None
    for member in members:
        if member.role not in (Role.INIT, Role.SERVER):
            continue
        app_id = clusterconfig.object_ids(record.id, member.device_uuid).app
        for at, data in _statuses(cs, member.device_uuid, app_id):
            result = parse_status(data)
            if result is None or result.url_sha256 != want:
                continue
            if newest is None or at > newest[0]:
                newest = (at, member.device_uuid, result)
            break  # this VM's newest result for the URL
    return None if newest is None else (newest[1], newest[2])


def manifest_events(
    cs: ClusterStore, record: ClusterRecord, members: Sequence[MemberRecord]
) -> list[Event]:
    """The event to record for the cluster's manifest (at most one), or none: nothing new."""
    found = latest_result(cs, record, members)
    if found is None:
        return []
    device, result = found
    text = "manifest applied" if result.applied else f"manifest failed: {result.detail}"
    last = next((e.text for e in reversed(cs.events(record.id, last=200))
                 if e.text.startswith("manifest ")), None)  # fmt: skip
    if last == text:
        return []
    how = result.detail or "no detail"
    return [Event(text, f"reported by node {device}'s K3s VM ({how})")]


__all__ = ["STATUS_KEY", "ManifestResult", "latest_result", "manifest_events", "parse_status",
           "url_hash"]  # fmt: skip
