"""TPM 2.0 structures on the wire, in pure Python: what a quote is made of and how to check one.

The agent's TPM drivers produce quotes and the controller verifies them; both use this module, so
it imports nothing but the standard library and ``cryptography`` (never ``tpm2_pytss``).  It
covers exactly the structures that cross the device-controller boundary or the fake-real driver
boundary (TPM 2.0 Library, Part 2 "Structures", big-endian throughout):

- ``TPMS_ATTEST`` with ``TPMS_QUOTE_INFO`` (EVE's ``ZAttestQuote.attestData``),
- ``TPML_PCR_SELECTION``,
- ``TPMT_SIGNATURE`` for ECDSA (what ``TPM2_Quote``/``TPM2_Sign`` return),
- ``TPMT_PUBLIC``/``TPM2B_PUBLIC`` for ECC, RSA and KEYEDHASH (sealed data) objects (EVE's
  ``ZCert`` metadata ``TPM2_PUBLIC`` is a ``TPM2B_PUBLIC``),
- object names, the ``TPM2_PolicyPCR`` policy digest, the agent's sealed-blob container, and
  the full ECDH point (``TPM2_ECDH_ZGen`` in software) that EVE's key derivation hashes.

How EVE puts a quote on the wire (``pkg/pillar/cmd/tpmmgr/tpmmgr.go`` ``getQuote``):
``attestData`` is the marshalled TPMS_ATTEST (the body of the TPM2B_ATTEST, without its size
prefix) and ``signature`` is the ECDSA signature as DER ``SEQUENCE {r INTEGER, s INTEGER}``
(``asn1.Marshal(struct{R, S *big.Int})``), made with the restricted ECDSA-SHA256 quote key.
Adam (``pkg/server/attestation.go`` ``quoteValidate``, ``apiHandlerv2.go`` ``verifySignature``)
verifies it over SHA-256(attestData) with the public key of the DEVICE_RESTRICTED_SIGNING
certificate, accepting DER and, failing that, raw ``r || s``; it then requires
``type == TPM_ST_ATTEST_QUOTE``, ``extraData == nonce`` byte for byte, and
``pcrDigest == SHA-256(concatenated PCR values in selection order)``.  :func:`verify_quote`
does the same checks.

Every parser checks every length and raises :class:`TpmWireError` (a ``ValueError``) with a
message naming the field; hostile input never escapes as ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, IntFlag
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
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


#: TPM_GENERATED_VALUE: every TPMS_ATTEST the TPM signs starts with it ("\xffTCG").
TPM_GENERATED = 0xFF544347
#: TPM_ST_ATTEST_QUOTE.
ST_ATTEST_QUOTE = 0x8018
#: TPM_CC_PolicyPCR, which goes into the policy digest.
CC_POLICY_PCR = 0x0000017F
#: TPM_RH_OWNER / TPM_RH_ENDORSEMENT: the qualified names of the hierarchies' primaries' parent.
RH_OWNER = 0x40000001
RH_ENDORSEMENT = 0x4000000B
#: Size of pcrSelect a TPM with 24 PCRs uses (PCR_SELECT_MIN), and what go-tpm sends.
PCR_SELECT_SIZE = 3

_DIGEST_SIZES: dict[int, int] = {Alg.SHA1: 20, Alg.SHA256: 32, Alg.SHA384: 48, Alg.SHA512: 64}
_HASHLIB: dict[int, str] = {
    Alg.SHA1: "sha1",
    Alg.SHA256: "sha256",
    Alg.SHA384: "sha384",
    Alg.SHA512: "sha512",
}
_CURVES: dict[int, type[ec.EllipticCurve]] = {
    Curve.NIST_P256: ec.SECP256R1,
    Curve.NIST_P384: ec.SECP384R1,
    Curve.NIST_P521: ec.SECP521R1,
}
_CURVE_IDS: dict[str, int] = {cls().name: curve for curve, cls in _CURVES.items()}
_MAX_SELECTIONS = 16  # HASH_COUNT is a handful; anything past this is hostile
_MAX_SELECT_SIZE = 32  # 256 PCRs


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


# --- TPML_PCR_SELECTION ------------------------------------------------------------------------


@dataclass(frozen=True)
class PcrSelection:
    """One ``TPMS_PCR_SELECTION``: a hash bank and the PCR indexes selected in it."""

    hash_alg: int
    pcrs: tuple[int, ...]
    select_size: int = PCR_SELECT_SIZE

    def __post_init__(self) -> None:
        ordered = tuple(sorted(set(self.pcrs)))
        if ordered and (ordered[0] < 0 or ordered[-1] >= 8 * _MAX_SELECT_SIZE):
            raise TpmWireError(f"PCR index out of range in {self.pcrs}")
        size = max(self.select_size, (ordered[-1] // 8 + 1) if ordered else 0)
        object.__setattr__(self, "pcrs", ordered)
        object.__setattr__(self, "select_size", size)

    def marshal(self) -> bytes:
        bitmap = bytearray(self.select_size)
        for pcr in self.pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        return struct.pack(">HB", self.hash_alg, self.select_size) + bytes(bitmap)

    @classmethod
    def _read(cls, r: _Reader) -> PcrSelection:
        hash_alg = r.u16("pcrSelection hash")
        size = r.u8("sizeofSelect")
        if size > _MAX_SELECT_SIZE:
            raise TpmWireError(f"sizeofSelect {size} is more than {_MAX_SELECT_SIZE}")
        bitmap = r.take(size, "pcrSelect")
        pcrs = tuple(i for i in range(8 * size) if bitmap[i // 8] & (1 << (i % 8)))
        return cls(hash_alg, pcrs, size)


def sha256_selection(pcrs: Iterable[int]) -> tuple[PcrSelection, ...]:
    """The one-bank SHA-256 selection EVE uses for quotes and sealing."""
    return (PcrSelection(Alg.SHA256, tuple(pcrs)),)


def marshal_pcr_selection(selections: Sequence[PcrSelection]) -> bytes:
    """``TPML_PCR_SELECTION``: a count, then each selection."""
    if len(selections) > _MAX_SELECTIONS:
        raise TpmWireError(f"{len(selections)} PCR selections, at most {_MAX_SELECTIONS}")
    return struct.pack(">I", len(selections)) + b"".join(s.marshal() for s in selections)


def _read_pcr_selection(r: _Reader) -> tuple[PcrSelection, ...]:
    count = r.u32("TPML_PCR_SELECTION count")
    if count > _MAX_SELECTIONS:
        raise TpmWireError(f"TPML_PCR_SELECTION claims {count} selections")
    return tuple(PcrSelection._read(r) for _ in range(count))


def unmarshal_pcr_selection(data: bytes) -> tuple[PcrSelection, ...]:
    return _read_with(data, "TPML_PCR_SELECTION", _read_pcr_selection)


def pcr_digest(values: Mapping[int, bytes], selections: Sequence[PcrSelection]) -> bytes:
    """The digest TPM2_Quote and TPM2_PolicyPCR compute: the hash of the selected PCR values
    concatenated in selection order (banks in list order, indexes ascending).

    ``values`` are the values of the one bank selected (the agent only uses SHA-256).  Raises
    TpmWireError when a selected PCR has no value or a value of the wrong size, or when more
    than one bank is selected.
    """
    banks = [s for s in selections if s.pcrs]
    if len(banks) != 1:
        raise TpmWireError(f"expected exactly one PCR bank in the selection, got {len(banks)}")
    bank = banks[0]
    size = _DIGEST_SIZES.get(bank.hash_alg)
    if size is None:
        raise TpmWireError(f"unsupported PCR bank 0x{bank.hash_alg:04x}")
    parts = []
    for pcr in bank.pcrs:
        value = values.get(pcr)
        if value is None:
            raise TpmWireError(f"no value for selected PCR {pcr}")
        if len(value) != size:
            raise TpmWireError(f"PCR {pcr} value is {len(value)} bytes, expected {size}")
        parts.append(bytes(value))
    return digest(bank.hash_alg, b"".join(parts))


def policy_pcr_digest(
    values: Mapping[int, bytes],
    selections: Sequence[PcrSelection],
    *,
    previous: bytes = bytes(32),
) -> bytes:
    """The SHA-256 policy digest after ``TPM2_PolicyPCR(selections)`` with the given values:
    ``SHA-256(previous || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || pcrDigest)`` (Part 3, 23.7).

    This is the ``authPolicy`` of an object sealed to those PCR values.
    """
    if len(previous) != 32:
        raise TpmWireError("previous policy digest must be 32 bytes")
    pcrs = pcr_digest(values, selections)
    body = struct.pack(">I", CC_POLICY_PCR) + marshal_pcr_selection(selections) + pcrs
    return hashlib.sha256(previous + body).digest()


# --- TPMS_ATTEST ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockInfo:
    """``TPMS_CLOCK_INFO``."""

    clock: int = 0
    reset_count: int = 0
    restart_count: int = 0
    safe: bool = True


@dataclass(frozen=True)
class Attest:
    """A ``TPMS_ATTEST`` of type TPM_ST_ATTEST_QUOTE (the only type the agent produces)."""

    qualified_signer: bytes
    extra_data: bytes
    pcr_select: tuple[PcrSelection, ...]
    pcr_digest: bytes
    clock_info: ClockInfo = field(default_factory=ClockInfo)
    firmware_version: int = 0
    magic: int = TPM_GENERATED
    type: int = ST_ATTEST_QUOTE

    def marshal(self) -> bytes:
        if self.type != ST_ATTEST_QUOTE:
            raise TpmWireError(f"only quotes are supported, not attestation type 0x{self.type:x}")
        c = self.clock_info
        return b"".join(
            (
                struct.pack(">IH", self.magic, self.type),
                _tpm2b(self.qualified_signer, "qualifiedSigner"),
                _tpm2b(self.extra_data, "extraData"),
                struct.pack(">QIIB", c.clock, c.reset_count, c.restart_count, int(c.safe)),
                struct.pack(">Q", self.firmware_version),
                marshal_pcr_selection(self.pcr_select),
                _tpm2b(self.pcr_digest, "pcrDigest"),
            )
        )

    @classmethod
    def unmarshal(cls, data: bytes) -> Attest:
        """Parse a marshalled TPMS_ATTEST; it must be a TPM-generated quote."""
        return _read_with(data, "TPMS_ATTEST", cls._read)

    @classmethod
    def _read(cls, r: _Reader) -> Attest:
        magic = r.u32("magic")
        if magic != TPM_GENERATED:
            raise TpmWireError(f"TPMS_ATTEST magic is 0x{magic:08x}, not TPM_GENERATED_VALUE")
        kind = r.u16("type")
        if kind != ST_ATTEST_QUOTE:
            raise TpmWireError(f"TPMS_ATTEST type is 0x{kind:04x}, not TPM_ST_ATTEST_QUOTE")
        signer = r.tpm2b("qualifiedSigner", 2 + 64)
        extra = r.tpm2b("extraData", 2 + 64)
        clock = ClockInfo(
            r.u64("clock"), r.u32("resetCount"), r.u32("restartCount"), r.u8("safe") != 0
        )
        firmware = r.u64("firmwareVersion")
        selection = _read_pcr_selection(r)
        pcrs = r.tpm2b("pcrDigest", 64)
        return cls(signer, extra, selection, pcrs, clock, firmware, magic, kind)


# --- TPMT_SIGNATURE ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EcdsaSignature:
    """A ``TPMT_SIGNATURE`` with sigAlg TPM_ALG_ECDSA."""

    hash_alg: int
    r: int
    s: int

    def marshal(self, size: int = 32) -> bytes:
        """TPMT_SIGNATURE; ``size`` is the curve's byte length (32 for P-256)."""
        return b"".join(
            (
                struct.pack(">HH", Alg.ECDSA, self.hash_alg),
                _tpm2b(_int_bytes(self.r, size), "signatureR"),
                _tpm2b(_int_bytes(self.s, size), "signatureS"),
            )
        )

    @classmethod
    def unmarshal(cls, data: bytes) -> EcdsaSignature:
        return _read_with(data, "TPMT_SIGNATURE", cls._read)

    @classmethod
    def _read(cls, r: _Reader) -> EcdsaSignature:
        alg = r.u16("sigAlg")
        if alg != Alg.ECDSA:
            raise TpmWireError(f"signature algorithm 0x{alg:04x} is not ECDSA")
        hash_alg = r.u16("hash")
        sig_r = r.tpm2b("signatureR", 66)
        sig_s = r.tpm2b("signatureS", 66)
        return cls(hash_alg, int.from_bytes(sig_r, "big"), int.from_bytes(sig_s, "big"))

    @classmethod
    def from_der(cls, der: bytes, hash_alg: int = Alg.SHA256) -> EcdsaSignature:
        try:
            r, s = decode_dss_signature(bytes(der))
        except (ValueError, TypeError) as exc:
            raise TpmWireError(f"not a DER ECDSA signature: {exc}") from None
        return cls(hash_alg, r, s)

    def der(self) -> bytes:
        """DER ``SEQUENCE {r, s}``: the encoding EVE sends in ``ZAttestQuote.signature``."""
        return encode_dss_signature(self.r, self.s)

    def raw(self, size: int = 32) -> bytes:
        """Fixed-size ``r || s``."""
        return _int_bytes(self.r, size) + _int_bytes(self.s, size)


