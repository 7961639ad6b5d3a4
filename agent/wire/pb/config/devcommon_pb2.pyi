from agent.wire.pb.evecommon import devmodelcommon_pb2 as _devmodelcommon_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UUIDandVersion(_message.Message):
    __slots__ = ("uuid", "version")
    UUID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    version: str
    def __init__(self, uuid: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeviceOpsCmd(_message.Message):
    __slots__ = ("counter", "desiredState", "opsTime")
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    DESIREDSTATE_FIELD_NUMBER: _ClassVar[int]
    OPSTIME_FIELD_NUMBER: _ClassVar[int]
    counter: int
    desiredState: bool
    opsTime: str
    def __init__(self, counter: _Optional[int] = ..., desiredState: _Optional[bool] = ..., opsTime: _Optional[str] = ...) -> None: ...

class ConfigItem(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Adapter(_message.Message):
    __slots__ = ("type", "name", "eth_vf", "interface_order")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETH_VF_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_ORDER_FIELD_NUMBER: _ClassVar[int]
    type: _devmodelcommon_pb2.PhyIoType
    name: str
    eth_vf: EthVF
    interface_order: int
    def __init__(self, type: _Optional[_Union[_devmodelcommon_pb2.PhyIoType, str]] = ..., name: _Optional[str] = ..., eth_vf: _Optional[_Union[EthVF, _Mapping]] = ..., interface_order: _Optional[int] = ...) -> None: ...

class EthVF(_message.Message):
    __slots__ = ("index", "mac", "vlan_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    mac: str
    vlan_id: int
    def __init__(self, index: _Optional[int] = ..., mac: _Optional[str] = ..., vlan_id: _Optional[int] = ...) -> None: ...
