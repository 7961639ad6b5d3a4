"""A cluster's status as its members report it, for ``cluster show``.

Two sources, both from the devices and so treated as hostile (types checked, text bounded, the
caller escapes it before printing):

* the state of each member's K3s VM (the app's per-object info, ``object_status``): ``RUNNING``,
  ``BOOTING``, ``ERROR``... with its errors;
* the cluster as the K3s API tells a member node (``ZInfoKubeCluster``, reported by the node side:
  agent/reconcile/kubewatch.py): each Kubernetes node with its EVE node UUID, Ready condition,
  role and kubelet version.  The newest report of any member speaks for the cluster.

A member is *ready* when the cluster reports its Kubernetes node Ready; without any cluster
report, when its K3s VM is RUNNING without errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller import clusterconfig
from controller.clusters import ClusterRecord, ClusterStore, MemberRecord
from controller.records import ObjectKind, rfc3339
from controller.store import Store

#: Kubernetes nodes read from one report, at most.
MAX_KUBE_NODES = 1000
_READY = "KUBE_NODE_CONDITION_TYPE_READY"


@dataclass(frozen=True)
class KubeNode:
    name: str
    ready: bool | None
    """The Ready condition; None when the report has none."""
    server: bool
    version: str


def _text(value: Any, limit: int = 128) -> str:
    return value[:limit] if isinstance(value, str) else ""


def kube_nodes(info: Any) -> dict[str, KubeNode]:
    """The Kubernetes nodes of a ``clusterInfo`` JSON object, by EVE node UUID."""
    found: dict[str, KubeNode] = {}
    nodes = info.get("nodes") if isinstance(info, dict) else None
    if not isinstance(nodes, list):
        return found
    for node in nodes[:MAX_KUBE_NODES]:
        if not isinstance(node, dict):
            continue
        node_id = _text(node.get("nodeId"), 64).lower()
        if not node_id:
            continue
        ready = None
        conditions = node.get("conditions")
        for cond in conditions[:16] if isinstance(conditions, list) else []:
            if isinstance(cond, dict) and cond.get("type") == _READY:
                ready = cond.get("set") is True
        found[node_id] = KubeNode(
            name=_text(node.get("name")),
            ready=ready,
            server=node.get("roleServer") is True,
            version=_text(node.get("apiServerSersion"), 64),
        )
    return found


def cluster_kube(
    cs: ClusterStore, record: ClusterRecord, members: Sequence[MemberRecord]
) -> tuple[dict[str, KubeNode], float | None]:
    """The newest cluster report among the members: its nodes, and when it came."""
    newest: tuple[float, Any] | None = None
    for member in members:
        report = cs.kube_report(member.device_uuid, record.id)
        if report is not None and (newest is None or report[0] > newest[0]):
            newest = report
    if newest is None:
        return {}, None
    return kube_nodes(newest[1]), newest[0]


def member_status(
    store: Store,
    cs: ClusterStore,
    record: ClusterRecord,
    member: MemberRecord,
    kube: dict[str, KubeNode],
) -> dict[str, Any]:
    """One member as ``cluster show --json`` prints it."""
    device = store.device(member.device_uuid)
    app_id = clusterconfig.object_ids(record.id, member.device_uuid).app
    vm = next(
        (o for o in store.object_statuses(member.device_uuid, ObjectKind.APP)
         if o.object_id == app_id),
        None,
    )  # fmt: skip
    problems = [member.config_error] if member.config_error else []
    if vm is not None:
        problems += [e.description for e in vm.errors]
    node = kube.get(member.device_uuid)
    if node is not None:
        ready = node.ready is True
    else:
        ready = not kube and vm is not None and vm.state == "RUNNING" and not vm.errors
    address = clusterconfig.member_address(
        clusterconfig.cluster_prefix(record.net_index), member.slot
    )
    return {
        "node": member.device_uuid,
        "role": member.role.value,
        "address": str(address),
        "joined": rfc3339(member.joined_at),
        "last_seen": rfc3339(device.last_seen) if device else None,
        "vm_state": vm.state if vm else None,
        "kubernetes": None
        if node is None
        else {
            "name": node.name,
            "ready": node.ready,
            "role": "server" if node.server else "agent",
            "version": node.version,
        },
        "ready": ready,
        "version": cs.node_version(member.device_uuid),
        "problems": problems,
    }