def _int_bytes(value: int, size: int) -> bytes:
    if value < 0 or value.bit_length() > 8 * size:
        raise TpmWireError(f"integer does not fit in {size} bytes")
    return value.to_bytes(size, "big")


# --- TPMT_PUBLIC --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymDef:
    """``TPMT_SYM_DEF_OBJECT``: NULL, or an algorithm with key bits and mode."""

    algorithm: int = Alg.NULL
    key_bits: int = 0
    mode: int = 0


@dataclass(frozen=True)
class Scheme:
    """A signing/key-exchange/KDF scheme: NULL, or an algorithm with a hash; ``extra`` is the
    ECDAA count or the keyed-hash XOR scheme's KDF, unused otherwise."""

    scheme: int = Alg.NULL
    hash_alg: int = Alg.NULL
    extra: int = 0


AES128_CFB = SymDef(Alg.AES, 128, Alg.CFB)
_NO_HASH_SCHEMES = frozenset({Alg.NULL, Alg.RSAES})


@dataclass(frozen=True)
class Public:
    """A ``TPMT_PUBLIC`` for an ECC, RSA or KEYEDHASH object.

    Fields that do not apply to ``type`` keep their defaults.  ``unique`` is the RSA modulus or
    the KEYEDHASH unique digest; ``ecc_point`` is the ECC ``(x, y)``.
    """

    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes = b""
    symmetric: SymDef = SymDef()
    scheme: Scheme = Scheme()
    curve: int = 0
    kdf: Scheme = Scheme()
    key_bits: int = 0
    exponent: int = 0
    unique: bytes = b""
    ecc_point: tuple[bytes, bytes] = (b"", b"")

    # -- encoding

    def marshal(self) -> bytes:
        """The TPMT_PUBLIC (what an object's name is computed over)."""
        out = [
            struct.pack(">HHI", self.type, self.name_alg, self.attributes),
            _tpm2b(self.auth_policy, "authPolicy"),
        ]
        if self.type == Alg.KEYEDHASH:
            out.append(_scheme(self.scheme, keyedhash=True))
            out.append(_tpm2b(self.unique, "unique"))
        elif self.type == Alg.RSA:
            out.append(_sym(self.symmetric))
            out.append(_scheme(self.scheme))
            out.append(struct.pack(">HI", self.key_bits, self.exponent))
            out.append(_tpm2b(self.unique, "unique"))
        elif self.type == Alg.ECC:
            out.append(_sym(self.symmetric))
            out.append(_scheme(self.scheme))
            out.append(struct.pack(">H", self.curve))
            out.append(_scheme(self.kdf))
            out.append(_tpm2b(self.ecc_point[0], "unique.x"))
            out.append(_tpm2b(self.ecc_point[1], "unique.y"))
        else:
            raise TpmWireError(f"unsupported object type 0x{self.type:04x}")
        return b"".join(out)

    def marshal_2b(self) -> bytes:
        """The TPM2B_PUBLIC: EVE's ZCert metadata TPM2_PUBLIC."""
        return _tpm2b(self.marshal(), "TPMT_PUBLIC")

    @classmethod
    def unmarshal(cls, data: bytes) -> Public:
        """Parse a TPMT_PUBLIC."""
        return _read_with(data, "TPMT_PUBLIC", cls._read)

    @classmethod
    def unmarshal_2b(cls, data: bytes) -> Public:
        """Parse a TPM2B_PUBLIC; the size prefix must match the content exactly."""
        r = _Reader(data, "TPM2B_PUBLIC")
        inner = r.tpm2b("publicArea")
        r.end()
        return cls.unmarshal(inner)

    @classmethod
    def _read(cls, r: _Reader) -> Public:
        kind = r.u16("type")
        name_alg = r.u16("nameAlg")
        attributes = r.u32("objectAttributes")
        policy = r.tpm2b("authPolicy", 64)
        if kind == Alg.KEYEDHASH:
            scheme = _read_scheme(r, keyedhash=True)
            unique = r.tpm2b("unique", 64)
            return cls(kind, name_alg, attributes, policy, scheme=scheme, unique=unique)
        if kind == Alg.RSA:
            sym = _read_sym(r)
            scheme = _read_scheme(r)
            key_bits = r.u16("keyBits")
            exponent = r.u32("exponent")
            unique = r.tpm2b("unique", 512)
            return cls(
                kind,
                name_alg,
                attributes,
                policy,
                sym,
                scheme,
                key_bits=key_bits,
                exponent=exponent,
                unique=unique,
            )
        if kind == Alg.ECC:
            sym = _read_sym(r)
            scheme = _read_scheme(r)
            curve = r.u16("curveID")
            kdf = _read_scheme(r)
            x = r.tpm2b("unique.x", 66)
            y = r.tpm2b("unique.y", 66)
            return cls(
                kind, name_alg, attributes, policy, sym, scheme, curve, kdf, ecc_point=(x, y)
            )
        raise TpmWireError(f"unsupported object type 0x{kind:04x}")

    # -- derived values

    def name(self) -> bytes:
        """The object's Name: ``nameAlg || H_nameAlg(TPMT_PUBLIC)``."""
        return struct.pack(">H", self.name_alg) + digest(self.name_alg, self.marshal())

    def public_key(self) -> PublicKey:
        """The ECC or RSA public key; raises TpmWireError for other types or bad points."""
        if self.type == Alg.ECC:
            curve = _CURVES.get(self.curve)
            if curve is None:
                raise TpmWireError(f"unsupported ECC curve 0x{self.curve:04x}")
            x, y = (int.from_bytes(c, "big") for c in self.ecc_point)
            try:
                return ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()
            except ValueError as exc:
                raise TpmWireError(f"ECC public point is invalid: {exc}") from None
        if self.type == Alg.RSA:
            if not self.unique:
                raise TpmWireError("RSA public area has an empty modulus")
            exponent = self.exponent or 65537
            try:
                return rsa.RSAPublicNumbers(
                    exponent, int.from_bytes(self.unique, "big")
                ).public_key()
            except ValueError as exc:
                raise TpmWireError(f"RSA public key is invalid: {exc}") from None
        raise TpmWireError(f"object type 0x{self.type:04x} has no public key")

    def with_key(self, key: PublicKey) -> Public:
        """This template with ``key`` as its unique field (what the TPM returns after create)."""
        if isinstance(key, ec.EllipticCurvePublicKey):
            curve = _CURVE_IDS.get(key.curve.name)
            if curve is None or curve != self.curve:
                raise TpmWireError(f"key curve {key.curve.name} does not match the template")
            nums = key.public_numbers()
            size = (key.curve.key_size + 7) // 8
            return replace(self, ecc_point=(_int_bytes(nums.x, size), _int_bytes(nums.y, size)))
        nums_rsa = key.public_numbers()
        size = (key.key_size + 7) // 8
        exponent = 0 if nums_rsa.e == 65537 else nums_rsa.e
        return replace(self, unique=_int_bytes(nums_rsa.n, size), exponent=exponent)


