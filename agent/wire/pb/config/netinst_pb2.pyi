from agent.wire.pb.config import devcommon_pb2 as _devcommon_pb2
from agent.wire.pb.evecommon import netcmn_pb2 as _netcmn_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ZNetworkInstType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZNetInstFirst: _ClassVar[ZNetworkInstType]
    ZnetInstSwitch: _ClassVar[ZNetworkInstType]
    ZnetInstLocal: _ClassVar[ZNetworkInstType]
    ZnetInstCloud: _ClassVar[ZNetworkInstType]
    ZnetInstMesh: _ClassVar[ZNetworkInstType]
    ZnetInstHoneyPot: _ClassVar[ZNetworkInstType]
    ZnetInstTransparent: _ClassVar[ZNetworkInstType]
    ZNetInstLast: _ClassVar[ZNetworkInstType]

class AddressType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    First: _ClassVar[AddressType]
    IPV4: _ClassVar[AddressType]
    IPV6: _ClassVar[AddressType]
    CryptoIPV4: _ClassVar[AddressType]
    CryptoIPV6: _ClassVar[AddressType]
    Last: _ClassVar[AddressType]

class ZNetworkOpaqueConfigType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZNetOConfigVPN: _ClassVar[ZNetworkOpaqueConfigType]
    ZNetOConfigLisp: _ClassVar[ZNetworkOpaqueConfigType]

class ZcServiceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    zcloudInvalidSrv: _ClassVar[ZcServiceType]
    mapServer: _ClassVar[ZcServiceType]
    supportServer: _ClassVar[ZcServiceType]
ZNetInstFirst: ZNetworkInstType
ZnetInstSwitch: ZNetworkInstType
ZnetInstLocal: ZNetworkInstType
ZnetInstCloud: ZNetworkInstType
ZnetInstMesh: ZNetworkInstType
ZnetInstHoneyPot: ZNetworkInstType
ZnetInstTransparent: ZNetworkInstType
ZNetInstLast: ZNetworkInstType
First: AddressType
IPV4: AddressType
IPV6: AddressType
CryptoIPV4: AddressType
CryptoIPV6: AddressType
Last: AddressType
ZNetOConfigVPN: ZNetworkOpaqueConfigType
ZNetOConfigLisp: ZNetworkOpaqueConfigType
zcloudInvalidSrv: ZcServiceType
mapServer: ZcServiceType
supportServer: ZcServiceType

class NetworkInstanceOpaqueConfig(_message.Message):
    __slots__ = ("oconfig", "lispConfig", "type")
    OCONFIG_FIELD_NUMBER: _ClassVar[int]
    LISPCONFIG_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    oconfig: str
    lispConfig: NetworkInstanceLispConfig
    type: ZNetworkOpaqueConfigType
    def __init__(self, oconfig: _Optional[str] = ..., lispConfig: _Optional[_Union[NetworkInstanceLispConfig, _Mapping]] = ..., type: _Optional[_Union[ZNetworkOpaqueConfigType, str]] = ...) -> None: ...

class ZcServicePoint(_message.Message):
    __slots__ = ("NameOrIp", "Credential", "zsType")
    NAMEORIP_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    ZSTYPE_FIELD_NUMBER: _ClassVar[int]
    NameOrIp: str
    Credential: str
    zsType: ZcServiceType
    def __init__(self, NameOrIp: _Optional[str] = ..., Credential: _Optional[str] = ..., zsType: _Optional[_Union[ZcServiceType, str]] = ...) -> None: ...

class NetworkInstanceLispConfig(_message.Message):
    __slots__ = ("LispMSs", "LispInstanceId", "allocate", "exportprivate", "allocationprefix", "allocationprefixlen", "experimental")
    LISPMSS_FIELD_NUMBER: _ClassVar[int]
    LISPINSTANCEID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATE_FIELD_NUMBER: _ClassVar[int]
    EXPORTPRIVATE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONPREFIX_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONPREFIXLEN_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTAL_FIELD_NUMBER: _ClassVar[int]
    LispMSs: _containers.RepeatedCompositeFieldContainer[ZcServicePoint]
    LispInstanceId: int
    allocate: bool
    exportprivate: bool
    allocationprefix: bytes
    allocationprefixlen: int
    experimental: bool
    def __init__(self, LispMSs: _Optional[_Iterable[_Union[ZcServicePoint, _Mapping]]] = ..., LispInstanceId: _Optional[int] = ..., allocate: _Optional[bool] = ..., exportprivate: _Optional[bool] = ..., allocationprefix: _Optional[bytes] = ..., allocationprefixlen: _Optional[int] = ..., experimental: _Optional[bool] = ...) -> None: ...

