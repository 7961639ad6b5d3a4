import datetime

from agent.wire.pb.evecommon import devmodelcommon_pb2 as _devmodelcommon_pb2
from agent.wire.pb.evecommon import evecommon_pb2 as _evecommon_pb2
from agent.wire.pb.evecommon import netcmn_pb2 as _netcmn_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.wire.pb.info import bond_pb2 as _bond_pb2
from agent.wire.pb.info import cert_pb2 as _cert_pb2
from agent.wire.pb.info import common_pb2 as _common_pb2
from agent.wire.pb.info import edge_node_cluster_pb2 as _edge_node_cluster_pb2
from agent.wire.pb.info import hardware_pb2 as _hardware_pb2
from agent.wire.pb.info import ntpsources_pb2 as _ntpsources_pb2
from agent.wire.pb.info import patch_envelope_pb2 as _patch_envelope_pb2
from agent.wire.pb.info import pnac_pb2 as _pnac_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DepMetricItemType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DepMetricItemOther: _ClassVar[DepMetricItemType]
    DepMetricItemGauge: _ClassVar[DepMetricItemType]
    DepMetricItemCounter: _ClassVar[DepMetricItemType]
    DepMetricItemState: _ClassVar[DepMetricItemType]

class ZInfoTypes(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZiNop: _ClassVar[ZInfoTypes]
    ZiDevice: _ClassVar[ZInfoTypes]
    ZiApp: _ClassVar[ZInfoTypes]
    ZiNetworkInstance: _ClassVar[ZInfoTypes]
    ZiVolume: _ClassVar[ZInfoTypes]
    ZiContentTree: _ClassVar[ZInfoTypes]
    ZiBlobList: _ClassVar[ZInfoTypes]
    ZiAppInstMetaData: _ClassVar[ZInfoTypes]
    ZiHardware: _ClassVar[ZInfoTypes]
    ZiEdgeview: _ClassVar[ZInfoTypes]
    ZiLocation: _ClassVar[ZInfoTypes]
    ZiPatchEnvelope: _ClassVar[ZInfoTypes]
    ZiNTPSources: _ClassVar[ZInfoTypes]
    ZiKubeCluster: _ClassVar[ZInfoTypes]
    ZiKubeClusterUpdateStatus: _ClassVar[ZInfoTypes]

class ZSwState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVALID: _ClassVar[ZSwState]
    INITIAL: _ClassVar[ZSwState]
    DOWNLOAD_STARTED: _ClassVar[ZSwState]
    DOWNLOADED: _ClassVar[ZSwState]
    DELIVERED: _ClassVar[ZSwState]
    INSTALLED: _ClassVar[ZSwState]
    BOOTING: _ClassVar[ZSwState]
    RUNNING: _ClassVar[ZSwState]
    HALTING: _ClassVar[ZSwState]
    HALTED: _ClassVar[ZSwState]
    RESTARTING: _ClassVar[ZSwState]
    PURGING: _ClassVar[ZSwState]
    RESOLVING_TAG: _ClassVar[ZSwState]
    RESOLVED_TAG: _ClassVar[ZSwState]
    CREATING_VOLUME: _ClassVar[ZSwState]
    CREATED_VOLUME: _ClassVar[ZSwState]
    VERIFYING: _ClassVar[ZSwState]
    VERIFIED: _ClassVar[ZSwState]
    LOADING: _ClassVar[ZSwState]
    LOADED: _ClassVar[ZSwState]
    AWAITNETWORKINSTANCE: _ClassVar[ZSwState]
    ERROR: _ClassVar[ZSwState]
    START_DELAYED: _ClassVar[ZSwState]
    PENDING: _ClassVar[ZSwState]
    SCHEDULING: _ClassVar[ZSwState]

class HwSecurityModuleStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[HwSecurityModuleStatus]
    NOTFOUND: _ClassVar[HwSecurityModuleStatus]
    DISABLED: _ClassVar[HwSecurityModuleStatus]
    ENABLED: _ClassVar[HwSecurityModuleStatus]

class DataSecAtRestStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASEC_AT_REST_UNKNOWN: _ClassVar[DataSecAtRestStatus]
    DATASEC_AT_REST_DISABLED: _ClassVar[DataSecAtRestStatus]
    DATASEC_AT_REST_ENABLED: _ClassVar[DataSecAtRestStatus]
    DATASEC_AT_REST_ERROR: _ClassVar[DataSecAtRestStatus]

class PCRStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PCR_UNKNOWN: _ClassVar[PCRStatus]
    PCR_ENABLED: _ClassVar[PCRStatus]
    PCR_DISABLED: _ClassVar[PCRStatus]

class SimType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIM_TYPE_UNSPECIFIED: _ClassVar[SimType]
    SIM_TYPE_PHYSICAL: _ClassVar[SimType]
    SIM_TYPE_ESIM: _ClassVar[SimType]

class ZCellularOperatingState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Z_CELLULAR_OPERATING_STATE_UNSPECIFIED: _ClassVar[ZCellularOperatingState]
    Z_CELLULAR_OPERATING_STATE_OFFLINE: _ClassVar[ZCellularOperatingState]
    Z_CELLULAR_OPERATING_STATE_RADIO_OFF: _ClassVar[ZCellularOperatingState]
    Z_CELLULAR_OPERATING_STATE_ONLINE: _ClassVar[ZCellularOperatingState]
    Z_CELLULAR_OPERATING_STATE_ONLINE_AND_CONNECTED: _ClassVar[ZCellularOperatingState]
    Z_CELLULAR_OPERATING_STATE_UNRECOGNIZED: _ClassVar[ZCellularOperatingState]

class ZCellularControlProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Z_CELLULAR_CONTROL_PROTOCOL_UNSPECIFIED: _ClassVar[ZCellularControlProtocol]
    Z_CELLULAR_CONTROL_PROTOCOL_QMI: _ClassVar[ZCellularControlProtocol]
    Z_CELLULAR_CONTROL_PROTOCOL_MBIM: _ClassVar[ZCellularControlProtocol]

class ZDeviceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZDEVICE_STATE_UNSPECIFIED: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_ONLINE: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_REBOOTING: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_MAINTENANCE_MODE: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_BASEOS_UPDATING: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_BOOTING: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_PREPARING_POWEROFF: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_POWERING_OFF: _ClassVar[ZDeviceState]
    ZDEVICE_STATE_PREPARED_POWEROFF: _ClassVar[ZDeviceState]

class StorageStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_STATUS_UNSPECIFIED: _ClassVar[StorageStatus]
    STORAGE_STATUS_ONLINE: _ClassVar[StorageStatus]
    STORAGE_STATUS_DEGRADED: _ClassVar[StorageStatus]
    STORAGE_STATUS_FAULTED: _ClassVar[StorageStatus]
    STORAGE_STATUS_OFFLINE: _ClassVar[StorageStatus]
    STORAGE_STATUS_UNAVAIL: _ClassVar[StorageStatus]
    STORAGE_STATUS_REMOVED: _ClassVar[StorageStatus]
    STORAGE_STATUS_SUSPENDED: _ClassVar[StorageStatus]

class StorageRaidType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_RAID_TYPE_UNSPECIFIED: _ClassVar[StorageRaidType]
    STORAGE_RAID_TYPE_RAID0: _ClassVar[StorageRaidType]
    STORAGE_RAID_TYPE_RAID1: _ClassVar[StorageRaidType]
    STORAGE_RAID_TYPE_RAID5: _ClassVar[StorageRaidType]
    STORAGE_RAID_TYPE_RAID6: _ClassVar[StorageRaidType]
    STORAGE_RAID_TYPE_RAID7: _ClassVar[StorageRaidType]
    STORAGE_RAID_TYPE_NORAID: _ClassVar[StorageRaidType]

class StorageTypeInfo(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_TYPE_INFO_UNSPECIFIED: _ClassVar[StorageTypeInfo]
    STORAGE_TYPE_INFO_EXT4: _ClassVar[StorageTypeInfo]
    STORAGE_TYPE_INFO_ZFS: _ClassVar[StorageTypeInfo]

class APICapability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    API_CAPABILITY_UNSPECIFIED: _ClassVar[APICapability]
    API_CAPABILITY_RETRY_UPDATE: _ClassVar[APICapability]
    API_CAPABILITY_SHUTDOWN: _ClassVar[APICapability]
    API_CAPABILITY_START_DELAY_IN_SECONDS: _ClassVar[APICapability]
    API_CAPABILITY_EDGEVIEW: _ClassVar[APICapability]
    API_CAPABILITY_VOLUME_SNAPSHOTS: _ClassVar[APICapability]
    API_CAPABILITY_NETWORK_INSTANCE_ROUTING: _ClassVar[APICapability]
    API_CAPABILITY_BOOT_MODE: _ClassVar[APICapability]
    API_CAPABILITY_MTU: _ClassVar[APICapability]
    API_CAPABILITY_ADAPTER_USER_LABELS: _ClassVar[APICapability]
    API_CAPABILITY_ENFORCED_NET_INTERFACE_ORDER: _ClassVar[APICapability]
    API_CAPABILITY_NTPS_FQDN: _ClassVar[APICapability]
    API_CAPABILITY_WIN_LIC_PASSTHROUGH: _ClassVar[APICapability]
    API_CAPABILITY_VOLUME_SNAPSHOTS_IMMEDIATE: _ClassVar[APICapability]
    API_CAPABILITY_ENCRYPTED_PATCH_ENVELOPE: _ClassVar[APICapability]
    API_CAPABILITY_SINGLE_STACK_IP_NETWORK: _ClassVar[APICapability]
    API_CAPABILITY_CELLULAR_ATTACH_CONFIG: _ClassVar[APICapability]
    API_CAPABILITY_EDGEVIEW_AUTHENTICATION: _ClassVar[APICapability]
    API_CAPABILITY_DISABLE_VTPM: _ClassVar[APICapability]
    API_CAPABILITY_LOC_REBOOT_COLLECT_INFO: _ClassVar[APICapability]
    API_CAPABILITY_SMART_REPORT: _ClassVar[APICapability]
    API_CAPABILITY_REPORT_TPM_EVENTLOG: _ClassVar[APICapability]
    API_CAPABILITY_APP_INSTANCE_NET_INTERFACE_CHANGE: _ClassVar[APICapability]

class BootReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOOT_REASON_UNSPECIFIED: _ClassVar[BootReason]
    BOOT_REASON_FIRST: _ClassVar[BootReason]
    BOOT_REASON_REBOOT_CMD: _ClassVar[BootReason]
    BOOT_REASON_UPDATE: _ClassVar[BootReason]
    BOOT_REASON_FALLBACK: _ClassVar[BootReason]
    BOOT_REASON_DISCONNECT: _ClassVar[BootReason]
    BOOT_REASON_FATAL: _ClassVar[BootReason]
    BOOT_REASON_OOM: _ClassVar[BootReason]
    BOOT_REASON_WATCHDOG_HUNG: _ClassVar[BootReason]
    BOOT_REASON_WATCHDOG_PID: _ClassVar[BootReason]
    BOOT_REASON_KERNEL: _ClassVar[BootReason]
    BOOT_REASON_POWER_FAIL: _ClassVar[BootReason]
    BOOT_REASON_UNKNOWN: _ClassVar[BootReason]
    BOOT_REASON_VAULT_FAILED: _ClassVar[BootReason]
    BOOT_REASON_POWEROFF_CMD: _ClassVar[BootReason]
    BOOT_REASON_PARSE_FAIL: _ClassVar[BootReason]

class MaintenanceModeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAINTENANCE_MODE_REASON_NONE: _ClassVar[MaintenanceModeReason]
    MAINTENANCE_MODE_REASON_USER_REQUESTED: _ClassVar[MaintenanceModeReason]
    MAINTENANCE_MODE_REASON_VAULT_LOCKED_UP: _ClassVar[MaintenanceModeReason]
    MAINTENANCE_MODE_REASON_LOW_DISK_SPACE: _ClassVar[MaintenanceModeReason]
    MAINTENANCE_MODE_REASON_TPM_ENCRYPTION_FAILURE: _ClassVar[MaintenanceModeReason]
    MAINTENANCE_MODE_REASON_TPM_QUOTE_FAILURE: _ClassVar[MaintenanceModeReason]
    MAINTENANCE_MODE_REASON_EDGE_NODE_CERTS_REFUSED: _ClassVar[MaintenanceModeReason]

class AttestationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTESTATION_STATE_UNSPECIFIED: _ClassVar[AttestationState]
    ATTESTATION_STATE_NONCE_WAIT: _ClassVar[AttestationState]
    ATTESTATION_STATE_TPM_QUOTE_WAIT: _ClassVar[AttestationState]
    ATTESTATION_STATE_TPM_ESCROW_WAIT: _ClassVar[AttestationState]
    ATTESTATION_STATE_ATTEST_WAIT: _ClassVar[AttestationState]
    ATTESTATION_STATE_ATTEST_ESCROW_WAIT: _ClassVar[AttestationState]
    ATTESTATION_STATE_RESTART_WAIT: _ClassVar[AttestationState]
    ATTESTATION_STATE_COMPLETE: _ClassVar[AttestationState]

class AppInstMetaDataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APP_INST_META_DATA_TYPE_NONE: _ClassVar[AppInstMetaDataType]
    APP_INST_META_DATA_TYPE_KUBE_CONFIG: _ClassVar[AppInstMetaDataType]
    APP_INST_META_DATA_TYPE_CUSTOM_STATUS: _ClassVar[AppInstMetaDataType]

class WirelessType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WIRELESS_TYPE_UNSPECIFIED: _ClassVar[WirelessType]
    WIRELESS_TYPE_WIFI: _ClassVar[WirelessType]
    WIRELESS_TYPE_CELLULAR: _ClassVar[WirelessType]

class BaseOsStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[BaseOsStatus]
    DOWNLOADING: _ClassVar[BaseOsStatus]
    DOWNLOAD_DONE: _ClassVar[BaseOsStatus]
    UPDATING: _ClassVar[BaseOsStatus]
    UPDATED: _ClassVar[BaseOsStatus]
    FALLBACK: _ClassVar[BaseOsStatus]
    FAILED: _ClassVar[BaseOsStatus]

class BaseOsSubStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE_SUBSTATUS: _ClassVar[BaseOsSubStatus]
    DOWNLOAD_INPROGRESS: _ClassVar[BaseOsSubStatus]
    VERIFY_INPROGRESS: _ClassVar[BaseOsSubStatus]
    UPDATE_INITIALIZING: _ClassVar[BaseOsSubStatus]
    UPDATE_REBOOTING: _ClassVar[BaseOsSubStatus]
    UPDATE_TESTING: _ClassVar[BaseOsSubStatus]
    UPDATE_NEED_TEST_CONFIRM: _ClassVar[BaseOsSubStatus]
    UPDATE_DEFERRED: _ClassVar[BaseOsSubStatus]

class SnapshotType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_TYPE_UNSPECIFIED: _ClassVar[SnapshotType]
    SNAPSHOT_TYPE_APP_UPDATE: _ClassVar[SnapshotType]
    SNAPSHOT_TYPE_IMMEDIATE: _ClassVar[SnapshotType]

class ZInfoClusterNodeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Z_INFO_CLUSTER_NODE_STATUS_UNSPECIFIED: _ClassVar[ZInfoClusterNodeStatus]
    Z_INFO_CLUSTER_NODE_STATUS_READY: _ClassVar[ZInfoClusterNodeStatus]
    Z_INFO_CLUSTER_NODE_STATUS_NOTREADY: _ClassVar[ZInfoClusterNodeStatus]
    Z_INFO_CLUSTER_NODE_STATUS_DOWN: _ClassVar[ZInfoClusterNodeStatus]

class ZInfoVpnState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VPN_INVALID: _ClassVar[ZInfoVpnState]
    VPN_INITIAL: _ClassVar[ZInfoVpnState]
    VPN_CONNECTING: _ClassVar[ZInfoVpnState]
    VPN_ESTABLISHED: _ClassVar[ZInfoVpnState]
    VPN_INSTALLED: _ClassVar[ZInfoVpnState]
    VPN_REKEYED: _ClassVar[ZInfoVpnState]
    VPN_DELETED: _ClassVar[ZInfoVpnState]

class ZNetworkInstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZNETINST_STATE_UNSPECIFIED: _ClassVar[ZNetworkInstanceState]
    ZNETINST_STATE_INIT: _ClassVar[ZNetworkInstanceState]
    ZNETINST_STATE_ONLINE: _ClassVar[ZNetworkInstanceState]
    ZNETINST_STATE_ERROR: _ClassVar[ZNetworkInstanceState]

class LocReliability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOC_RELIABILITY_UNSPECIFIED: _ClassVar[LocReliability]
    LOC_RELIABILITY_VERY_LOW: _ClassVar[LocReliability]
    LOC_RELIABILITY_LOW: _ClassVar[LocReliability]
    LOC_RELIABILITY_MEDIUM: _ClassVar[LocReliability]
    LOC_RELIABILITY_HIGH: _ClassVar[LocReliability]
DepMetricItemOther: DepMetricItemType
DepMetricItemGauge: DepMetricItemType
DepMetricItemCounter: DepMetricItemType
DepMetricItemState: DepMetricItemType
ZiNop: ZInfoTypes
ZiDevice: ZInfoTypes
ZiApp: ZInfoTypes
ZiNetworkInstance: ZInfoTypes
ZiVolume: ZInfoTypes
ZiContentTree: ZInfoTypes
ZiBlobList: ZInfoTypes
ZiAppInstMetaData: ZInfoTypes
ZiHardware: ZInfoTypes
ZiEdgeview: ZInfoTypes
ZiLocation: ZInfoTypes
ZiPatchEnvelope: ZInfoTypes
ZiNTPSources: ZInfoTypes
ZiKubeCluster: ZInfoTypes
ZiKubeClusterUpdateStatus: ZInfoTypes
INVALID: ZSwState
INITIAL: ZSwState
DOWNLOAD_STARTED: ZSwState
DOWNLOADED: ZSwState
DELIVERED: ZSwState
INSTALLED: ZSwState
BOOTING: ZSwState
RUNNING: ZSwState
HALTING: ZSwState
HALTED: ZSwState
RESTARTING: ZSwState
PURGING: ZSwState
RESOLVING_TAG: ZSwState
RESOLVED_TAG: ZSwState
CREATING_VOLUME: ZSwState
CREATED_VOLUME: ZSwState
VERIFYING: ZSwState
VERIFIED: ZSwState
LOADING: ZSwState
LOADED: ZSwState
AWAITNETWORKINSTANCE: ZSwState
ERROR: ZSwState
START_DELAYED: ZSwState
PENDING: ZSwState
SCHEDULING: ZSwState
UNKNOWN: HwSecurityModuleStatus
NOTFOUND: HwSecurityModuleStatus
DISABLED: HwSecurityModuleStatus
ENABLED: HwSecurityModuleStatus
DATASEC_AT_REST_UNKNOWN: DataSecAtRestStatus
DATASEC_AT_REST_DISABLED: DataSecAtRestStatus
DATASEC_AT_REST_ENABLED: DataSecAtRestStatus
DATASEC_AT_REST_ERROR: DataSecAtRestStatus
PCR_UNKNOWN: PCRStatus
PCR_ENABLED: PCRStatus
PCR_DISABLED: PCRStatus
SIM_TYPE_UNSPECIFIED: SimType
SIM_TYPE_PHYSICAL: SimType
SIM_TYPE_ESIM: SimType
Z_CELLULAR_OPERATING_STATE_UNSPECIFIED: ZCellularOperatingState
Z_CELLULAR_OPERATING_STATE_OFFLINE: ZCellularOperatingState
Z_CELLULAR_OPERATING_STATE_RADIO_OFF: ZCellularOperatingState
Z_CELLULAR_OPERATING_STATE_ONLINE: ZCellularOperatingState
Z_CELLULAR_OPERATING_STATE_ONLINE_AND_CONNECTED: ZCellularOperatingState
Z_CELLULAR_OPERATING_STATE_UNRECOGNIZED: ZCellularOperatingState
Z_CELLULAR_CONTROL_PROTOCOL_UNSPECIFIED: ZCellularControlProtocol
Z_CELLULAR_CONTROL_PROTOCOL_QMI: ZCellularControlProtocol
Z_CELLULAR_CONTROL_PROTOCOL_MBIM: ZCellularControlProtocol
ZDEVICE_STATE_UNSPECIFIED: ZDeviceState
ZDEVICE_STATE_ONLINE: ZDeviceState
ZDEVICE_STATE_REBOOTING: ZDeviceState
ZDEVICE_STATE_MAINTENANCE_MODE: ZDeviceState
ZDEVICE_STATE_BASEOS_UPDATING: ZDeviceState
ZDEVICE_STATE_BOOTING: ZDeviceState
ZDEVICE_STATE_PREPARING_POWEROFF: ZDeviceState
ZDEVICE_STATE_POWERING_OFF: ZDeviceState
ZDEVICE_STATE_PREPARED_POWEROFF: ZDeviceState
STORAGE_STATUS_UNSPECIFIED: StorageStatus
STORAGE_STATUS_ONLINE: StorageStatus
STORAGE_STATUS_DEGRADED: StorageStatus
STORAGE_STATUS_FAULTED: StorageStatus
STORAGE_STATUS_OFFLINE: StorageStatus
STORAGE_STATUS_UNAVAIL: StorageStatus
STORAGE_STATUS_REMOVED: StorageStatus
STORAGE_STATUS_SUSPENDED: StorageStatus
STORAGE_RAID_TYPE_UNSPECIFIED: StorageRaidType
STORAGE_RAID_TYPE_RAID0: StorageRaidType
STORAGE_RAID_TYPE_RAID1: StorageRaidType
STORAGE_RAID_TYPE_RAID5: StorageRaidType
STORAGE_RAID_TYPE_RAID6: StorageRaidType
STORAGE_RAID_TYPE_RAID7: StorageRaidType
STORAGE_RAID_TYPE_NORAID: StorageRaidType
STORAGE_TYPE_INFO_UNSPECIFIED: StorageTypeInfo
STORAGE_TYPE_INFO_EXT4: StorageTypeInfo
STORAGE_TYPE_INFO_ZFS: StorageTypeInfo
API_CAPABILITY_UNSPECIFIED: APICapability
API_CAPABILITY_RETRY_UPDATE: APICapability
API_CAPABILITY_SHUTDOWN: APICapability
API_CAPABILITY_START_DELAY_IN_SECONDS: APICapability
API_CAPABILITY_EDGEVIEW: APICapability
API_CAPABILITY_VOLUME_SNAPSHOTS: APICapability
API_CAPABILITY_NETWORK_INSTANCE_ROUTING: APICapability
API_CAPABILITY_BOOT_MODE: APICapability
API_CAPABILITY_MTU: APICapability
API_CAPABILITY_ADAPTER_USER_LABELS: APICapability
API_CAPABILITY_ENFORCED_NET_INTERFACE_ORDER: APICapability
API_CAPABILITY_NTPS_FQDN: APICapability
API_CAPABILITY_WIN_LIC_PASSTHROUGH: APICapability
API_CAPABILITY_VOLUME_SNAPSHOTS_IMMEDIATE: APICapability
API_CAPABILITY_ENCRYPTED_PATCH_ENVELOPE: APICapability
API_CAPABILITY_SINGLE_STACK_IP_NETWORK: APICapability
API_CAPABILITY_CELLULAR_ATTACH_CONFIG: APICapability
API_CAPABILITY_EDGEVIEW_AUTHENTICATION: APICapability
API_CAPABILITY_DISABLE_VTPM: APICapability
API_CAPABILITY_LOC_REBOOT_COLLECT_INFO: APICapability
API_CAPABILITY_SMART_REPORT: APICapability
API_CAPABILITY_REPORT_TPM_EVENTLOG: APICapability
API_CAPABILITY_APP_INSTANCE_NET_INTERFACE_CHANGE: APICapability
BOOT_REASON_UNSPECIFIED: BootReason
BOOT_REASON_FIRST: BootReason
BOOT_REASON_REBOOT_CMD: BootReason
BOOT_REASON_UPDATE: BootReason
BOOT_REASON_FALLBACK: BootReason
BOOT_REASON_DISCONNECT: BootReason
BOOT_REASON_FATAL: BootReason
BOOT_REASON_OOM: BootReason
BOOT_REASON_WATCHDOG_HUNG: BootReason
BOOT_REASON_WATCHDOG_PID: BootReason
BOOT_REASON_KERNEL: BootReason
BOOT_REASON_POWER_FAIL: BootReason
BOOT_REASON_UNKNOWN: BootReason
BOOT_REASON_VAULT_FAILED: BootReason
BOOT_REASON_POWEROFF_CMD: BootReason
BOOT_REASON_PARSE_FAIL: BootReason
MAINTENANCE_MODE_REASON_NONE: MaintenanceModeReason
MAINTENANCE_MODE_REASON_USER_REQUESTED: MaintenanceModeReason
MAINTENANCE_MODE_REASON_VAULT_LOCKED_UP: MaintenanceModeReason
MAINTENANCE_MODE_REASON_LOW_DISK_SPACE: MaintenanceModeReason
MAINTENANCE_MODE_REASON_TPM_ENCRYPTION_FAILURE: MaintenanceModeReason
MAINTENANCE_MODE_REASON_TPM_QUOTE_FAILURE: MaintenanceModeReason
MAINTENANCE_MODE_REASON_EDGE_NODE_CERTS_REFUSED: MaintenanceModeReason
ATTESTATION_STATE_UNSPECIFIED: AttestationState
ATTESTATION_STATE_NONCE_WAIT: AttestationState
ATTESTATION_STATE_TPM_QUOTE_WAIT: AttestationState
ATTESTATION_STATE_TPM_ESCROW_WAIT: AttestationState
ATTESTATION_STATE_ATTEST_WAIT: AttestationState
ATTESTATION_STATE_ATTEST_ESCROW_WAIT: AttestationState
ATTESTATION_STATE_RESTART_WAIT: AttestationState
ATTESTATION_STATE_COMPLETE: AttestationState
APP_INST_META_DATA_TYPE_NONE: AppInstMetaDataType
APP_INST_META_DATA_TYPE_KUBE_CONFIG: AppInstMetaDataType
APP_INST_META_DATA_TYPE_CUSTOM_STATUS: AppInstMetaDataType
WIRELESS_TYPE_UNSPECIFIED: WirelessType
WIRELESS_TYPE_WIFI: WirelessType
WIRELESS_TYPE_CELLULAR: WirelessType
NONE: BaseOsStatus
DOWNLOADING: BaseOsStatus
DOWNLOAD_DONE: BaseOsStatus
UPDATING: BaseOsStatus
UPDATED: BaseOsStatus
FALLBACK: BaseOsStatus
FAILED: BaseOsStatus
NONE_SUBSTATUS: BaseOsSubStatus
DOWNLOAD_INPROGRESS: BaseOsSubStatus
VERIFY_INPROGRESS: BaseOsSubStatus
UPDATE_INITIALIZING: BaseOsSubStatus
UPDATE_REBOOTING: BaseOsSubStatus
UPDATE_TESTING: BaseOsSubStatus
UPDATE_NEED_TEST_CONFIRM: BaseOsSubStatus
UPDATE_DEFERRED: BaseOsSubStatus
SNAPSHOT_TYPE_UNSPECIFIED: SnapshotType
SNAPSHOT_TYPE_APP_UPDATE: SnapshotType
SNAPSHOT_TYPE_IMMEDIATE: SnapshotType
Z_INFO_CLUSTER_NODE_STATUS_UNSPECIFIED: ZInfoClusterNodeStatus
Z_INFO_CLUSTER_NODE_STATUS_READY: ZInfoClusterNodeStatus
Z_INFO_CLUSTER_NODE_STATUS_NOTREADY: ZInfoClusterNodeStatus
Z_INFO_CLUSTER_NODE_STATUS_DOWN: ZInfoClusterNodeStatus
VPN_INVALID: ZInfoVpnState
VPN_INITIAL: ZInfoVpnState
VPN_CONNECTING: ZInfoVpnState
VPN_ESTABLISHED: ZInfoVpnState
VPN_INSTALLED: ZInfoVpnState
VPN_REKEYED: ZInfoVpnState
VPN_DELETED: ZInfoVpnState
ZNETINST_STATE_UNSPECIFIED: ZNetworkInstanceState
ZNETINST_STATE_INIT: ZNetworkInstanceState
ZNETINST_STATE_ONLINE: ZNetworkInstanceState
ZNETINST_STATE_ERROR: ZNetworkInstanceState
LOC_RELIABILITY_UNSPECIFIED: LocReliability
LOC_RELIABILITY_VERY_LOW: LocReliability
LOC_RELIABILITY_LOW: LocReliability
LOC_RELIABILITY_MEDIUM: LocReliability
LOC_RELIABILITY_HIGH: LocReliability

class SmartAttr(_message.Message):
    __slots__ = ("id", "value", "worst", "thresh", "when_failed", "raw_value", "type", "attribute_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WORST_FIELD_NUMBER: _ClassVar[int]
    THRESH_FIELD_NUMBER: _ClassVar[int]
    WHEN_FAILED_FIELD_NUMBER: _ClassVar[int]
    RAW_VALUE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    id: int
    value: int
    worst: int
    thresh: int
    when_failed: str
    raw_value: int
    type: str
    attribute_name: str
    def __init__(self, id: _Optional[int] = ..., value: _Optional[int] = ..., worst: _Optional[int] = ..., thresh: _Optional[int] = ..., when_failed: _Optional[str] = ..., raw_value: _Optional[int] = ..., type: _Optional[str] = ..., attribute_name: _Optional[str] = ...) -> None: ...

class StorageDiskInfo(_message.Message):
    __slots__ = ("disk_name", "wwn", "serial_number", "model", "collector_errors", "smart_attr")
    DISK_NAME_FIELD_NUMBER: _ClassVar[int]
    WWN_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SMART_ATTR_FIELD_NUMBER: _ClassVar[int]
    disk_name: str
    wwn: str
    serial_number: str
    model: str
    collector_errors: str
    smart_attr: _containers.RepeatedCompositeFieldContainer[SmartAttr]
    def __init__(self, disk_name: _Optional[str] = ..., wwn: _Optional[str] = ..., serial_number: _Optional[str] = ..., model: _Optional[str] = ..., collector_errors: _Optional[str] = ..., smart_attr: _Optional[_Iterable[_Union[SmartAttr, _Mapping]]] = ...) -> None: ...

class deprecatedMetricItem(_message.Message):
    __slots__ = ("key", "type", "boolValue", "uint32Value", "uint64Value", "floatValue", "stringValue")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BOOLVALUE_FIELD_NUMBER: _ClassVar[int]
    UINT32VALUE_FIELD_NUMBER: _ClassVar[int]
    UINT64VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOATVALUE_FIELD_NUMBER: _ClassVar[int]
    STRINGVALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    type: DepMetricItemType
    boolValue: bool
    uint32Value: int
    uint64Value: int
    floatValue: float
    stringValue: str
    def __init__(self, key: _Optional[str] = ..., type: _Optional[_Union[DepMetricItemType, str]] = ..., boolValue: _Optional[bool] = ..., uint32Value: _Optional[int] = ..., uint64Value: _Optional[int] = ..., floatValue: _Optional[float] = ..., stringValue: _Optional[str] = ...) -> None: ...

class ZmetIPAssignmentEntry(_message.Message):
    __slots__ = ("macAddress", "ipAddress")
    MACADDRESS_FIELD_NUMBER: _ClassVar[int]
    IPADDRESS_FIELD_NUMBER: _ClassVar[int]
    macAddress: str
    ipAddress: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, macAddress: _Optional[str] = ..., ipAddress: _Optional[_Iterable[str]] = ...) -> None: ...

class ZmetVifInfo(_message.Message):
    __slots__ = ("vifName", "macAddress", "appID")
    VIFNAME_FIELD_NUMBER: _ClassVar[int]
    MACADDRESS_FIELD_NUMBER: _ClassVar[int]
    APPID_FIELD_NUMBER: _ClassVar[int]
    vifName: str
    macAddress: str
    appID: str
    def __init__(self, vifName: _Optional[str] = ..., macAddress: _Optional[str] = ..., appID: _Optional[str] = ...) -> None: ...

class ZioBundle(_message.Message):
    __slots__ = ("type", "name", "members", "usedByAppUUID", "usedByBaseOS", "ioAddressList", "usage", "err")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    USEDBYAPPUUID_FIELD_NUMBER: _ClassVar[int]
    USEDBYBASEOS_FIELD_NUMBER: _ClassVar[int]
    IOADDRESSLIST_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    type: _devmodelcommon_pb2.PhyIoType
    name: str
    members: _containers.RepeatedScalarFieldContainer[str]
    usedByAppUUID: str
    usedByBaseOS: bool
    ioAddressList: _containers.RepeatedCompositeFieldContainer[IoAddresses]
    usage: _devmodelcommon_pb2.PhyIoMemberUsage
    err: _common_pb2.ErrorInfo
    def __init__(self, type: _Optional[_Union[_devmodelcommon_pb2.PhyIoType, str]] = ..., name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., usedByAppUUID: _Optional[str] = ..., usedByBaseOS: _Optional[bool] = ..., ioAddressList: _Optional[_Iterable[_Union[IoAddresses, _Mapping]]] = ..., usage: _Optional[_Union[_devmodelcommon_pb2.PhyIoMemberUsage, str]] = ..., err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...

class IoAddresses(_message.Message):
    __slots__ = ("macAddress", "vf_info")
    MACADDRESS_FIELD_NUMBER: _ClassVar[int]
    VF_INFO_FIELD_NUMBER: _ClassVar[int]
    macAddress: str
    vf_info: VfPublishedInfo
    def __init__(self, macAddress: _Optional[str] = ..., vf_info: _Optional[_Union[VfPublishedInfo, _Mapping]] = ...) -> None: ...

class VfPublishedInfo(_message.Message):
    __slots__ = ("index", "vlan_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    vlan_id: int
    def __init__(self, index: _Optional[int] = ..., vlan_id: _Optional[int] = ...) -> None: ...

class ZInfoManufacturer(_message.Message):
    __slots__ = ("manufacturer", "productName", "version", "serialNumber", "UUID", "compatible", "biosVendor", "biosVersion", "biosReleaseDate")
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    PRODUCTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERIALNUMBER_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_FIELD_NUMBER: _ClassVar[int]
    BIOSVENDOR_FIELD_NUMBER: _ClassVar[int]
    BIOSVERSION_FIELD_NUMBER: _ClassVar[int]
    BIOSRELEASEDATE_FIELD_NUMBER: _ClassVar[int]
    manufacturer: str
    productName: str
    version: str
    serialNumber: str
    UUID: str
    compatible: str
    biosVendor: str
    biosVersion: str
    biosReleaseDate: str
    def __init__(self, manufacturer: _Optional[str] = ..., productName: _Optional[str] = ..., version: _Optional[str] = ..., serialNumber: _Optional[str] = ..., UUID: _Optional[str] = ..., compatible: _Optional[str] = ..., biosVendor: _Optional[str] = ..., biosVersion: _Optional[str] = ..., biosReleaseDate: _Optional[str] = ...) -> None: ...

class ZInfoNetwork(_message.Message):
    __slots__ = ("macAddr", "devName", "IPAddrs", "defaultRouters", "dns", "ipv4_up", "location", "uplink", "networkErr", "localName", "proxy", "ip_addr_mis_match", "ntp_servers", "alias")
    MACADDR_FIELD_NUMBER: _ClassVar[int]
    DEVNAME_FIELD_NUMBER: _ClassVar[int]
    IPADDRS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTROUTERS_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    IPV4_UP_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    UPLINK_FIELD_NUMBER: _ClassVar[int]
    NETWORKERR_FIELD_NUMBER: _ClassVar[int]
    LOCALNAME_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    IP_ADDR_MIS_MATCH_FIELD_NUMBER: _ClassVar[int]
    NTP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    macAddr: str
    devName: str
    IPAddrs: _containers.RepeatedScalarFieldContainer[str]
    defaultRouters: _containers.RepeatedScalarFieldContainer[str]
    dns: ZInfoDNS
    ipv4_up: bool
    location: GeoLoc
    uplink: bool
    networkErr: _common_pb2.ErrorInfo
    localName: str
    proxy: ProxyStatus
    ip_addr_mis_match: bool
    ntp_servers: _containers.RepeatedScalarFieldContainer[str]
    alias: str
    def __init__(self, macAddr: _Optional[str] = ..., devName: _Optional[str] = ..., IPAddrs: _Optional[_Iterable[str]] = ..., defaultRouters: _Optional[_Iterable[str]] = ..., dns: _Optional[_Union[ZInfoDNS, _Mapping]] = ..., ipv4_up: _Optional[bool] = ..., location: _Optional[_Union[GeoLoc, _Mapping]] = ..., uplink: _Optional[bool] = ..., networkErr: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., localName: _Optional[str] = ..., proxy: _Optional[_Union[ProxyStatus, _Mapping]] = ..., ip_addr_mis_match: _Optional[bool] = ..., ntp_servers: _Optional[_Iterable[str]] = ..., alias: _Optional[str] = ...) -> None: ...

class GeoLoc(_message.Message):
    __slots__ = ("UnderlayIP", "Hostname", "City", "Region", "Country", "Loc", "Org", "Postal")
    UNDERLAYIP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    LOC_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    POSTAL_FIELD_NUMBER: _ClassVar[int]
    UnderlayIP: str
    Hostname: str
    City: str
    Region: str
    Country: str
    Loc: str
    Org: str
    Postal: str
    def __init__(self, UnderlayIP: _Optional[str] = ..., Hostname: _Optional[str] = ..., City: _Optional[str] = ..., Region: _Optional[str] = ..., Country: _Optional[str] = ..., Loc: _Optional[str] = ..., Org: _Optional[str] = ..., Postal: _Optional[str] = ...) -> None: ...

class ZInfoDNS(_message.Message):
    __slots__ = ("DNSservers", "DNSdomain", "DNSsearch")
    DNSSERVERS_FIELD_NUMBER: _ClassVar[int]
    DNSDOMAIN_FIELD_NUMBER: _ClassVar[int]
    DNSSEARCH_FIELD_NUMBER: _ClassVar[int]
    DNSservers: _containers.RepeatedScalarFieldContainer[str]
    DNSdomain: str
    DNSsearch: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, DNSservers: _Optional[_Iterable[str]] = ..., DNSdomain: _Optional[str] = ..., DNSsearch: _Optional[_Iterable[str]] = ...) -> None: ...

class ZInfoSW(_message.Message):
    __slots__ = ("swVersion", "swHash", "state", "target", "vdev", "downloadProgress", "imageName")
    SWVERSION_FIELD_NUMBER: _ClassVar[int]
    SWHASH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    VDEV_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADPROGRESS_FIELD_NUMBER: _ClassVar[int]
    IMAGENAME_FIELD_NUMBER: _ClassVar[int]
    swVersion: str
    swHash: str
    state: ZSwState
    target: str
    vdev: str
    downloadProgress: int
    imageName: str
    def __init__(self, swVersion: _Optional[str] = ..., swHash: _Optional[str] = ..., state: _Optional[_Union[ZSwState, str]] = ..., target: _Optional[str] = ..., vdev: _Optional[str] = ..., downloadProgress: _Optional[int] = ..., imageName: _Optional[str] = ...) -> None: ...

class VaultInfo(_message.Message):
    __slots__ = ("name", "status", "vaultErr", "pcrStatus")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VAULTERR_FIELD_NUMBER: _ClassVar[int]
    PCRSTATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: DataSecAtRestStatus
    vaultErr: _common_pb2.ErrorInfo
    pcrStatus: PCRStatus
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[DataSecAtRestStatus, str]] = ..., vaultErr: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., pcrStatus: _Optional[_Union[PCRStatus, str]] = ...) -> None: ...

class DataSecAtRest(_message.Message):
    __slots__ = ("status", "info", "vaultList")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    VAULTLIST_FIELD_NUMBER: _ClassVar[int]
    status: DataSecAtRestStatus
    info: str
    vaultList: _containers.RepeatedCompositeFieldContainer[VaultInfo]
    def __init__(self, status: _Optional[_Union[DataSecAtRestStatus, str]] = ..., info: _Optional[str] = ..., vaultList: _Optional[_Iterable[_Union[VaultInfo, _Mapping]]] = ...) -> None: ...

class SecurityInfo(_message.Message):
    __slots__ = ("sha_root_ca", "sha_tls_root_ca")
    SHA_ROOT_CA_FIELD_NUMBER: _ClassVar[int]
    SHA_TLS_ROOT_CA_FIELD_NUMBER: _ClassVar[int]
    sha_root_ca: bytes
    sha_tls_root_ca: bytes
    def __init__(self, sha_root_ca: _Optional[bytes] = ..., sha_tls_root_ca: _Optional[bytes] = ...) -> None: ...

class ZInfoConfigItem(_message.Message):
    __slots__ = ("value", "error")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    value: str
    error: str
    def __init__(self, value: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ZInfoConfigItemStatus(_message.Message):
    __slots__ = ("configItems", "unknownConfigItems")
    class ConfigItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ZInfoConfigItem
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ZInfoConfigItem, _Mapping]] = ...) -> None: ...
    class UnknownConfigItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ZInfoConfigItem
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ZInfoConfigItem, _Mapping]] = ...) -> None: ...
    CONFIGITEMS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWNCONFIGITEMS_FIELD_NUMBER: _ClassVar[int]
    configItems: _containers.MessageMap[str, ZInfoConfigItem]
    unknownConfigItems: _containers.MessageMap[str, ZInfoConfigItem]
    def __init__(self, configItems: _Optional[_Mapping[str, ZInfoConfigItem]] = ..., unknownConfigItems: _Optional[_Mapping[str, ZInfoConfigItem]] = ...) -> None: ...

