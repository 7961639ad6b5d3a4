from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EdgeViewConfig(_message.Message):
    __slots__ = ("token", "disp_cert_pem", "dev_policy", "app_policy", "ext_policy", "generation_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DISP_CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    DEV_POLICY_FIELD_NUMBER: _ClassVar[int]
    APP_POLICY_FIELD_NUMBER: _ClassVar[int]
    EXT_POLICY_FIELD_NUMBER: _ClassVar[int]
    GENERATION_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    disp_cert_pem: _containers.RepeatedScalarFieldContainer[bytes]
    dev_policy: DevDebugAccessPolicy
    app_policy: AppDebugAccessPolicy
    ext_policy: ExternalEndPointPolicy
    generation_id: int
    def __init__(self, token: _Optional[str] = ..., disp_cert_pem: _Optional[_Iterable[bytes]] = ..., dev_policy: _Optional[_Union[DevDebugAccessPolicy, _Mapping]] = ..., app_policy: _Optional[_Union[AppDebugAccessPolicy, _Mapping]] = ..., ext_policy: _Optional[_Union[ExternalEndPointPolicy, _Mapping]] = ..., generation_id: _Optional[int] = ...) -> None: ...

class DevDebugAccessPolicy(_message.Message):
    __slots__ = ("allow_dev",)
    ALLOW_DEV_FIELD_NUMBER: _ClassVar[int]
    allow_dev: bool
    def __init__(self, allow_dev: _Optional[bool] = ...) -> None: ...

class AppDebugAccessPolicy(_message.Message):
    __slots__ = ("allow_app",)
    ALLOW_APP_FIELD_NUMBER: _ClassVar[int]
    allow_app: bool
    def __init__(self, allow_app: _Optional[bool] = ...) -> None: ...

class ExternalEndPointPolicy(_message.Message):
    __slots__ = ("allow_ext",)
    ALLOW_EXT_FIELD_NUMBER: _ClassVar[int]
    allow_ext: bool
    def __init__(self, allow_ext: _Optional[bool] = ...) -> None: ...
