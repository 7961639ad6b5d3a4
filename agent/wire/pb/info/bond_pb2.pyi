from agent.wire.pb.evecommon import netcmn_pb2 as _netcmn_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BondLACPChurnState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOND_LACP_CHURN_STATE_UNSPECIFIED: _ClassVar[BondLACPChurnState]
    BOND_LACP_CHURN_STATE_NONE: _ClassVar[BondLACPChurnState]
    BOND_LACP_CHURN_STATE_MONITORING: _ClassVar[BondLACPChurnState]
    BOND_LACP_CHURN_STATE_CHURNED: _ClassVar[BondLACPChurnState]
BOND_LACP_CHURN_STATE_UNSPECIFIED: BondLACPChurnState
BOND_LACP_CHURN_STATE_NONE: BondLACPChurnState
BOND_LACP_CHURN_STATE_MONITORING: BondLACPChurnState
BOND_LACP_CHURN_STATE_CHURNED: BondLACPChurnState

class BondStatus(_message.Message):
    __slots__ = ("mode", "active_member", "mii_monitor", "arp_monitor", "lacp", "members")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MEMBER_FIELD_NUMBER: _ClassVar[int]
    MII_MONITOR_FIELD_NUMBER: _ClassVar[int]
    ARP_MONITOR_FIELD_NUMBER: _ClassVar[int]
    LACP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    mode: _netcmn_pb2.BondMode
    active_member: str
    mii_monitor: BondMIIMonitorStatus
    arp_monitor: BondArpMonitorStatus
    lacp: BondLACPStatus
    members: _containers.RepeatedCompositeFieldContainer[BondMemberStatus]
    def __init__(self, mode: _Optional[_Union[_netcmn_pb2.BondMode, str]] = ..., active_member: _Optional[str] = ..., mii_monitor: _Optional[_Union[BondMIIMonitorStatus, _Mapping]] = ..., arp_monitor: _Optional[_Union[BondArpMonitorStatus, _Mapping]] = ..., lacp: _Optional[_Union[BondLACPStatus, _Mapping]] = ..., members: _Optional[_Iterable[_Union[BondMemberStatus, _Mapping]]] = ...) -> None: ...

class BondMemberStatus(_message.Message):
    __slots__ = ("logicallabel", "mii_up", "lacp")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    MII_UP_FIELD_NUMBER: _ClassVar[int]
    LACP_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    mii_up: bool
    lacp: BondMemberLACPStatus
    def __init__(self, logicallabel: _Optional[str] = ..., mii_up: _Optional[bool] = ..., lacp: _Optional[_Union[BondMemberLACPStatus, _Mapping]] = ...) -> None: ...

class BondMIIMonitorStatus(_message.Message):
    __slots__ = ("enabled", "polling_interval", "updelay", "downdelay")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    POLLING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UPDELAY_FIELD_NUMBER: _ClassVar[int]
    DOWNDELAY_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    polling_interval: int
    updelay: int
    downdelay: int
    def __init__(self, enabled: _Optional[bool] = ..., polling_interval: _Optional[int] = ..., updelay: _Optional[int] = ..., downdelay: _Optional[int] = ...) -> None: ...

class BondArpMonitorStatus(_message.Message):
    __slots__ = ("enabled", "polling_interval", "ip_targets", "missed_max")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    POLLING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    IP_TARGETS_FIELD_NUMBER: _ClassVar[int]
    MISSED_MAX_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    polling_interval: int
    ip_targets: _containers.RepeatedScalarFieldContainer[str]
    missed_max: int
    def __init__(self, enabled: _Optional[bool] = ..., polling_interval: _Optional[int] = ..., ip_targets: _Optional[_Iterable[str]] = ..., missed_max: _Optional[int] = ...) -> None: ...

class BondLACPStatus(_message.Message):
    __slots__ = ("lacp_rate", "active_aggregator_id", "partner_mac", "actor_key", "partner_key")
    LACP_RATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    PARTNER_MAC_FIELD_NUMBER: _ClassVar[int]
    ACTOR_KEY_FIELD_NUMBER: _ClassVar[int]
    PARTNER_KEY_FIELD_NUMBER: _ClassVar[int]
    lacp_rate: _netcmn_pb2.LacpRate
    active_aggregator_id: int
    partner_mac: str
    actor_key: int
    partner_key: int
    def __init__(self, lacp_rate: _Optional[_Union[_netcmn_pb2.LacpRate, str]] = ..., active_aggregator_id: _Optional[int] = ..., partner_mac: _Optional[str] = ..., actor_key: _Optional[int] = ..., partner_key: _Optional[int] = ...) -> None: ...

class BondMemberLACPStatus(_message.Message):
    __slots__ = ("aggregator_id", "actor_churn_state", "partner_churn_state")
    AGGREGATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CHURN_STATE_FIELD_NUMBER: _ClassVar[int]
    PARTNER_CHURN_STATE_FIELD_NUMBER: _ClassVar[int]
    aggregator_id: int
    actor_churn_state: BondLACPChurnState
    partner_churn_state: BondLACPChurnState
    def __init__(self, aggregator_id: _Optional[int] = ..., actor_churn_state: _Optional[_Union[BondLACPChurnState, str]] = ..., partner_churn_state: _Optional[_Union[BondLACPChurnState, str]] = ...) -> None: ...
