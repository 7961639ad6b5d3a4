"""TPM 2.0 structure codecs: round trips, known answers, hostile bytes, quote verification."""

from __future__ import annotations

import contextlib
import hashlib
import random
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from agent.drivers.tpm import SEALED_TEMPLATE, TEMPLATES, KeyRole
from agent.wire import ecdh, tpmwire
from agent.wire.tpmwire import (
    Alg,
    Attest,
    BadSignature,
    ClockInfo,
    EcdsaSignature,
    NonceMismatch,
    PcrDigestMismatch,
    PcrSelection,
    Public,
    SealedBlob,
    TpmWireError,
)

QUOTE_SELECTION = tpmwire.sha256_selection(range(16))
ZERO_PCRS = {i: bytes(32) for i in range(24)}


def _attest(nonce: bytes = b"nonce-123456", values: dict[int, bytes] = ZERO_PCRS) -> Attest:
    return Attest(
        qualified_signer=b"\x00\x0b" + bytes(range(32)),
        extra_data=nonce,
        pcr_select=QUOTE_SELECTION,
        pcr_digest=tpmwire.pcr_digest(values, QUOTE_SELECTION),
        clock_info=ClockInfo(clock=123456, reset_count=7, restart_count=1, safe=True),
        firmware_version=0x0102030405060708,
    )


def _ecc_public() -> Public:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return TEMPLATES[KeyRole.AK].with_key(key)


def _every_prefix_fails(data: bytes, parse: Callable[[bytes], object]) -> None:
    for end in range(len(data)):
        with pytest.raises(TpmWireError):
            parse(data[:end])
    with pytest.raises(TpmWireError):
        parse(data + b"\x00")


# --- PCR selections and digests ---------------------------------------------------------------


def test_pcr_selection_known_bytes() -> None:
    assert tpmwire.marshal_pcr_selection(QUOTE_SELECTION) == bytes.fromhex("00000001000b03ffff00")
    seal = tpmwire.sha256_selection((0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14))
    assert tpmwire.marshal_pcr_selection(seal) == bytes.fromhex("00000001000b03df7f00")


def test_pcr_selection_round_trip_and_normalisation() -> None:
    sel = (PcrSelection(Alg.SHA256, (23, 0, 7, 7)), PcrSelection(Alg.SHA1, ()))
    assert sel[0].pcrs == (0, 7, 23)
    parsed = tpmwire.unmarshal_pcr_selection(tpmwire.marshal_pcr_selection(sel))
    assert parsed == sel
    wide = PcrSelection(Alg.SHA256, (30,))
    assert wide.select_size == 4


def test_pcr_selection_hostile() -> None:
    good = tpmwire.marshal_pcr_selection(QUOTE_SELECTION)
    _every_prefix_fails(good, tpmwire.unmarshal_pcr_selection)
    with pytest.raises(TpmWireError, match="claims"):
        tpmwire.unmarshal_pcr_selection(struct.pack(">I", 2**32 - 1))
    with pytest.raises(TpmWireError, match="sizeofSelect"):
        tpmwire.unmarshal_pcr_selection(bytes.fromhex("00000001000bff") + bytes(255))
    with pytest.raises(TpmWireError):
        PcrSelection(Alg.SHA256, (-1,))


def test_pcr_digest() -> None:
    assert tpmwire.pcr_digest(ZERO_PCRS, QUOTE_SELECTION) == hashlib.sha256(bytes(512)).digest()
    values = {i: bytes([i]) * 32 for i in range(24)}
    sel = tpmwire.sha256_selection((7, 0))
    assert tpmwire.pcr_digest(values, sel) == hashlib.sha256(values[0] + values[7]).digest()
    with pytest.raises(TpmWireError, match="no value for selected PCR 15"):
        tpmwire.pcr_digest({i: bytes(32) for i in range(15)}, QUOTE_SELECTION)
    with pytest.raises(TpmWireError, match="expected 32"):
        tpmwire.pcr_digest({**ZERO_PCRS, 3: bytes(20)}, QUOTE_SELECTION)
    two_banks = (*QUOTE_SELECTION, PcrSelection(Alg.SHA1, (0,)))
    with pytest.raises(TpmWireError, match="exactly one PCR bank"):
        tpmwire.pcr_digest(ZERO_PCRS, two_banks)