def _sym(sym: SymDef) -> bytes:
    if sym.algorithm == Alg.NULL:
        return struct.pack(">H", Alg.NULL)
    return struct.pack(">HHH", sym.algorithm, sym.key_bits, sym.mode)


def _read_sym(r: _Reader) -> SymDef:
    alg = r.u16("symmetric.algorithm")
    if alg == Alg.NULL:
        return SymDef()
    return SymDef(alg, r.u16("symmetric.keyBits"), r.u16("symmetric.mode"))


def _scheme(s: Scheme, *, keyedhash: bool = False) -> bytes:
    if s.scheme in _NO_HASH_SCHEMES:
        return struct.pack(">H", s.scheme)
    if s.scheme == Alg.ECDAA or (keyedhash and s.scheme == Alg.XOR):
        return struct.pack(">HHH", s.scheme, s.hash_alg, s.extra)
    return struct.pack(">HH", s.scheme, s.hash_alg)


def _read_scheme(r: _Reader, *, keyedhash: bool = False) -> Scheme:
    alg = r.u16("scheme")
    if alg in _NO_HASH_SCHEMES:
        return Scheme(alg)
    hash_alg = r.u16("scheme.hashAlg")
    if alg == Alg.ECDAA or (keyedhash and alg == Alg.XOR):
        return Scheme(alg, hash_alg, r.u16("scheme.count/kdf"))
    return Scheme(alg, hash_alg)


