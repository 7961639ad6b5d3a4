"""A K3s cluster's state as the node reports it (EVE's ZInfoKubeCluster), from what its K3s VM's
API answers: the nodes (readiness and other conditions, server or agent, version, internal
address, schedulable, the EVE node each runs on) and the pods counted per namespace.  Pure.

The answers come from an app, so they are hostile: anything malformed is left out, not an
error; strings are cut, counts bounded (:data:`MAX_NODES`, :data:`MAX_NAMESPACES`), times that
do not parse count as none.  A node's EVE UUID is its ``node-uuid`` label (the K3s config the
agent writes labels every member with its node's UUID).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_NODES = 256
MAX_NAMESPACES = 256
MAX_TEXT = 253
#: The condition types EVE reports (KubeNodeConditionType), by Kubernetes' names.
CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
_SERVER_ROLES = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
NODE_UUID_LABEL = "node-uuid"


@dataclass(frozen=True)
class NodeCondition:
    type: str
    status: bool
    since: float | None


@dataclass(frozen=True)
class KubeNode:
    name: str
    conditions: tuple[NodeCondition, ...]
    server: bool
    created: float | None
    version: str
    internal_ip: str
    schedulable: bool
    node_uuid: str

    @property
    def ready(self) -> bool:
        return any(c.type == "Ready" and c.status for c in self.conditions)


@dataclass(frozen=True)
class PodCounts:
    namespace: str
    total: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0
    succeeded: int = 0


@dataclass(frozen=True)
class KubeClusterStatus:
    cluster_id: str
    nodes: tuple[KubeNode, ...]
    namespaces: tuple[PodCounts, ...]


def _text(value: object) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) and value.isprintable() else ""


def _time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _items(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = doc.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _node(item: Mapping[str, Any]) -> KubeNode | None:
    meta, spec, status = (
        _dict(item.get("metadata")),
        _dict(item.get("spec")),
        _dict(item.get("status")),
    )
    name = _text(meta.get("name"))
    if not name:
        return None
    labels = _dict(meta.get("labels"))
    conditions = []
    for raw in _list(status.get("conditions")):
        cond = _dict(raw)
        kind = cond.get("type")
        if kind in CONDITIONS:
            conditions.append(NodeCondition(
                str(kind), cond.get("status") == "True", _time(cond.get("lastTransitionTime"))
            ))  # fmt: skip
    internal = next(
        (_text(_dict(a).get("address")) for a in _list(status.get("addresses"))
         if _dict(a).get("type") == "InternalIP"), "",
    )  # fmt: skip
    return KubeNode(
        name=name,
        conditions=tuple(conditions),
        server=any(labels.get(role) in ("true", "") for role in _SERVER_ROLES if role in labels),
        created=_time(meta.get("creationTimestamp")),
        version=_text(_dict(status.get("nodeInfo")).get("kubeletVersion")),
        internal_ip=internal,
        schedulable=not bool(spec.get("unschedulable")),
        node_uuid=_text(labels.get(NODE_UUID_LABEL)),
    )


def parse(cluster_id: str, nodes: Mapping[str, Any], pods: Mapping[str, Any]) -> KubeClusterStatus:
    """The cluster's status from ``/api/v1/nodes`` and ``/api/v1/pods`` answers."""
    found = [n for n in map(_node, _items(nodes)[:MAX_NODES]) if n is not None]
    counts: dict[str, dict[str, int]] = {}
    for pod in _items(pods):
        namespace = _text(_dict(pod.get("metadata")).get("namespace")) or "default"
        if namespace not in counts and len(counts) >= MAX_NAMESPACES:
            continue
        phase = _dict(pod.get("status")).get("phase")
        c = counts.setdefault(namespace, {"total": 0})
        c["total"] += 1
        if phase in ("Running", "Pending", "Failed", "Succeeded"):
            key = str(phase).lower()
            c[key] = c.get(key, 0) + 1
    return KubeClusterStatus(
        cluster_id,
        tuple(sorted(found, key=lambda n: n.name)),
        tuple(PodCounts(ns, **c) for ns, c in sorted(counts.items())),
    )
