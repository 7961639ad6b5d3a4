"""``TPMT_PUBLIC``/``TPM2B_PUBLIC`` for ECC, RSA and KEYEDHASH (sealed data) objects (EVE's
``ZCert`` metadata ``TPM2_PUBLIC`` is a ``TPM2B_PUBLIC``), and object names."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.wire.tpmwire._codec import (
    Alg,
    Curve,
    TpmWireError,
    _int_bytes,
    _read_with,
    _Reader,
    _tpm2b,
    digest,
)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: TPM_RH_OWNER / TPM_RH_ENDORSEMENT: the qualified names of the hierarchies' primaries' parent.
RH_OWNER = 0x40000001
RH_ENDORSEMENT = 0x4000000B

_CURVES: dict[int, type[ec.EllipticCurve]] = {
    Curve.NIST_P256: ec.SECP256R1,
    Curve.NIST_P384: ec.SECP384R1,
    Curve.NIST_P521: ec.SECP521R1,
}
_CURVE_IDS: dict[str, int] = {cls().name: curve for curve, cls in _CURVES.items()}


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
