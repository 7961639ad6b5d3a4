from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ACEDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOTH: _ClassVar[ACEDirection]
    INGRESS: _ClassVar[ACEDirection]
    EGRESS: _ClassVar[ACEDirection]
BOTH: ACEDirection
INGRESS: ACEDirection
EGRESS: ACEDirection

class ACEMatch(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ACEAction(_message.Message):
    __slots__ = ("drop", "limit", "limitrate", "limitunit", "limitburst", "portmap", "appPort")
    DROP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    LIMITRATE_FIELD_NUMBER: _ClassVar[int]
    LIMITUNIT_FIELD_NUMBER: _ClassVar[int]
    LIMITBURST_FIELD_NUMBER: _ClassVar[int]
    PORTMAP_FIELD_NUMBER: _ClassVar[int]
    APPPORT_FIELD_NUMBER: _ClassVar[int]
    drop: bool
    limit: bool
    limitrate: int
    limitunit: str
    limitburst: int
    portmap: bool
    appPort: int
    def __init__(self, drop: _Optional[bool] = ..., limit: _Optional[bool] = ..., limitrate: _Optional[int] = ..., limitunit: _Optional[str] = ..., limitburst: _Optional[int] = ..., portmap: _Optional[bool] = ..., appPort: _Optional[int] = ...) -> None: ...

class ACE(_message.Message):
    __slots__ = ("matches", "actions", "name", "id", "dir")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DIR_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[ACEMatch]
    actions: _containers.RepeatedCompositeFieldContainer[ACEAction]
    name: str
    id: int
    dir: ACEDirection
    def __init__(self, matches: _Optional[_Iterable[_Union[ACEMatch, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[ACEAction, _Mapping]]] = ..., name: _Optional[str] = ..., id: _Optional[int] = ..., dir: _Optional[_Union[ACEDirection, str]] = ...) -> None: ...
