"""What the TPM structure codecs share: the errors, the TPM enums, hashing by algorithm id,
and the bounds-checked reader (every read raises :class:`TpmWireError`, never ``IndexError``
or ``struct.error``) and writer helpers."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from enum import IntEnum, IntFlag
from typing import TypeVar

_T = TypeVar("_T")


class TpmWireError(ValueError):
    """Bytes that are not the TPM structure they claim to be."""


class BadSignature(TpmWireError):
    """A signature that does not verify with the given key."""


class NonceMismatch(TpmWireError):
    """A quote whose extraData is not the nonce the verifier handed out."""


class PcrDigestMismatch(TpmWireError):
    """A quote whose pcrDigest does not match the PCR values reported beside it."""


class Alg(IntEnum):
    """TPM_ALG_ID values used here (Part 2, 6.3)."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    ECSCHNORR = 0x001C
    KDF1_SP800_56A = 0x0020
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CFB = 0x0043


class Curve(IntEnum):
    """TPM_ECC_CURVE values for the NIST curves."""

    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005


class ObjectAttr(IntFlag):
    """TPMA_OBJECT bits (Part 2, 8.3)."""

    FIXED_TPM = 0x00000002
    ST_CLEAR = 0x00000004
    FIXED_PARENT = 0x00000010
    SENSITIVE_DATA_ORIGIN = 0x00000020
    USER_WITH_AUTH = 0x00000040
    ADMIN_WITH_POLICY = 0x00000080
    NO_DA = 0x00000400
    ENCRYPTED_DUPLICATION = 0x00000800
    RESTRICTED = 0x00010000
    DECRYPT = 0x00020000
    SIGN_ENCRYPT = 0x00040000


_HASHLIB: dict[int, str] = {
    Alg.SHA1: "sha1",
    Alg.SHA256: "sha256",
    Alg.SHA384: "sha384",
    Alg.SHA512: "sha512",
}


def digest(alg: int, data: bytes) -> bytes:
    """``data`` hashed with the TPM hash algorithm ``alg``; raises TpmWireError if unknown."""
    name = _HASHLIB.get(alg)
    if name is None:
        raise TpmWireError(f"unsupported hash algorithm 0x{alg:04x}")
    return hashlib.new(name, data).digest()


# --- reading and writing ---------------------------------------------------------------------


class _Reader:
    """A cursor over bytes whose every read is bounds-checked."""

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TpmWireError(f"{what}: expected bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def take(self, size: int, field_name: str) -> bytes:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise TpmWireError(
                f"{self._what}: {field_name} needs {size} bytes at offset {self._pos}, "
                f"only {len(self._data) - self._pos} left"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "big")

    def u32(self, field_name: str) -> int:
        return int.from_bytes(self.take(4, field_name), "big")

    def u64(self, field_name: str) -> int:
        return int.from_bytes(self.take(8, field_name), "big")

    def tpm2b(self, field_name: str, max_size: int = 0xFFFF) -> bytes:
        size = self.u16(f"{field_name} size")
        if size > max_size:
            raise TpmWireError(f"{self._what}: {field_name} is {size} bytes, at most {max_size}")
        return self.take(size, field_name)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise TpmWireError(
                f"{self._what}: {len(self._data) - self._pos} unexpected bytes after the end"
            )


def _tpm2b(data: bytes, field_name: str = "buffer") -> bytes:
    if len(data) > 0xFFFF:
        raise TpmWireError(f"{field_name} is {len(data)} bytes, more than a TPM2B holds")
    return struct.pack(">H", len(data)) + data


def _read_with(data: bytes, what: str, reader_fn: Callable[[_Reader], _T]) -> _T:
    r = _Reader(data, what)
    value = reader_fn(r)
    r.end()
    return value


def _int_bytes(value: int, size: int) -> bytes:
    if value < 0 or value.bit_length() > 8 * size:
        raise TpmWireError(f"integer does not fit in {size} bytes")
    return value.to_bytes(size, "big")
