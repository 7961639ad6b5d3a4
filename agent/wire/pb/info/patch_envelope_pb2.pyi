from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EVE_PATCH_ENVELOPE_STATE(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PATCH_UNKOWN: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
    PATCH_ERROR: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
    PATCH_RECEIVED: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
    PATCH_DOWNLOADING: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
    PATCH_DOWNLOADED: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
    PATCH_READY: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
    PATCH_ACTIVE: _ClassVar[EVE_PATCH_ENVELOPE_STATE]
PATCH_UNKOWN: EVE_PATCH_ENVELOPE_STATE
PATCH_ERROR: EVE_PATCH_ENVELOPE_STATE
PATCH_RECEIVED: EVE_PATCH_ENVELOPE_STATE
PATCH_DOWNLOADING: EVE_PATCH_ENVELOPE_STATE
PATCH_DOWNLOADED: EVE_PATCH_ENVELOPE_STATE
PATCH_READY: EVE_PATCH_ENVELOPE_STATE
PATCH_ACTIVE: EVE_PATCH_ENVELOPE_STATE

class ZInfoPatchEnvelope(_message.Message):
    __slots__ = ("name", "id", "version", "state", "size", "errors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    version: str
    state: EVE_PATCH_ENVELOPE_STATE
    size: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[EVE_PATCH_ENVELOPE_STATE, str]] = ..., size: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