def test_policy_pcr_digest_matches_a_real_tpm() -> None:
    """Known answer: TPM2_PolicyGetDigest of a swtpm trial session after PolicyPCR over SHA-256
    PCRs 0-4,6,7 all zero."""
    sel = tpmwire.sha256_selection((0, 1, 2, 3, 4, 6, 7))
    expected = "60006f998f510089c2196373158d2289c202688be9c31141d423d64a9532a004"
    assert tpmwire.policy_pcr_digest(ZERO_PCRS, sel).hex() == expected
    with pytest.raises(TpmWireError):
        tpmwire.policy_pcr_digest(ZERO_PCRS, sel, previous=b"short")


# --- TPMS_ATTEST -----------------------------------------------------------------------------


def test_attest_round_trip_and_layout() -> None:
    attest = _attest()
    data = attest.marshal()
    assert data[:6] == bytes.fromhex("ff5443478018")  # TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE
    assert Attest.unmarshal(data) == attest


def test_attest_hostile() -> None:
    data = _attest().marshal()
    _every_prefix_fails(data, Attest.unmarshal)
    with pytest.raises(TpmWireError, match="magic"):
        Attest.unmarshal(b"\x00" + data[1:])
    with pytest.raises(TpmWireError, match="not TPM_ST_ATTEST_QUOTE"):
        Attest.unmarshal(data[:4] + b"\x80\x17" + data[6:])
    with pytest.raises(TpmWireError, match="qualifiedSigner"):
        Attest.unmarshal(data[:6] + b"\xff\xff" + data[8:])
    with pytest.raises(TpmWireError, match="expected bytes"):
        Attest.unmarshal("text")  # type: ignore[arg-type]
    with pytest.raises(TpmWireError, match="only quotes"):
        Attest(b"", b"", (), b"", type=0x8017).marshal()


# --- TPMT_SIGNATURE ---------------------------------------------------------------------------


def test_ecdsa_signature_encodings() -> None:
    sig = EcdsaSignature(Alg.SHA256, r=5, s=2**255 + 1)
    data = sig.marshal()
    assert data[:4] == bytes.fromhex("0018000b")
    assert EcdsaSignature.unmarshal(data) == sig
    assert decode_dss_signature(sig.der()) == (5, 2**255 + 1)
    assert EcdsaSignature.from_der(sig.der()) == sig
    assert sig.raw() == (5).to_bytes(32, "big") + (2**255 + 1).to_bytes(32, "big")
    _every_prefix_fails(data, EcdsaSignature.unmarshal)
    with pytest.raises(TpmWireError, match="not ECDSA"):
        EcdsaSignature.unmarshal(b"\x00\x14" + data[2:])
    with pytest.raises(TpmWireError, match="DER"):
        EcdsaSignature.from_der(b"\x30\x00garbage")
    with pytest.raises(TpmWireError, match="does not fit"):
        EcdsaSignature(Alg.SHA256, 2**256, 1).raw()


# --- TPMT_PUBLIC ------------------------------------------------------------------------------


def test_public_round_trips_for_every_template() -> None:
    for role, template in TEMPLATES.items():
        assert Public.unmarshal(template.marshal()) == template, role
        assert Public.unmarshal_2b(template.marshal_2b()) == template, role
    assert Public.unmarshal(SEALED_TEMPLATE.marshal()) == SEALED_TEMPLATE


