import datetime

from agent.wire.pb.evecommon import evecommon_pb2 as _evecommon_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.wire.pb.metrics import nestedappruntimemetrics_pb2 as _nestedappruntimemetrics_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ZmetricTypes(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZmNop: _ClassVar[ZmetricTypes]
    ZmDevice: _ClassVar[ZmetricTypes]
    ZmApp: _ClassVar[ZmetricTypes]

class CipherError(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIPHER_ERROR_INVALID: _ClassVar[CipherError]
    CIPHER_ERROR_NOT_READY: _ClassVar[CipherError]
    CIPHER_ERROR_DECRYPT_FAILED: _ClassVar[CipherError]
    CIPHER_ERROR_UNMARSHAL_FAILED: _ClassVar[CipherError]
    CIPHER_ERROR_CLEARTEXT_FALLBACK: _ClassVar[CipherError]
    CIPHER_ERROR_MISSING_FALLBACK: _ClassVar[CipherError]
    CIPHER_ERROR_NO_CIPHER: _ClassVar[CipherError]
    CIPHER_ERROR_NO_DATA: _ClassVar[CipherError]

class MetricItemType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MetricItemOther: _ClassVar[MetricItemType]
    MetricItemGauge: _ClassVar[MetricItemType]
    MetricItemCounter: _ClassVar[MetricItemType]
    MetricItemState: _ClassVar[MetricItemType]
ZmNop: ZmetricTypes
ZmDevice: ZmetricTypes
ZmApp: ZmetricTypes
CIPHER_ERROR_INVALID: CipherError
CIPHER_ERROR_NOT_READY: CipherError
CIPHER_ERROR_DECRYPT_FAILED: CipherError
CIPHER_ERROR_UNMARSHAL_FAILED: CipherError
CIPHER_ERROR_CLEARTEXT_FALLBACK: CipherError
CIPHER_ERROR_MISSING_FALLBACK: CipherError
CIPHER_ERROR_NO_CIPHER: CipherError
CIPHER_ERROR_NO_DATA: CipherError
MetricItemOther: MetricItemType
MetricItemGauge: MetricItemType
MetricItemCounter: MetricItemType
MetricItemState: MetricItemType

class memoryMetric(_message.Message):
    __slots__ = ("usedMem", "availMem", "usedPercentage", "availPercentage")
    USEDMEM_FIELD_NUMBER: _ClassVar[int]
    AVAILMEM_FIELD_NUMBER: _ClassVar[int]
    USEDPERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    AVAILPERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    usedMem: int
    availMem: int
    usedPercentage: float
    availPercentage: float
    def __init__(self, usedMem: _Optional[int] = ..., availMem: _Optional[int] = ..., usedPercentage: _Optional[float] = ..., availPercentage: _Optional[float] = ...) -> None: ...

class AppMemoryMetric(_message.Message):
    __slots__ = ("allocatedMB", "usedMB")
    ALLOCATEDMB_FIELD_NUMBER: _ClassVar[int]
    USEDMB_FIELD_NUMBER: _ClassVar[int]
    allocatedMB: int
    usedMB: int
    def __init__(self, allocatedMB: _Optional[int] = ..., usedMB: _Optional[int] = ...) -> None: ...

class DeviceMemoryMetric(_message.Message):
    __slots__ = ("memoryMB", "allocated_appsMB", "allocated_eveMB", "used_eveMB")
    MEMORYMB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_APPSMB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_EVEMB_FIELD_NUMBER: _ClassVar[int]
    USED_EVEMB_FIELD_NUMBER: _ClassVar[int]
    memoryMB: int
    allocated_appsMB: int
    allocated_eveMB: int
    used_eveMB: int
    def __init__(self, memoryMB: _Optional[int] = ..., allocated_appsMB: _Optional[int] = ..., allocated_eveMB: _Optional[int] = ..., used_eveMB: _Optional[int] = ...) -> None: ...

class networkMetric(_message.Message):
    __slots__ = ("iName", "txBytes", "rxBytes", "txDrops", "rxDrops", "txPkts", "rxPkts", "txErrors", "rxErrors", "txAclDrops", "rxAclDrops", "txAclRateLimitDrops", "rxAclRateLimitDrops", "localName", "alias")
    INAME_FIELD_NUMBER: _ClassVar[int]
    TXBYTES_FIELD_NUMBER: _ClassVar[int]
    RXBYTES_FIELD_NUMBER: _ClassVar[int]
    TXDROPS_FIELD_NUMBER: _ClassVar[int]
    RXDROPS_FIELD_NUMBER: _ClassVar[int]
    TXPKTS_FIELD_NUMBER: _ClassVar[int]
    RXPKTS_FIELD_NUMBER: _ClassVar[int]
    TXERRORS_FIELD_NUMBER: _ClassVar[int]
    RXERRORS_FIELD_NUMBER: _ClassVar[int]
    TXACLDROPS_FIELD_NUMBER: _ClassVar[int]
    RXACLDROPS_FIELD_NUMBER: _ClassVar[int]
    TXACLRATELIMITDROPS_FIELD_NUMBER: _ClassVar[int]
    RXACLRATELIMITDROPS_FIELD_NUMBER: _ClassVar[int]
    LOCALNAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    iName: str
    txBytes: int
    rxBytes: int
    txDrops: int
    rxDrops: int
    txPkts: int
    rxPkts: int
    txErrors: int
    rxErrors: int
    txAclDrops: int
    rxAclDrops: int
    txAclRateLimitDrops: int
    rxAclRateLimitDrops: int
    localName: str
    alias: str
    def __init__(self, iName: _Optional[str] = ..., txBytes: _Optional[int] = ..., rxBytes: _Optional[int] = ..., txDrops: _Optional[int] = ..., rxDrops: _Optional[int] = ..., txPkts: _Optional[int] = ..., rxPkts: _Optional[int] = ..., txErrors: _Optional[int] = ..., rxErrors: _Optional[int] = ..., txAclDrops: _Optional[int] = ..., rxAclDrops: _Optional[int] = ..., txAclRateLimitDrops: _Optional[int] = ..., rxAclRateLimitDrops: _Optional[int] = ..., localName: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class CellularMetric(_message.Message):
    __slots__ = ("logicallabel", "signal_strength", "packet_stats")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PACKET_STATS_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    signal_strength: CellularSignalStrength
    packet_stats: CellularPacketStats
    def __init__(self, logicallabel: _Optional[str] = ..., signal_strength: _Optional[_Union[CellularSignalStrength, _Mapping]] = ..., packet_stats: _Optional[_Union[CellularPacketStats, _Mapping]] = ...) -> None: ...

class CellularSignalStrength(_message.Message):
    __slots__ = ("rssi", "rsrq", "rsrp", "snr")
    RSSI_FIELD_NUMBER: _ClassVar[int]
    RSRQ_FIELD_NUMBER: _ClassVar[int]
    RSRP_FIELD_NUMBER: _ClassVar[int]
    SNR_FIELD_NUMBER: _ClassVar[int]
    rssi: int
    rsrq: int
    rsrp: int
    snr: int
    def __init__(self, rssi: _Optional[int] = ..., rsrq: _Optional[int] = ..., rsrp: _Optional[int] = ..., snr: _Optional[int] = ...) -> None: ...

class CellularPacketStats(_message.Message):
    __slots__ = ("rx", "tx")
    RX_FIELD_NUMBER: _ClassVar[int]
    TX_FIELD_NUMBER: _ClassVar[int]
    rx: NetworkStats
    tx: NetworkStats
    def __init__(self, rx: _Optional[_Union[NetworkStats, _Mapping]] = ..., tx: _Optional[_Union[NetworkStats, _Mapping]] = ...) -> None: ...

class zedcloudMetric(_message.Message):
    __slots__ = ("ifName", "failures", "success", "lastFailure", "lastSuccess", "urlMetrics", "authVerifyFailure")
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LASTFAILURE_FIELD_NUMBER: _ClassVar[int]
    LASTSUCCESS_FIELD_NUMBER: _ClassVar[int]
    URLMETRICS_FIELD_NUMBER: _ClassVar[int]
    AUTHVERIFYFAILURE_FIELD_NUMBER: _ClassVar[int]
    ifName: str
    failures: int
    success: int
    lastFailure: _timestamp_pb2.Timestamp
    lastSuccess: _timestamp_pb2.Timestamp
    urlMetrics: _containers.RepeatedCompositeFieldContainer[urlcloudMetric]
    authVerifyFailure: int
    def __init__(self, ifName: _Optional[str] = ..., failures: _Optional[int] = ..., success: _Optional[int] = ..., lastFailure: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lastSuccess: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., urlMetrics: _Optional[_Iterable[_Union[urlcloudMetric, _Mapping]]] = ..., authVerifyFailure: _Optional[int] = ...) -> None: ...

class urlcloudMetric(_message.Message):
    __slots__ = ("url", "tryMsgCount", "tryByteCount", "sentMsgCount", "sentByteCount", "recvMsgCount", "recvByteCount", "total_time_spent", "sess_resume_count")
    URL_FIELD_NUMBER: _ClassVar[int]
    TRYMSGCOUNT_FIELD_NUMBER: _ClassVar[int]
    TRYBYTECOUNT_FIELD_NUMBER: _ClassVar[int]
    SENTMSGCOUNT_FIELD_NUMBER: _ClassVar[int]
    SENTBYTECOUNT_FIELD_NUMBER: _ClassVar[int]
    RECVMSGCOUNT_FIELD_NUMBER: _ClassVar[int]
    RECVBYTECOUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_SPENT_FIELD_NUMBER: _ClassVar[int]
    SESS_RESUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    url: str
    tryMsgCount: int
    tryByteCount: int
    sentMsgCount: int
    sentByteCount: int
    recvMsgCount: int
    recvByteCount: int
    total_time_spent: int
    sess_resume_count: int
    def __init__(self, url: _Optional[str] = ..., tryMsgCount: _Optional[int] = ..., tryByteCount: _Optional[int] = ..., sentMsgCount: _Optional[int] = ..., sentByteCount: _Optional[int] = ..., recvMsgCount: _Optional[int] = ..., recvByteCount: _Optional[int] = ..., total_time_spent: _Optional[int] = ..., sess_resume_count: _Optional[int] = ...) -> None: ...

class CipherMetric(_message.Message):
    __slots__ = ("agent_name", "failure_count", "success_count", "last_failure", "last_success", "tc")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TC_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    failure_count: int
    success_count: int
    last_failure: _timestamp_pb2.Timestamp
    last_success: _timestamp_pb2.Timestamp
    tc: _containers.RepeatedCompositeFieldContainer[TypeCounter]
    def __init__(self, agent_name: _Optional[str] = ..., failure_count: _Optional[int] = ..., success_count: _Optional[int] = ..., last_failure: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tc: _Optional[_Iterable[_Union[TypeCounter, _Mapping]]] = ...) -> None: ...

class TypeCounter(_message.Message):
    __slots__ = ("error_code", "count")
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    error_code: CipherError
    count: int
    def __init__(self, error_code: _Optional[_Union[CipherError, str]] = ..., count: _Optional[int] = ...) -> None: ...

class appCpuMetric(_message.Message):
    __slots__ = ("upTime", "total", "systemTotal", "total_ns")
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SYSTEMTOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    upTime: _timestamp_pb2.Timestamp
    total: int
    systemTotal: int
    total_ns: int
    def __init__(self, upTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total: _Optional[int] = ..., systemTotal: _Optional[int] = ..., total_ns: _Optional[int] = ...) -> None: ...

class StorageVDevMetrics(_message.Message):
    __slots__ = ("volume_u_u_i_d", "alloc", "total", "deflated_space", "replaceable_size", "expandable_size", "read_errors", "write_errors", "checksum_errors", "bytes_read", "bytes_write", "ops_count_read", "ops_count_write", "i_os_in_progress", "read_ticks", "write_ticks", "i_os_total_ticks", "weighted_i_o_ticks")
    VOLUME_U_U_I_D_FIELD_NUMBER: _ClassVar[int]
    ALLOC_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    DEFLATED_SPACE_FIELD_NUMBER: _ClassVar[int]
    REPLACEABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPANDABLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    READ_ERRORS_FIELD_NUMBER: _ClassVar[int]
    WRITE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_ERRORS_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITE_FIELD_NUMBER: _ClassVar[int]
    OPS_COUNT_READ_FIELD_NUMBER: _ClassVar[int]
    OPS_COUNT_WRITE_FIELD_NUMBER: _ClassVar[int]
    I_OS_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    READ_TICKS_FIELD_NUMBER: _ClassVar[int]
    WRITE_TICKS_FIELD_NUMBER: _ClassVar[int]
    I_OS_TOTAL_TICKS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_I_O_TICKS_FIELD_NUMBER: _ClassVar[int]
    volume_u_u_i_d: str
    alloc: int
    total: int
    deflated_space: int
    replaceable_size: int
    expandable_size: int
    read_errors: int
    write_errors: int
    checksum_errors: int
    bytes_read: int
    bytes_write: int
    ops_count_read: int
    ops_count_write: int
    i_os_in_progress: int
    read_ticks: int
    write_ticks: int
    i_os_total_ticks: int
    weighted_i_o_ticks: int
    def __init__(self, volume_u_u_i_d: _Optional[str] = ..., alloc: _Optional[int] = ..., total: _Optional[int] = ..., deflated_space: _Optional[int] = ..., replaceable_size: _Optional[int] = ..., expandable_size: _Optional[int] = ..., read_errors: _Optional[int] = ..., write_errors: _Optional[int] = ..., checksum_errors: _Optional[int] = ..., bytes_read: _Optional[int] = ..., bytes_write: _Optional[int] = ..., ops_count_read: _Optional[int] = ..., ops_count_write: _Optional[int] = ..., i_os_in_progress: _Optional[int] = ..., read_ticks: _Optional[int] = ..., write_ticks: _Optional[int] = ..., i_os_total_ticks: _Optional[int] = ..., weighted_i_o_ticks: _Optional[int] = ...) -> None: ...

class StorageDiskMetric(_message.Message):
    __slots__ = ("disk_name", "metrics")
    DISK_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    disk_name: _evecommon_pb2.DiskDescription
    metrics: StorageVDevMetrics
    def __init__(self, disk_name: _Optional[_Union[_evecommon_pb2.DiskDescription, _Mapping]] = ..., metrics: _Optional[_Union[StorageVDevMetrics, _Mapping]] = ...) -> None: ...

class StorageChildrenMetric(_message.Message):
    __slots__ = ("g_u_i_d", "disks", "children", "metrics")
    G_U_I_D_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    g_u_i_d: int
    disks: _containers.RepeatedCompositeFieldContainer[StorageDiskMetric]
    children: _containers.RepeatedCompositeFieldContainer[StorageChildrenMetric]
    metrics: StorageVDevMetrics
    def __init__(self, g_u_i_d: _Optional[int] = ..., disks: _Optional[_Iterable[_Union[StorageDiskMetric, _Mapping]]] = ..., children: _Optional[_Iterable[_Union[StorageChildrenMetric, _Mapping]]] = ..., metrics: _Optional[_Union[StorageVDevMetrics, _Mapping]] = ...) -> None: ...

class StorageMetric(_message.Message):
    __slots__ = ("pool_name", "collection_time", "zpool_metrics", "children_datasets", "disks", "zvols")
    POOL_NAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_TIME_FIELD_NUMBER: _ClassVar[int]
    ZPOOL_METRICS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_DATASETS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    ZVOLS_FIELD_NUMBER: _ClassVar[int]
    pool_name: str
    collection_time: _timestamp_pb2.Timestamp
    zpool_metrics: StorageVDevMetrics
    children_datasets: _containers.RepeatedCompositeFieldContainer[StorageChildrenMetric]
    disks: _containers.RepeatedCompositeFieldContainer[StorageDiskMetric]
    zvols: _containers.RepeatedCompositeFieldContainer[StorageVDevMetrics]
    def __init__(self, pool_name: _Optional[str] = ..., collection_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., zpool_metrics: _Optional[_Union[StorageVDevMetrics, _Mapping]] = ..., children_datasets: _Optional[_Iterable[_Union[StorageChildrenMetric, _Mapping]]] = ..., disks: _Optional[_Iterable[_Union[StorageDiskMetric, _Mapping]]] = ..., zvols: _Optional[_Iterable[_Union[StorageVDevMetrics, _Mapping]]] = ...) -> None: ...

class deviceMetric(_message.Message):
    __slots__ = ("memory", "network", "zedcloud", "disk", "cpuMetric", "metricItems", "runtimeStorageOverheadMB", "appRunTimeStorageMB", "systemServicesMemoryMB", "log", "cipher", "acl", "newlog", "zedbox", "deviceMemory", "last_received_config", "last_processed_config", "cellular", "flowlog", "dormant_time_in_seconds", "storage_metrics", "pnac_metrics", "bond_metrics")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ZEDCLOUD_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    CPUMETRIC_FIELD_NUMBER: _ClassVar[int]
    METRICITEMS_FIELD_NUMBER: _ClassVar[int]
    RUNTIMESTORAGEOVERHEADMB_FIELD_NUMBER: _ClassVar[int]
    APPRUNTIMESTORAGEMB_FIELD_NUMBER: _ClassVar[int]
    SYSTEMSERVICESMEMORYMB_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    ACL_FIELD_NUMBER: _ClassVar[int]
    NEWLOG_FIELD_NUMBER: _ClassVar[int]
    ZEDBOX_FIELD_NUMBER: _ClassVar[int]
    DEVICEMEMORY_FIELD_NUMBER: _ClassVar[int]
    LAST_RECEIVED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LAST_PROCESSED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CELLULAR_FIELD_NUMBER: _ClassVar[int]
    FLOWLOG_FIELD_NUMBER: _ClassVar[int]
    DORMANT_TIME_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_METRICS_FIELD_NUMBER: _ClassVar[int]
    PNAC_METRICS_FIELD_NUMBER: _ClassVar[int]
    BOND_METRICS_FIELD_NUMBER: _ClassVar[int]
    memory: memoryMetric
    network: _containers.RepeatedCompositeFieldContainer[networkMetric]
    zedcloud: _containers.RepeatedCompositeFieldContainer[zedcloudMetric]
    disk: _containers.RepeatedCompositeFieldContainer[diskMetric]
    cpuMetric: appCpuMetric
    metricItems: _containers.RepeatedCompositeFieldContainer[MetricItem]
    runtimeStorageOverheadMB: int
    appRunTimeStorageMB: int
    systemServicesMemoryMB: memoryMetric
    log: logMetric
    cipher: _containers.RepeatedCompositeFieldContainer[CipherMetric]
    acl: AclMetric
    newlog: newlogMetric
    zedbox: zedboxStats
    deviceMemory: DeviceMemoryMetric
    last_received_config: _timestamp_pb2.Timestamp
    last_processed_config: _timestamp_pb2.Timestamp
    cellular: _containers.RepeatedCompositeFieldContainer[CellularMetric]
    flowlog: FlowlogMetric
    dormant_time_in_seconds: int
    storage_metrics: _containers.RepeatedCompositeFieldContainer[StorageMetric]
    pnac_metrics: _containers.RepeatedCompositeFieldContainer[PNACMetrics]
    bond_metrics: _containers.RepeatedCompositeFieldContainer[BondMetrics]
    def __init__(self, memory: _Optional[_Union[memoryMetric, _Mapping]] = ..., network: _Optional[_Iterable[_Union[networkMetric, _Mapping]]] = ..., zedcloud: _Optional[_Iterable[_Union[zedcloudMetric, _Mapping]]] = ..., disk: _Optional[_Iterable[_Union[diskMetric, _Mapping]]] = ..., cpuMetric: _Optional[_Union[appCpuMetric, _Mapping]] = ..., metricItems: _Optional[_Iterable[_Union[MetricItem, _Mapping]]] = ..., runtimeStorageOverheadMB: _Optional[int] = ..., appRunTimeStorageMB: _Optional[int] = ..., systemServicesMemoryMB: _Optional[_Union[memoryMetric, _Mapping]] = ..., log: _Optional[_Union[logMetric, _Mapping]] = ..., cipher: _Optional[_Iterable[_Union[CipherMetric, _Mapping]]] = ..., acl: _Optional[_Union[AclMetric, _Mapping]] = ..., newlog: _Optional[_Union[newlogMetric, _Mapping]] = ..., zedbox: _Optional[_Union[zedboxStats, _Mapping]] = ..., deviceMemory: _Optional[_Union[DeviceMemoryMetric, _Mapping]] = ..., last_received_config: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_processed_config: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cellular: _Optional[_Iterable[_Union[CellularMetric, _Mapping]]] = ..., flowlog: _Optional[_Union[FlowlogMetric, _Mapping]] = ..., dormant_time_in_seconds: _Optional[int] = ..., storage_metrics: _Optional[_Iterable[_Union[StorageMetric, _Mapping]]] = ..., pnac_metrics: _Optional[_Iterable[_Union[PNACMetrics, _Mapping]]] = ..., bond_metrics: _Optional[_Iterable[_Union[BondMetrics, _Mapping]]] = ...) -> None: ...

class AclMetric(_message.Message):
    __slots__ = ("total_rule_count",)
    TOTAL_RULE_COUNT_FIELD_NUMBER: _ClassVar[int]
    total_rule_count: int
    def __init__(self, total_rule_count: _Optional[int] = ...) -> None: ...

class appContainerMetric(_message.Message):
    __slots__ = ("appContainerName", "status", "PIDs", "cpu", "memory", "network", "disk", "appContainerMemory")
    APPCONTAINERNAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    APPCONTAINERMEMORY_FIELD_NUMBER: _ClassVar[int]
    appContainerName: str
    status: str
    PIDs: int
    cpu: appCpuMetric
    memory: memoryMetric
    network: networkMetric
    disk: diskMetric
    appContainerMemory: AppMemoryMetric
    def __init__(self, appContainerName: _Optional[str] = ..., status: _Optional[str] = ..., PIDs: _Optional[int] = ..., cpu: _Optional[_Union[appCpuMetric, _Mapping]] = ..., memory: _Optional[_Union[memoryMetric, _Mapping]] = ..., network: _Optional[_Union[networkMetric, _Mapping]] = ..., disk: _Optional[_Union[diskMetric, _Mapping]] = ..., appContainerMemory: _Optional[_Union[AppMemoryMetric, _Mapping]] = ...) -> None: ...

class MetricItem(_message.Message):
    __slots__ = ("key", "type", "boolValue", "uint32Value", "uint64Value", "floatValue", "stringValue")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BOOLVALUE_FIELD_NUMBER: _ClassVar[int]
    UINT32VALUE_FIELD_NUMBER: _ClassVar[int]
    UINT64VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOATVALUE_FIELD_NUMBER: _ClassVar[int]
    STRINGVALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    type: MetricItemType
    boolValue: bool
    uint32Value: int
    uint64Value: int
    floatValue: float
    stringValue: str
    def __init__(self, key: _Optional[str] = ..., type: _Optional[_Union[MetricItemType, str]] = ..., boolValue: _Optional[bool] = ..., uint32Value: _Optional[int] = ..., uint64Value: _Optional[int] = ..., floatValue: _Optional[float] = ..., stringValue: _Optional[str] = ...) -> None: ...

class diskMetric(_message.Message):
    __slots__ = ("disk", "mountPath", "readBytes", "writeBytes", "readCount", "writeCount", "total", "used", "free")
    DISK_FIELD_NUMBER: _ClassVar[int]
    MOUNTPATH_FIELD_NUMBER: _ClassVar[int]
    READBYTES_FIELD_NUMBER: _ClassVar[int]
    WRITEBYTES_FIELD_NUMBER: _ClassVar[int]
    READCOUNT_FIELD_NUMBER: _ClassVar[int]
    WRITECOUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    disk: str
    mountPath: str
    readBytes: int
    writeBytes: int
    readCount: int
    writeCount: int
    total: int
    used: int
    free: int
    def __init__(self, disk: _Optional[str] = ..., mountPath: _Optional[str] = ..., readBytes: _Optional[int] = ..., writeBytes: _Optional[int] = ..., readCount: _Optional[int] = ..., writeCount: _Optional[int] = ..., total: _Optional[int] = ..., used: _Optional[int] = ..., free: _Optional[int] = ...) -> None: ...

class appDiskMetric(_message.Message):
    __slots__ = ("disk", "provisioned", "used", "diskType", "dirty")
    DISK_FIELD_NUMBER: _ClassVar[int]
    PROVISIONED_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    DISKTYPE_FIELD_NUMBER: _ClassVar[int]
    DIRTY_FIELD_NUMBER: _ClassVar[int]
    disk: str
    provisioned: int
    used: int
    diskType: str
    dirty: bool
    def __init__(self, disk: _Optional[str] = ..., provisioned: _Optional[int] = ..., used: _Optional[int] = ..., diskType: _Optional[str] = ..., dirty: _Optional[bool] = ...) -> None: ...

class appMetric(_message.Message):
    __slots__ = ("AppID", "AppName", "cpu", "memory", "network", "disk", "container", "appMemory", "patch_envelope", "appVersion")
    APPID_FIELD_NUMBER: _ClassVar[int]
    APPNAME_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    APPMEMORY_FIELD_NUMBER: _ClassVar[int]
    PATCH_ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    APPVERSION_FIELD_NUMBER: _ClassVar[int]
    AppID: str
    AppName: str
    cpu: appCpuMetric
    memory: memoryMetric
    network: _containers.RepeatedCompositeFieldContainer[networkMetric]
    disk: _containers.RepeatedCompositeFieldContainer[appDiskMetric]
    container: _containers.RepeatedCompositeFieldContainer[appContainerMetric]
    appMemory: AppMemoryMetric
    patch_envelope: _containers.RepeatedCompositeFieldContainer[AppPatchEnvelopeMetric]
    appVersion: str
    def __init__(self, AppID: _Optional[str] = ..., AppName: _Optional[str] = ..., cpu: _Optional[_Union[appCpuMetric, _Mapping]] = ..., memory: _Optional[_Union[memoryMetric, _Mapping]] = ..., network: _Optional[_Iterable[_Union[networkMetric, _Mapping]]] = ..., disk: _Optional[_Iterable[_Union[appDiskMetric, _Mapping]]] = ..., container: _Optional[_Iterable[_Union[appContainerMetric, _Mapping]]] = ..., appMemory: _Optional[_Union[AppMemoryMetric, _Mapping]] = ..., patch_envelope: _Optional[_Iterable[_Union[AppPatchEnvelopeMetric, _Mapping]]] = ..., appVersion: _Optional[str] = ...) -> None: ...

class AppPatchEnvelopeMetric(_message.Message):
    __slots__ = ("uuid", "version", "patch_api_call_count", "download_count")
    UUID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATCH_API_CALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    version: str
    patch_api_call_count: int
    download_count: int
    def __init__(self, uuid: _Optional[str] = ..., version: _Optional[str] = ..., patch_api_call_count: _Optional[int] = ..., download_count: _Optional[int] = ...) -> None: ...

class logMetric(_message.Message):
    __slots__ = ("numDeviceEventsSent", "numDeviceBundlesSent", "numAppEventsSent", "numAppBundlesSent", "num4xxResponses", "lastDeviceBundleSendTime", "lastAppBundleSendTime", "isLogProcessingDeferred", "numTimesDeferred", "lastLogDeferTime", "totalDeviceLogInput", "totalAppLogInput", "numDeviceEventErrors", "numAppEventErrors", "numDeviceBundleProtoBytesSent", "numAppBundleProtoBytesSent", "input_sources")
    class InputSourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NUMDEVICEEVENTSSENT_FIELD_NUMBER: _ClassVar[int]
    NUMDEVICEBUNDLESSENT_FIELD_NUMBER: _ClassVar[int]
    NUMAPPEVENTSSENT_FIELD_NUMBER: _ClassVar[int]
    NUMAPPBUNDLESSENT_FIELD_NUMBER: _ClassVar[int]
    NUM4XXRESPONSES_FIELD_NUMBER: _ClassVar[int]
    LASTDEVICEBUNDLESENDTIME_FIELD_NUMBER: _ClassVar[int]
    LASTAPPBUNDLESENDTIME_FIELD_NUMBER: _ClassVar[int]
    ISLOGPROCESSINGDEFERRED_FIELD_NUMBER: _ClassVar[int]
    NUMTIMESDEFERRED_FIELD_NUMBER: _ClassVar[int]
    LASTLOGDEFERTIME_FIELD_NUMBER: _ClassVar[int]
    TOTALDEVICELOGINPUT_FIELD_NUMBER: _ClassVar[int]
    TOTALAPPLOGINPUT_FIELD_NUMBER: _ClassVar[int]
    NUMDEVICEEVENTERRORS_FIELD_NUMBER: _ClassVar[int]
    NUMAPPEVENTERRORS_FIELD_NUMBER: _ClassVar[int]
    NUMDEVICEBUNDLEPROTOBYTESSENT_FIELD_NUMBER: _ClassVar[int]
    NUMAPPBUNDLEPROTOBYTESSENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    numDeviceEventsSent: int
    numDeviceBundlesSent: int
    numAppEventsSent: int
    numAppBundlesSent: int
    num4xxResponses: int
    lastDeviceBundleSendTime: _timestamp_pb2.Timestamp
    lastAppBundleSendTime: _timestamp_pb2.Timestamp
    isLogProcessingDeferred: bool
    numTimesDeferred: int
    lastLogDeferTime: _timestamp_pb2.Timestamp
    totalDeviceLogInput: int
    totalAppLogInput: int
    numDeviceEventErrors: int
    numAppEventErrors: int
    numDeviceBundleProtoBytesSent: int
    numAppBundleProtoBytesSent: int
    input_sources: _containers.ScalarMap[str, int]
    def __init__(self, numDeviceEventsSent: _Optional[int] = ..., numDeviceBundlesSent: _Optional[int] = ..., numAppEventsSent: _Optional[int] = ..., numAppBundlesSent: _Optional[int] = ..., num4xxResponses: _Optional[int] = ..., lastDeviceBundleSendTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lastAppBundleSendTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., isLogProcessingDeferred: _Optional[bool] = ..., numTimesDeferred: _Optional[int] = ..., lastLogDeferTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., totalDeviceLogInput: _Optional[int] = ..., totalAppLogInput: _Optional[int] = ..., numDeviceEventErrors: _Optional[int] = ..., numAppEventErrors: _Optional[int] = ..., numDeviceBundleProtoBytesSent: _Optional[int] = ..., numAppBundleProtoBytesSent: _Optional[int] = ..., input_sources: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PktStat(_message.Message):
    __slots__ = ("Packets", "Bytes")
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    Packets: int
    Bytes: int
    def __init__(self, Packets: _Optional[int] = ..., Bytes: _Optional[int] = ...) -> None: ...

class ZMetricConn(_message.Message):
    __slots__ = ("InPkts", "OutPkts", "ErrPkts", "CarierErrPkts")
    INPKTS_FIELD_NUMBER: _ClassVar[int]
    OUTPKTS_FIELD_NUMBER: _ClassVar[int]
    ERRPKTS_FIELD_NUMBER: _ClassVar[int]
    CARIERERRPKTS_FIELD_NUMBER: _ClassVar[int]
    InPkts: PktStat
    OutPkts: PktStat
    ErrPkts: PktStat
    CarierErrPkts: PktStat
    def __init__(self, InPkts: _Optional[_Union[PktStat, _Mapping]] = ..., OutPkts: _Optional[_Union[PktStat, _Mapping]] = ..., ErrPkts: _Optional[_Union[PktStat, _Mapping]] = ..., CarierErrPkts: _Optional[_Union[PktStat, _Mapping]] = ...) -> None: ...

class ZMetricVpn(_message.Message):
    __slots__ = ("ConnStat", "IkeStat", "NatTStat", "EspStat")
    CONNSTAT_FIELD_NUMBER: _ClassVar[int]
    IKESTAT_FIELD_NUMBER: _ClassVar[int]
    NATTSTAT_FIELD_NUMBER: _ClassVar[int]
    ESPSTAT_FIELD_NUMBER: _ClassVar[int]
    ConnStat: ZMetricConn
    IkeStat: ZMetricConn
    NatTStat: ZMetricConn
    EspStat: ZMetricConn
    def __init__(self, ConnStat: _Optional[_Union[ZMetricConn, _Mapping]] = ..., IkeStat: _Optional[_Union[ZMetricConn, _Mapping]] = ..., NatTStat: _Optional[_Union[ZMetricConn, _Mapping]] = ..., EspStat: _Optional[_Union[ZMetricConn, _Mapping]] = ...) -> None: ...

class ZMetricNone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ZMetricFlowLink(_message.Message):
    __slots__ = ("subNet", "spiId")
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    SPIID_FIELD_NUMBER: _ClassVar[int]
    subNet: str
    spiId: str
    def __init__(self, subNet: _Optional[str] = ..., spiId: _Optional[str] = ...) -> None: ...

class ZMetricFlowEndPoint(_message.Message):
    __slots__ = ("ipAddr", "link", "stats")
    IPADDR_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ipAddr: str
    link: _containers.RepeatedCompositeFieldContainer[ZMetricFlowLink]
    stats: PktStat
    def __init__(self, ipAddr: _Optional[str] = ..., link: _Optional[_Iterable[_Union[ZMetricFlowLink, _Mapping]]] = ..., stats: _Optional[_Union[PktStat, _Mapping]] = ...) -> None: ...

class ZMetricFlow(_message.Message):
    __slots__ = ("id", "name", "type", "estTime", "lEndPoint", "rEndPoint")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ESTTIME_FIELD_NUMBER: _ClassVar[int]
    LENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RENDPOINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: int
    estTime: int
    lEndPoint: ZMetricFlowEndPoint
    rEndPoint: _containers.RepeatedCompositeFieldContainer[ZMetricFlowEndPoint]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[int] = ..., estTime: _Optional[int] = ..., lEndPoint: _Optional[_Union[ZMetricFlowEndPoint, _Mapping]] = ..., rEndPoint: _Optional[_Iterable[_Union[ZMetricFlowEndPoint, _Mapping]]] = ...) -> None: ...

class NetworkStats(_message.Message):
    __slots__ = ("totalPackets", "errors", "drops", "totalBytes")
    TOTALPACKETS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    TOTALBYTES_FIELD_NUMBER: _ClassVar[int]
    totalPackets: int
    errors: int
    drops: int
    totalBytes: int
    def __init__(self, totalPackets: _Optional[int] = ..., errors: _Optional[int] = ..., drops: _Optional[int] = ..., totalBytes: _Optional[int] = ...) -> None: ...

class ZMetricNetworkStats(_message.Message):
    __slots__ = ("rx", "tx")
    RX_FIELD_NUMBER: _ClassVar[int]
    TX_FIELD_NUMBER: _ClassVar[int]
    rx: NetworkStats
    tx: NetworkStats
    def __init__(self, rx: _Optional[_Union[NetworkStats, _Mapping]] = ..., tx: _Optional[_Union[NetworkStats, _Mapping]] = ...) -> None: ...

class ZProbeNIMetrics(_message.Message):
    __slots__ = ("currentIntf", "remoteEndpoint", "pingIntv", "remotePingIntv", "uplinkCnt", "intfMetric", "dst_network", "current_port")
    class ZProbeIntfMetric(_message.Message):
        __slots__ = ("intfName", "gatewayNexhtop", "gatewayUP", "remoteHostUP", "nexthopUpCount", "nexthopDownCount", "remoteUpCount", "remoteDownCount", "remoteProbeLatency")
        INTFNAME_FIELD_NUMBER: _ClassVar[int]
        GATEWAYNEXHTOP_FIELD_NUMBER: _ClassVar[int]
        GATEWAYUP_FIELD_NUMBER: _ClassVar[int]
        REMOTEHOSTUP_FIELD_NUMBER: _ClassVar[int]
        NEXTHOPUPCOUNT_FIELD_NUMBER: _ClassVar[int]
        NEXTHOPDOWNCOUNT_FIELD_NUMBER: _ClassVar[int]
        REMOTEUPCOUNT_FIELD_NUMBER: _ClassVar[int]
        REMOTEDOWNCOUNT_FIELD_NUMBER: _ClassVar[int]
        REMOTEPROBELATENCY_FIELD_NUMBER: _ClassVar[int]
        intfName: str
        gatewayNexhtop: str
        gatewayUP: bool
        remoteHostUP: bool
        nexthopUpCount: int
        nexthopDownCount: int
        remoteUpCount: int
        remoteDownCount: int
        remoteProbeLatency: int
        def __init__(self, intfName: _Optional[str] = ..., gatewayNexhtop: _Optional[str] = ..., gatewayUP: _Optional[bool] = ..., remoteHostUP: _Optional[bool] = ..., nexthopUpCount: _Optional[int] = ..., nexthopDownCount: _Optional[int] = ..., remoteUpCount: _Optional[int] = ..., remoteDownCount: _Optional[int] = ..., remoteProbeLatency: _Optional[int] = ...) -> None: ...
    CURRENTINTF_FIELD_NUMBER: _ClassVar[int]
    REMOTEENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PINGINTV_FIELD_NUMBER: _ClassVar[int]
    REMOTEPINGINTV_FIELD_NUMBER: _ClassVar[int]
    UPLINKCNT_FIELD_NUMBER: _ClassVar[int]
    INTFMETRIC_FIELD_NUMBER: _ClassVar[int]
    DST_NETWORK_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PORT_FIELD_NUMBER: _ClassVar[int]
    currentIntf: str
    remoteEndpoint: str
    pingIntv: int
    remotePingIntv: int
    uplinkCnt: int
    intfMetric: _containers.RepeatedCompositeFieldContainer[ZProbeNIMetrics.ZProbeIntfMetric]
    dst_network: str
    current_port: str
    def __init__(self, currentIntf: _Optional[str] = ..., remoteEndpoint: _Optional[str] = ..., pingIntv: _Optional[int] = ..., remotePingIntv: _Optional[int] = ..., uplinkCnt: _Optional[int] = ..., intfMetric: _Optional[_Iterable[_Union[ZProbeNIMetrics.ZProbeIntfMetric, _Mapping]]] = ..., dst_network: _Optional[str] = ..., current_port: _Optional[str] = ...) -> None: ...

class ZMetricNetworkInstance(_message.Message):
    __slots__ = ("networkID", "networkVersion", "instType", "displayname", "activated", "network", "probeMetric", "probe_metrics", "vpnm", "nonem", "flowStats", "networkStats", "vlan_info")
    NETWORKID_FIELD_NUMBER: _ClassVar[int]
    NETWORKVERSION_FIELD_NUMBER: _ClassVar[int]
    INSTTYPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PROBEMETRIC_FIELD_NUMBER: _ClassVar[int]
    PROBE_METRICS_FIELD_NUMBER: _ClassVar[int]
    VPNM_FIELD_NUMBER: _ClassVar[int]
    NONEM_FIELD_NUMBER: _ClassVar[int]
    FLOWSTATS_FIELD_NUMBER: _ClassVar[int]
    NETWORKSTATS_FIELD_NUMBER: _ClassVar[int]
    VLAN_INFO_FIELD_NUMBER: _ClassVar[int]
    networkID: str
    networkVersion: str
    instType: int
    displayname: str
    activated: bool
    network: _containers.RepeatedCompositeFieldContainer[networkMetric]
    probeMetric: ZProbeNIMetrics
    probe_metrics: _containers.RepeatedCompositeFieldContainer[ZProbeNIMetrics]
    vpnm: ZMetricVpn
    nonem: ZMetricNone
    flowStats: _containers.RepeatedCompositeFieldContainer[ZMetricFlow]
    networkStats: ZMetricNetworkStats
    vlan_info: vlanInfo
    def __init__(self, networkID: _Optional[str] = ..., networkVersion: _Optional[str] = ..., instType: _Optional[int] = ..., displayname: _Optional[str] = ..., activated: _Optional[bool] = ..., network: _Optional[_Iterable[_Union[networkMetric, _Mapping]]] = ..., probeMetric: _Optional[_Union[ZProbeNIMetrics, _Mapping]] = ..., probe_metrics: _Optional[_Iterable[_Union[ZProbeNIMetrics, _Mapping]]] = ..., vpnm: _Optional[_Union[ZMetricVpn, _Mapping]] = ..., nonem: _Optional[_Union[ZMetricNone, _Mapping]] = ..., flowStats: _Optional[_Iterable[_Union[ZMetricFlow, _Mapping]]] = ..., networkStats: _Optional[_Union[ZMetricNetworkStats, _Mapping]] = ..., vlan_info: _Optional[_Union[vlanInfo, _Mapping]] = ...) -> None: ...

class ZMetricVolume(_message.Message):
    __slots__ = ("uuid", "displayName", "readBytes", "writeBytes", "readCount", "writeCount", "totalBytes", "usedBytes", "freeBytes")
    UUID_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    READBYTES_FIELD_NUMBER: _ClassVar[int]
    WRITEBYTES_FIELD_NUMBER: _ClassVar[int]
    READCOUNT_FIELD_NUMBER: _ClassVar[int]
    WRITECOUNT_FIELD_NUMBER: _ClassVar[int]
    TOTALBYTES_FIELD_NUMBER: _ClassVar[int]
    USEDBYTES_FIELD_NUMBER: _ClassVar[int]
    FREEBYTES_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    displayName: str
    readBytes: int
    writeBytes: int
    readCount: int
    writeCount: int
    totalBytes: int
    usedBytes: int
    freeBytes: int
    def __init__(self, uuid: _Optional[str] = ..., displayName: _Optional[str] = ..., readBytes: _Optional[int] = ..., writeBytes: _Optional[int] = ..., readCount: _Optional[int] = ..., writeCount: _Optional[int] = ..., totalBytes: _Optional[int] = ..., usedBytes: _Optional[int] = ..., freeBytes: _Optional[int] = ...) -> None: ...

class ZMetricProcess(_message.Message):
    __slots__ = ("pid", "name", "user_process", "watched", "num_fds", "num_threads", "user_time", "system_time", "cpu_percent", "create_time", "vm_bytes", "rss_bytes", "memory_percent", "stack")
    PID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_PROCESS_FIELD_NUMBER: _ClassVar[int]
    WATCHED_FIELD_NUMBER: _ClassVar[int]
    NUM_FDS_FIELD_NUMBER: _ClassVar[int]
    NUM_THREADS_FIELD_NUMBER: _ClassVar[int]
    USER_TIME_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_TIME_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VM_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    pid: int
    name: str
    user_process: bool
    watched: bool
    num_fds: int
    num_threads: int
    user_time: float
    system_time: float
    cpu_percent: float
    create_time: _timestamp_pb2.Timestamp
    vm_bytes: int
    rss_bytes: int
    memory_percent: float
    stack: str
    def __init__(self, pid: _Optional[int] = ..., name: _Optional[str] = ..., user_process: _Optional[bool] = ..., watched: _Optional[bool] = ..., num_fds: _Optional[int] = ..., num_threads: _Optional[int] = ..., user_time: _Optional[float] = ..., system_time: _Optional[float] = ..., cpu_percent: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., vm_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., memory_percent: _Optional[float] = ..., stack: _Optional[str] = ...) -> None: ...

class ZMetricMsg(_message.Message):
    __slots__ = ("devID", "atTimeStamp", "dm", "am", "nm", "vm", "pr", "cm", "nest_metric")
    DEVID_FIELD_NUMBER: _ClassVar[int]
    ATTIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DM_FIELD_NUMBER: _ClassVar[int]
    AM_FIELD_NUMBER: _ClassVar[int]
    NM_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    PR_FIELD_NUMBER: _ClassVar[int]
    CM_FIELD_NUMBER: _ClassVar[int]
    NEST_METRIC_FIELD_NUMBER: _ClassVar[int]
    devID: str
    atTimeStamp: _timestamp_pb2.Timestamp
    dm: deviceMetric
    am: _containers.RepeatedCompositeFieldContainer[appMetric]
    nm: _containers.RepeatedCompositeFieldContainer[ZMetricNetworkInstance]
    vm: _containers.RepeatedCompositeFieldContainer[ZMetricVolume]
    pr: _containers.RepeatedCompositeFieldContainer[ZMetricProcess]
    cm: KubeClusterMetrics
    nest_metric: _containers.RepeatedCompositeFieldContainer[_nestedappruntimemetrics_pb2.NestedAppRuntimeDiskMetric]
    def __init__(self, devID: _Optional[str] = ..., atTimeStamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dm: _Optional[_Union[deviceMetric, _Mapping]] = ..., am: _Optional[_Iterable[_Union[appMetric, _Mapping]]] = ..., nm: _Optional[_Iterable[_Union[ZMetricNetworkInstance, _Mapping]]] = ..., vm: _Optional[_Iterable[_Union[ZMetricVolume, _Mapping]]] = ..., pr: _Optional[_Iterable[_Union[ZMetricProcess, _Mapping]]] = ..., cm: _Optional[_Union[KubeClusterMetrics, _Mapping]] = ..., nest_metric: _Optional[_Iterable[_Union[_nestedappruntimemetrics_pb2.NestedAppRuntimeDiskMetric, _Mapping]]] = ...) -> None: ...

class newlogMetric(_message.Message):
    __slots__ = ("failedToSend", "failSentStartTime", "totalBytesUpload", "num4xxResponses", "currentUploadIntv", "logfileTimeout", "maxGzipFileSize", "avgGzipFileSize", "mimUploadMsec", "maxUploadMsec", "avgUploadMsec", "lastUploadMsec", "currentCPULoadPct", "averageCPULoadPct", "currentProcessDelay", "averageProcessDelay", "deviceMetrics", "appMetrics", "top10_input_sources", "gzipFilesRemoved", "tooManyRequest", "skipUploadAppFile", "total_size_logs", "oldest_saved_device_log")
    class Top10InputSourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FAILEDTOSEND_FIELD_NUMBER: _ClassVar[int]
    FAILSENTSTARTTIME_FIELD_NUMBER: _ClassVar[int]
    TOTALBYTESUPLOAD_FIELD_NUMBER: _ClassVar[int]
    NUM4XXRESPONSES_FIELD_NUMBER: _ClassVar[int]
    CURRENTUPLOADINTV_FIELD_NUMBER: _ClassVar[int]
    LOGFILETIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAXGZIPFILESIZE_FIELD_NUMBER: _ClassVar[int]
    AVGGZIPFILESIZE_FIELD_NUMBER: _ClassVar[int]
    MIMUPLOADMSEC_FIELD_NUMBER: _ClassVar[int]
    MAXUPLOADMSEC_FIELD_NUMBER: _ClassVar[int]
    AVGUPLOADMSEC_FIELD_NUMBER: _ClassVar[int]
    LASTUPLOADMSEC_FIELD_NUMBER: _ClassVar[int]
    CURRENTCPULOADPCT_FIELD_NUMBER: _ClassVar[int]
    AVERAGECPULOADPCT_FIELD_NUMBER: _ClassVar[int]
    CURRENTPROCESSDELAY_FIELD_NUMBER: _ClassVar[int]
    AVERAGEPROCESSDELAY_FIELD_NUMBER: _ClassVar[int]
    DEVICEMETRICS_FIELD_NUMBER: _ClassVar[int]
    APPMETRICS_FIELD_NUMBER: _ClassVar[int]
    TOP10_INPUT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    GZIPFILESREMOVED_FIELD_NUMBER: _ClassVar[int]
    TOOMANYREQUEST_FIELD_NUMBER: _ClassVar[int]
    SKIPUPLOADAPPFILE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_LOGS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_SAVED_DEVICE_LOG_FIELD_NUMBER: _ClassVar[int]
    failedToSend: bool
    failSentStartTime: _timestamp_pb2.Timestamp
    totalBytesUpload: int
    num4xxResponses: int
    currentUploadIntv: int
    logfileTimeout: int
    maxGzipFileSize: int
    avgGzipFileSize: int
    mimUploadMsec: int
    maxUploadMsec: int
    avgUploadMsec: int
    lastUploadMsec: int
    currentCPULoadPct: float
    averageCPULoadPct: float
    currentProcessDelay: int
    averageProcessDelay: int
    deviceMetrics: logfileMetrics
    appMetrics: logfileMetrics
    top10_input_sources: _containers.ScalarMap[str, int]
    gzipFilesRemoved: int
    tooManyRequest: int
    skipUploadAppFile: int
    total_size_logs: int
    oldest_saved_device_log: _timestamp_pb2.Timestamp
    def __init__(self, failedToSend: _Optional[bool] = ..., failSentStartTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., totalBytesUpload: _Optional[int] = ..., num4xxResponses: _Optional[int] = ..., currentUploadIntv: _Optional[int] = ..., logfileTimeout: _Optional[int] = ..., maxGzipFileSize: _Optional[int] = ..., avgGzipFileSize: _Optional[int] = ..., mimUploadMsec: _Optional[int] = ..., maxUploadMsec: _Optional[int] = ..., avgUploadMsec: _Optional[int] = ..., lastUploadMsec: _Optional[int] = ..., currentCPULoadPct: _Optional[float] = ..., averageCPULoadPct: _Optional[float] = ..., currentProcessDelay: _Optional[int] = ..., averageProcessDelay: _Optional[int] = ..., deviceMetrics: _Optional[_Union[logfileMetrics, _Mapping]] = ..., appMetrics: _Optional[_Union[logfileMetrics, _Mapping]] = ..., top10_input_sources: _Optional[_Mapping[str, int]] = ..., gzipFilesRemoved: _Optional[int] = ..., tooManyRequest: _Optional[int] = ..., skipUploadAppFile: _Optional[int] = ..., total_size_logs: _Optional[int] = ..., oldest_saved_device_log: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class logfileMetrics(_message.Message):
    __slots__ = ("numGzipFileSent", "numGzipBytesWrite", "numBytesWrite", "numGzipFileInDir", "numInputEvent", "numGzipFileRetry", "numGzipFileKeptLocal", "recentGzipFileTime", "lastGzipFileSendTime")
    NUMGZIPFILESENT_FIELD_NUMBER: _ClassVar[int]
    NUMGZIPBYTESWRITE_FIELD_NUMBER: _ClassVar[int]
    NUMBYTESWRITE_FIELD_NUMBER: _ClassVar[int]
    NUMGZIPFILEINDIR_FIELD_NUMBER: _ClassVar[int]
    NUMINPUTEVENT_FIELD_NUMBER: _ClassVar[int]
    NUMGZIPFILERETRY_FIELD_NUMBER: _ClassVar[int]
    NUMGZIPFILEKEPTLOCAL_FIELD_NUMBER: _ClassVar[int]
    RECENTGZIPFILETIME_FIELD_NUMBER: _ClassVar[int]
    LASTGZIPFILESENDTIME_FIELD_NUMBER: _ClassVar[int]
    numGzipFileSent: int
    numGzipBytesWrite: int
    numBytesWrite: int
    numGzipFileInDir: int
    numInputEvent: int
    numGzipFileRetry: int
    numGzipFileKeptLocal: int
    recentGzipFileTime: _timestamp_pb2.Timestamp
    lastGzipFileSendTime: _timestamp_pb2.Timestamp
    def __init__(self, numGzipFileSent: _Optional[int] = ..., numGzipBytesWrite: _Optional[int] = ..., numBytesWrite: _Optional[int] = ..., numGzipFileInDir: _Optional[int] = ..., numInputEvent: _Optional[int] = ..., numGzipFileRetry: _Optional[int] = ..., numGzipFileKeptLocal: _Optional[int] = ..., recentGzipFileTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lastGzipFileSendTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class zedboxStats(_message.Message):
    __slots__ = ("numGoRoutines",)
    NUMGOROUTINES_FIELD_NUMBER: _ClassVar[int]
    numGoRoutines: int
    def __init__(self, numGoRoutines: _Optional[int] = ...) -> None: ...

class vlanInfo(_message.Message):
    __slots__ = ("num_trunk_ports", "vlan_counts")
    class VlanCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    NUM_TRUNK_PORTS_FIELD_NUMBER: _ClassVar[int]
    VLAN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    num_trunk_ports: int
    vlan_counts: _containers.ScalarMap[int, int]
    def __init__(self, num_trunk_ports: _Optional[int] = ..., vlan_counts: _Optional[_Mapping[int, int]] = ...) -> None: ...

class FlowlogMetric(_message.Message):
    __slots__ = ("messages", "flows", "dns_requests")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    DNS_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    messages: FlowlogCounters
    flows: FlowlogCounters
    dns_requests: FlowlogCounters
    def __init__(self, messages: _Optional[_Union[FlowlogCounters, _Mapping]] = ..., flows: _Optional[_Union[FlowlogCounters, _Mapping]] = ..., dns_requests: _Optional[_Union[FlowlogCounters, _Mapping]] = ...) -> None: ...

class FlowlogCounters(_message.Message):
    __slots__ = ("success", "drops", "failed_attempts")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    success: int
    drops: int
    failed_attempts: int
    def __init__(self, success: _Optional[int] = ..., drops: _Optional[int] = ..., failed_attempts: _Optional[int] = ...) -> None: ...

class KubeNodeMetrics(_message.Message):
    __slots__ = ("name", "cpu_cores", "cpu_usage", "memory_usage", "memory_usage_percentage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_cores: int
    cpu_usage: float
    memory_usage: int
    memory_usage_percentage: float
    def __init__(self, name: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., cpu_usage: _Optional[float] = ..., memory_usage: _Optional[int] = ..., memory_usage_percentage: _Optional[float] = ...) -> None: ...

class KubeAppMetrics(_message.Message):
    __slots__ = ("name", "cpu_cores", "memory_usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cpu_cores: int
    memory_usage: int
    def __init__(self, name: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., memory_usage: _Optional[int] = ...) -> None: ...

class KubeClusterMetrics(_message.Message):
    __slots__ = ("cluster_id", "nodes", "eve_pod_apps", "eve_vmi_apps")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EVE_POD_APPS_FIELD_NUMBER: _ClassVar[int]
    EVE_VMI_APPS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    nodes: _containers.RepeatedCompositeFieldContainer[KubeNodeMetrics]
    eve_pod_apps: _containers.RepeatedCompositeFieldContainer[KubeAppMetrics]
    eve_vmi_apps: _containers.RepeatedCompositeFieldContainer[KubeAppMetrics]
    def __init__(self, cluster_id: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[KubeNodeMetrics, _Mapping]]] = ..., eve_pod_apps: _Optional[_Iterable[_Union[KubeAppMetrics, _Mapping]]] = ..., eve_vmi_apps: _Optional[_Iterable[_Union[KubeAppMetrics, _Mapping]]] = ...) -> None: ...

class PNACMetrics(_message.Message):
    __slots__ = ("logicallabel", "eapol_frames_rx", "eapol_frames_tx", "eapol_start_frames_tx", "eapol_logoff_frames_tx", "eapol_resp_frames_tx", "eapol_req_id_frames_rx", "eapol_req_frames_rx", "invalid_eapol_frames_rx", "eap_length_error_frames_rx")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    EAPOL_FRAMES_RX_FIELD_NUMBER: _ClassVar[int]
    EAPOL_FRAMES_TX_FIELD_NUMBER: _ClassVar[int]
    EAPOL_START_FRAMES_TX_FIELD_NUMBER: _ClassVar[int]
    EAPOL_LOGOFF_FRAMES_TX_FIELD_NUMBER: _ClassVar[int]
    EAPOL_RESP_FRAMES_TX_FIELD_NUMBER: _ClassVar[int]
    EAPOL_REQ_ID_FRAMES_RX_FIELD_NUMBER: _ClassVar[int]
    EAPOL_REQ_FRAMES_RX_FIELD_NUMBER: _ClassVar[int]
    INVALID_EAPOL_FRAMES_RX_FIELD_NUMBER: _ClassVar[int]
    EAP_LENGTH_ERROR_FRAMES_RX_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    eapol_frames_rx: int
    eapol_frames_tx: int
    eapol_start_frames_tx: int
    eapol_logoff_frames_tx: int
    eapol_resp_frames_tx: int
    eapol_req_id_frames_rx: int
    eapol_req_frames_rx: int
    invalid_eapol_frames_rx: int
    eap_length_error_frames_rx: int
    def __init__(self, logicallabel: _Optional[str] = ..., eapol_frames_rx: _Optional[int] = ..., eapol_frames_tx: _Optional[int] = ..., eapol_start_frames_tx: _Optional[int] = ..., eapol_logoff_frames_tx: _Optional[int] = ..., eapol_resp_frames_tx: _Optional[int] = ..., eapol_req_id_frames_rx: _Optional[int] = ..., eapol_req_frames_rx: _Optional[int] = ..., invalid_eapol_frames_rx: _Optional[int] = ..., eap_length_error_frames_rx: _Optional[int] = ...) -> None: ...

class BondMetrics(_message.Message):
    __slots__ = ("logicallabel", "members")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    members: _containers.RepeatedCompositeFieldContainer[BondMemberMetrics]
    def __init__(self, logicallabel: _Optional[str] = ..., members: _Optional[_Iterable[_Union[BondMemberMetrics, _Mapping]]] = ...) -> None: ...

class BondMemberMetrics(_message.Message):
    __slots__ = ("logicallabel", "link_failure_count", "lacp")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    LINK_FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LACP_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    link_failure_count: int
    lacp: BondMemberLACPMetrics
    def __init__(self, logicallabel: _Optional[str] = ..., link_failure_count: _Optional[int] = ..., lacp: _Optional[_Union[BondMemberLACPMetrics, _Mapping]] = ...) -> None: ...

class BondMemberLACPMetrics(_message.Message):
    __slots__ = ("actor_churned_count", "partner_churned_count")
    ACTOR_CHURNED_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARTNER_CHURNED_COUNT_FIELD_NUMBER: _ClassVar[int]
    actor_churned_count: int
    partner_churned_count: int
    def __init__(self, actor_churned_count: _Optional[int] = ..., partner_churned_count: _Optional[int] = ...) -> None: ...
