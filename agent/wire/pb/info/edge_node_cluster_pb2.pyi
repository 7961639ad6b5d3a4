import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KubeNodeConditionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KUBE_NODE_CONDITION_TYPE_UNSPECIFIED: _ClassVar[KubeNodeConditionType]
    KUBE_NODE_CONDITION_TYPE_READY: _ClassVar[KubeNodeConditionType]
    KUBE_NODE_CONDITION_TYPE_MEMORY_PRESSURE: _ClassVar[KubeNodeConditionType]
    KUBE_NODE_CONDITION_TYPE_DISK_PRESSURE: _ClassVar[KubeNodeConditionType]
    KUBE_NODE_CONDITION_TYPE_PID_PRESSURE: _ClassVar[KubeNodeConditionType]
    KUBE_NODE_CONDITION_TYPE_NETWORK_UNAVAIL: _ClassVar[KubeNodeConditionType]

class NodeAdmission(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_ADMISSION_UNSPECIFIED: _ClassVar[NodeAdmission]
    NODE_ADMISSION_NOT_CLUSTERED: _ClassVar[NodeAdmission]
    NODE_ADMISSION_LEAVING: _ClassVar[NodeAdmission]
    NODE_ADMISSION_JOINING: _ClassVar[NodeAdmission]
    NODE_ADMISSION_JOINED: _ClassVar[NodeAdmission]

class StorageHealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_HEALTH_STATUS_UNSPECIFIED: _ClassVar[StorageHealthStatus]
    STORAGE_HEALTH_STATUS_HEALTHY: _ClassVar[StorageHealthStatus]
    STORAGE_HEALTH_STATUS_DEGRADED_2_REPLICA_AVAILABLE_REPLICATING: _ClassVar[StorageHealthStatus]
    STORAGE_HEALTH_STATUS_DEGRADED_2_REPLICA_AVAILABLE_NOT_REPLICATING: _ClassVar[StorageHealthStatus]
    STORAGE_HEALTH_STATUS_DEGRADED_1_REPLICA_AVAILABLE_REPLICATING: _ClassVar[StorageHealthStatus]
    STORAGE_HEALTH_STATUS_DEGRADED_1_REPLICA_AVAILABLE_NOT_REPLICATING: _ClassVar[StorageHealthStatus]
    STORAGE_HEALTH_STATUS_FAILED: _ClassVar[StorageHealthStatus]

class StorageVolumeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_VOLUME_STATE_UNSPECIFIED: _ClassVar[StorageVolumeState]
    STORAGE_VOLUME_STATE_CREATING: _ClassVar[StorageVolumeState]
    STORAGE_VOLUME_STATE_ATTACHED: _ClassVar[StorageVolumeState]
    STORAGE_VOLUME_STATE_DETACHED: _ClassVar[StorageVolumeState]
    STORAGE_VOLUME_STATE_ATTACHING: _ClassVar[StorageVolumeState]
    STORAGE_VOLUME_STATE_DETACHING: _ClassVar[StorageVolumeState]
    STORAGE_VOLUME_STATE_DELETING: _ClassVar[StorageVolumeState]

class StorageVolumeRobustness(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_VOLUME_ROBUSTNESS_UNSPECIFIED: _ClassVar[StorageVolumeRobustness]
    STORAGE_VOLUME_ROBUSTNESS_HEALTHY: _ClassVar[StorageVolumeRobustness]
    STORAGE_VOLUME_ROBUSTNESS_DEGRADED: _ClassVar[StorageVolumeRobustness]
    STORAGE_VOLUME_ROBUSTNESS_FAULTED: _ClassVar[StorageVolumeRobustness]

class StorageVolumePVCStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_VOLUME_PVC_STATUS_UNSPECIFIED: _ClassVar[StorageVolumePVCStatus]
    STORAGE_VOLUME_PVC_STATUS_BOUND: _ClassVar[StorageVolumePVCStatus]
    STORAGE_VOLUME_PVC_STATUS_PENDING: _ClassVar[StorageVolumePVCStatus]
    STORAGE_VOLUME_PVC_STATUS_AVAILABLE: _ClassVar[StorageVolumePVCStatus]
    STORAGE_VOLUME_PVC_STATUS_RELEASED: _ClassVar[StorageVolumePVCStatus]
    STORAGE_VOLUME_PVC_STATUS_FAILED: _ClassVar[StorageVolumePVCStatus]

class StorageVolumeReplicaStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_VOLUME_REPLICA_STATUS_UNSPECIFIED: _ClassVar[StorageVolumeReplicaStatus]
    STORAGE_VOLUME_REPLICA_STATUS_REBUILDING: _ClassVar[StorageVolumeReplicaStatus]
    STORAGE_VOLUME_REPLICA_STATUS_ONLINE: _ClassVar[StorageVolumeReplicaStatus]
    STORAGE_VOLUME_REPLICA_STATUS_FAILED: _ClassVar[StorageVolumeReplicaStatus]
    STORAGE_VOLUME_REPLICA_STATUS_OFFLINE: _ClassVar[StorageVolumeReplicaStatus]
    STORAGE_VOLUME_REPLICA_STATUS_STARTING: _ClassVar[StorageVolumeReplicaStatus]
    STORAGE_VOLUME_REPLICA_STATUS_STOPPING: _ClassVar[StorageVolumeReplicaStatus]

class KubePodStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KUBE_POD_STATUS_UNSPECIFIED: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_PENDING: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_RUNNING: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_SUCCEEDED: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_CONTAINER_CREATING: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_CRASHLOOP_BACKOFF: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_ERROR: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_EVICTED: _ClassVar[KubePodStatus]
    KUBE_POD_STATUS_FAILED: _ClassVar[KubePodStatus]

class ServiceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_STATUS_UNSPECIFIED: _ClassVar[ServiceStatus]
    SERVICE_STATUS_FAILED: _ClassVar[ServiceStatus]
    SERVICE_STATUS_DEGRADED: _ClassVar[ServiceStatus]
    SERVICE_STATUS_HEALTHY: _ClassVar[ServiceStatus]

class KubeCompUpdateStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KUBE_COMP_UPDATE_STATUS_UNSPECIFIED: _ClassVar[KubeCompUpdateStatus]
    KUBE_COMP_UPDATE_STATUS_DOWNLOAD: _ClassVar[KubeCompUpdateStatus]
    KUBE_COMP_UPDATE_STATUS_DOWNLOAD_FAILED: _ClassVar[KubeCompUpdateStatus]
    KUBE_COMP_UPDATE_STATUS_IN_PROGRESS: _ClassVar[KubeCompUpdateStatus]
    KUBE_COMP_UPDATE_STATUS_FAILED: _ClassVar[KubeCompUpdateStatus]
    KUBE_COMP_UPDATE_STATUS_COMPLETED: _ClassVar[KubeCompUpdateStatus]

class KubeComp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KUBE_COMP_UNSPECIFIED: _ClassVar[KubeComp]
    KUBE_COMP_CONTAINERD: _ClassVar[KubeComp]
    KUBE_COMP_K3S: _ClassVar[KubeComp]
    KUBE_COMP_MULTUS: _ClassVar[KubeComp]
    KUBE_COMP_KUBEVIRT: _ClassVar[KubeComp]
    KUBE_COMP_CDI: _ClassVar[KubeComp]
    KUBE_COMP_LONGHORN: _ClassVar[KubeComp]

class KubeVMIStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KUBE_VMI_STATUS_UNSPECIFIED: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_PENDING: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_SCHEDULING: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_SCHEDULED: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_RUNNING: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_SUCCEEDED: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_FAILED: _ClassVar[KubeVMIStatus]
    KUBE_VMI_STATUS_UNKNOWN: _ClassVar[KubeVMIStatus]
KUBE_NODE_CONDITION_TYPE_UNSPECIFIED: KubeNodeConditionType
KUBE_NODE_CONDITION_TYPE_READY: KubeNodeConditionType
KUBE_NODE_CONDITION_TYPE_MEMORY_PRESSURE: KubeNodeConditionType
KUBE_NODE_CONDITION_TYPE_DISK_PRESSURE: KubeNodeConditionType
KUBE_NODE_CONDITION_TYPE_PID_PRESSURE: KubeNodeConditionType
KUBE_NODE_CONDITION_TYPE_NETWORK_UNAVAIL: KubeNodeConditionType
NODE_ADMISSION_UNSPECIFIED: NodeAdmission
NODE_ADMISSION_NOT_CLUSTERED: NodeAdmission
NODE_ADMISSION_LEAVING: NodeAdmission
NODE_ADMISSION_JOINING: NodeAdmission
NODE_ADMISSION_JOINED: NodeAdmission
STORAGE_HEALTH_STATUS_UNSPECIFIED: StorageHealthStatus
STORAGE_HEALTH_STATUS_HEALTHY: StorageHealthStatus
STORAGE_HEALTH_STATUS_DEGRADED_2_REPLICA_AVAILABLE_REPLICATING: StorageHealthStatus
STORAGE_HEALTH_STATUS_DEGRADED_2_REPLICA_AVAILABLE_NOT_REPLICATING: StorageHealthStatus
STORAGE_HEALTH_STATUS_DEGRADED_1_REPLICA_AVAILABLE_REPLICATING: StorageHealthStatus
STORAGE_HEALTH_STATUS_DEGRADED_1_REPLICA_AVAILABLE_NOT_REPLICATING: StorageHealthStatus
STORAGE_HEALTH_STATUS_FAILED: StorageHealthStatus
STORAGE_VOLUME_STATE_UNSPECIFIED: StorageVolumeState
STORAGE_VOLUME_STATE_CREATING: StorageVolumeState
STORAGE_VOLUME_STATE_ATTACHED: StorageVolumeState
STORAGE_VOLUME_STATE_DETACHED: StorageVolumeState
STORAGE_VOLUME_STATE_ATTACHING: StorageVolumeState
STORAGE_VOLUME_STATE_DETACHING: StorageVolumeState
STORAGE_VOLUME_STATE_DELETING: StorageVolumeState
STORAGE_VOLUME_ROBUSTNESS_UNSPECIFIED: StorageVolumeRobustness
STORAGE_VOLUME_ROBUSTNESS_HEALTHY: StorageVolumeRobustness
STORAGE_VOLUME_ROBUSTNESS_DEGRADED: StorageVolumeRobustness
STORAGE_VOLUME_ROBUSTNESS_FAULTED: StorageVolumeRobustness
STORAGE_VOLUME_PVC_STATUS_UNSPECIFIED: StorageVolumePVCStatus
STORAGE_VOLUME_PVC_STATUS_BOUND: StorageVolumePVCStatus
STORAGE_VOLUME_PVC_STATUS_PENDING: StorageVolumePVCStatus
STORAGE_VOLUME_PVC_STATUS_AVAILABLE: StorageVolumePVCStatus
STORAGE_VOLUME_PVC_STATUS_RELEASED: StorageVolumePVCStatus
STORAGE_VOLUME_PVC_STATUS_FAILED: StorageVolumePVCStatus
STORAGE_VOLUME_REPLICA_STATUS_UNSPECIFIED: StorageVolumeReplicaStatus
STORAGE_VOLUME_REPLICA_STATUS_REBUILDING: StorageVolumeReplicaStatus
STORAGE_VOLUME_REPLICA_STATUS_ONLINE: StorageVolumeReplicaStatus
STORAGE_VOLUME_REPLICA_STATUS_FAILED: StorageVolumeReplicaStatus
STORAGE_VOLUME_REPLICA_STATUS_OFFLINE: StorageVolumeReplicaStatus
STORAGE_VOLUME_REPLICA_STATUS_STARTING: StorageVolumeReplicaStatus
STORAGE_VOLUME_REPLICA_STATUS_STOPPING: StorageVolumeReplicaStatus
KUBE_POD_STATUS_UNSPECIFIED: KubePodStatus
KUBE_POD_STATUS_PENDING: KubePodStatus
KUBE_POD_STATUS_RUNNING: KubePodStatus
KUBE_POD_STATUS_SUCCEEDED: KubePodStatus
KUBE_POD_STATUS_CONTAINER_CREATING: KubePodStatus
KUBE_POD_STATUS_CRASHLOOP_BACKOFF: KubePodStatus
KUBE_POD_STATUS_ERROR: KubePodStatus
KUBE_POD_STATUS_EVICTED: KubePodStatus
KUBE_POD_STATUS_FAILED: KubePodStatus
SERVICE_STATUS_UNSPECIFIED: ServiceStatus
SERVICE_STATUS_FAILED: ServiceStatus
SERVICE_STATUS_DEGRADED: ServiceStatus
SERVICE_STATUS_HEALTHY: ServiceStatus
KUBE_COMP_UPDATE_STATUS_UNSPECIFIED: KubeCompUpdateStatus
KUBE_COMP_UPDATE_STATUS_DOWNLOAD: KubeCompUpdateStatus
KUBE_COMP_UPDATE_STATUS_DOWNLOAD_FAILED: KubeCompUpdateStatus
KUBE_COMP_UPDATE_STATUS_IN_PROGRESS: KubeCompUpdateStatus
KUBE_COMP_UPDATE_STATUS_FAILED: KubeCompUpdateStatus
KUBE_COMP_UPDATE_STATUS_COMPLETED: KubeCompUpdateStatus
KUBE_COMP_UNSPECIFIED: KubeComp
KUBE_COMP_CONTAINERD: KubeComp
KUBE_COMP_K3S: KubeComp
KUBE_COMP_MULTUS: KubeComp
KUBE_COMP_KUBEVIRT: KubeComp
KUBE_COMP_CDI: KubeComp
KUBE_COMP_LONGHORN: KubeComp
KUBE_VMI_STATUS_UNSPECIFIED: KubeVMIStatus
KUBE_VMI_STATUS_PENDING: KubeVMIStatus
KUBE_VMI_STATUS_SCHEDULING: KubeVMIStatus
KUBE_VMI_STATUS_SCHEDULED: KubeVMIStatus
KUBE_VMI_STATUS_RUNNING: KubeVMIStatus
KUBE_VMI_STATUS_SUCCEEDED: KubeVMIStatus
KUBE_VMI_STATUS_FAILED: KubeVMIStatus
KUBE_VMI_STATUS_UNKNOWN: KubeVMIStatus

class KubeNodeCondition(_message.Message):
    __slots__ = ("type", "set", "last_transition_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    type: KubeNodeConditionType
    set: bool
    last_transition_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[_Union[KubeNodeConditionType, str]] = ..., set: _Optional[bool] = ..., last_transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class KubeNodeInfo(_message.Message):
    __slots__ = ("name", "conditions", "role_server", "creation_timestamp", "api_server_sersion", "internal_ip", "schedulable", "admission_status", "node_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ROLE_SERVER_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    API_SERVER_SERSION_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_IP_FIELD_NUMBER: _ClassVar[int]
    SCHEDULABLE_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_STATUS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    conditions: _containers.RepeatedCompositeFieldContainer[KubeNodeCondition]
    role_server: bool
    creation_timestamp: _timestamp_pb2.Timestamp
    api_server_sersion: str
    internal_ip: str
    schedulable: bool
    admission_status: NodeAdmission
    node_id: str
    def __init__(self, name: _Optional[str] = ..., conditions: _Optional[_Iterable[_Union[KubeNodeCondition, _Mapping]]] = ..., role_server: _Optional[bool] = ..., creation_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., api_server_sersion: _Optional[str] = ..., internal_ip: _Optional[str] = ..., schedulable: _Optional[bool] = ..., admission_status: _Optional[_Union[NodeAdmission, str]] = ..., node_id: _Optional[str] = ...) -> None: ...

class KubePodNameSpaceInfo(_message.Message):
    __slots__ = ("name", "pod_count", "pod_running_count", "pod_pending_count", "pod_failed_count", "pod_succeeded_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POD_COUNT_FIELD_NUMBER: _ClassVar[int]
    POD_RUNNING_COUNT_FIELD_NUMBER: _ClassVar[int]
    POD_PENDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    POD_FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    POD_SUCCEEDED_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    pod_count: int
    pod_running_count: int
    pod_pending_count: int
    pod_failed_count: int
    pod_succeeded_count: int
    def __init__(self, name: _Optional[str] = ..., pod_count: _Optional[int] = ..., pod_running_count: _Optional[int] = ..., pod_pending_count: _Optional[int] = ..., pod_failed_count: _Optional[int] = ..., pod_succeeded_count: _Optional[int] = ...) -> None: ...

class KubeEVEAppPodInfo(_message.Message):
    __slots__ = ("name", "status", "restart_count", "restart_timestamp", "creation_timestamp", "ip_address", "node_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESTART_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESTART_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: KubePodStatus
    restart_count: int
    restart_timestamp: _timestamp_pb2.Timestamp
    creation_timestamp: _timestamp_pb2.Timestamp
    ip_address: str
    node_name: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[KubePodStatus, str]] = ..., restart_count: _Optional[int] = ..., restart_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., creation_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ip_address: _Optional[str] = ..., node_name: _Optional[str] = ...) -> None: ...

class KubeVolumeReplicaInfo(_message.Message):
    __slots__ = ("name", "owner_node", "rebuild_progress_percentage", "status")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_NODE_FIELD_NUMBER: _ClassVar[int]
    REBUILD_PROGRESS_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    owner_node: str
    rebuild_progress_percentage: int
    status: StorageVolumeReplicaStatus
    def __init__(self, name: _Optional[str] = ..., owner_node: _Optional[str] = ..., rebuild_progress_percentage: _Optional[int] = ..., status: _Optional[_Union[StorageVolumeReplicaStatus, str]] = ...) -> None: ...

class KubeVolumeInfo(_message.Message):
    __slots__ = ("name", "state", "robustness", "creation_timestamp", "provisioned_bytes", "allocated_bytes", "pvc_status", "replica", "robustness_substate", "volume_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROBUSTNESS_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PROVISIONED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PVC_STATUS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    ROBUSTNESS_SUBSTATE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: StorageVolumeState
    robustness: StorageVolumeRobustness
    creation_timestamp: _timestamp_pb2.Timestamp
    provisioned_bytes: int
    allocated_bytes: int
    pvc_status: StorageVolumePVCStatus
    replica: _containers.RepeatedCompositeFieldContainer[KubeVolumeReplicaInfo]
    robustness_substate: StorageHealthStatus
    volume_id: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[StorageVolumeState, str]] = ..., robustness: _Optional[_Union[StorageVolumeRobustness, str]] = ..., creation_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provisioned_bytes: _Optional[int] = ..., allocated_bytes: _Optional[int] = ..., pvc_status: _Optional[_Union[StorageVolumePVCStatus, str]] = ..., replica: _Optional[_Iterable[_Union[KubeVolumeReplicaInfo, _Mapping]]] = ..., robustness_substate: _Optional[_Union[StorageHealthStatus, str]] = ..., volume_id: _Optional[str] = ...) -> None: ...

class KubeStorageInfo(_message.Message):
    __slots__ = ("health", "transition_time", "volumes")
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    health: ServiceStatus
    transition_time: _timestamp_pb2.Timestamp
    volumes: _containers.RepeatedCompositeFieldContainer[KubeVolumeInfo]
    def __init__(self, health: _Optional[_Union[ServiceStatus, str]] = ..., transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., volumes: _Optional[_Iterable[_Union[KubeVolumeInfo, _Mapping]]] = ...) -> None: ...

class KubeVMIInfo(_message.Message):
    __slots__ = ("name", "status", "creation_time", "last_transition_time", "is_ready", "node_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    IS_READY_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: KubeVMIStatus
    creation_time: _timestamp_pb2.Timestamp
    last_transition_time: _timestamp_pb2.Timestamp
    is_ready: bool
    node_name: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[KubeVMIStatus, str]] = ..., creation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., is_ready: _Optional[bool] = ..., node_name: _Optional[str] = ...) -> None: ...
