import datetime

from agent.wire.pb.evecommon import acipherinfo_pb2 as _acipherinfo_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EVE_OPAQUE_OBJECT_CATEGORY(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[EVE_OPAQUE_OBJECT_CATEGORY]
    BASE64: _ClassVar[EVE_OPAQUE_OBJECT_CATEGORY]
    BINARYBLOB: _ClassVar[EVE_OPAQUE_OBJECT_CATEGORY]
    SECRET: _ClassVar[EVE_OPAQUE_OBJECT_CATEGORY]

class EVE_PATCH_ENVELOPE_ACTION(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORE: _ClassVar[EVE_PATCH_ENVELOPE_ACTION]
    ACTIVATE: _ClassVar[EVE_PATCH_ENVELOPE_ACTION]
UNKNOWN: EVE_OPAQUE_OBJECT_CATEGORY
BASE64: EVE_OPAQUE_OBJECT_CATEGORY
BINARYBLOB: EVE_OPAQUE_OBJECT_CATEGORY
SECRET: EVE_OPAQUE_OBJECT_CATEGORY
STORE: EVE_PATCH_ENVELOPE_ACTION
ACTIVATE: EVE_PATCH_ENVELOPE_ACTION

class InlineOpaqueBase64Data(_message.Message):
    __slots__ = ("base64Data", "fileNameToUse", "base64MetaData")
    BASE64DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAMETOUSE_FIELD_NUMBER: _ClassVar[int]
    BASE64METADATA_FIELD_NUMBER: _ClassVar[int]
    base64Data: str
    fileNameToUse: str
    base64MetaData: str
    def __init__(self, base64Data: _Optional[str] = ..., fileNameToUse: _Optional[str] = ..., base64MetaData: _Optional[str] = ...) -> None: ...

class EncryptedInlineOpaqueBase64Data(_message.Message):
    __slots__ = ("cipher_data",)
    CIPHER_DATA_FIELD_NUMBER: _ClassVar[int]
    cipher_data: _acipherinfo_pb2.CipherBlock
    def __init__(self, cipher_data: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ...) -> None: ...

class ExternalOpaqueBinaryBlob(_message.Message):
    __slots__ = ("imageName", "fileNameToUse", "blobMetaData", "imageId")
    IMAGENAME_FIELD_NUMBER: _ClassVar[int]
    FILENAMETOUSE_FIELD_NUMBER: _ClassVar[int]
    BLOBMETADATA_FIELD_NUMBER: _ClassVar[int]
    IMAGEID_FIELD_NUMBER: _ClassVar[int]
    imageName: str
    fileNameToUse: str
    blobMetaData: str
    imageId: str
    def __init__(self, imageName: _Optional[str] = ..., fileNameToUse: _Optional[str] = ..., blobMetaData: _Optional[str] = ..., imageId: _Optional[str] = ...) -> None: ...

class EncryptedExternalOpaqueBinaryBlob(_message.Message):
    __slots__ = ("cipher_data",)
    CIPHER_DATA_FIELD_NUMBER: _ClassVar[int]
    cipher_data: _acipherinfo_pb2.CipherBlock
    def __init__(self, cipher_data: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ...) -> None: ...

class EveBinaryArtifact(_message.Message):
    __slots__ = ("format", "inline", "volumeRef", "encrypted_inline", "encrypted_volumeref", "artifactMetaData", "metadata_cipher_data")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    INLINE_FIELD_NUMBER: _ClassVar[int]
    VOLUMEREF_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_INLINE_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_VOLUMEREF_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTMETADATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_CIPHER_DATA_FIELD_NUMBER: _ClassVar[int]
    format: EVE_OPAQUE_OBJECT_CATEGORY
    inline: InlineOpaqueBase64Data
    volumeRef: ExternalOpaqueBinaryBlob
    encrypted_inline: EncryptedInlineOpaqueBase64Data
    encrypted_volumeref: EncryptedExternalOpaqueBinaryBlob
    artifactMetaData: str
    metadata_cipher_data: _acipherinfo_pb2.CipherBlock
    def __init__(self, format: _Optional[_Union[EVE_OPAQUE_OBJECT_CATEGORY, str]] = ..., inline: _Optional[_Union[InlineOpaqueBase64Data, _Mapping]] = ..., volumeRef: _Optional[_Union[ExternalOpaqueBinaryBlob, _Mapping]] = ..., encrypted_inline: _Optional[_Union[EncryptedInlineOpaqueBase64Data, _Mapping]] = ..., encrypted_volumeref: _Optional[_Union[EncryptedExternalOpaqueBinaryBlob, _Mapping]] = ..., artifactMetaData: _Optional[str] = ..., metadata_cipher_data: _Optional[_Union[_acipherinfo_pb2.CipherBlock, _Mapping]] = ...) -> None: ...

class EvePatchEnvelope(_message.Message):
    __slots__ = ("displayName", "uuid", "version", "action", "artifacts", "appInstIdsAllowed", "createTime")
    DISPLAYNAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    APPINSTIDSALLOWED_FIELD_NUMBER: _ClassVar[int]
    CREATETIME_FIELD_NUMBER: _ClassVar[int]
    displayName: str
    uuid: str
    version: str
    action: EVE_PATCH_ENVELOPE_ACTION
    artifacts: _containers.RepeatedCompositeFieldContainer[EveBinaryArtifact]
    appInstIdsAllowed: _containers.RepeatedScalarFieldContainer[str]
    createTime: _timestamp_pb2.Timestamp
    def __init__(self, displayName: _Optional[str] = ..., uuid: _Optional[str] = ..., version: _Optional[str] = ..., action: _Optional[_Union[EVE_PATCH_ENVELOPE_ACTION, str]] = ..., artifacts: _Optional[_Iterable[_Union[EveBinaryArtifact, _Mapping]]] = ..., appInstIdsAllowed: _Optional[_Iterable[str]] = ..., createTime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
