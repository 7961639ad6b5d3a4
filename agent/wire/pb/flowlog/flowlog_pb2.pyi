import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ACLAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ActionUnknown: _ClassVar[ACLAction]
    ActionDrop: _ClassVar[ACLAction]
    ActionAccept: _ClassVar[ACLAction]
ActionUnknown: ACLAction
ActionDrop: ACLAction
ActionAccept: ACLAction

class IpFlow(_message.Message):
    __slots__ = ("src", "srcPort", "dest", "destPort", "protocol")
    SRC_FIELD_NUMBER: _ClassVar[int]
    SRCPORT_FIELD_NUMBER: _ClassVar[int]
    DEST_FIELD_NUMBER: _ClassVar[int]
    DESTPORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    src: str
    srcPort: int
    dest: str
    destPort: int
    protocol: int
    def __init__(self, src: _Optional[str] = ..., srcPort: _Optional[int] = ..., dest: _Optional[str] = ..., destPort: _Optional[int] = ..., protocol: _Optional[int] = ...) -> None: ...

class ScopeInfo(_message.Message):
    __slots__ = ("uuid", "intf", "localIntf", "netInstUUID")
    UUID_FIELD_NUMBER: _ClassVar[int]
    INTF_FIELD_NUMBER: _ClassVar[int]
    LOCALINTF_FIELD_NUMBER: _ClassVar[int]
    NETINSTUUID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    intf: str
    localIntf: str
    netInstUUID: str
    def __init__(self, uuid: _Optional[str] = ..., intf: _Optional[str] = ..., localIntf: _Optional[str] = ..., netInstUUID: _Optional[str] = ...) -> None: ...

class FlowRecord(_message.Message):
    __slots__ = ("flow", "inbound", "aclId", "aclName", "startTime", "endTime", "txBytes", "txPkts", "rxBytes", "rxPkts", "action")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    ACLID_FIELD_NUMBER: _ClassVar[int]
    ACLNAME_FIELD_NUMBER: _ClassVar[int]
    STARTTIME_FIELD_NUMBER: _ClassVar[int]
    ENDTIME_FIELD_NUMBER: _ClassVar[int]
    TXBYTES_FIELD_NUMBER: _ClassVar[int]
    TXPKTS_FIELD_NUMBER: _ClassVar[int]
    RXBYTES_FIELD_NUMBER: _ClassVar[int]
    RXPKTS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    flow: IpFlow
    inbound: bool
    aclId: int
    aclName: str
    startTime: _timestamp_pb2.Timestamp
    endTime: _timestamp_pb2.Timestamp
    txBytes: int
    txPkts: int
    rxBytes: int
    rxPkts: int
    action: ACLAction
    def __init__(self, flow: _Optional[_Union[IpFlow, _Mapping]] = ..., inbound: _Optional[bool] = ..., aclId: _Optional[int] = ..., aclName: _Optional[str] = ..., startTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., endTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., txBytes: _Optional[int] = ..., txPkts: _Optional[int] = ..., rxBytes: _Optional[int] = ..., rxPkts: _Optional[int] = ..., action: _Optional[_Union[ACLAction, str]] = ...) -> None: ...

class DnsRequest(_message.Message):
    __slots__ = ("hostName", "addrs", "requestTime", "aclNum")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    REQUESTTIME_FIELD_NUMBER: _ClassVar[int]
    ACLNUM_FIELD_NUMBER: _ClassVar[int]
    hostName: str
    addrs: _containers.RepeatedScalarFieldContainer[str]
    requestTime: _timestamp_pb2.Timestamp
    aclNum: int
    def __init__(self, hostName: _Optional[str] = ..., addrs: _Optional[_Iterable[str]] = ..., requestTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., aclNum: _Optional[int] = ...) -> None: ...

class FlowMessage(_message.Message):
    __slots__ = ("devId", "scope", "flows", "dnsReqs")
    DEVID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    DNSREQS_FIELD_NUMBER: _ClassVar[int]
    devId: str
    scope: ScopeInfo
    flows: _containers.RepeatedCompositeFieldContainer[FlowRecord]
    dnsReqs: _containers.RepeatedCompositeFieldContainer[DnsRequest]
    def __init__(self, devId: _Optional[str] = ..., scope: _Optional[_Union[ScopeInfo, _Mapping]] = ..., flows: _Optional[_Iterable[_Union[FlowRecord, _Mapping]]] = ..., dnsReqs: _Optional[_Iterable[_Union[DnsRequest, _Mapping]]] = ...) -> None: ...