class ZInfoAppInstance(_message.Message):
    __slots__ = ("uuid", "name", "domainName")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAINNAME_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    domainName: str
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., domainName: _Optional[str] = ...) -> None: ...

class ZInfoDeviceTasks(_message.Message):
    __slots__ = ("name", "namespace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class ZSimcardInfo(_message.Message):
    __slots__ = ("name", "cell_module_name", "imsi", "iccid", "state", "slot_number", "slot_activated", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CELL_MODULE_NAME_FIELD_NUMBER: _ClassVar[int]
    IMSI_FIELD_NUMBER: _ClassVar[int]
    ICCID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SLOT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SLOT_ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cell_module_name: str
    imsi: str
    iccid: str
    state: str
    slot_number: int
    slot_activated: bool
    type: SimType
    def __init__(self, name: _Optional[str] = ..., cell_module_name: _Optional[str] = ..., imsi: _Optional[str] = ..., iccid: _Optional[str] = ..., state: _Optional[str] = ..., slot_number: _Optional[int] = ..., slot_activated: _Optional[bool] = ..., type: _Optional[_Union[SimType, str]] = ...) -> None: ...

class ZCellularModuleInfo(_message.Message):
    __slots__ = ("name", "imei", "firmware_version", "model", "operating_state", "control_protocol", "manufacturer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMEI_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OPERATING_STATE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    name: str
    imei: str
    firmware_version: str
    model: str
    operating_state: ZCellularOperatingState
    control_protocol: ZCellularControlProtocol
    manufacturer: str
    def __init__(self, name: _Optional[str] = ..., imei: _Optional[str] = ..., firmware_version: _Optional[str] = ..., model: _Optional[str] = ..., operating_state: _Optional[_Union[ZCellularOperatingState, str]] = ..., control_protocol: _Optional[_Union[ZCellularControlProtocol, str]] = ..., manufacturer: _Optional[str] = ...) -> None: ...

class ZCellularProvider(_message.Message):
    __slots__ = ("plmn", "description", "current_serving", "roaming", "forbidden")
    PLMN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SERVING_FIELD_NUMBER: _ClassVar[int]
    ROAMING_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_FIELD_NUMBER: _ClassVar[int]
    plmn: str
    description: str
    current_serving: bool
    roaming: bool
    forbidden: bool
    def __init__(self, plmn: _Optional[str] = ..., description: _Optional[str] = ..., current_serving: _Optional[bool] = ..., roaming: _Optional[bool] = ..., forbidden: _Optional[bool] = ...) -> None: ...

class CellularBearer(_message.Message):
    __slots__ = ("apn", "bearer_type", "ip_type", "connected", "connection_error", "connected_at")
    APN_FIELD_NUMBER: _ClassVar[int]
    BEARER_TYPE_FIELD_NUMBER: _ClassVar[int]
    IP_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    apn: str
    bearer_type: _netcmn_pb2.BearerType
    ip_type: _netcmn_pb2.CellularIPType
    connected: bool
    connection_error: str
    connected_at: _timestamp_pb2.Timestamp
    def __init__(self, apn: _Optional[str] = ..., bearer_type: _Optional[_Union[_netcmn_pb2.BearerType, str]] = ..., ip_type: _Optional[_Union[_netcmn_pb2.CellularIPType, str]] = ..., connected: _Optional[bool] = ..., connection_error: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CellularProfile(_message.Message):
    __slots__ = ("profile_name", "apn", "bearer_type", "ip_type", "forbid_roaming")
    PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    APN_FIELD_NUMBER: _ClassVar[int]
    BEARER_TYPE_FIELD_NUMBER: _ClassVar[int]
    IP_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORBID_ROAMING_FIELD_NUMBER: _ClassVar[int]
    profile_name: str
    apn: str
    bearer_type: _netcmn_pb2.BearerType
    ip_type: _netcmn_pb2.CellularIPType
    forbid_roaming: bool
    def __init__(self, profile_name: _Optional[str] = ..., apn: _Optional[str] = ..., bearer_type: _Optional[_Union[_netcmn_pb2.BearerType, str]] = ..., ip_type: _Optional[_Union[_netcmn_pb2.CellularIPType, str]] = ..., forbid_roaming: _Optional[bool] = ...) -> None: ...

class StorageDiskState(_message.Message):
    __slots__ = ("disk_name", "status", "state", "smart_status")
    DISK_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SMART_STATUS_FIELD_NUMBER: _ClassVar[int]
    disk_name: _evecommon_pb2.DiskDescription
    status: StorageStatus
    state: str
    smart_status: str
    def __init__(self, disk_name: _Optional[_Union[_evecommon_pb2.DiskDescription, _Mapping]] = ..., status: _Optional[_Union[StorageStatus, str]] = ..., state: _Optional[str] = ..., smart_status: _Optional[str] = ...) -> None: ...

class StorageChildren(_message.Message):
    __slots__ = ("current_raid", "disks", "children", "display_name", "g_u_i_d")
    CURRENT_RAID_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    G_U_I_D_FIELD_NUMBER: _ClassVar[int]
    current_raid: StorageRaidType
    disks: _containers.RepeatedCompositeFieldContainer[StorageDiskState]
    children: _containers.RepeatedCompositeFieldContainer[StorageChildren]
    display_name: str
    g_u_i_d: int
    def __init__(self, current_raid: _Optional[_Union[StorageRaidType, str]] = ..., disks: _Optional[_Iterable[_Union[StorageDiskState, _Mapping]]] = ..., children: _Optional[_Iterable[_Union[StorageChildren, _Mapping]]] = ..., display_name: _Optional[str] = ..., g_u_i_d: _Optional[int] = ...) -> None: ...

class StorageInfo(_message.Message):
    __slots__ = ("pool_name", "storage_type", "zfs_version", "current_raid", "compression_ratio", "zpool_size", "count_zvols", "storage_state", "disks", "collector_errors", "children", "pool_status_msg")
    POOL_NAME_FIELD_NUMBER: _ClassVar[int]
    STORAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ZFS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RAID_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_RATIO_FIELD_NUMBER: _ClassVar[int]
    ZPOOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    COUNT_ZVOLS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_STATE_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    POOL_STATUS_MSG_FIELD_NUMBER: _ClassVar[int]
    pool_name: str
    storage_type: StorageTypeInfo
    zfs_version: str
    current_raid: StorageRaidType
    compression_ratio: float
    zpool_size: int
    count_zvols: int
    storage_state: StorageStatus
    disks: _containers.RepeatedCompositeFieldContainer[StorageDiskState]
    collector_errors: str
    children: _containers.RepeatedCompositeFieldContainer[StorageChildren]
    pool_status_msg: str
    def __init__(self, pool_name: _Optional[str] = ..., storage_type: _Optional[_Union[StorageTypeInfo, str]] = ..., zfs_version: _Optional[str] = ..., current_raid: _Optional[_Union[StorageRaidType, str]] = ..., compression_ratio: _Optional[float] = ..., zpool_size: _Optional[int] = ..., count_zvols: _Optional[int] = ..., storage_state: _Optional[_Union[StorageStatus, str]] = ..., disks: _Optional[_Iterable[_Union[StorageDiskState, _Mapping]]] = ..., collector_errors: _Optional[str] = ..., children: _Optional[_Iterable[_Union[StorageChildren, _Mapping]]] = ..., pool_status_msg: _Optional[str] = ...) -> None: ...

class ZInfoDevice(_message.Message):
    __slots__ = ("machineArch", "cpuArch", "platform", "ncpu", "memory", "storage", "powerCycleCounter", "minfo", "network", "assignableAdapters", "dns", "storageList", "bootTime", "swList", "HostName", "metricItems", "lastRebootReason", "lastRebootTime", "systemAdapter", "restartCounter", "HSMStatus", "HSMInfo", "lastRebootStack", "dataSecAtRestInfo", "sec_info", "configItemStatus", "appInstances", "rebootConfigCounter", "last_boot_reason", "cell_radios", "sims", "tasks", "maintenance_mode", "maintenance_mode_reason", "hardware_watchdog_present", "reboot_inprogress", "capabilities", "baseos_update_counter", "state", "local_profile", "maintenance_mode_reasons", "dormant_time", "storage_info", "shutdown_config_counter", "attestation_info", "api_capability", "remote_access_disabled", "optional_capabilities", "device_name", "enterprise_name", "enterprise_id", "project_name", "project_id", "enrolled_certs")
    MACHINEARCH_FIELD_NUMBER: _ClassVar[int]
    CPUARCH_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    NCPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    POWERCYCLECOUNTER_FIELD_NUMBER: _ClassVar[int]
    MINFO_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ASSIGNABLEADAPTERS_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    STORAGELIST_FIELD_NUMBER: _ClassVar[int]
    BOOTTIME_FIELD_NUMBER: _ClassVar[int]
    SWLIST_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    METRICITEMS_FIELD_NUMBER: _ClassVar[int]
    LASTREBOOTREASON_FIELD_NUMBER: _ClassVar[int]
    LASTREBOOTTIME_FIELD_NUMBER: _ClassVar[int]
    SYSTEMADAPTER_FIELD_NUMBER: _ClassVar[int]
    RESTARTCOUNTER_FIELD_NUMBER: _ClassVar[int]
    HSMSTATUS_FIELD_NUMBER: _ClassVar[int]
    HSMINFO_FIELD_NUMBER: _ClassVar[int]
    LASTREBOOTSTACK_FIELD_NUMBER: _ClassVar[int]
    DATASECATRESTINFO_FIELD_NUMBER: _ClassVar[int]
    SEC_INFO_FIELD_NUMBER: _ClassVar[int]
    CONFIGITEMSTATUS_FIELD_NUMBER: _ClassVar[int]
    APPINSTANCES_FIELD_NUMBER: _ClassVar[int]
    REBOOTCONFIGCOUNTER_FIELD_NUMBER: _ClassVar[int]
    LAST_BOOT_REASON_FIELD_NUMBER: _ClassVar[int]
    CELL_RADIOS_FIELD_NUMBER: _ClassVar[int]
    SIMS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_MODE_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_MODE_REASON_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_WATCHDOG_PRESENT_FIELD_NUMBER: _ClassVar[int]
    REBOOT_INPROGRESS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    BASEOS_UPDATE_COUNTER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PROFILE_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_MODE_REASONS_FIELD_NUMBER: _ClassVar[int]
    DORMANT_TIME_FIELD_NUMBER: _ClassVar[int]
    STORAGE_INFO_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_CONFIG_COUNTER_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_INFO_FIELD_NUMBER: _ClassVar[int]
    API_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ACCESS_DISABLED_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENTERPRISE_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_CERTS_FIELD_NUMBER: _ClassVar[int]
    machineArch: str
    cpuArch: str
    platform: str
    ncpu: int
    memory: int
    storage: int
    powerCycleCounter: int
    minfo: ZInfoManufacturer
    network: _containers.RepeatedCompositeFieldContainer[ZInfoNetwork]
    assignableAdapters: _containers.RepeatedCompositeFieldContainer[ZioBundle]
    dns: ZInfoDNS
    storageList: _containers.RepeatedCompositeFieldContainer[ZInfoStorage]
    bootTime: _timestamp_pb2.Timestamp
    swList: _containers.RepeatedCompositeFieldContainer[ZInfoDevSW]
    HostName: str
    metricItems: _containers.RepeatedCompositeFieldContainer[deprecatedMetricItem]
    lastRebootReason: str
    lastRebootTime: _timestamp_pb2.Timestamp
    systemAdapter: SystemAdapterInfo
    restartCounter: int
    HSMStatus: HwSecurityModuleStatus
    HSMInfo: str
    lastRebootStack: str
    dataSecAtRestInfo: DataSecAtRest
    sec_info: SecurityInfo
    configItemStatus: ZInfoConfigItemStatus
    appInstances: _containers.RepeatedCompositeFieldContainer[ZInfoAppInstance]
    rebootConfigCounter: int
    last_boot_reason: BootReason
    cell_radios: _containers.RepeatedCompositeFieldContainer[ZCellularModuleInfo]
    sims: _containers.RepeatedCompositeFieldContainer[ZSimcardInfo]
    tasks: _containers.RepeatedCompositeFieldContainer[ZInfoDeviceTasks]
    maintenance_mode: bool
    maintenance_mode_reason: MaintenanceModeReason
    hardware_watchdog_present: bool
    reboot_inprogress: bool
    capabilities: Capabilities
    baseos_update_counter: int
    state: ZDeviceState
    local_profile: str
    maintenance_mode_reasons: _containers.RepeatedScalarFieldContainer[MaintenanceModeReason]
    dormant_time: str
    storage_info: _containers.RepeatedCompositeFieldContainer[StorageInfo]
    shutdown_config_counter: int
    attestation_info: AttestationInfo
    api_capability: APICapability
    remote_access_disabled: bool
    optional_capabilities: OptionalCapabilities
    device_name: str
    enterprise_name: str
    enterprise_id: str
    project_name: str
    project_id: str
    enrolled_certs: _containers.RepeatedCompositeFieldContainer[_cert_pb2.CertInfo]
    def __init__(self, machineArch: _Optional[str] = ..., cpuArch: _Optional[str] = ..., platform: _Optional[str] = ..., ncpu: _Optional[int] = ..., memory: _Optional[int] = ..., storage: _Optional[int] = ..., powerCycleCounter: _Optional[int] = ..., minfo: _Optional[_Union[ZInfoManufacturer, _Mapping]] = ..., network: _Optional[_Iterable[_Union[ZInfoNetwork, _Mapping]]] = ..., assignableAdapters: _Optional[_Iterable[_Union[ZioBundle, _Mapping]]] = ..., dns: _Optional[_Union[ZInfoDNS, _Mapping]] = ..., storageList: _Optional[_Iterable[_Union[ZInfoStorage, _Mapping]]] = ..., bootTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., swList: _Optional[_Iterable[_Union[ZInfoDevSW, _Mapping]]] = ..., HostName: _Optional[str] = ..., metricItems: _Optional[_Iterable[_Union[deprecatedMetricItem, _Mapping]]] = ..., lastRebootReason: _Optional[str] = ..., lastRebootTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., systemAdapter: _Optional[_Union[SystemAdapterInfo, _Mapping]] = ..., restartCounter: _Optional[int] = ..., HSMStatus: _Optional[_Union[HwSecurityModuleStatus, str]] = ..., HSMInfo: _Optional[str] = ..., lastRebootStack: _Optional[str] = ..., dataSecAtRestInfo: _Optional[_Union[DataSecAtRest, _Mapping]] = ..., sec_info: _Optional[_Union[SecurityInfo, _Mapping]] = ..., configItemStatus: _Optional[_Union[ZInfoConfigItemStatus, _Mapping]] = ..., appInstances: _Optional[_Iterable[_Union[ZInfoAppInstance, _Mapping]]] = ..., rebootConfigCounter: _Optional[int] = ..., last_boot_reason: _Optional[_Union[BootReason, str]] = ..., cell_radios: _Optional[_Iterable[_Union[ZCellularModuleInfo, _Mapping]]] = ..., sims: _Optional[_Iterable[_Union[ZSimcardInfo, _Mapping]]] = ..., tasks: _Optional[_Iterable[_Union[ZInfoDeviceTasks, _Mapping]]] = ..., maintenance_mode: _Optional[bool] = ..., maintenance_mode_reason: _Optional[_Union[MaintenanceModeReason, str]] = ..., hardware_watchdog_present: _Optional[bool] = ..., reboot_inprogress: _Optional[bool] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ..., baseos_update_counter: _Optional[int] = ..., state: _Optional[_Union[ZDeviceState, str]] = ..., local_profile: _Optional[str] = ..., maintenance_mode_reasons: _Optional[_Iterable[_Union[MaintenanceModeReason, str]]] = ..., dormant_time: _Optional[str] = ..., storage_info: _Optional[_Iterable[_Union[StorageInfo, _Mapping]]] = ..., shutdown_config_counter: _Optional[int] = ..., attestation_info: _Optional[_Union[AttestationInfo, _Mapping]] = ..., api_capability: _Optional[_Union[APICapability, str]] = ..., remote_access_disabled: _Optional[bool] = ..., optional_capabilities: _Optional[_Union[OptionalCapabilities, _Mapping]] = ..., device_name: _Optional[str] = ..., enterprise_name: _Optional[str] = ..., enterprise_id: _Optional[str] = ..., project_name: _Optional[str] = ..., project_id: _Optional[str] = ..., enrolled_certs: _Optional[_Iterable[_Union[_cert_pb2.CertInfo, _Mapping]]] = ...) -> None: ...

class OptionalCapabilities(_message.Message):
    __slots__ = ("hv_type_kubevirt", "hw_inventory_support", "etcd_snapshot")
    HV_TYPE_KUBEVIRT_FIELD_NUMBER: _ClassVar[int]
    HW_INVENTORY_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    ETCD_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    hv_type_kubevirt: bool
    hw_inventory_support: bool
    etcd_snapshot: bool
    def __init__(self, hv_type_kubevirt: _Optional[bool] = ..., hw_inventory_support: _Optional[bool] = ..., etcd_snapshot: _Optional[bool] = ...) -> None: ...

class AttestationInfo(_message.Message):
    __slots__ = ("state", "error")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    state: AttestationState
    error: _common_pb2.ErrorInfo
    def __init__(self, state: _Optional[_Union[AttestationState, str]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...

class SystemAdapterInfo(_message.Message):
    __slots__ = ("currentIndex", "status")
    CURRENTINDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    currentIndex: int
    status: _containers.RepeatedCompositeFieldContainer[DevicePortStatus]
    def __init__(self, currentIndex: _Optional[int] = ..., status: _Optional[_Iterable[_Union[DevicePortStatus, _Mapping]]] = ...) -> None: ...

class DevicePortStatus(_message.Message):
    __slots__ = ("version", "key", "timePriority", "lastFailed", "lastSucceeded", "ports", "lastError")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TIMEPRIORITY_FIELD_NUMBER: _ClassVar[int]
    LASTFAILED_FIELD_NUMBER: _ClassVar[int]
    LASTSUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    LASTERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    key: str
    timePriority: _timestamp_pb2.Timestamp
    lastFailed: _timestamp_pb2.Timestamp
    lastSucceeded: _timestamp_pb2.Timestamp
    ports: _containers.RepeatedCompositeFieldContainer[DevicePort]
    lastError: str
    def __init__(self, version: _Optional[int] = ..., key: _Optional[str] = ..., timePriority: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lastFailed: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lastSucceeded: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ports: _Optional[_Iterable[_Union[DevicePort, _Mapping]]] = ..., lastError: _Optional[str] = ...) -> None: ...

class DevicePort(_message.Message):
    __slots__ = ("ifname", "name", "isMgmt", "free", "dhcpType", "subnet", "gateway", "domainname", "ntpServer", "dnsServers", "dhcpRangeLow", "dhcpRangeHigh", "proxy", "macAddr", "IPAddrs", "defaultRouters", "dns", "up", "location", "err", "usage", "networkUUID", "cost", "wireless_status", "mtu", "more_ntp_servers", "config_source", "pnac_status", "bond_status")
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ISMGMT_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    DHCPTYPE_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DOMAINNAME_FIELD_NUMBER: _ClassVar[int]
    NTPSERVER_FIELD_NUMBER: _ClassVar[int]
    DNSSERVERS_FIELD_NUMBER: _ClassVar[int]
    DHCPRANGELOW_FIELD_NUMBER: _ClassVar[int]
    DHCPRANGEHIGH_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    MACADDR_FIELD_NUMBER: _ClassVar[int]
    IPADDRS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTROUTERS_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NETWORKUUID_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    WIRELESS_STATUS_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    MORE_NTP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PNAC_STATUS_FIELD_NUMBER: _ClassVar[int]
    BOND_STATUS_FIELD_NUMBER: _ClassVar[int]
    ifname: str
    name: str
    isMgmt: bool
    free: bool
    dhcpType: int
    subnet: str
    gateway: str
    domainname: str
    ntpServer: str
    dnsServers: _containers.RepeatedScalarFieldContainer[str]
    dhcpRangeLow: str
    dhcpRangeHigh: str
    proxy: ProxyStatus
    macAddr: str
    IPAddrs: _containers.RepeatedScalarFieldContainer[str]
    defaultRouters: _containers.RepeatedScalarFieldContainer[str]
    dns: ZInfoDNS
    up: bool
    location: GeoLoc
    err: _common_pb2.ErrorInfo
    usage: _devmodelcommon_pb2.PhyIoMemberUsage
    networkUUID: str
    cost: int
    wireless_status: WirelessStatus
    mtu: int
    more_ntp_servers: _containers.RepeatedScalarFieldContainer[str]
    config_source: _netcmn_pb2.PortConfigSource
    pnac_status: _pnac_pb2.PNACStatus
    bond_status: _bond_pb2.BondStatus
    def __init__(self, ifname: _Optional[str] = ..., name: _Optional[str] = ..., isMgmt: _Optional[bool] = ..., free: _Optional[bool] = ..., dhcpType: _Optional[int] = ..., subnet: _Optional[str] = ..., gateway: _Optional[str] = ..., domainname: _Optional[str] = ..., ntpServer: _Optional[str] = ..., dnsServers: _Optional[_Iterable[str]] = ..., dhcpRangeLow: _Optional[str] = ..., dhcpRangeHigh: _Optional[str] = ..., proxy: _Optional[_Union[ProxyStatus, _Mapping]] = ..., macAddr: _Optional[str] = ..., IPAddrs: _Optional[_Iterable[str]] = ..., defaultRouters: _Optional[_Iterable[str]] = ..., dns: _Optional[_Union[ZInfoDNS, _Mapping]] = ..., up: _Optional[bool] = ..., location: _Optional[_Union[GeoLoc, _Mapping]] = ..., err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., usage: _Optional[_Union[_devmodelcommon_pb2.PhyIoMemberUsage, str]] = ..., networkUUID: _Optional[str] = ..., cost: _Optional[int] = ..., wireless_status: _Optional[_Union[WirelessStatus, _Mapping]] = ..., mtu: _Optional[int] = ..., more_ntp_servers: _Optional[_Iterable[str]] = ..., config_source: _Optional[_Union[_netcmn_pb2.PortConfigSource, _Mapping]] = ..., pnac_status: _Optional[_Union[_pnac_pb2.PNACStatus, _Mapping]] = ..., bond_status: _Optional[_Union[_bond_pb2.BondStatus, _Mapping]] = ...) -> None: ...

class ProxyStatus(_message.Message):
    __slots__ = ("proxies", "exceptions", "pacfile", "networkProxyEnable", "networkProxyURL", "wpadURL")
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    EXCEPTIONS_FIELD_NUMBER: _ClassVar[int]
    PACFILE_FIELD_NUMBER: _ClassVar[int]
    NETWORKPROXYENABLE_FIELD_NUMBER: _ClassVar[int]
    NETWORKPROXYURL_FIELD_NUMBER: _ClassVar[int]
    WPADURL_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[ProxyEntry]
    exceptions: str
    pacfile: str
    networkProxyEnable: bool
    networkProxyURL: str
    wpadURL: str
    def __init__(self, proxies: _Optional[_Iterable[_Union[ProxyEntry, _Mapping]]] = ..., exceptions: _Optional[str] = ..., pacfile: _Optional[str] = ..., networkProxyEnable: _Optional[bool] = ..., networkProxyURL: _Optional[str] = ..., wpadURL: _Optional[str] = ...) -> None: ...

class ProxyEntry(_message.Message):
    __slots__ = ("type", "server", "port")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    type: int
    server: str
    port: int
    def __init__(self, type: _Optional[int] = ..., server: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class WirelessStatus(_message.Message):
    __slots__ = ("type", "cellular")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CELLULAR_FIELD_NUMBER: _ClassVar[int]
    type: WirelessType
    cellular: ZCellularStatus
    def __init__(self, type: _Optional[_Union[WirelessType, str]] = ..., cellular: _Optional[_Union[ZCellularStatus, _Mapping]] = ...) -> None: ...

class ZCellularStatus(_message.Message):
    __slots__ = ("cellular_module", "sim_cards", "providers", "current_rats", "connected_at", "config_error", "probe_error", "bearers", "profiles")
    CELLULAR_MODULE_FIELD_NUMBER: _ClassVar[int]
    SIM_CARDS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RATS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_ERROR_FIELD_NUMBER: _ClassVar[int]
    PROBE_ERROR_FIELD_NUMBER: _ClassVar[int]
    BEARERS_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    cellular_module: str
    sim_cards: _containers.RepeatedScalarFieldContainer[str]
    providers: _containers.RepeatedCompositeFieldContainer[ZCellularProvider]
    current_rats: _containers.RepeatedScalarFieldContainer[_netcmn_pb2.RadioAccessTechnology]
    connected_at: _timestamp_pb2.Timestamp
    config_error: str
    probe_error: str
    bearers: _containers.RepeatedCompositeFieldContainer[CellularBearer]
    profiles: _containers.RepeatedCompositeFieldContainer[CellularProfile]
    def __init__(self, cellular_module: _Optional[str] = ..., sim_cards: _Optional[_Iterable[str]] = ..., providers: _Optional[_Iterable[_Union[ZCellularProvider, _Mapping]]] = ..., current_rats: _Optional[_Iterable[_Union[_netcmn_pb2.RadioAccessTechnology, str]]] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., config_error: _Optional[str] = ..., probe_error: _Optional[str] = ..., bearers: _Optional[_Iterable[_Union[CellularBearer, _Mapping]]] = ..., profiles: _Optional[_Iterable[_Union[CellularProfile, _Mapping]]] = ...) -> None: ...

class ZInfoDevSW(_message.Message):
    __slots__ = ("activated", "partitionLabel", "partitionDevice", "partitionState", "status", "shortVersion", "longVersion", "swErr", "downloadProgress", "userStatus", "subStatusStr", "subStatus", "subStatusProgress")
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONLABEL_FIELD_NUMBER: _ClassVar[int]
    PARTITIONDEVICE_FIELD_NUMBER: _ClassVar[int]
    PARTITIONSTATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SHORTVERSION_FIELD_NUMBER: _ClassVar[int]
    LONGVERSION_FIELD_NUMBER: _ClassVar[int]
    SWERR_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADPROGRESS_FIELD_NUMBER: _ClassVar[int]
    USERSTATUS_FIELD_NUMBER: _ClassVar[int]
    SUBSTATUSSTR_FIELD_NUMBER: _ClassVar[int]
    SUBSTATUS_FIELD_NUMBER: _ClassVar[int]
    SUBSTATUSPROGRESS_FIELD_NUMBER: _ClassVar[int]
    activated: bool
    partitionLabel: str
    partitionDevice: str
    partitionState: str
    status: ZSwState
    shortVersion: str
    longVersion: str
    swErr: _common_pb2.ErrorInfo
    downloadProgress: int
    userStatus: BaseOsStatus
    subStatusStr: str
    subStatus: BaseOsSubStatus
    subStatusProgress: int
    def __init__(self, activated: _Optional[bool] = ..., partitionLabel: _Optional[str] = ..., partitionDevice: _Optional[str] = ..., partitionState: _Optional[str] = ..., status: _Optional[_Union[ZSwState, str]] = ..., shortVersion: _Optional[str] = ..., longVersion: _Optional[str] = ..., swErr: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., downloadProgress: _Optional[int] = ..., userStatus: _Optional[_Union[BaseOsStatus, str]] = ..., subStatusStr: _Optional[str] = ..., subStatus: _Optional[_Union[BaseOsSubStatus, str]] = ..., subStatusProgress: _Optional[int] = ...) -> None: ...

class ZInfoStorage(_message.Message):
    __slots__ = ("device", "mountPath", "total", "storageLocation", "partitionLabel", "partitionTypeGuid", "partitionUuid")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MOUNTPATH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STORAGELOCATION_FIELD_NUMBER: _ClassVar[int]
    PARTITIONLABEL_FIELD_NUMBER: _ClassVar[int]
    PARTITIONTYPEGUID_FIELD_NUMBER: _ClassVar[int]
    PARTITIONUUID_FIELD_NUMBER: _ClassVar[int]
    device: str
    mountPath: str
    total: int
    storageLocation: bool
    partitionLabel: str
    partitionTypeGuid: str
    partitionUuid: str
    def __init__(self, device: _Optional[str] = ..., mountPath: _Optional[str] = ..., total: _Optional[int] = ..., storageLocation: _Optional[bool] = ..., partitionLabel: _Optional[str] = ..., partitionTypeGuid: _Optional[str] = ..., partitionUuid: _Optional[str] = ...) -> None: ...

class ZInfoSnapshot(_message.Message):
    __slots__ = ("id", "config_id", "config_version", "create_time", "type", "snap_err")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SNAP_ERR_FIELD_NUMBER: _ClassVar[int]
    id: str
    config_id: str
    config_version: str
    create_time: _timestamp_pb2.Timestamp
    type: SnapshotType
    snap_err: _common_pb2.ErrorInfo
    def __init__(self, id: _Optional[str] = ..., config_id: _Optional[str] = ..., config_version: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., type: _Optional[_Union[SnapshotType, str]] = ..., snap_err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...

class ZInfoClusterNode(_message.Message):
    __slots__ = ("node_status",)
    NODE_STATUS_FIELD_NUMBER: _ClassVar[int]
    node_status: ZInfoClusterNodeStatus
    def __init__(self, node_status: _Optional[_Union[ZInfoClusterNodeStatus, str]] = ...) -> None: ...

class ZInfoApp(_message.Message):
    __slots__ = ("AppID", "appVersion", "systemApp", "AppName", "softwareList", "bootTime", "assignedAdapters", "appErr", "state", "network", "volumeRefs", "snapshots", "cluster_app_running")
    APPID_FIELD_NUMBER: _ClassVar[int]
    APPVERSION_FIELD_NUMBER: _ClassVar[int]
    SYSTEMAPP_FIELD_NUMBER: _ClassVar[int]
    APPNAME_FIELD_NUMBER: _ClassVar[int]
    SOFTWARELIST_FIELD_NUMBER: _ClassVar[int]
    BOOTTIME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEDADAPTERS_FIELD_NUMBER: _ClassVar[int]
    APPERR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VOLUMEREFS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_APP_RUNNING_FIELD_NUMBER: _ClassVar[int]
    AppID: str
    appVersion: str
    systemApp: bool
    AppName: str
    softwareList: _containers.RepeatedCompositeFieldContainer[ZInfoSW]
    bootTime: _timestamp_pb2.Timestamp
    assignedAdapters: _containers.RepeatedCompositeFieldContainer[ZioBundle]
    appErr: _containers.RepeatedCompositeFieldContainer[_common_pb2.ErrorInfo]
    state: ZSwState
    network: _containers.RepeatedCompositeFieldContainer[ZInfoNetwork]
    volumeRefs: _containers.RepeatedScalarFieldContainer[str]
    snapshots: _containers.RepeatedCompositeFieldContainer[ZInfoSnapshot]
    cluster_app_running: bool
    def __init__(self, AppID: _Optional[str] = ..., appVersion: _Optional[str] = ..., systemApp: _Optional[bool] = ..., AppName: _Optional[str] = ..., softwareList: _Optional[_Iterable[_Union[ZInfoSW, _Mapping]]] = ..., bootTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., assignedAdapters: _Optional[_Iterable[_Union[ZioBundle, _Mapping]]] = ..., appErr: _Optional[_Iterable[_Union[_common_pb2.ErrorInfo, _Mapping]]] = ..., state: _Optional[_Union[ZSwState, str]] = ..., network: _Optional[_Iterable[_Union[ZInfoNetwork, _Mapping]]] = ..., volumeRefs: _Optional[_Iterable[str]] = ..., snapshots: _Optional[_Iterable[_Union[ZInfoSnapshot, _Mapping]]] = ..., cluster_app_running: _Optional[bool] = ...) -> None: ...

class ZInfoVpnLinkInfo(_message.Message):
    __slots__ = ("spiId", "subNet", "direction")
    SPIID_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    spiId: str
    subNet: str
    direction: bool
    def __init__(self, spiId: _Optional[str] = ..., subNet: _Optional[str] = ..., direction: _Optional[bool] = ...) -> None: ...

class ZInfoVpnLink(_message.Message):
    __slots__ = ("id", "name", "reqId", "instTime", "espInfo", "state", "lInfo", "rInfo")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQID_FIELD_NUMBER: _ClassVar[int]
    INSTTIME_FIELD_NUMBER: _ClassVar[int]
    ESPINFO_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LINFO_FIELD_NUMBER: _ClassVar[int]
    RINFO_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    reqId: str
    instTime: int
    espInfo: str
    state: ZInfoVpnState
    lInfo: ZInfoVpnLinkInfo
    rInfo: ZInfoVpnLinkInfo
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., reqId: _Optional[str] = ..., instTime: _Optional[int] = ..., espInfo: _Optional[str] = ..., state: _Optional[_Union[ZInfoVpnState, str]] = ..., lInfo: _Optional[_Union[ZInfoVpnLinkInfo, _Mapping]] = ..., rInfo: _Optional[_Union[ZInfoVpnLinkInfo, _Mapping]] = ...) -> None: ...

class ZInfoVpnEndPoint(_message.Message):
    __slots__ = ("id", "ipAddr", "port")
    ID_FIELD_NUMBER: _ClassVar[int]
    IPADDR_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    id: str
    ipAddr: str
    port: int
    def __init__(self, id: _Optional[str] = ..., ipAddr: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ZInfoVpnConn(_message.Message):
    __slots__ = ("id", "name", "version", "estTime", "ikes", "state", "lInfo", "rInfo", "links")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ESTTIME_FIELD_NUMBER: _ClassVar[int]
    IKES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LINFO_FIELD_NUMBER: _ClassVar[int]
    RINFO_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    version: str
    estTime: int
    ikes: str
    state: ZInfoVpnState
    lInfo: ZInfoVpnEndPoint
    rInfo: ZInfoVpnEndPoint
    links: _containers.RepeatedCompositeFieldContainer[ZInfoVpnLink]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., estTime: _Optional[int] = ..., ikes: _Optional[str] = ..., state: _Optional[_Union[ZInfoVpnState, str]] = ..., lInfo: _Optional[_Union[ZInfoVpnEndPoint, _Mapping]] = ..., rInfo: _Optional[_Union[ZInfoVpnEndPoint, _Mapping]] = ..., links: _Optional[_Iterable[_Union[ZInfoVpnLink, _Mapping]]] = ...) -> None: ...

class ZInfoVpn(_message.Message):
    __slots__ = ("upTime", "policyBased", "listeningIpAddrs", "conn")
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    POLICYBASED_FIELD_NUMBER: _ClassVar[int]
    LISTENINGIPADDRS_FIELD_NUMBER: _ClassVar[int]
    CONN_FIELD_NUMBER: _ClassVar[int]
    upTime: int
    policyBased: bool
    listeningIpAddrs: _containers.RepeatedScalarFieldContainer[str]
    conn: _containers.RepeatedCompositeFieldContainer[ZInfoVpnConn]
    def __init__(self, upTime: _Optional[int] = ..., policyBased: _Optional[bool] = ..., listeningIpAddrs: _Optional[_Iterable[str]] = ..., conn: _Optional[_Iterable[_Union[ZInfoVpnConn, _Mapping]]] = ...) -> None: ...

class ZInfoNetworkInstance(_message.Message):
    __slots__ = ("networkID", "networkVersion", "instType", "displayname", "activated", "upTimeStamp", "softwareList", "CurrentUplinkIntf", "CurrentUplinkAlias", "ports", "bridgeNum", "bridgeName", "bridgeIPAddr", "ipAssignments", "vifs", "ipv4Eid", "assignedAdapters", "vinfo", "networkErr", "state", "mtu", "ip_routes")
    NETWORKID_FIELD_NUMBER: _ClassVar[int]
    NETWORKVERSION_FIELD_NUMBER: _ClassVar[int]
    INSTTYPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    UPTIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SOFTWARELIST_FIELD_NUMBER: _ClassVar[int]
    CURRENTUPLINKINTF_FIELD_NUMBER: _ClassVar[int]
    CURRENTUPLINKALIAS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    BRIDGENUM_FIELD_NUMBER: _ClassVar[int]
    BRIDGENAME_FIELD_NUMBER: _ClassVar[int]
    BRIDGEIPADDR_FIELD_NUMBER: _ClassVar[int]
    IPASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    VIFS_FIELD_NUMBER: _ClassVar[int]
    IPV4EID_FIELD_NUMBER: _ClassVar[int]
    ASSIGNEDADAPTERS_FIELD_NUMBER: _ClassVar[int]
    VINFO_FIELD_NUMBER: _ClassVar[int]
    NETWORKERR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    IP_ROUTES_FIELD_NUMBER: _ClassVar[int]
    networkID: str
    networkVersion: str
    instType: int
    displayname: str
    activated: bool
    upTimeStamp: _timestamp_pb2.Timestamp
    softwareList: ZInfoSW
    CurrentUplinkIntf: str
    CurrentUplinkAlias: str
    ports: _containers.RepeatedScalarFieldContainer[str]
    bridgeNum: int
    bridgeName: str
    bridgeIPAddr: str
    ipAssignments: _containers.RepeatedCompositeFieldContainer[ZmetIPAssignmentEntry]
    vifs: _containers.RepeatedCompositeFieldContainer[ZmetVifInfo]
    ipv4Eid: bool
    assignedAdapters: _containers.RepeatedCompositeFieldContainer[ZioBundle]
    vinfo: ZInfoVpn
    networkErr: _containers.RepeatedCompositeFieldContainer[_common_pb2.ErrorInfo]
    state: ZNetworkInstanceState
    mtu: int
    ip_routes: _containers.RepeatedCompositeFieldContainer[IPRoute]
    def __init__(self, networkID: _Optional[str] = ..., networkVersion: _Optional[str] = ..., instType: _Optional[int] = ..., displayname: _Optional[str] = ..., activated: _Optional[bool] = ..., upTimeStamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., softwareList: _Optional[_Union[ZInfoSW, _Mapping]] = ..., CurrentUplinkIntf: _Optional[str] = ..., CurrentUplinkAlias: _Optional[str] = ..., ports: _Optional[_Iterable[str]] = ..., bridgeNum: _Optional[int] = ..., bridgeName: _Optional[str] = ..., bridgeIPAddr: _Optional[str] = ..., ipAssignments: _Optional[_Iterable[_Union[ZmetIPAssignmentEntry, _Mapping]]] = ..., vifs: _Optional[_Iterable[_Union[ZmetVifInfo, _Mapping]]] = ..., ipv4Eid: _Optional[bool] = ..., assignedAdapters: _Optional[_Iterable[_Union[ZioBundle, _Mapping]]] = ..., vinfo: _Optional[_Union[ZInfoVpn, _Mapping]] = ..., networkErr: _Optional[_Iterable[_Union[_common_pb2.ErrorInfo, _Mapping]]] = ..., state: _Optional[_Union[ZNetworkInstanceState, str]] = ..., mtu: _Optional[int] = ..., ip_routes: _Optional[_Iterable[_Union[IPRoute, _Mapping]]] = ...) -> None: ...

class IPRoute(_message.Message):
    __slots__ = ("destination_network", "gateway", "port", "gateway_app")
    DESTINATION_NETWORK_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_APP_FIELD_NUMBER: _ClassVar[int]
    destination_network: str
    gateway: str
    port: str
    gateway_app: str
    def __init__(self, destination_network: _Optional[str] = ..., gateway: _Optional[str] = ..., port: _Optional[str] = ..., gateway_app: _Optional[str] = ...) -> None: ...

class UsageInfo(_message.Message):
    __slots__ = ("createTime", "refCount", "lastRefcountChangeTime")
    CREATETIME_FIELD_NUMBER: _ClassVar[int]
    REFCOUNT_FIELD_NUMBER: _ClassVar[int]
    LASTREFCOUNTCHANGETIME_FIELD_NUMBER: _ClassVar[int]
    createTime: _timestamp_pb2.Timestamp
    refCount: int
    lastRefcountChangeTime: _timestamp_pb2.Timestamp
    def __init__(self, createTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refCount: _Optional[int] = ..., lastRefcountChangeTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class VolumeResources(_message.Message):
    __slots__ = ("maxSizeBytes", "curSizeBytes")
    MAXSIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    CURSIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    maxSizeBytes: int
    curSizeBytes: int
    def __init__(self, maxSizeBytes: _Optional[int] = ..., curSizeBytes: _Optional[int] = ...) -> None: ...

class ZInfoVolume(_message.Message):
    __slots__ = ("uuid", "displayName", "usage", "resources", "state", "progressPercentage", "volumeErr", "generation_count")
    UUID_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESSPERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    VOLUMEERR_FIELD_NUMBER: _ClassVar[int]
    GENERATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    displayName: str
    usage: UsageInfo
    resources: VolumeResources
    state: ZSwState
    progressPercentage: int
    volumeErr: _common_pb2.ErrorInfo
    generation_count: int
    def __init__(self, uuid: _Optional[str] = ..., displayName: _Optional[str] = ..., usage: _Optional[_Union[UsageInfo, _Mapping]] = ..., resources: _Optional[_Union[VolumeResources, _Mapping]] = ..., state: _Optional[_Union[ZSwState, str]] = ..., progressPercentage: _Optional[int] = ..., volumeErr: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., generation_count: _Optional[int] = ...) -> None: ...

class ContentResources(_message.Message):
    __slots__ = ("curSizeBytes",)
    CURSIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    curSizeBytes: int
    def __init__(self, curSizeBytes: _Optional[int] = ...) -> None: ...

class ZInfoContentTree(_message.Message):
    __slots__ = ("uuid", "displayName", "sha256", "resources", "usage", "state", "progressPercentage", "err", "componentShaList", "generation_count")
    UUID_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESSPERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    COMPONENTSHALIST_FIELD_NUMBER: _ClassVar[int]
    GENERATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    displayName: str
    sha256: str
    resources: ContentResources
    usage: UsageInfo
    state: ZSwState
    progressPercentage: int
    err: _common_pb2.ErrorInfo
    componentShaList: _containers.RepeatedScalarFieldContainer[str]
    generation_count: int
    def __init__(self, uuid: _Optional[str] = ..., displayName: _Optional[str] = ..., sha256: _Optional[str] = ..., resources: _Optional[_Union[ContentResources, _Mapping]] = ..., usage: _Optional[_Union[UsageInfo, _Mapping]] = ..., state: _Optional[_Union[ZSwState, str]] = ..., progressPercentage: _Optional[int] = ..., err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., componentShaList: _Optional[_Iterable[str]] = ..., generation_count: _Optional[int] = ...) -> None: ...

class ZInfoBlob(_message.Message):
    __slots__ = ("sha256", "resources", "usage", "state", "progressPercentage", "err")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESSPERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    resources: ContentResources
    usage: UsageInfo
    state: ZSwState
    progressPercentage: int
    err: _common_pb2.ErrorInfo
    def __init__(self, sha256: _Optional[str] = ..., resources: _Optional[_Union[ContentResources, _Mapping]] = ..., usage: _Optional[_Union[UsageInfo, _Mapping]] = ..., state: _Optional[_Union[ZSwState, str]] = ..., progressPercentage: _Optional[int] = ..., err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...

class ZInfoBlobList(_message.Message):
    __slots__ = ("blob",)
    BLOB_FIELD_NUMBER: _ClassVar[int]
    blob: _containers.RepeatedCompositeFieldContainer[ZInfoBlob]
    def __init__(self, blob: _Optional[_Iterable[_Union[ZInfoBlob, _Mapping]]] = ...) -> None: ...

class ZInfoMsg(_message.Message):
    __slots__ = ("ztype", "devId", "dinfo", "ainfo", "niinfo", "vinfo", "cinfo", "binfo", "amdinfo", "evinfo", "hwinfo", "locinfo", "patchInfo", "cluster_node", "ntp_sources", "cluster_info", "cluster_update_info", "atTimeStamp")
    ZTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVID_FIELD_NUMBER: _ClassVar[int]
    DINFO_FIELD_NUMBER: _ClassVar[int]
    AINFO_FIELD_NUMBER: _ClassVar[int]
    NIINFO_FIELD_NUMBER: _ClassVar[int]
    VINFO_FIELD_NUMBER: _ClassVar[int]
    CINFO_FIELD_NUMBER: _ClassVar[int]
    BINFO_FIELD_NUMBER: _ClassVar[int]
    AMDINFO_FIELD_NUMBER: _ClassVar[int]
    EVINFO_FIELD_NUMBER: _ClassVar[int]
    HWINFO_FIELD_NUMBER: _ClassVar[int]
    LOCINFO_FIELD_NUMBER: _ClassVar[int]
    PATCHINFO_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_NODE_FIELD_NUMBER: _ClassVar[int]
    NTP_SOURCES_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_INFO_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_UPDATE_INFO_FIELD_NUMBER: _ClassVar[int]
    ATTIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ztype: ZInfoTypes
    devId: str
    dinfo: ZInfoDevice
    ainfo: ZInfoApp
    niinfo: ZInfoNetworkInstance
    vinfo: ZInfoVolume
    cinfo: ZInfoContentTree
    binfo: ZInfoBlobList
    amdinfo: ZInfoAppInstMetaData
    evinfo: ZInfoEdgeview
    hwinfo: ZInfoHardware
    locinfo: ZInfoLocation
    patchInfo: _patch_envelope_pb2.ZInfoPatchEnvelope
    cluster_node: ZInfoClusterNode
    ntp_sources: _ntpsources_pb2.ZInfoNTPSources
    cluster_info: ZInfoKubeCluster
    cluster_update_info: ZInfoKubeClusterUpdateStatus
    atTimeStamp: _timestamp_pb2.Timestamp
    def __init__(self, ztype: _Optional[_Union[ZInfoTypes, str]] = ..., devId: _Optional[str] = ..., dinfo: _Optional[_Union[ZInfoDevice, _Mapping]] = ..., ainfo: _Optional[_Union[ZInfoApp, _Mapping]] = ..., niinfo: _Optional[_Union[ZInfoNetworkInstance, _Mapping]] = ..., vinfo: _Optional[_Union[ZInfoVolume, _Mapping]] = ..., cinfo: _Optional[_Union[ZInfoContentTree, _Mapping]] = ..., binfo: _Optional[_Union[ZInfoBlobList, _Mapping]] = ..., amdinfo: _Optional[_Union[ZInfoAppInstMetaData, _Mapping]] = ..., evinfo: _Optional[_Union[ZInfoEdgeview, _Mapping]] = ..., hwinfo: _Optional[_Union[ZInfoHardware, _Mapping]] = ..., locinfo: _Optional[_Union[ZInfoLocation, _Mapping]] = ..., patchInfo: _Optional[_Union[_patch_envelope_pb2.ZInfoPatchEnvelope, _Mapping]] = ..., cluster_node: _Optional[_Union[ZInfoClusterNode, _Mapping]] = ..., ntp_sources: _Optional[_Union[_ntpsources_pb2.ZInfoNTPSources, _Mapping]] = ..., cluster_info: _Optional[_Union[ZInfoKubeCluster, _Mapping]] = ..., cluster_update_info: _Optional[_Union[ZInfoKubeClusterUpdateStatus, _Mapping]] = ..., atTimeStamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("HWAssistedVirtualization", "IOVirtualization")
    HWASSISTEDVIRTUALIZATION_FIELD_NUMBER: _ClassVar[int]
    IOVIRTUALIZATION_FIELD_NUMBER: _ClassVar[int]
    HWAssistedVirtualization: bool
    IOVirtualization: bool
    def __init__(self, HWAssistedVirtualization: _Optional[bool] = ..., IOVirtualization: _Optional[bool] = ...) -> None: ...

class ZInfoAppInstMetaData(_message.Message):
    __slots__ = ("uuid", "type", "data")
    UUID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    type: AppInstMetaDataType
    data: bytes
    def __init__(self, uuid: _Optional[str] = ..., type: _Optional[_Union[AppInstMetaDataType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ZInfoEdgeview(_message.Message):
    __slots__ = ("expire_time", "started_time", "count_dev", "count_app", "count_ext")
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STARTED_TIME_FIELD_NUMBER: _ClassVar[int]
    COUNT_DEV_FIELD_NUMBER: _ClassVar[int]
    COUNT_APP_FIELD_NUMBER: _ClassVar[int]
    COUNT_EXT_FIELD_NUMBER: _ClassVar[int]
    expire_time: _timestamp_pb2.Timestamp
    started_time: _timestamp_pb2.Timestamp
    count_dev: int
    count_app: int
    count_ext: int
    def __init__(self, expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count_dev: _Optional[int] = ..., count_app: _Optional[int] = ..., count_ext: _Optional[int] = ...) -> None: ...

class ZInfoLocation(_message.Message):
    __slots__ = ("latitude", "longitude", "altitude", "utc_timestamp", "horizontal_reliability", "vertical_reliability", "horizontal_uncertainty", "vertical_uncertainty", "logicallabel")
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    ALTITUDE_FIELD_NUMBER: _ClassVar[int]
    UTC_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    VERTICAL_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    latitude: float
    longitude: float
    altitude: float
    utc_timestamp: _timestamp_pb2.Timestamp
    horizontal_reliability: LocReliability
    vertical_reliability: LocReliability
    horizontal_uncertainty: float
    vertical_uncertainty: float
    logicallabel: str
    def __init__(self, latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., altitude: _Optional[float] = ..., utc_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., horizontal_reliability: _Optional[_Union[LocReliability, str]] = ..., vertical_reliability: _Optional[_Union[LocReliability, str]] = ..., horizontal_uncertainty: _Optional[float] = ..., vertical_uncertainty: _Optional[float] = ..., logicallabel: _Optional[str] = ...) -> None: ...

class ZInfoKubeClusterUpdateStatus(_message.Message):
    __slots__ = ("current_node", "component", "status", "error", "cluster_id")
    CURRENT_NODE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    current_node: str
    component: _edge_node_cluster_pb2.KubeComp
    status: _edge_node_cluster_pb2.KubeCompUpdateStatus
    error: _common_pb2.ErrorInfo
    cluster_id: str
    def __init__(self, current_node: _Optional[str] = ..., component: _Optional[_Union[_edge_node_cluster_pb2.KubeComp, str]] = ..., status: _Optional[_Union[_edge_node_cluster_pb2.KubeCompUpdateStatus, str]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class ZInfoKubeCluster(_message.Message):
    __slots__ = ("nodes", "pod_name_spaces", "eve_apps", "storage", "cluster_id", "eve_vm_apps")
    NODES_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_SPACES_FIELD_NUMBER: _ClassVar[int]
    EVE_APPS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    EVE_VM_APPS_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_edge_node_cluster_pb2.KubeNodeInfo]
    pod_name_spaces: _containers.RepeatedCompositeFieldContainer[_edge_node_cluster_pb2.KubePodNameSpaceInfo]
    eve_apps: _containers.RepeatedCompositeFieldContainer[_edge_node_cluster_pb2.KubeEVEAppPodInfo]
    storage: _edge_node_cluster_pb2.KubeStorageInfo
    cluster_id: str
    eve_vm_apps: _containers.RepeatedCompositeFieldContainer[_edge_node_cluster_pb2.KubeVMIInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_edge_node_cluster_pb2.KubeNodeInfo, _Mapping]]] = ..., pod_name_spaces: _Optional[_Iterable[_Union[_edge_node_cluster_pb2.KubePodNameSpaceInfo, _Mapping]]] = ..., eve_apps: _Optional[_Iterable[_Union[_edge_node_cluster_pb2.KubeEVEAppPodInfo, _Mapping]]] = ..., storage: _Optional[_Union[_edge_node_cluster_pb2.KubeStorageInfo, _Mapping]] = ..., cluster_id: _Optional[str] = ..., eve_vm_apps: _Optional[_Iterable[_Union[_edge_node_cluster_pb2.KubeVMIInfo, _Mapping]]] = ...) -> None: ...

class ZInfoHardware(_message.Message):
    __slots__ = ("disks", "eve_release", "inventory", "kernel_flavor", "kernel_version", "eve_platform", "partition", "kernel_cmdline")
    DISKS_FIELD_NUMBER: _ClassVar[int]
    EVE_RELEASE_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FLAVOR_FIELD_NUMBER: _ClassVar[int]
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVE_PLATFORM_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_CMDLINE_FIELD_NUMBER: _ClassVar[int]
    disks: _containers.RepeatedCompositeFieldContainer[StorageDiskInfo]
    eve_release: str
    inventory: _hardware_pb2.HardwareInventory
    kernel_flavor: str
    kernel_version: str
    eve_platform: str
    partition: str
    kernel_cmdline: str
    def __init__(self, disks: _Optional[_Iterable[_Union[StorageDiskInfo, _Mapping]]] = ..., eve_release: _Optional[str] = ..., inventory: _Optional[_Union[_hardware_pb2.HardwareInventory, _Mapping]] = ..., kernel_flavor: _Optional[str] = ..., kernel_version: _Optional[str] = ..., eve_platform: _Optional[str] = ..., partition: _Optional[str] = ..., kernel_cmdline: _Optional[str] = ...) -> None: ...
