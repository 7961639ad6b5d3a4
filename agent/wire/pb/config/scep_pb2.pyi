from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_TYPE_UNSPECIFIED: _ClassVar[KeyType]
    KEY_TYPE_RSA_2048: _ClassVar[KeyType]
    KEY_TYPE_RSA_3072: _ClassVar[KeyType]
    KEY_TYPE_RSA_4096: _ClassVar[KeyType]
    KEY_TYPE_ECDSA_P256: _ClassVar[KeyType]
    KEY_TYPE_ECDSA_P384: _ClassVar[KeyType]
    KEY_TYPE_ECDSA_P521: _ClassVar[KeyType]

class HashAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HASH_ALGORITHM_UNSPECIFIED: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA256: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA384: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA512: _ClassVar[HashAlgorithm]
KEY_TYPE_UNSPECIFIED: KeyType
KEY_TYPE_RSA_2048: KeyType
KEY_TYPE_RSA_3072: KeyType
KEY_TYPE_RSA_4096: KeyType
KEY_TYPE_ECDSA_P256: KeyType
KEY_TYPE_ECDSA_P384: KeyType
KEY_TYPE_ECDSA_P521: KeyType
HASH_ALGORITHM_UNSPECIFIED: HashAlgorithm
HASH_ALGORITHM_SHA256: HashAlgorithm
HASH_ALGORITHM_SHA384: HashAlgorithm
HASH_ALGORITHM_SHA512: HashAlgorithm

class SCEPProfile(_message.Message):
    __slots__ = ("profile_name", "scep_url", "use_controller_proxy", "scep_challenge_password", "ca_cert_pem", "csr_profile")
    PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCEP_URL_FIELD_NUMBER: _ClassVar[int]
    USE_CONTROLLER_PROXY_FIELD_NUMBER: _ClassVar[int]
    SCEP_CHALLENGE_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CA_CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CSR_PROFILE_FIELD_NUMBER: _ClassVar[int]
    profile_name: str
    scep_url: str
    use_controller_proxy: bool
    scep_challenge_password: _acipherinfo_pb2.CipherBlock
    ca_cert_pem: _containers.RepeatedScalarFieldContainer[bytes]
    csr_profile: CSRProfile
    def __init__(self, profile_name: _Optional[str] = ..., scep_url: _Optional[str] = ..., use_controller_proxy: _Optional[bool] = ..., scep_challenge_password: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ..., ca_cert_pem: _Optional[_Iterable[bytes]] = ..., csr_profile: _Optional[_Union[CSRProfile, _Mapping]] = ...) -> None: ...

class CSRProfile(_message.Message):
    __slots__ = ("common_name", "organization", "organizational_unit", "country", "state", "locality", "san_dns", "san_ip", "san_uri", "san_email", "renew_period_percent", "key_type", "hash_algorithm")
    COMMON_NAME_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATIONAL_UNIT_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    SAN_DNS_FIELD_NUMBER: _ClassVar[int]
    SAN_IP_FIELD_NUMBER: _ClassVar[int]
    SAN_URI_FIELD_NUMBER: _ClassVar[int]
    SAN_EMAIL_FIELD_NUMBER: _ClassVar[int]
    RENEW_PERIOD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    KEY_TYPE_FIELD_NUMBER: _ClassVar[int]
    HASH_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    common_name: str
    organization: str
    organizational_unit: str
    country: str
    state: str
    locality: str
    san_dns: _containers.RepeatedScalarFieldContainer[str]
    san_ip: _containers.RepeatedScalarFieldContainer[str]
    san_uri: _containers.RepeatedScalarFieldContainer[str]
    san_email: _containers.RepeatedScalarFieldContainer[str]
    renew_period_percent: int
    key_type: KeyType
    hash_algorithm: HashAlgorithm
    def __init__(self, common_name: _Optional[str] = ..., organization: _Optional[str] = ..., organizational_unit: _Optional[str] = ..., country: _Optional[str] = ..., state: _Optional[str] = ..., locality: _Optional[str] = ..., san_dns: _Optional[_Iterable[str]] = ..., san_ip: _Optional[_Iterable[str]] = ..., san_uri: _Optional[_Iterable[str]] = ..., san_email: _Optional[_Iterable[str]] = ..., renew_period_percent: _Optional[int] = ..., key_type: _Optional[_Union[KeyType, str]] = ..., hash_algorithm: _Optional[_Union[HashAlgorithm, str]] = ...) -> None: ...
