from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FsUsedMetric(_message.Message):
    __slots__ = ("used_mb", "allocated_mb")
    USED_MB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_MB_FIELD_NUMBER: _ClassVar[int]
    used_mb: float
    allocated_mb: float
    def __init__(self, used_mb: _Optional[float] = ..., allocated_mb: _Optional[float] = ...) -> None: ...

class NestedAppRuntimeDiskMetric(_message.Message):
    __slots__ = ("uuid", "total_mb", "used_mb", "allocated_mb", "dependent_space_mb")
    class DependentSpaceMbEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FsUsedMetric
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FsUsedMetric, _Mapping]] = ...) -> None: ...
    UUID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MB_FIELD_NUMBER: _ClassVar[int]
    USED_MB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_MB_FIELD_NUMBER: _ClassVar[int]
    DEPENDENT_SPACE_MB_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    total_mb: float
    used_mb: float
    allocated_mb: float
    dependent_space_mb: _containers.MessageMap[str, FsUsedMetric]
    def __init__(self, uuid: _Optional[str] = ..., total_mb: _Optional[float] = ..., used_mb: _Optional[float] = ..., allocated_mb: _Optional[float] = ..., dependent_space_mb: _Optional[_Mapping[str, FsUsedMetric]] = ...) -> None: ...