def qualified_name(parent_qualified_name: bytes, name: bytes) -> bytes:
    """An object's Qualified Name: ``nameAlg || H(parentQN || Name)`` (Part 1, 16).

    For a primary key the parent's qualified name is the hierarchy handle, e.g.
    ``RH_OWNER.to_bytes(4, "big")``.  TPM2_Quote puts the signer's QN in ``qualifiedSigner``.
    """
    if len(name) < 2:
        raise TpmWireError("a Name has at least its 2-byte algorithm")
    alg = int.from_bytes(name[:2], "big")
    return name[:2] + digest(alg, parent_qualified_name + name)


def hierarchy_name(handle: int) -> bytes:
    """The Name of a permanent handle (its 4 bytes)."""
    return struct.pack(">I", handle)


# --- quotes ------------------------------------------------------------------------------------


def verify_quote_signature(attest: bytes, signature: bytes, public_key: PublicKey) -> None:
    """Check ``signature`` over SHA-256(``attest``) as Adam does.

    ECDSA keys: DER ``SEQUENCE {r, s}`` (what EVE sends) or, failing that, raw ``r || s``.
    RSA keys: PKCS#1 v1.5 with SHA-256.  Raises BadSignature.
    """
    if not isinstance(attest, bytes | bytearray) or not isinstance(signature, bytes | bytearray):
        raise BadSignature("attest and signature must be bytes")
    data, sig = bytes(attest), bytes(signature)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            size = (public_key.curve.key_size + 7) // 8
            try:
                decode_dss_signature(sig)
                der = sig
            except ValueError:
                if len(sig) != 2 * size:
                    raise BadSignature(
                        f"ECDSA signature is neither DER nor {2 * size} bytes of r || s"
                    ) from None
                der = encode_dss_signature(
                    int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
                )
            public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise BadSignature(f"unsupported public key type {type(public_key).__name__}")
    except InvalidSignature:
        raise BadSignature("quote signature does not verify with the attestation key") from None


