"""Quotes: ``TPMS_ATTEST`` (with ``TPMS_QUOTE_INFO``), the ECDSA ``TPMT_SIGNATURE`` that
``TPM2_Quote``/``TPM2_Sign`` return, and quote verification.

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
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from agent.wire.tpmwire._codec import (
    Alg,
    BadSignature,
    NonceMismatch,
    PcrDigestMismatch,
    TpmWireError,
    _int_bytes,
    _read_with,
    _Reader,
    _tpm2b,
)
from agent.wire.tpmwire.pcr import (
    PcrSelection,
    _read_pcr_selection,
    marshal_pcr_selection,
    pcr_digest,
)
from agent.wire.tpmwire.public import PublicKey

#: TPM_GENERATED_VALUE: every TPMS_ATTEST the TPM signs starts with it ("\xffTCG").
TPM_GENERATED = 0xFF544347
#: TPM_ST_ATTEST_QUOTE.
ST_ATTEST_QUOTE = 0x8018


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
