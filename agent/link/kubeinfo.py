"""A K3s cluster's state to the controller, as EVE reports it: a ZInfoMsg of type ZiKubeCluster
carrying ZInfoKubeCluster (nodes with their conditions, role, version, address and EVE node;
pods counted per namespace), queued in the info outbox under one key (the latest wins)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from agent.link.objectinfo import timestamp
from agent.link.reporting import Outbox
from agent.wire.pb.info import edge_node_cluster_pb2 as kube_pb2
from agent.wire.pb.info import info_pb2

#: Kubernetes' condition names -> KubeNodeConditionType.
_CONDITION = {
    "Ready": kube_pb2.KUBE_NODE_CONDITION_TYPE_READY,
    "MemoryPressure": kube_pb2.KUBE_NODE_CONDITION_TYPE_MEMORY_PRESSURE,
    "DiskPressure": kube_pb2.KUBE_NODE_CONDITION_TYPE_DISK_PRESSURE,
    "PIDPressure": kube_pb2.KUBE_NODE_CONDITION_TYPE_PID_PRESSURE,
    "NetworkUnavailable": kube_pb2.KUBE_NODE_CONDITION_TYPE_NETWORK_UNAVAIL,
}
KEY = "kubecluster"


# What the report reads of the reconcilers' status (agent.reconcile.kubestatus fits).
class NodeCondition(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> bool: ...
    @property
    def since(self) -> float | None: ...


class KubeNode(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def conditions(self) -> Sequence[NodeCondition]: ...
    @property
    def server(self) -> bool: ...
    @property
    def created(self) -> float | None: ...
    @property
    def version(self) -> str: ...
    @property
    def internal_ip(self) -> str: ...
    @property
    def schedulable(self) -> bool: ...
    @property
    def node_uuid(self) -> str: ...


class PodCounts(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def total(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def succeeded(self) -> int: ...


class KubeClusterStatus(Protocol):
    @property
    def cluster_id(self) -> str: ...
    @property
    def nodes(self) -> Sequence[KubeNode]: ...
    @property
    def namespaces(self) -> Sequence[PodCounts]: ...


def kube_cluster_info(device_uuid: str, status: KubeClusterStatus) -> info_pb2.ZInfoMsg:
    msg = info_pb2.ZInfoMsg(
        ztype=info_pb2.ZiKubeCluster, devId=device_uuid, atTimeStamp=timestamp(time.time())
    )
    info = msg.cluster_info
    info.cluster_id = status.cluster_id
    for node in status.nodes:
        out = info.nodes.add(
            name=node.name, role_server=node.server, api_server_sersion=node.version,
            internal_ip=node.internal_ip, schedulable=node.schedulable, node_id=node.node_uuid,
            admission_status=kube_pb2.NODE_ADMISSION_JOINED,
        )  # fmt: skip
        if node.created is not None:
            out.creation_timestamp.CopyFrom(timestamp(node.created))
        for cond in node.conditions:
            kind = _CONDITION.get(cond.type)
            if kind is None:
                continue
            c = out.conditions.add(type=kind, set=cond.status)
            if cond.since is not None:
                c.last_transition_time.CopyFrom(timestamp(cond.since))
    for ns in status.namespaces:
        info.pod_name_spaces.add(
            name=ns.namespace, pod_count=ns.total, pod_running_count=ns.running,
            pod_pending_count=ns.pending, pod_failed_count=ns.failed,
            pod_succeeded_count=ns.succeeded,
        )  # fmt: skip
    return msg


def queue_kube_cluster(outbox: Outbox, device_uuid: str, status: KubeClusterStatus) -> bool:
    """Queue it (see :meth:`Outbox.put`)."""
    return outbox.put(KEY, kube_cluster_info(device_uuid, status).SerializeToString())