def verify_quote(
    attest: bytes,
    signature: bytes,
    public_key: PublicKey,
    *,
    nonce: bytes,
    pcr_values: Mapping[int, bytes],
) -> Attest:
    """Everything Adam's ``quoteValidate`` checks, in its order; returns the parsed TPMS_ATTEST.

    1. ``signature`` verifies over SHA-256(``attest``) with ``public_key`` (BadSignature);
    2. ``attest`` is a TPM-generated quote (TpmWireError);
    3. its extraData equals ``nonce`` (NonceMismatch);
    4. it selects one SHA-256 bank and its pcrDigest is the digest of ``pcr_values`` (the
       SHA-256 values reported beside the quote) over that selection (PcrDigestMismatch).
    """
    verify_quote_signature(attest, signature, public_key)
    parsed = Attest.unmarshal(attest)
    if not hmac.compare_digest(parsed.extra_data, bytes(nonce)):
        raise NonceMismatch("the quote's extraData is not the nonce")
    banks = [s for s in parsed.pcr_select if s.pcrs]
    if len(banks) != 1 or banks[0].hash_alg != Alg.SHA256:
        raise PcrDigestMismatch("the quote does not select exactly the SHA-256 PCR bank")
    try:
        expected = pcr_digest(pcr_values, parsed.pcr_select)
    except TpmWireError as exc:
        raise PcrDigestMismatch(f"cannot recompute the PCR digest: {exc}") from None
    if not hmac.compare_digest(expected, parsed.pcr_digest):
        raise PcrDigestMismatch("the quote's PCR digest does not match the reported PCR values")
    return parsed


