import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.wire.pb.info import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CertStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CERT_STATUS_UNSPECIFIED: _ClassVar[CertStatus]
    CERT_STATUS_AVAILABLE: _ClassVar[CertStatus]
    CERT_STATUS_PENDING: _ClassVar[CertStatus]
    CERT_STATUS_RENEWAL_PENDING: _ClassVar[CertStatus]
    CERT_STATUS_EXPIRED: _ClassVar[CertStatus]
    CERT_STATUS_REVOKED: _ClassVar[CertStatus]
    CERT_STATUS_ENROLLMENT_FAILED: _ClassVar[CertStatus]
    CERT_STATUS_RENEWAL_FAILED: _ClassVar[CertStatus]
    CERT_STATUS_INVALID_CONFIG: _ClassVar[CertStatus]
CERT_STATUS_UNSPECIFIED: CertStatus
CERT_STATUS_AVAILABLE: CertStatus
CERT_STATUS_PENDING: CertStatus
CERT_STATUS_RENEWAL_PENDING: CertStatus
CERT_STATUS_EXPIRED: CertStatus
CERT_STATUS_REVOKED: CertStatus
CERT_STATUS_ENROLLMENT_FAILED: CertStatus
CERT_STATUS_RENEWAL_FAILED: CertStatus
CERT_STATUS_INVALID_CONFIG: CertStatus

class CertInfo(_message.Message):
    __slots__ = ("cert_enrollment_profile_name", "subject", "issuer", "san_dns", "san_ip", "san_uri", "san_email", "issue_timestamp", "expiration_timestamp", "renew_period_percent", "sha256_fingerprint", "status", "err")
    CERT_ENROLLMENT_PROFILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    SAN_DNS_FIELD_NUMBER: _ClassVar[int]
    SAN_IP_FIELD_NUMBER: _ClassVar[int]
    SAN_URI_FIELD_NUMBER: _ClassVar[int]
    SAN_EMAIL_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RENEW_PERIOD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    cert_enrollment_profile_name: str
    subject: CertDistinguishedName
    issuer: CertDistinguishedName
    san_dns: _containers.RepeatedScalarFieldContainer[str]
    san_ip: _containers.RepeatedScalarFieldContainer[str]
    san_uri: _containers.RepeatedScalarFieldContainer[str]
    san_email: _containers.RepeatedScalarFieldContainer[str]
    issue_timestamp: _timestamp_pb2.Timestamp
    expiration_timestamp: _timestamp_pb2.Timestamp
    renew_period_percent: int
    sha256_fingerprint: str
    status: CertStatus
    err: _common_pb2.ErrorInfo
    def __init__(self, cert_enrollment_profile_name: _Optional[str] = ..., subject: _Optional[_Union[CertDistinguishedName, _Mapping]] = ..., issuer: _Optional[_Union[CertDistinguishedName, _Mapping]] = ..., san_dns: _Optional[_Iterable[str]] = ..., san_ip: _Optional[_Iterable[str]] = ..., san_uri: _Optional[_Iterable[str]] = ..., san_email: _Optional[_Iterable[str]] = ..., issue_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expiration_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., renew_period_percent: _Optional[int] = ..., sha256_fingerprint: _Optional[str] = ..., status: _Optional[_Union[CertStatus, str]] = ..., err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...

class CertDistinguishedName(_message.Message):
    __slots__ = ("common_name", "serial_number", "organization", "organizational_unit", "country", "state_or_province", "locality")
    COMMON_NAME_FIELD_NUMBER: _ClassVar[int]
    SERIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATIONAL_UNIT_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    STATE_OR_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    common_name: str
    serial_number: str
    organization: _containers.RepeatedScalarFieldContainer[str]
    organizational_unit: _containers.RepeatedScalarFieldContainer[str]
    country: _containers.RepeatedScalarFieldContainer[str]
    state_or_province: _containers.RepeatedScalarFieldContainer[str]
    locality: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, common_name: _Optional[str] = ..., serial_number: _Optional[str] = ..., organization: _Optional[_Iterable[str]] = ..., organizational_unit: _Optional[_Iterable[str]] = ..., country: _Optional[_Iterable[str]] = ..., state_or_province: _Optional[_Iterable[str]] = ..., locality: _Optional[_Iterable[str]] = ...) -> None: ...
