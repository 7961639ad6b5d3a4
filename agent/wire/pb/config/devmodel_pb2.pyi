from agent.wire.pb.config import devcommon_pb2 as _devcommon_pb2
from agent.wire.pb.evecommon import devmodelcommon_pb2 as _devmodelcommon_pb2
from agent.wire.pb.evecommon import netcmn_pb2 as _netcmn_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SystemAdapter(_message.Message):
    __slots__ = ("name", "freeUplink", "uplink", "networkUUID", "addr", "alias", "lowerLayerName", "cost", "shared_labels", "allow_local_modifications")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FREEUPLINK_FIELD_NUMBER: _ClassVar[int]
    UPLINK_FIELD_NUMBER: _ClassVar[int]
    NETWORKUUID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    LOWERLAYERNAME_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    SHARED_LABELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LOCAL_MODIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    freeUplink: bool
    uplink: bool
    networkUUID: str
    addr: str
    alias: str
    lowerLayerName: str
    cost: int
    shared_labels: _containers.RepeatedScalarFieldContainer[str]
    allow_local_modifications: bool
    def __init__(self, name: _Optional[str] = ..., freeUplink: _Optional[bool] = ..., uplink: _Optional[bool] = ..., networkUUID: _Optional[str] = ..., addr: _Optional[str] = ..., alias: _Optional[str] = ..., lowerLayerName: _Optional[str] = ..., cost: _Optional[int] = ..., shared_labels: _Optional[_Iterable[str]] = ..., allow_local_modifications: _Optional[bool] = ...) -> None: ...

class PhyIOUsagePolicy(_message.Message):
    __slots__ = ("freeUplink",)
    FREEUPLINK_FIELD_NUMBER: _ClassVar[int]
    freeUplink: bool
    def __init__(self, freeUplink: _Optional[bool] = ...) -> None: ...

class PhysicalIO(_message.Message):
    __slots__ = ("ptype", "phylabel", "phyaddrs", "logicallabel", "assigngrp", "usage", "usagePolicy", "cbattr", "vflist", "parentassigngrp")
    class PhyaddrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CbattrEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PTYPE_FIELD_NUMBER: _ClassVar[int]
    PHYLABEL_FIELD_NUMBER: _ClassVar[int]
    PHYADDRS_FIELD_NUMBER: _ClassVar[int]
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    ASSIGNGRP_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    USAGEPOLICY_FIELD_NUMBER: _ClassVar[int]
    CBATTR_FIELD_NUMBER: _ClassVar[int]
    VFLIST_FIELD_NUMBER: _ClassVar[int]
    PARENTASSIGNGRP_FIELD_NUMBER: _ClassVar[int]
    ptype: _devmodelcommon_pb2.PhyIoType
    phylabel: str
    phyaddrs: _containers.ScalarMap[str, str]
    logicallabel: str
    assigngrp: str
    usage: _devmodelcommon_pb2.PhyIoMemberUsage
    usagePolicy: PhyIOUsagePolicy
    cbattr: _containers.ScalarMap[str, str]
    vflist: VfList
    parentassigngrp: str
    def __init__(self, ptype: _Optional[_Union[_devmodelcommon_pb2.PhyIoType, str]] = ..., phylabel: _Optional[str] = ..., phyaddrs: _Optional[_Mapping[str, str]] = ..., logicallabel: _Optional[str] = ..., assigngrp: _Optional[str] = ..., usage: _Optional[_Union[_devmodelcommon_pb2.PhyIoMemberUsage, str]] = ..., usagePolicy: _Optional[_Union[PhyIOUsagePolicy, _Mapping]] = ..., cbattr: _Optional[_Mapping[str, str]] = ..., vflist: _Optional[_Union[VfList, _Mapping]] = ..., parentassigngrp: _Optional[str] = ...) -> None: ...

class VfList(_message.Message):
    __slots__ = ("vf_count", "data")
    VF_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    vf_count: int
    data: _containers.RepeatedCompositeFieldContainer[_devcommon_pb2.EthVF]
    def __init__(self, vf_count: _Optional[int] = ..., data: _Optional[_Iterable[_Union[_devcommon_pb2.EthVF, _Mapping]]] = ...) -> None: ...

class VlanAdapter(_message.Message):
    __slots__ = ("logicallabel", "interface_name", "lower_layer_name", "vlan_id")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_NAME_FIELD_NUMBER: _ClassVar[int]
    LOWER_LAYER_NAME_FIELD_NUMBER: _ClassVar[int]
    VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    interface_name: str
    lower_layer_name: str
    vlan_id: int
    def __init__(self, logicallabel: _Optional[str] = ..., interface_name: _Optional[str] = ..., lower_layer_name: _Optional[str] = ..., vlan_id: _Optional[int] = ...) -> None: ...

class BondAdapter(_message.Message):
    __slots__ = ("logicallabel", "interface_name", "lower_layer_names", "bond_mode", "mii", "arp", "lacp_rate")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_NAME_FIELD_NUMBER: _ClassVar[int]
    LOWER_LAYER_NAMES_FIELD_NUMBER: _ClassVar[int]
    BOND_MODE_FIELD_NUMBER: _ClassVar[int]
    MII_FIELD_NUMBER: _ClassVar[int]
    ARP_FIELD_NUMBER: _ClassVar[int]
    LACP_RATE_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    interface_name: str
    lower_layer_names: _containers.RepeatedScalarFieldContainer[str]
    bond_mode: _netcmn_pb2.BondMode
    mii: MIIMonitor
    arp: ArpMonitor
    lacp_rate: _netcmn_pb2.LacpRate
    def __init__(self, logicallabel: _Optional[str] = ..., interface_name: _Optional[str] = ..., lower_layer_names: _Optional[_Iterable[str]] = ..., bond_mode: _Optional[_Union[_netcmn_pb2.BondMode, str]] = ..., mii: _Optional[_Union[MIIMonitor, _Mapping]] = ..., arp: _Optional[_Union[ArpMonitor, _Mapping]] = ..., lacp_rate: _Optional[_Union[_netcmn_pb2.LacpRate, str]] = ...) -> None: ...

class MIIMonitor(_message.Message):
    __slots__ = ("interval", "updelay", "downdelay")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UPDELAY_FIELD_NUMBER: _ClassVar[int]
    DOWNDELAY_FIELD_NUMBER: _ClassVar[int]
    interval: int
    updelay: int
    downdelay: int
    def __init__(self, interval: _Optional[int] = ..., updelay: _Optional[int] = ..., downdelay: _Optional[int] = ...) -> None: ...

class ArpMonitor(_message.Message):
    __slots__ = ("interval", "ip_targets")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    IP_TARGETS_FIELD_NUMBER: _ClassVar[int]
    interval: int
    ip_targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interval: _Optional[int] = ..., ip_targets: _Optional[_Iterable[str]] = ...) -> None: ...
