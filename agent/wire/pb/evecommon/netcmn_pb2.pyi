import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class proxyProto(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROXY_HTTP: _ClassVar[proxyProto]
    PROXY_HTTPS: _ClassVar[proxyProto]
    PROXY_SOCKS: _ClassVar[proxyProto]
    PROXY_FTP: _ClassVar[proxyProto]
    PROXY_OTHER: _ClassVar[proxyProto]

class DHCPType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DHCPNoop: _ClassVar[DHCPType]
    Static: _ClassVar[DHCPType]
    DHCPNone: _ClassVar[DHCPType]
    Client: _ClassVar[DHCPType]

class NetworkType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORKTYPENOOP: _ClassVar[NetworkType]
    V4: _ClassVar[NetworkType]
    V6: _ClassVar[NetworkType]
    CryptoV4: _ClassVar[NetworkType]
    CryptoV6: _ClassVar[NetworkType]
    CryptoEID: _ClassVar[NetworkType]
    V4Only: _ClassVar[NetworkType]
    V6Only: _ClassVar[NetworkType]
    DualV4V6: _ClassVar[NetworkType]

class WirelessType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TypeNOOP: _ClassVar[WirelessType]
    WiFi: _ClassVar[WirelessType]
    Cellular: _ClassVar[WirelessType]

class WiFiKeyScheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SchemeNOOP: _ClassVar[WiFiKeyScheme]
    WPAPSK: _ClassVar[WiFiKeyScheme]
    WPAEAP: _ClassVar[WiFiKeyScheme]

class ConnectivityProbeMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONNECTIVITY_PROBE_METHOD_UNSPECIFIED: _ClassVar[ConnectivityProbeMethod]
    CONNECTIVITY_PROBE_METHOD_ICMP: _ClassVar[ConnectivityProbeMethod]
    CONNECTIVITY_PROBE_METHOD_TCP: _ClassVar[ConnectivityProbeMethod]

class RadioAccessTechnology(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RADIO_ACCESS_TECHNOLOGY_UNSPECIFIED: _ClassVar[RadioAccessTechnology]
    RADIO_ACCESS_TECHNOLOGY_GSM: _ClassVar[RadioAccessTechnology]
    RADIO_ACCESS_TECHNOLOGY_UMTS: _ClassVar[RadioAccessTechnology]
    RADIO_ACCESS_TECHNOLOGY_LTE: _ClassVar[RadioAccessTechnology]
    RADIO_ACCESS_TECHNOLOGY_5GNR: _ClassVar[RadioAccessTechnology]

class CellularIPType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELLULAR_IP_TYPE_UNSPECIFIED: _ClassVar[CellularIPType]
    CELLULAR_IP_TYPE_IPV4: _ClassVar[CellularIPType]
    CELLULAR_IP_TYPE_IPV4_AND_IPV6: _ClassVar[CellularIPType]
    CELLULAR_IP_TYPE_IPV6: _ClassVar[CellularIPType]

class BearerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BEARER_TYPE_UNSPECIFIED: _ClassVar[BearerType]
    BEARER_TYPE_ATTACH: _ClassVar[BearerType]
    BEARER_TYPE_DEFAULT: _ClassVar[BearerType]
    BEARER_TYPE_DEDICATED: _ClassVar[BearerType]

class CellularAuthProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CELLULAR_AUTH_PROTOCOL_NONE: _ClassVar[CellularAuthProtocol]
    CELLULAR_AUTH_PROTOCOL_PAP: _ClassVar[CellularAuthProtocol]
    CELLULAR_AUTH_PROTOCOL_CHAP: _ClassVar[CellularAuthProtocol]
    CELLULAR_AUTH_PROTOCOL_PAP_AND_CHAP: _ClassVar[CellularAuthProtocol]

class BondMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOND_MODE_UNSPECIFIED: _ClassVar[BondMode]
    BOND_MODE_BALANCE_RR: _ClassVar[BondMode]
    BOND_MODE_ACTIVE_BACKUP: _ClassVar[BondMode]
    BOND_MODE_BALANCE_XOR: _ClassVar[BondMode]
    BOND_MODE_BROADCAST: _ClassVar[BondMode]
    BOND_MODE_802_3AD: _ClassVar[BondMode]
    BOND_MODE_BALANCE_TLB: _ClassVar[BondMode]
    BOND_MODE_BALANCE_ALB: _ClassVar[BondMode]

class LacpRate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LACP_RATE_UNSPECIFIED: _ClassVar[LacpRate]
    LACP_RATE_SLOW: _ClassVar[LacpRate]
    LACP_RATE_FAST: _ClassVar[LacpRate]

class NetworkConfigOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_CONFIG_ORIGIN_UNSPECIFIED: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_CONTROLLER: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_BOOTSTRAP: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_OVERRIDE: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_LASTRESORT: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_TUI: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_LOC: _ClassVar[NetworkConfigOrigin]
    NETWORK_CONFIG_ORIGIN_LPS: _ClassVar[NetworkConfigOrigin]
PROXY_HTTP: proxyProto
PROXY_HTTPS: proxyProto
PROXY_SOCKS: proxyProto
PROXY_FTP: proxyProto
PROXY_OTHER: proxyProto
DHCPNoop: DHCPType
Static: DHCPType
DHCPNone: DHCPType
Client: DHCPType
NETWORKTYPENOOP: NetworkType
V4: NetworkType
V6: NetworkType
CryptoV4: NetworkType
CryptoV6: NetworkType
CryptoEID: NetworkType
V4Only: NetworkType
V6Only: NetworkType
DualV4V6: NetworkType
TypeNOOP: WirelessType
WiFi: WirelessType
Cellular: WirelessType
SchemeNOOP: WiFiKeyScheme
WPAPSK: WiFiKeyScheme
WPAEAP: WiFiKeyScheme
CONNECTIVITY_PROBE_METHOD_UNSPECIFIED: ConnectivityProbeMethod
CONNECTIVITY_PROBE_METHOD_ICMP: ConnectivityProbeMethod
CONNECTIVITY_PROBE_METHOD_TCP: ConnectivityProbeMethod
RADIO_ACCESS_TECHNOLOGY_UNSPECIFIED: RadioAccessTechnology
RADIO_ACCESS_TECHNOLOGY_GSM: RadioAccessTechnology
RADIO_ACCESS_TECHNOLOGY_UMTS: RadioAccessTechnology
RADIO_ACCESS_TECHNOLOGY_LTE: RadioAccessTechnology
RADIO_ACCESS_TECHNOLOGY_5GNR: RadioAccessTechnology
CELLULAR_IP_TYPE_UNSPECIFIED: CellularIPType
CELLULAR_IP_TYPE_IPV4: CellularIPType
CELLULAR_IP_TYPE_IPV4_AND_IPV6: CellularIPType
CELLULAR_IP_TYPE_IPV6: CellularIPType
BEARER_TYPE_UNSPECIFIED: BearerType
BEARER_TYPE_ATTACH: BearerType
BEARER_TYPE_DEFAULT: BearerType
BEARER_TYPE_DEDICATED: BearerType
CELLULAR_AUTH_PROTOCOL_NONE: CellularAuthProtocol
CELLULAR_AUTH_PROTOCOL_PAP: CellularAuthProtocol
CELLULAR_AUTH_PROTOCOL_CHAP: CellularAuthProtocol
CELLULAR_AUTH_PROTOCOL_PAP_AND_CHAP: CellularAuthProtocol
BOND_MODE_UNSPECIFIED: BondMode
BOND_MODE_BALANCE_RR: BondMode
BOND_MODE_ACTIVE_BACKUP: BondMode
BOND_MODE_BALANCE_XOR: BondMode
BOND_MODE_BROADCAST: BondMode
BOND_MODE_802_3AD: BondMode
BOND_MODE_BALANCE_TLB: BondMode
BOND_MODE_BALANCE_ALB: BondMode
LACP_RATE_UNSPECIFIED: LacpRate
LACP_RATE_SLOW: LacpRate
LACP_RATE_FAST: LacpRate
NETWORK_CONFIG_ORIGIN_UNSPECIFIED: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_CONTROLLER: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_BOOTSTRAP: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_OVERRIDE: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_LASTRESORT: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_TUI: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_LOC: NetworkConfigOrigin
NETWORK_CONFIG_ORIGIN_LPS: NetworkConfigOrigin

class ipRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: str
    end: str
    def __init__(self, start: _Optional[str] = ..., end: _Optional[str] = ...) -> None: ...

class ProxyServer(_message.Message):
    __slots__ = ("proto", "server", "port")
    PROTO_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    proto: proxyProto
    server: str
    port: int
    def __init__(self, proto: _Optional[_Union[proxyProto, str]] = ..., server: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ProxyConfig(_message.Message):
    __slots__ = ("networkProxyEnable", "proxies", "exceptions", "pacfile", "networkProxyURL", "proxyCertPEM")
    NETWORKPROXYENABLE_FIELD_NUMBER: _ClassVar[int]
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    EXCEPTIONS_FIELD_NUMBER: _ClassVar[int]
    PACFILE_FIELD_NUMBER: _ClassVar[int]
    NETWORKPROXYURL_FIELD_NUMBER: _ClassVar[int]
    PROXYCERTPEM_FIELD_NUMBER: _ClassVar[int]
    networkProxyEnable: bool
    proxies: _containers.RepeatedCompositeFieldContainer[ProxyServer]
    exceptions: str
    pacfile: str
    networkProxyURL: str
    proxyCertPEM: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, networkProxyEnable: _Optional[bool] = ..., proxies: _Optional[_Iterable[_Union[ProxyServer, _Mapping]]] = ..., exceptions: _Optional[str] = ..., pacfile: _Optional[str] = ..., networkProxyURL: _Optional[str] = ..., proxyCertPEM: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ZnetStaticDNSEntry(_message.Message):
    __slots__ = ("HostName", "Address")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HostName: str
    Address: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, HostName: _Optional[str] = ..., Address: _Optional[_Iterable[str]] = ...) -> None: ...

class ipspec(_message.Message):
    __slots__ = ("dhcp", "subnet", "gateway", "domain", "ntp", "dns", "dhcpRange", "more_ntp", "dhcp_options_ignore")
    DHCP_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    NTP_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    DHCPRANGE_FIELD_NUMBER: _ClassVar[int]
    MORE_NTP_FIELD_NUMBER: _ClassVar[int]
    DHCP_OPTIONS_IGNORE_FIELD_NUMBER: _ClassVar[int]
    dhcp: DHCPType
    subnet: str
    gateway: str
    domain: str
    ntp: str
    dns: _containers.RepeatedScalarFieldContainer[str]
    dhcpRange: ipRange
    more_ntp: _containers.RepeatedScalarFieldContainer[str]
    dhcp_options_ignore: DhcpOptionsIgnore
    def __init__(self, dhcp: _Optional[_Union[DHCPType, str]] = ..., subnet: _Optional[str] = ..., gateway: _Optional[str] = ..., domain: _Optional[str] = ..., ntp: _Optional[str] = ..., dns: _Optional[_Iterable[str]] = ..., dhcpRange: _Optional[_Union[ipRange, _Mapping]] = ..., more_ntp: _Optional[_Iterable[str]] = ..., dhcp_options_ignore: _Optional[_Union[DhcpOptionsIgnore, _Mapping]] = ...) -> None: ...

class DhcpOptionsIgnore(_message.Message):
    __slots__ = ("ntp_server_exclusively", "ip_addresses_exclusively", "dns_config_exclusively", "gateways_exclusively")
    NTP_SERVER_EXCLUSIVELY_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESSES_EXCLUSIVELY_FIELD_NUMBER: _ClassVar[int]
    DNS_CONFIG_EXCLUSIVELY_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_EXCLUSIVELY_FIELD_NUMBER: _ClassVar[int]
    ntp_server_exclusively: bool
    ip_addresses_exclusively: bool
    dns_config_exclusively: bool
    gateways_exclusively: bool
    def __init__(self, ntp_server_exclusively: _Optional[bool] = ..., ip_addresses_exclusively: _Optional[bool] = ..., dns_config_exclusively: _Optional[bool] = ..., gateways_exclusively: _Optional[bool] = ...) -> None: ...

class ProbeEndpoint(_message.Message):
    __slots__ = ("host", "port")
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    host: str
    port: int
    def __init__(self, host: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class ConnectivityProbe(_message.Message):
    __slots__ = ("probe_method", "probe_endpoint")
    PROBE_METHOD_FIELD_NUMBER: _ClassVar[int]
    PROBE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    probe_method: ConnectivityProbeMethod
    probe_endpoint: ProbeEndpoint
    def __init__(self, probe_method: _Optional[_Union[ConnectivityProbeMethod, str]] = ..., probe_endpoint: _Optional[_Union[ProbeEndpoint, _Mapping]] = ...) -> None: ...

class PortConfigSource(_message.Message):
    __slots__ = ("origin", "submitted_at")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    origin: NetworkConfigOrigin
    submitted_at: _timestamp_pb2.Timestamp
    def __init__(self, origin: _Optional[_Union[NetworkConfigOrigin, str]] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