# --- the agent's sealed-blob container -----------------------------------------------------------

SEALED_MAGIC = b"EVSB"
SEALED_VERSION = 1


@dataclass(frozen=True)
class SealedBlob:
    """What :meth:`agent.drivers.tpm.Tpm.seal` returns, marshalled as::

        "EVSB" | u16 version (1) | TPML_PCR_SELECTION | TPM2B_PUBLIC | TPM2B_PRIVATE

    ``public`` is the sealed data object's TPMT_PUBLIC (a KEYEDHASH object whose authPolicy is
    the PolicyPCR digest), ``private`` the TPM2B_PRIVATE body the TPM returned from
    ``TPM2_Create`` under the SRK (opaque, encrypted by the TPM), ``pcrs`` the selection the
    policy covers.  All integers big-endian; nothing may follow the private part.
    """

    pcrs: tuple[PcrSelection, ...]
    public: bytes
    private: bytes

    def marshal(self) -> bytes:
        return b"".join(
            (
                SEALED_MAGIC,
                struct.pack(">H", SEALED_VERSION),
                marshal_pcr_selection(self.pcrs),
                _tpm2b(self.public, "public"),
                _tpm2b(self.private, "private"),
            )
        )

    @classmethod
    def unmarshal(cls, data: bytes) -> SealedBlob:
        return _read_with(data, "sealed blob", cls._read)

    @classmethod
    def _read(cls, r: _Reader) -> SealedBlob:
        if r.take(4, "magic") != SEALED_MAGIC:
            raise TpmWireError("sealed blob: bad magic (not made by this agent's seal)")
        version = r.u16("version")
        if version != SEALED_VERSION:
            raise TpmWireError(f"sealed blob: unknown version {version}")
        pcrs = _read_pcr_selection(r)
        public = r.tpm2b("public")
        Public.unmarshal(public)  # reject garbage before it reaches a TPM
        private = r.tpm2b("private")
        return cls(pcrs, public, private)

    @property
    def pcr_indexes(self) -> tuple[int, ...]:
        return tuple(sorted({p for s in self.pcrs for p in s.pcrs}))
