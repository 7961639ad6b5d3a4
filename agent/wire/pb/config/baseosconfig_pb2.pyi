from agent.wire.pb.config import devcommon_pb2 as _devcommon_pb2
from agent.wire.pb.config import storage_pb2 as _storage_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OSKeyTags(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OSVerDetails(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BaseOSConfig(_message.Message):
    __slots__ = ("uuidandversion", "drives", "activate", "baseOSVersion", "volumeID")
    UUIDANDVERSION_FIELD_NUMBER: _ClassVar[int]
    DRIVES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    BASEOSVERSION_FIELD_NUMBER: _ClassVar[int]
    VOLUMEID_FIELD_NUMBER: _ClassVar[int]
    uuidandversion: _devcommon_pb2.UUIDandVersion
    drives: _containers.RepeatedCompositeFieldContainer[_storage_pb2.Drive]
    activate: bool
    baseOSVersion: str
    volumeID: str
    def __init__(self, uuidandversion: _Optional[_Union[_devcommon_pb2.UUIDandVersion, _Mapping]] = ..., drives: _Optional[_Iterable[_Union[_storage_pb2.Drive, _Mapping]]] = ..., activate: _Optional[bool] = ..., baseOSVersion: _Optional[str] = ..., volumeID: _Optional[str] = ...) -> None: ...

class BaseOS(_message.Message):
    __slots__ = ("content_tree_uuid", "retry_update", "activate", "base_os_version")
    CONTENT_TREE_UUID_FIELD_NUMBER: _ClassVar[int]
    RETRY_UPDATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    BASE_OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    content_tree_uuid: str
    retry_update: _devcommon_pb2.DeviceOpsCmd
    activate: bool
    base_os_version: str
    def __init__(self, content_tree_uuid: _Optional[str] = ..., retry_update: _Optional[_Union[_devcommon_pb2.DeviceOpsCmd, _Mapping]] = ..., activate: _Optional[bool] = ..., base_os_version: _Optional[str] = ...) -> None: ...
