from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class HashAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HASH_ALGORITHM_INVALID: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA256_16BYTES: _ClassVar[HashAlgorithm]
    HASH_ALGORITHM_SHA256_32BYTES: _ClassVar[HashAlgorithm]

class BootOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOOT_ORDER_UNSPECIFIED: _ClassVar[BootOrder]
    BOOT_ORDER_USB: _ClassVar[BootOrder]
    BOOT_ORDER_NOUSB: _ClassVar[BootOrder]
HASH_ALGORITHM_INVALID: HashAlgorithm
HASH_ALGORITHM_SHA256_16BYTES: HashAlgorithm
HASH_ALGORITHM_SHA256_32BYTES: HashAlgorithm
BOOT_ORDER_UNSPECIFIED: BootOrder
BOOT_ORDER_USB: BootOrder
BOOT_ORDER_NOUSB: BootOrder

class DiskDescription(_message.Message):
    __slots__ = ("name", "logical_name", "serial")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_NAME_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    logical_name: str
    serial: str
    def __init__(self, name: _Optional[str] = ..., logical_name: _Optional[str] = ..., serial: _Optional[str] = ...) -> None: ...
