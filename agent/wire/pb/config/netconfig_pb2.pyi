from agent.wire.pb.config import fw_pb2 as _fw_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from agent.wire.pb.evecommon import netcmn_pb2 as _netcmn_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EAPMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EAP_METHOD_UNSPECIFIED: _ClassVar[EAPMethod]
    EAP_METHOD_TLS: _ClassVar[EAPMethod]
EAP_METHOD_UNSPECIFIED: EAPMethod
EAP_METHOD_TLS: EAPMethod

class NetworkConfig(_message.Message):
    __slots__ = ("id", "type", "ip", "dns", "entProxy", "wireless", "mtu")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    ENTPROXY_FIELD_NUMBER: _ClassVar[int]
    WIRELESS_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: _netcmn_pb2.NetworkType
    ip: _netcmn_pb2.ipspec
    dns: _containers.RepeatedCompositeFieldContainer[_netcmn_pb2.ZnetStaticDNSEntry]
    entProxy: _netcmn_pb2.ProxyConfig
    wireless: WirelessConfig
    mtu: int
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[_netcmn_pb2.NetworkType, str]] = ..., ip: _Optional[_Union[_netcmn_pb2.ipspec, _Mapping]] = ..., dns: _Optional[_Iterable[_Union[_netcmn_pb2.ZnetStaticDNSEntry, _Mapping]]] = ..., entProxy: _Optional[_Union[_netcmn_pb2.ProxyConfig, _Mapping]] = ..., wireless: _Optional[_Union[WirelessConfig, _Mapping]] = ..., mtu: _Optional[int] = ...) -> None: ...

class NetworkAdapter(_message.Message):
    __slots__ = ("name", "networkId", "addr", "hostname", "lispsignature", "pemcert", "pemprivatekey", "macAddress", "cryptoEid", "acls", "access_vlan_id", "allow_to_discover", "interface_order")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORKID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    LISPSIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PEMCERT_FIELD_NUMBER: _ClassVar[int]
    PEMPRIVATEKEY_FIELD_NUMBER: _ClassVar[int]
    MACADDRESS_FIELD_NUMBER: _ClassVar[int]
    CRYPTOEID_FIELD_NUMBER: _ClassVar[int]
    ACLS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_VLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_TO_DISCOVER_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_ORDER_FIELD_NUMBER: _ClassVar[int]
    name: str
    networkId: str
    addr: str
    hostname: str
    lispsignature: str
    pemcert: bytes
    pemprivatekey: bytes
    macAddress: str
    cryptoEid: str
    acls: _containers.RepeatedCompositeFieldContainer[_fw_pb2.ACE]
    access_vlan_id: int
    allow_to_discover: bool
    interface_order: int
    def __init__(self, name: _Optional[str] = ..., networkId: _Optional[str] = ..., addr: _Optional[str] = ..., hostname: _Optional[str] = ..., lispsignature: _Optional[str] = ..., pemcert: _Optional[bytes] = ..., pemprivatekey: _Optional[bytes] = ..., macAddress: _Optional[str] = ..., cryptoEid: _Optional[str] = ..., acls: _Optional[_Iterable[_Union[_fw_pb2.ACE, _Mapping]]] = ..., access_vlan_id: _Optional[int] = ..., allow_to_discover: _Optional[bool] = ..., interface_order: _Optional[int] = ...) -> None: ...

class WirelessConfig(_message.Message):
    __slots__ = ("type", "cellularCfg", "wifiCfg")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CELLULARCFG_FIELD_NUMBER: _ClassVar[int]
    WIFICFG_FIELD_NUMBER: _ClassVar[int]
    type: _netcmn_pb2.WirelessType
    cellularCfg: _containers.RepeatedCompositeFieldContainer[CellularConfig]
    wifiCfg: _containers.RepeatedCompositeFieldContainer[WifiConfig]
    def __init__(self, type: _Optional[_Union[_netcmn_pb2.WirelessType, str]] = ..., cellularCfg: _Optional[_Iterable[_Union[CellularConfig, _Mapping]]] = ..., wifiCfg: _Optional[_Iterable[_Union[WifiConfig, _Mapping]]] = ...) -> None: ...

class CellularConfig(_message.Message):
    __slots__ = ("APN", "probe", "location_tracking", "access_points", "activated_sim_slot")
    APN_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_TRACKING_FIELD_NUMBER: _ClassVar[int]
    ACCESS_POINTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_SIM_SLOT_FIELD_NUMBER: _ClassVar[int]
    APN: str
    probe: CellularConnectivityProbe
    location_tracking: bool
    access_points: _containers.RepeatedCompositeFieldContainer[CellularAccessPoint]
    activated_sim_slot: int
    def __init__(self, APN: _Optional[str] = ..., probe: _Optional[_Union[CellularConnectivityProbe, _Mapping]] = ..., location_tracking: _Optional[bool] = ..., access_points: _Optional[_Iterable[_Union[CellularAccessPoint, _Mapping]]] = ..., activated_sim_slot: _Optional[int] = ...) -> None: ...