def test_public_keys_and_names() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    area = TEMPLATES[KeyRole.DEVICE].with_key(ec_key)
    assert area.public_key().public_numbers() == ec_key.public_numbers()
    assert area.name() == b"\x00\x0b" + hashlib.sha256(area.marshal()).digest()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ek = TEMPLATES[KeyRole.EK].with_key(rsa_key)
    assert ek.exponent == 0  # the TPM's encoding of the default exponent
    assert Public.unmarshal_2b(ek.marshal_2b()).public_key().public_numbers() == (
        rsa_key.public_numbers()
    )
    with pytest.raises(TpmWireError, match="does not match"):
        TEMPLATES[KeyRole.AK].with_key(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(TpmWireError, match="no public key"):
        SEALED_TEMPLATE.public_key()
    qn = tpmwire.qualified_name(tpmwire.hierarchy_name(tpmwire.RH_OWNER), area.name())
    assert qn == b"\x00\x0b" + hashlib.sha256(b"\x40\x00\x00\x01" + area.name()).digest()


def test_public_hostile() -> None:
    data = _ecc_public().marshal()
    _every_prefix_fails(data, Public.unmarshal)
    _every_prefix_fails(_ecc_public().marshal_2b(), Public.unmarshal_2b)
    with pytest.raises(TpmWireError, match="unsupported object type"):
        Public.unmarshal(b"\x00\x25" + data[2:])
    off_curve = tpmwire.Public(
        Alg.ECC, Alg.SHA256, 0, curve=tpmwire.Curve.NIST_P256, ecc_point=(b"\x01", b"\x02")
    )
    with pytest.raises(TpmWireError, match="invalid"):
        Public.unmarshal(off_curve.marshal()).public_key()
    unknown_curve = tpmwire.Public(Alg.ECC, Alg.SHA256, 0, curve=0x0010)
    with pytest.raises(TpmWireError, match="curve"):
        unknown_curve.public_key()
    with pytest.raises(TpmWireError, match="hash algorithm"):
        tpmwire.Public(Alg.ECC, 0x0099, 0, curve=3).name()
    with pytest.raises(TpmWireError, match="empty modulus"):
        tpmwire.Public(Alg.RSA, Alg.SHA256, 0).public_key()


# --- hostile bytes, at random -------------------------------------------------------------------


PARSERS: list[Callable[[bytes], object]] = [
    Attest.unmarshal,
    EcdsaSignature.unmarshal,
    Public.unmarshal,
    Public.unmarshal_2b,
    SealedBlob.unmarshal,
    tpmwire.unmarshal_pcr_selection,
]


@pytest.mark.parametrize("parse", PARSERS, ids=lambda p: p.__qualname__)
def test_random_and_mutated_bytes_only_raise_tpm_wire_error(
    parse: Callable[[bytes], object],
) -> None:
    rng = random.Random(20240125)
    samples = [
        _attest().marshal(),
        EcdsaSignature(Alg.SHA256, 1, 2).marshal(),
        _ecc_public().marshal(),
        _ecc_public().marshal_2b(),
        SealedBlob(QUOTE_SELECTION, SEALED_TEMPLATE.marshal(), b"\x01" * 40).marshal(),
        tpmwire.marshal_pcr_selection(QUOTE_SELECTION),
    ]
    for _ in range(1500):
        if rng.random() < 0.3:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            mutated = bytearray(rng.choice(samples))
            for _ in range(rng.randrange(1, 4)):
                if mutated:
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated[: rng.randrange(len(mutated) + 1)])
        with contextlib.suppress(TpmWireError):  # anything else fails the test
            parse(data)


# --- quotes -------------------------------------------------------------------------------------


