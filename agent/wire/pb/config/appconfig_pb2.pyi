from agent.wire.pb.config import devcommon_pb2 as _devcommon_pb2
from agent.wire.pb.config import netconfig_pb2 as _netconfig_pb2
from agent.wire.pb.config import storage_pb2 as _storage_pb2
from agent.wire.pb.config import vm_pb2 as _vm_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetaDataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MetaDataDrive: _ClassVar[MetaDataType]
    MetaDataNone: _ClassVar[MetaDataType]
    MetaDataOpenStack: _ClassVar[MetaDataType]
    MetaDataDriveMultipart: _ClassVar[MetaDataType]

class SnapshotType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_TYPE_UNSPECIFIED: _ClassVar[SnapshotType]
    SNAPSHOT_TYPE_APP_UPDATE: _ClassVar[SnapshotType]
    SNAPSHOT_TYPE_IMMEDIATE: _ClassVar[SnapshotType]

class AffinityType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AFFINITY_TYPE_PREFERRED: _ClassVar[AffinityType]
    AFFINITY_TYPE_REQUIRED: _ClassVar[AffinityType]

class AppRuntimeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APP_RUNTIME_TYPE_UNSPECIFIED: _ClassVar[AppRuntimeType]
    APP_RUNTIME_TYPE_DOCKER: _ClassVar[AppRuntimeType]
MetaDataDrive: MetaDataType
MetaDataNone: MetaDataType
MetaDataOpenStack: MetaDataType
MetaDataDriveMultipart: MetaDataType
SNAPSHOT_TYPE_UNSPECIFIED: SnapshotType
SNAPSHOT_TYPE_APP_UPDATE: SnapshotType
SNAPSHOT_TYPE_IMMEDIATE: SnapshotType
AFFINITY_TYPE_PREFERRED: AffinityType
AFFINITY_TYPE_REQUIRED: AffinityType
APP_RUNTIME_TYPE_UNSPECIFIED: AppRuntimeType
APP_RUNTIME_TYPE_DOCKER: AppRuntimeType

class InstanceOpsCmd(_message.Message):
    __slots__ = ("counter", "opsTime")
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    OPSTIME_FIELD_NUMBER: _ClassVar[int]
    counter: int
    opsTime: str
    def __init__(self, counter: _Optional[int] = ..., opsTime: _Optional[str] = ...) -> None: ...

class SnapshotDesc(_message.Message):
    __slots__ = ("id", "type")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: SnapshotType
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[SnapshotType, str]] = ...) -> None: ...

class SnapshotConfig(_message.Message):
    __slots__ = ("active_snapshot", "rollback_cmd", "max_snapshots", "snapshots")
    ACTIVE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_CMD_FIELD_NUMBER: _ClassVar[int]
    MAX_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    active_snapshot: str
    rollback_cmd: InstanceOpsCmd
    max_snapshots: int
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotDesc]
    def __init__(self, active_snapshot: _Optional[str] = ..., rollback_cmd: _Optional[_Union[InstanceOpsCmd, _Mapping]] = ..., max_snapshots: _Optional[int] = ..., snapshots: _Optional[_Iterable[_Union[SnapshotDesc, _Mapping]]] = ...) -> None: ...