class CellularConnectivityProbe(_message.Message):
    __slots__ = ("disable", "probe_address", "custom_probe")
    DISABLE_FIELD_NUMBER: _ClassVar[int]
    PROBE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PROBE_FIELD_NUMBER: _ClassVar[int]
    disable: bool
    probe_address: str
    custom_probe: _netcmn_pb2.ConnectivityProbe
    def __init__(self, disable: _Optional[bool] = ..., probe_address: _Optional[str] = ..., custom_probe: _Optional[_Union[_netcmn_pb2.ConnectivityProbe, _Mapping]] = ...) -> None: ...

class CellularAccessPoint(_message.Message):
    __slots__ = ("sim_slot", "apn", "auth_protocol", "cipher_data", "preferred_plmns", "forbid_roaming", "preferred_rats", "ip_type", "attach_apn", "attach_ip_type", "attach_auth_protocol")
    SIM_SLOT_FIELD_NUMBER: _ClassVar[int]
    APN_FIELD_NUMBER: _ClassVar[int]
    AUTH_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CIPHER_DATA_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_PLMNS_FIELD_NUMBER: _ClassVar[int]
    FORBID_ROAMING_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_RATS_FIELD_NUMBER: _ClassVar[int]
    IP_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTACH_APN_FIELD_NUMBER: _ClassVar[int]
    ATTACH_IP_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTACH_AUTH_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    sim_slot: int
    apn: str
    auth_protocol: _netcmn_pb2.CellularAuthProtocol
    cipher_data: _acipherinfo_pb2.CipherBlock
    preferred_plmns: _containers.RepeatedScalarFieldContainer[str]
    forbid_roaming: bool
    preferred_rats: _containers.RepeatedScalarFieldContainer[_netcmn_pb2.RadioAccessTechnology]
    ip_type: _netcmn_pb2.CellularIPType
    attach_apn: str
    attach_ip_type: _netcmn_pb2.CellularIPType
    attach_auth_protocol: _netcmn_pb2.CellularAuthProtocol
    def __init__(self, sim_slot: _Optional[int] = ..., apn: _Optional[str] = ..., auth_protocol: _Optional[_Union[_netcmn_pb2.CellularAuthProtocol, str]] = ..., cipher_data: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ..., preferred_plmns: _Optional[_Iterable[str]] = ..., forbid_roaming: _Optional[bool] = ..., preferred_rats: _Optional[_Iterable[_Union[_netcmn_pb2.RadioAccessTechnology, str]]] = ..., ip_type: _Optional[_Union[_netcmn_pb2.CellularIPType, str]] = ..., attach_apn: _Optional[str] = ..., attach_ip_type: _Optional[_Union[_netcmn_pb2.CellularIPType, str]] = ..., attach_auth_protocol: _Optional[_Union[_netcmn_pb2.CellularAuthProtocol, str]] = ...) -> None: ...

class WifiConfig(_message.Message):
    __slots__ = ("wifiSSID", "keyScheme", "identity", "password", "crypto", "priority", "cipherData")
    class cryptoblock(_message.Message):
        __slots__ = ("identity", "password")
        IDENTITY_FIELD_NUMBER: _ClassVar[int]
        PASSWORD_FIELD_NUMBER: _ClassVar[int]
        identity: str
        password: str
        def __init__(self, identity: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...
    WIFISSID_FIELD_NUMBER: _ClassVar[int]
    KEYSCHEME_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CRYPTO_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CIPHERDATA_FIELD_NUMBER: _ClassVar[int]
    wifiSSID: str
    keyScheme: _netcmn_pb2.WiFiKeyScheme
    identity: str
    password: str
    crypto: WifiConfig.cryptoblock
    priority: int
    cipherData: _acipherinfo_pb2.CipherBlock
    def __init__(self, wifiSSID: _Optional[str] = ..., keyScheme: _Optional[_Union[_netcmn_pb2.WiFiKeyScheme, str]] = ..., identity: _Optional[str] = ..., password: _Optional[str] = ..., crypto: _Optional[_Union[WifiConfig.cryptoblock, _Mapping]] = ..., priority: _Optional[int] = ..., cipherData: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ...) -> None: ...

class PNAC(_message.Message):
    __slots__ = ("logicallabel", "eap_identity", "eap_method", "cert_enrollment_profile_name")
    LOGICALLABEL_FIELD_NUMBER: _ClassVar[int]
    EAP_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EAP_METHOD_FIELD_NUMBER: _ClassVar[int]
    CERT_ENROLLMENT_PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    logicallabel: str
    eap_identity: str
    eap_method: EAPMethod
    cert_enrollment_profile_name: str
    def __init__(self, logicallabel: _Optional[str] = ..., eap_identity: _Optional[str] = ..., eap_method: _Optional[_Union[EAPMethod, str]] = ..., cert_enrollment_profile_name: _Optional[str] = ...) -> None: ...
