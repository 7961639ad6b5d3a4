import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.wire.pb.info import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SupplicantState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUPPLICANT_STATE_UNSPECIFIED: _ClassVar[SupplicantState]
    SUPPLICANT_STATE_DISCONNECTED: _ClassVar[SupplicantState]
    SUPPLICANT_STATE_CONNECTING: _ClassVar[SupplicantState]
    SUPPLICANT_STATE_AUTHENTICATING: _ClassVar[SupplicantState]
    SUPPLICANT_STATE_AUTHENTICATED: _ClassVar[SupplicantState]
    SUPPLICANT_STATE_FAILED: _ClassVar[SupplicantState]
    SUPPLICANT_STATE_HELD: _ClassVar[SupplicantState]
SUPPLICANT_STATE_UNSPECIFIED: SupplicantState
SUPPLICANT_STATE_DISCONNECTED: SupplicantState
SUPPLICANT_STATE_CONNECTING: SupplicantState
SUPPLICANT_STATE_AUTHENTICATING: SupplicantState
SUPPLICANT_STATE_AUTHENTICATED: SupplicantState
SUPPLICANT_STATE_FAILED: SupplicantState
SUPPLICANT_STATE_HELD: SupplicantState

class PNACStatus(_message.Message):
    __slots__ = ("enabled", "state", "last_auth_timestamp", "err")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_AUTH_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ERR_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    state: SupplicantState
    last_auth_timestamp: _timestamp_pb2.Timestamp
    err: _common_pb2.ErrorInfo
    def __init__(self, enabled: _Optional[bool] = ..., state: _Optional[_Union[SupplicantState, str]] = ..., last_auth_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., err: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...