class AppInstanceConfig(_message.Message):
    __slots__ = ("uuidandversion", "displayname", "fixedresources", "drives", "activate", "interfaces", "adapters", "restart", "purge", "userData", "remoteConsole", "cipherData", "collectStatsIPAddr", "volumeRefList", "metaDataType", "profile_list", "start_delay_in_seconds", "service", "cloud_init_version", "snapshot", "patchRef", "designated_node_id", "vm_resolution", "runtime_type", "affinity")
    UUIDANDVERSION_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    FIXEDRESOURCES_FIELD_NUMBER: _ClassVar[int]
    DRIVES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    USERDATA_FIELD_NUMBER: _ClassVar[int]
    REMOTECONSOLE_FIELD_NUMBER: _ClassVar[int]
    CIPHERDATA_FIELD_NUMBER: _ClassVar[int]
    COLLECTSTATSIPADDR_FIELD_NUMBER: _ClassVar[int]
    VOLUMEREFLIST_FIELD_NUMBER: _ClassVar[int]
    METADATATYPE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_LIST_FIELD_NUMBER: _ClassVar[int]
    START_DELAY_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CLOUD_INIT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PATCHREF_FIELD_NUMBER: _ClassVar[int]
    DESIGNATED_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VM_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    uuidandversion: _devcommon_pb2.UUIDandVersion
    displayname: str
    fixedresources: _vm_pb2.VmConfig
    drives: _containers.RepeatedCompositeFieldContainer[_storage_pb2.Drive]
    activate: bool
    interfaces: _containers.RepeatedCompositeFieldContainer[_netconfig_pb2.NetworkAdapter]
    adapters: _containers.RepeatedCompositeFieldContainer[_devcommon_pb2.Adapter]
    restart: InstanceOpsCmd
    purge: InstanceOpsCmd
    userData: str
    remoteConsole: bool
    cipherData: _acipherinfo_pb2.CipherBlock
    collectStatsIPAddr: str
    volumeRefList: _containers.RepeatedCompositeFieldContainer[VolumeRef]
    metaDataType: MetaDataType
    profile_list: _containers.RepeatedScalarFieldContainer[str]
    start_delay_in_seconds: int
    service: bool
    cloud_init_version: int
    snapshot: SnapshotConfig
    patchRef: PatchEnvelopeRef
    designated_node_id: str
    vm_resolution: str
    runtime_type: AppRuntimeType
    affinity: AffinityType
    def __init__(self, uuidandversion: _Optional[_Union[_devcommon_pb2.UUIDandVersion, _Mapping]] = ..., displayname: _Optional[str] = ..., fixedresources: _Optional[_Union[_vm_pb2.VmConfig, _Mapping]] = ..., drives: _Optional[_Iterable[_Union[_storage_pb2.Drive, _Mapping]]] = ..., activate: _Optional[bool] = ..., interfaces: _Optional[_Iterable[_Union[_netconfig_pb2.NetworkAdapter, _Mapping]]] = ..., adapters: _Optional[_Iterable[_Union[_devcommon_pb2.Adapter, _Mapping]]] = ..., restart: _Optional[_Union[InstanceOpsCmd, _Mapping]] = ..., purge: _Optional[_Union[InstanceOpsCmd, _Mapping]] = ..., userData: _Optional[str] = ..., remoteConsole: _Optional[bool] = ..., cipherData: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ..., collectStatsIPAddr: _Optional[str] = ..., volumeRefList: _Optional[_Iterable[_Union[VolumeRef, _Mapping]]] = ..., metaDataType: _Optional[_Union[MetaDataType, str]] = ..., profile_list: _Optional[_Iterable[str]] = ..., start_delay_in_seconds: _Optional[int] = ..., service: _Optional[bool] = ..., cloud_init_version: _Optional[int] = ..., snapshot: _Optional[_Union[SnapshotConfig, _Mapping]] = ..., patchRef: _Optional[_Union[PatchEnvelopeRef, _Mapping]] = ..., designated_node_id: _Optional[str] = ..., vm_resolution: _Optional[str] = ..., runtime_type: _Optional[_Union[AppRuntimeType, str]] = ..., affinity: _Optional[_Union[AffinityType, str]] = ...) -> None: ...

class PatchEnvelopeRef(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class VolumeRef(_message.Message):
    __slots__ = ("uuid", "generationCount", "mount_dir")
    UUID_FIELD_NUMBER: _ClassVar[int]
    GENERATIONCOUNT_FIELD_NUMBER: _ClassVar[int]
    MOUNT_DIR_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    generationCount: int
    mount_dir: str
    def __init__(self, uuid: _Optional[str] = ..., generationCount: _Optional[int] = ..., mount_dir: _Optional[str] = ...) -> None: ...