def _signed(attest: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.sign(attest, ec.ECDSA(hashes.SHA256()))


def test_verify_quote_accepts_what_eve_sends_and_raw_signatures() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    attest = _attest().marshal()
    der = _signed(attest, key)
    parsed = tpmwire.verify_quote(
        attest, der, key.public_key(), nonce=b"nonce-123456", pcr_values=ZERO_PCRS
    )
    assert parsed.extra_data == b"nonce-123456"
    raw = EcdsaSignature.from_der(der).raw()  # Adam falls back to r || s too
    tpmwire.verify_quote_signature(attest, raw, key.public_key())


def test_verify_quote_failures_are_typed() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    attest = _attest().marshal()
    der = _signed(attest, key)
    public = key.public_key()
    with pytest.raises(NonceMismatch):
        tpmwire.verify_quote(attest, der, public, nonce=b"other-nonce!", pcr_values=ZERO_PCRS)
    with pytest.raises(PcrDigestMismatch):
        tpmwire.verify_quote(
            attest, der, public, nonce=b"nonce-123456", pcr_values={**ZERO_PCRS, 0: b"\1" * 32}
        )
    with pytest.raises(PcrDigestMismatch, match="cannot recompute"):
        tpmwire.verify_quote(attest, der, public, nonce=b"nonce-123456", pcr_values={})
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(BadSignature, match="does not verify"):
        tpmwire.verify_quote(attest, der, other, nonce=b"nonce-123456", pcr_values=ZERO_PCRS)
    for garbage in (b"", b"\x30", bytes(63), bytes(65)):
        with pytest.raises(BadSignature):
            tpmwire.verify_quote_signature(attest, garbage, public)
    with pytest.raises(BadSignature):
        tpmwire.verify_quote_signature(attest, None, public)  # type: ignore[arg-type]
    sha1_bank = Attest(
        b"", b"nonce-123456", (PcrSelection(Alg.SHA1, (0,)),), hashlib.sha1(bytes(20)).digest()
    ).marshal()
    with pytest.raises(PcrDigestMismatch, match="SHA-256"):
        tpmwire.verify_quote(
            sha1_bank,
            _signed(sha1_bank, key),
            public,
            nonce=b"nonce-123456",
            pcr_values={0: bytes(20)},
        )
    not_a_quote = b"not a TPMS_ATTEST"
    with pytest.raises(TpmWireError):
        tpmwire.verify_quote(
            not_a_quote, _signed(not_a_quote, key), public, nonce=b"", pcr_values={}
        )


def test_verify_quote_signature_with_rsa() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attest = _attest().marshal()
    sig = key.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    tpmwire.verify_quote_signature(attest, sig, key.public_key())
    with pytest.raises(BadSignature):
        tpmwire.verify_quote_signature(attest + b"x", sig, key.public_key())


# --- sealed blobs and ECDH ------------------------------------------------------------------------


def test_sealed_blob_round_trip_and_hostile() -> None:
    blob = SealedBlob(QUOTE_SELECTION, SEALED_TEMPLATE.marshal(), b"\x02" * 48)
    data = blob.marshal()
    assert data.startswith(b"EVSB\x00\x01")
    assert SealedBlob.unmarshal(data) == blob
    assert blob.pcr_indexes == tuple(range(16))
    _every_prefix_fails(data, SealedBlob.unmarshal)
    with pytest.raises(TpmWireError, match="magic"):
        SealedBlob.unmarshal(b"XXXX" + data[4:])
    with pytest.raises(TpmWireError, match="version"):
        SealedBlob.unmarshal(data[:4] + b"\x00\x02" + data[6:])
    junk_public = SealedBlob(QUOTE_SELECTION, b"\x00\x08junk", b"").marshal()
    with pytest.raises(TpmWireError):
        SealedBlob.unmarshal(junk_public)


def test_ecdh_shared_point_and_kdf() -> None:
    a = ec.generate_private_key(ec.SECP256R1())
    b = ec.generate_private_key(ec.SECP256R1())
    point = ecdh.shared_point(a, b.public_key())
    assert point == ecdh.shared_point(b, a.public_key())
    ec.EllipticCurvePublicNumbers(*point, ec.SECP256R1()).public_key()  # on the curve
    x, y = point
    assert (
        ecdh.point_key(point)
        == hashlib.sha256(x.to_bytes(32, "big") + y.to_bytes(32, "big")).digest()
    )
    # d * Q with Q = G: the peer's public key itself
    assert ecdh.shared_point(a, ec.derive_private_key(1, ec.SECP256R1()).public_key()) == (
        a.public_key().public_numbers().x,
        a.public_key().public_numbers().y,
    )
    with pytest.raises(ValueError, match="P-256"):
        ecdh.shared_point(a, ec.generate_private_key(ec.SECP384R1()).public_key())
