import datetime

from agent.wire.pb.auth import auth_pb2 as _auth_pb2
from agent.wire.pb.certs import certs_pb2 as _certs_pb2
from agent.wire.pb.config import appconfig_pb2 as _appconfig_pb2
from agent.wire.pb.config import baseosconfig_pb2 as _baseosconfig_pb2
from agent.wire.pb.config import devcommon_pb2 as _devcommon_pb2
from agent.wire.pb.config import devmodel_pb2 as _devmodel_pb2
from agent.wire.pb.config import edge_node_cluster_pb2 as _edge_node_cluster_pb2
from agent.wire.pb.config import edgeview_pb2 as _edgeview_pb2
from agent.wire.pb.config import netconfig_pb2 as _netconfig_pb2
from agent.wire.pb.config import netinst_pb2 as _netinst_pb2
from agent.wire.pb.config import patch_envelope_pb2 as _patch_envelope_pb2
from agent.wire.pb.config import scep_pb2 as _scep_pb2
from agent.wire.pb.config import storage_pb2 as _storage_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LOCConfig(_message.Message):
    __slots__ = ("loc_url", "datastore_collect_info_id")
    LOC_URL_FIELD_NUMBER: _ClassVar[int]
    DATASTORE_COLLECT_INFO_ID_FIELD_NUMBER: _ClassVar[int]
    loc_url: str
    datastore_collect_info_id: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, loc_url: _Optional[str] = ..., datastore_collect_info_id: _Optional[_Iterable[str]] = ...) -> None: ...