class IPRoute(_message.Message):
    __slots__ = ("destination_network", "gateway", "port", "probe", "prefer_lower_cost", "prefer_stronger_wwan_signal")
    DESTINATION_NETWORK_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    PREFER_LOWER_COST_FIELD_NUMBER: _ClassVar[int]
    PREFER_STRONGER_WWAN_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    destination_network: str
    gateway: str
    port: str
    probe: PortProbe
    prefer_lower_cost: bool
    prefer_stronger_wwan_signal: bool
    def __init__(self, destination_network: _Optional[str] = ..., gateway: _Optional[str] = ..., port: _Optional[str] = ..., probe: _Optional[_Union[PortProbe, _Mapping]] = ..., prefer_lower_cost: _Optional[bool] = ..., prefer_stronger_wwan_signal: _Optional[bool] = ...) -> None: ...

class PortProbe(_message.Message):
    __slots__ = ("enable_gw_ping", "gw_ping_max_cost", "custom_probe")
    ENABLE_GW_PING_FIELD_NUMBER: _ClassVar[int]
    GW_PING_MAX_COST_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PROBE_FIELD_NUMBER: _ClassVar[int]
    enable_gw_ping: bool
    gw_ping_max_cost: int
    custom_probe: _netcmn_pb2.ConnectivityProbe
    def __init__(self, enable_gw_ping: _Optional[bool] = ..., gw_ping_max_cost: _Optional[int] = ..., custom_probe: _Optional[_Union[_netcmn_pb2.ConnectivityProbe, _Mapping]] = ...) -> None: ...

class SpanningTreeProtocol(_message.Message):
    __slots__ = ("ports_with_bpdu_guard",)
    PORTS_WITH_BPDU_GUARD_FIELD_NUMBER: _ClassVar[int]
    ports_with_bpdu_guard: str
    def __init__(self, ports_with_bpdu_guard: _Optional[str] = ...) -> None: ...

class NetworkInstanceConfig(_message.Message):
    __slots__ = ("uuidandversion", "displayname", "instType", "activate", "port", "stp", "cfg", "ipType", "ip", "dns", "propagate_connected_routes", "static_routes", "mtu", "disable_flowlog", "vlan_access_ports", "forward_lldp", "cluster_wide")
    UUIDANDVERSION_FIELD_NUMBER: _ClassVar[int]
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    INSTTYPE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    STP_FIELD_NUMBER: _ClassVar[int]
    CFG_FIELD_NUMBER: _ClassVar[int]
    IPTYPE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    PROPAGATE_CONNECTED_ROUTES_FIELD_NUMBER: _ClassVar[int]
    STATIC_ROUTES_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    DISABLE_FLOWLOG_FIELD_NUMBER: _ClassVar[int]
    VLAN_ACCESS_PORTS_FIELD_NUMBER: _ClassVar[int]
    FORWARD_LLDP_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_WIDE_FIELD_NUMBER: _ClassVar[int]
    uuidandversion: _devcommon_pb2.UUIDandVersion
    displayname: str
    instType: ZNetworkInstType
    activate: bool
    port: _devcommon_pb2.Adapter
    stp: SpanningTreeProtocol
    cfg: NetworkInstanceOpaqueConfig
    ipType: AddressType
    ip: _netcmn_pb2.ipspec
    dns: _containers.RepeatedCompositeFieldContainer[_netcmn_pb2.ZnetStaticDNSEntry]
    propagate_connected_routes: bool
    static_routes: _containers.RepeatedCompositeFieldContainer[IPRoute]
    mtu: int
    disable_flowlog: bool
    vlan_access_ports: _containers.RepeatedCompositeFieldContainer[VlanAccessPort]
    forward_lldp: bool
    cluster_wide: bool
    def __init__(self, uuidandversion: _Optional[_Union[_devcommon_pb2.UUIDandVersion, _Mapping]] = ..., displayname: _Optional[str] = ..., instType: _Optional[_Union[ZNetworkInstType, str]] = ..., activate: _Optional[bool] = ..., port: _Optional[_Union[_devcommon_pb2.Adapter, _Mapping]] = ..., stp: _Optional[_Union[SpanningTreeProtocol, _Mapping]] = ..., cfg: _Optional[_Union[NetworkInstanceOpaqueConfig, _Mapping]] = ..., ipType: _Optional[_Union[AddressType, str]] = ..., ip: _Optional[_Union[_netcmn_pb2.ipspec, _Mapping]] = ..., dns: _Optional[_Iterable[_Union[_netcmn_pb2.ZnetStaticDNSEntry, _Mapping]]] = ..., propagate_connected_routes: _Optional[bool] = ..., static_routes: _Optional[_Iterable[_Union[IPRoute, _Mapping]]] = ..., mtu: _Optional[int] = ..., disable_flowlog: _Optional[bool] = ..., vlan_access_ports: _Optional[_Iterable[_Union[VlanAccessPort, _Mapping]]] = ..., forward_lldp: _Optional[bool] = ..., cluster_wide: _Optional[bool] = ...) -> None: ...

class VlanAccessPort(_message.Message):
    __slots__ = ("vlan_id", "access_port")
    VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ACCESS_PORT_FIELD_NUMBER: _ClassVar[int]
    vlan_id: int
    access_port: str
    def __init__(self, vlan_id: _Optional[int] = ..., access_port: _Optional[str] = ...) -> None: ...
