import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_NOTICE: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]

class Entity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTITY_UNSPECIFIED: _ClassVar[Entity]
    ENTITY_BASE_OS: _ClassVar[Entity]
    ENTITY_SYSTEM_ADAPTER: _ClassVar[Entity]
    ENTITY_VAULT: _ClassVar[Entity]
    ENTITY_ATTESTATION: _ClassVar[Entity]
    ENTITY_APP_INSTANCE: _ClassVar[Entity]
    ENTITY_PORT: _ClassVar[Entity]
    ENTITY_NETWORK: _ClassVar[Entity]
    ENTITY_NETWORK_INSTANCE: _ClassVar[Entity]
    ENTITY_CONTENT_TREE: _ClassVar[Entity]
    ENTITY_CONTENT_BLOB: _ClassVar[Entity]
    ENTITY_VOLUME: _ClassVar[Entity]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_NOTICE: Severity
SEVERITY_WARNING: Severity
SEVERITY_ERROR: Severity
ENTITY_UNSPECIFIED: Entity
ENTITY_BASE_OS: Entity
ENTITY_SYSTEM_ADAPTER: Entity
ENTITY_VAULT: Entity
ENTITY_ATTESTATION: Entity
ENTITY_APP_INSTANCE: Entity
ENTITY_PORT: Entity
ENTITY_NETWORK: Entity
ENTITY_NETWORK_INSTANCE: Entity
ENTITY_CONTENT_TREE: Entity
ENTITY_CONTENT_BLOB: Entity
ENTITY_VOLUME: Entity

class ErrorInfo(_message.Message):
    __slots__ = ("description", "timestamp", "severity", "entities", "retry_condition")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    RETRY_CONDITION_FIELD_NUMBER: _ClassVar[int]
    description: str
    timestamp: _timestamp_pb2.Timestamp
    severity: Severity
    entities: _containers.RepeatedCompositeFieldContainer[DeviceEntity]
    retry_condition: str
    def __init__(self, description: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity: _Optional[_Union[Severity, str]] = ..., entities: _Optional[_Iterable[_Union[DeviceEntity, _Mapping]]] = ..., retry_condition: _Optional[str] = ...) -> None: ...

class DeviceEntity(_message.Message):
    __slots__ = ("entity", "entity_id", "entity_name")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_NAME_FIELD_NUMBER: _ClassVar[int]
    entity: Entity
    entity_id: str
    entity_name: str
    def __init__(self, entity: _Optional[_Union[Entity, str]] = ..., entity_id: _Optional[str] = ..., entity_name: _Optional[str] = ...) -> None: ...
