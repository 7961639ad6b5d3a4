from agent.wire.pb.config import devcommon_pb2 as _devcommon_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from agent.wire.pb.evecommon import evecommon_pb2 as _evecommon_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DsType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DsUnknown: _ClassVar[DsType]
    DsHttp: _ClassVar[DsType]
    DsHttps: _ClassVar[DsType]
    DsS3: _ClassVar[DsType]
    DsSFTP: _ClassVar[DsType]
    DsContainerRegistry: _ClassVar[DsType]
    DsAzureBlob: _ClassVar[DsType]
    DsGoogleStorage: _ClassVar[DsType]

class Format(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FmtUnknown: _ClassVar[Format]
    RAW: _ClassVar[Format]
    QCOW: _ClassVar[Format]
    QCOW2: _ClassVar[Format]
    VHD: _ClassVar[Format]
    VMDK: _ClassVar[Format]
    OVA: _ClassVar[Format]
    VHDX: _ClassVar[Format]
    CONTAINER: _ClassVar[Format]
    ISO: _ClassVar[Format]
    PVC: _ClassVar[Format]

class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TgtUnknown: _ClassVar[Target]
    Disk: _ClassVar[Target]
    Kernel: _ClassVar[Target]
    Initrd: _ClassVar[Target]
    RamDisk: _ClassVar[Target]
    AppCustom: _ClassVar[Target]

class DriveType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Unclassified: _ClassVar[DriveType]
    CDROM: _ClassVar[DriveType]
    HDD: _ClassVar[DriveType]
    NET: _ClassVar[DriveType]
    HDD_EMPTY: _ClassVar[DriveType]

class VolumeAccessProtocols(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VAP_NONE: _ClassVar[VolumeAccessProtocols]
    VAP_9P: _ClassVar[VolumeAccessProtocols]

class VolumeContentOriginType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VCOT_UNKNOWN: _ClassVar[VolumeContentOriginType]
    VCOT_BLANK: _ClassVar[VolumeContentOriginType]
    VCOT_DOWNLOAD: _ClassVar[VolumeContentOriginType]

class DiskConfigType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISK_CONFIG_TYPE_UNSPECIFIED: _ClassVar[DiskConfigType]
    DISK_CONFIG_TYPE_EVEOS: _ClassVar[DiskConfigType]
    DISK_CONFIG_TYPE_PERSIST: _ClassVar[DiskConfigType]
    DISK_CONFIG_TYPE_ZFS_ONLINE: _ClassVar[DiskConfigType]
    DISK_CONFIG_TYPE_ZFS_OFFLINE: _ClassVar[DiskConfigType]
    DISK_CONFIG_TYPE_APPDIRECT: _ClassVar[DiskConfigType]
    DISK_CONFIG_TYPE_UNUSED: _ClassVar[DiskConfigType]

class DisksArrayType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISKS_ARRAY_TYPE_UNSPECIFIED: _ClassVar[DisksArrayType]
    DISKS_ARRAY_TYPE_RAID0: _ClassVar[DisksArrayType]
    DISKS_ARRAY_TYPE_RAID1: _ClassVar[DisksArrayType]
    DISKS_ARRAY_TYPE_RAID5: _ClassVar[DisksArrayType]
    DISKS_ARRAY_TYPE_RAID6: _ClassVar[DisksArrayType]
DsUnknown: DsType
DsHttp: DsType
DsHttps: DsType
DsS3: DsType
DsSFTP: DsType
DsContainerRegistry: DsType
DsAzureBlob: DsType
DsGoogleStorage: DsType
FmtUnknown: Format
RAW: Format
QCOW: Format
QCOW2: Format
VHD: Format
VMDK: Format
OVA: Format
VHDX: Format
CONTAINER: Format
ISO: Format
PVC: Format
TgtUnknown: Target
Disk: Target
Kernel: Target
Initrd: Target
RamDisk: Target
AppCustom: Target
Unclassified: DriveType
CDROM: DriveType
HDD: DriveType
NET: DriveType
HDD_EMPTY: DriveType
VAP_NONE: VolumeAccessProtocols
VAP_9P: VolumeAccessProtocols
VCOT_UNKNOWN: VolumeContentOriginType
VCOT_BLANK: VolumeContentOriginType
VCOT_DOWNLOAD: VolumeContentOriginType
DISK_CONFIG_TYPE_UNSPECIFIED: DiskConfigType
DISK_CONFIG_TYPE_EVEOS: DiskConfigType
DISK_CONFIG_TYPE_PERSIST: DiskConfigType
DISK_CONFIG_TYPE_ZFS_ONLINE: DiskConfigType
DISK_CONFIG_TYPE_ZFS_OFFLINE: DiskConfigType
DISK_CONFIG_TYPE_APPDIRECT: DiskConfigType
DISK_CONFIG_TYPE_UNUSED: DiskConfigType
DISKS_ARRAY_TYPE_UNSPECIFIED: DisksArrayType
DISKS_ARRAY_TYPE_RAID0: DisksArrayType
DISKS_ARRAY_TYPE_RAID1: DisksArrayType
DISKS_ARRAY_TYPE_RAID5: DisksArrayType
DISKS_ARRAY_TYPE_RAID6: DisksArrayType

class SignatureInfo(_message.Message):
    __slots__ = ("intercertsurl", "signercerturl", "signature")
    INTERCERTSURL_FIELD_NUMBER: _ClassVar[int]
    SIGNERCERTURL_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    intercertsurl: str
    signercerturl: str
    signature: bytes
    def __init__(self, intercertsurl: _Optional[str] = ..., signercerturl: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DatastoreConfig(_message.Message):
    __slots__ = ("dType", "fqdn", "apiKey", "password", "dpath", "region", "cipherData", "dsCertPEM", "id")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    FQDN_FIELD_NUMBER: _ClassVar[int]
    APIKEY_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    DPATH_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CIPHERDATA_FIELD_NUMBER: _ClassVar[int]
    DSCERTPEM_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    dType: DsType
    fqdn: str
    apiKey: str
    password: str
    dpath: str
    region: str
    cipherData: _acipherinfo_pb2.CipherBlock
    dsCertPEM: _containers.RepeatedScalarFieldContainer[bytes]
    id: str
    def __init__(self, dType: _Optional[_Union[DsType, str]] = ..., fqdn: _Optional[str] = ..., apiKey: _Optional[str] = ..., password: _Optional[str] = ..., dpath: _Optional[str] = ..., region: _Optional[str] = ..., cipherData: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ..., dsCertPEM: _Optional[_Iterable[bytes]] = ..., id: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("uuidandversion", "name", "sha256", "iformat", "siginfo", "dsId", "sizeBytes")
    UUIDANDVERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    IFORMAT_FIELD_NUMBER: _ClassVar[int]
    SIGINFO_FIELD_NUMBER: _ClassVar[int]
    DSID_FIELD_NUMBER: _ClassVar[int]
    SIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    uuidandversion: _devcommon_pb2.UUIDandVersion
    name: str
    sha256: str
    iformat: Format
    siginfo: SignatureInfo
    dsId: str
    sizeBytes: int
    def __init__(self, uuidandversion: _Optional[_Union[_devcommon_pb2.UUIDandVersion, _Mapping]] = ..., name: _Optional[str] = ..., sha256: _Optional[str] = ..., iformat: _Optional[_Union[Format, str]] = ..., siginfo: _Optional[_Union[SignatureInfo, _Mapping]] = ..., dsId: _Optional[str] = ..., sizeBytes: _Optional[int] = ...) -> None: ...

class Drive(_message.Message):
    __slots__ = ("image", "readonly", "preserve", "drvtype", "target", "maxsizebytes")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    READONLY_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_FIELD_NUMBER: _ClassVar[int]
    DRVTYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MAXSIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    image: Image
    readonly: bool
    preserve: bool
    drvtype: DriveType
    target: Target
    maxsizebytes: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., readonly: _Optional[bool] = ..., preserve: _Optional[bool] = ..., drvtype: _Optional[_Union[DriveType, str]] = ..., target: _Optional[_Union[Target, str]] = ..., maxsizebytes: _Optional[int] = ...) -> None: ...

class ContentTree(_message.Message):
    __slots__ = ("uuid", "dsId", "URL", "iformat", "sha256", "maxSizeBytes", "siginfo", "displayName", "generation_count", "custom_meta_data", "ds_ids_list", "designated_node_id")
    UUID_FIELD_NUMBER: _ClassVar[int]
    DSID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    IFORMAT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MAXSIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    SIGINFO_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    GENERATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_META_DATA_FIELD_NUMBER: _ClassVar[int]
    DS_IDS_LIST_FIELD_NUMBER: _ClassVar[int]
    DESIGNATED_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    dsId: str
    URL: str
    iformat: Format
    sha256: str
    maxSizeBytes: int
    siginfo: SignatureInfo
    displayName: str
    generation_count: int
    custom_meta_data: str
    ds_ids_list: _containers.RepeatedScalarFieldContainer[str]
    designated_node_id: str
    def __init__(self, uuid: _Optional[str] = ..., dsId: _Optional[str] = ..., URL: _Optional[str] = ..., iformat: _Optional[_Union[Format, str]] = ..., sha256: _Optional[str] = ..., maxSizeBytes: _Optional[int] = ..., siginfo: _Optional[_Union[SignatureInfo, _Mapping]] = ..., displayName: _Optional[str] = ..., generation_count: _Optional[int] = ..., custom_meta_data: _Optional[str] = ..., ds_ids_list: _Optional[_Iterable[str]] = ..., designated_node_id: _Optional[str] = ...) -> None: ...

class VolumeContentOrigin(_message.Message):
    __slots__ = ("type", "downloadContentTreeID")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADCONTENTTREEID_FIELD_NUMBER: _ClassVar[int]
    type: VolumeContentOriginType
    downloadContentTreeID: str
    def __init__(self, type: _Optional[_Union[VolumeContentOriginType, str]] = ..., downloadContentTreeID: _Optional[str] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("uuid", "origin", "protocols", "generationCount", "maxsizebytes", "readonly", "displayName", "clear_text", "target", "designated_node_id")
    UUID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    GENERATIONCOUNT_FIELD_NUMBER: _ClassVar[int]
    MAXSIZEBYTES_FIELD_NUMBER: _ClassVar[int]
    READONLY_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    CLEAR_TEXT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DESIGNATED_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    origin: VolumeContentOrigin
    protocols: _containers.RepeatedScalarFieldContainer[VolumeAccessProtocols]
    generationCount: int
    maxsizebytes: int
    readonly: bool
    displayName: str
    clear_text: bool
    target: Target
    designated_node_id: str
    def __init__(self, uuid: _Optional[str] = ..., origin: _Optional[_Union[VolumeContentOrigin, _Mapping]] = ..., protocols: _Optional[_Iterable[_Union[VolumeAccessProtocols, str]]] = ..., generationCount: _Optional[int] = ..., maxsizebytes: _Optional[int] = ..., readonly: _Optional[bool] = ..., displayName: _Optional[str] = ..., clear_text: _Optional[bool] = ..., target: _Optional[_Union[Target, str]] = ..., designated_node_id: _Optional[str] = ...) -> None: ...

class DiskConfig(_message.Message):
    __slots__ = ("disk", "old_disk", "disk_config")
    DISK_FIELD_NUMBER: _ClassVar[int]
    OLD_DISK_FIELD_NUMBER: _ClassVar[int]
    DISK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    disk: _evecommon_pb2.DiskDescription
    old_disk: _evecommon_pb2.DiskDescription
    disk_config: DiskConfigType
    def __init__(self, disk: _Optional[_Union[_evecommon_pb2.DiskDescription, _Mapping]] = ..., old_disk: _Optional[_Union[_evecommon_pb2.DiskDescription, _Mapping]] = ..., disk_config: _Optional[_Union[DiskConfigType, str]] = ...) -> None: ...

class DisksConfig(_message.Message):
    __slots__ = ("disks", "array_type", "children")
    DISKS_FIELD_NUMBER: _ClassVar[int]
    ARRAY_TYPE_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    disks: _containers.RepeatedCompositeFieldContainer[DiskConfig]
    array_type: DisksArrayType
    children: _containers.RepeatedCompositeFieldContainer[DisksConfig]
    def __init__(self, disks: _Optional[_Iterable[_Union[DiskConfig, _Mapping]]] = ..., array_type: _Optional[_Union[DisksArrayType, str]] = ..., children: _Optional[_Iterable[_Union[DisksConfig, _Mapping]]] = ...) -> None: ...