class EdgeDevConfig(_message.Message):
    __slots__ = ("id", "apps", "networks", "datastores", "base", "reboot", "backup", "configItems", "systemAdapterList", "deviceIoList", "manufacturer", "productName", "networkInstances", "cipherContexts", "contentInfo", "volumes", "controllercert_confighash", "maintenance_mode", "controller_epoch", "baseos", "global_profile", "local_profile_server", "profile_server_token", "vlans", "bonds", "edgeview", "disks", "shutdown", "device_name", "project_name", "project_id", "enterprise_name", "enterprise_id", "config_timestamp", "loc_config", "patchEnvelopes", "cluster", "pnacs", "scep_profiles")
    ID_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    DATASTORES_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    REBOOT_FIELD_NUMBER: _ClassVar[int]
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    CONFIGITEMS_FIELD_NUMBER: _ClassVar[int]
    SYSTEMADAPTERLIST_FIELD_NUMBER: _ClassVar[int]
    DEVICEIOLIST_FIELD_NUMBER: _ClassVar[int]
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    PRODUCTNAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKINSTANCES_FIELD_NUMBER: _ClassVar[int]
    CIPHERCONTEXTS_FIELD_NUMBER: _ClassVar[int]
    CONTENTINFO_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    CONTROLLERCERT_CONFIGHASH_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_MODE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BASEOS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_PROFILE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PROFILE_SERVER_FIELD_NUMBER: _ClassVar[int]
    PROFILE_SERVER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VLANS_FIELD_NUMBER: _ClassVar[int]
    BONDS_FIELD_NUMBER: _ClassVar[int]
    EDGEVIEW_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LOC_CONFIG_FIELD_NUMBER: _ClassVar[int]
    PATCHENVELOPES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    PNACS_FIELD_NUMBER: _ClassVar[int]
    SCEP_PROFILES_FIELD_NUMBER: _ClassVar[int]
    id: _devcommon_pb2.UUIDandVersion
    apps: _containers.RepeatedCompositeFieldContainer[_appconfig_pb2.AppInstanceConfig]
    networks: _containers.RepeatedCompositeFieldContainer[_netconfig_pb2.NetworkConfig]
    datastores: _containers.RepeatedCompositeFieldContainer[_storage_pb2.DatastoreConfig]
    base: _containers.RepeatedCompositeFieldContainer[_baseosconfig_pb2.BaseOSConfig]
    reboot: _devcommon_pb2.DeviceOpsCmd
    backup: _devcommon_pb2.DeviceOpsCmd
    configItems: _containers.RepeatedCompositeFieldContainer[_devcommon_pb2.ConfigItem]
    systemAdapterList: _containers.RepeatedCompositeFieldContainer[_devmodel_pb2.SystemAdapter]
    deviceIoList: _containers.RepeatedCompositeFieldContainer[_devmodel_pb2.PhysicalIO]
    manufacturer: str
    productName: str
    networkInstances: _containers.RepeatedCompositeFieldContainer[_netinst_pb2.NetworkInstanceConfig]
    cipherContexts: _containers.RepeatedCompositeFieldContainer[_acipherinfo_pb2.CipherContext]
    contentInfo: _containers.RepeatedCompositeFieldContainer[_storage_pb2.ContentTree]
    volumes: _containers.RepeatedCompositeFieldContainer[_storage_pb2.Volume]
    controllercert_confighash: str
    maintenance_mode: bool
    controller_epoch: int
    baseos: _baseosconfig_pb2.BaseOS
    global_profile: str
    local_profile_server: str
    profile_server_token: str
    vlans: _containers.RepeatedCompositeFieldContainer[_devmodel_pb2.VlanAdapter]
    bonds: _containers.RepeatedCompositeFieldContainer[_devmodel_pb2.BondAdapter]
    edgeview: _edgeview_pb2.EdgeViewConfig
    disks: _storage_pb2.DisksConfig
    shutdown: _devcommon_pb2.DeviceOpsCmd
    device_name: str
    project_name: str
    project_id: str
    enterprise_name: str
    enterprise_id: str
    config_timestamp: _timestamp_pb2.Timestamp
    loc_config: LOCConfig
    patchEnvelopes: _containers.RepeatedCompositeFieldContainer[_patch_envelope_pb2.EvePatchEnvelope]
    cluster: _edge_node_cluster_pb2.EdgeNodeCluster
    pnacs: _containers.RepeatedCompositeFieldContainer[_netconfig_pb2.PNAC]
    scep_profiles: _containers.RepeatedCompositeFieldContainer[_scep_pb2.SCEPProfile]
    def __init__(self, id: _Optional[_Union[_devcommon_pb2.UUIDandVersion, _Mapping]] = ..., apps: _Optional[_Iterable[_Union[_appconfig_pb2.AppInstanceConfig, _Mapping]]] = ..., networks: _Optional[_Iterable[_Union[_netconfig_pb2.NetworkConfig, _Mapping]]] = ..., datastores: _Optional[_Iterable[_Union[_storage_pb2.DatastoreConfig, _Mapping]]] = ..., base: _Optional[_Iterable[_Union[_baseosconfig_pb2.BaseOSConfig, _Mapping]]] = ..., reboot: _Optional[_Union[_devcommon_pb2.DeviceOpsCmd, _Mapping]] = ..., backup: _Optional[_Union[_devcommon_pb2.DeviceOpsCmd, _Mapping]] = ..., configItems: _Optional[_Iterable[_Union[_devcommon_pb2.ConfigItem, _Mapping]]] = ..., systemAdapterList: _Optional[_Iterable[_Union[_devmodel_pb2.SystemAdapter, _Mapping]]] = ..., deviceIoList: _Optional[_Iterable[_Union[_devmodel_pb2.PhysicalIO, _Mapping]]] = ..., manufacturer: _Optional[str] = ..., productName: _Optional[str] = ..., networkInstances: _Optional[_Iterable[_Union[_netinst_pb2.NetworkInstanceConfig, _Mapping]]] = ..., cipherContexts: _Optional[_Iterable[_Union[_acipherinfo_pb2.CipherContext, _Mapping]]] = ..., contentInfo: _Optional[_Iterable[_Union[_storage_pb2.ContentTree, _Mapping]]] = ..., volumes: _Optional[_Iterable[_Union[_storage_pb2.Volume, _Mapping]]] = ..., controllercert_confighash: _Optional[str] = ..., maintenance_mode: _Optional[bool] = ..., controller_epoch: _Optional[int] = ..., baseos: _Optional[_Union[_baseosconfig_pb2.BaseOS, _Mapping]] = ..., global_profile: _Optional[str] = ..., local_profile_server: _Optional[str] = ..., profile_server_token: _Optional[str] = ..., vlans: _Optional[_Iterable[_Union[_devmodel_pb2.VlanAdapter, _Mapping]]] = ..., bonds: _Optional[_Iterable[_Union[_devmodel_pb2.BondAdapter, _Mapping]]] = ..., edgeview: _Optional[_Union[_edgeview_pb2.EdgeViewConfig, _Mapping]] = ..., disks: _Optional[_Union[_storage_pb2.DisksConfig, _Mapping]] = ..., shutdown: _Optional[_Union[_devcommon_pb2.DeviceOpsCmd, _Mapping]] = ..., device_name: _Optional[str] = ..., project_name: _Optional[str] = ..., project_id: _Optional[str] = ..., enterprise_name: _Optional[str] = ..., enterprise_id: _Optional[str] = ..., config_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loc_config: _Optional[_Union[LOCConfig, _Mapping]] = ..., patchEnvelopes: _Optional[_Iterable[_Union[_patch_envelope_pb2.EvePatchEnvelope, _Mapping]]] = ..., cluster: _Optional[_Union[_edge_node_cluster_pb2.EdgeNodeCluster, _Mapping]] = ..., pnacs: _Optional[_Iterable[_Union[_netconfig_pb2.PNAC, _Mapping]]] = ..., scep_profiles: _Optional[_Iterable[_Union[_scep_pb2.SCEPProfile, _Mapping]]] = ...) -> None: ...

class ConfigRequest(_message.Message):
    __slots__ = ("configHash", "integrity_token")
    CONFIGHASH_FIELD_NUMBER: _ClassVar[int]
    INTEGRITY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    configHash: str
    integrity_token: bytes
    def __init__(self, configHash: _Optional[str] = ..., integrity_token: _Optional[bytes] = ...) -> None: ...

class ConfigResponse(_message.Message):
    __slots__ = ("config", "configHash")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONFIGHASH_FIELD_NUMBER: _ClassVar[int]
    config: EdgeDevConfig
    configHash: str
    def __init__(self, config: _Optional[_Union[EdgeDevConfig, _Mapping]] = ..., configHash: _Optional[str] = ...) -> None: ...

class BootstrapConfig(_message.Message):
    __slots__ = ("signed_config", "controller_certs")
    SIGNED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_CERTS_FIELD_NUMBER: _ClassVar[int]
    signed_config: _auth_pb2.AuthContainer
    controller_certs: _containers.RepeatedCompositeFieldContainer[_certs_pb2.ZCert]
    def __init__(self, signed_config: _Optional[_Union[_auth_pb2.AuthContainer, _Mapping]] = ..., controller_certs: _Optional[_Iterable[_Union[_certs_pb2.ZCert, _Mapping]]] = ...) -> None: ...
