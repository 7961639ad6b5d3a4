# SPDX-License-Identifier: Apache-2.0
"""The vault key: sealing to PCRs, the escrow wrap, key derivation (FakeTpm)."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import MutableMapping
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB  # EVE uses CFB; it is "decrepit" here
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from agent.drivers.tpm import DEFAULT_SEAL_PCRS, KeyRole, TpmPolicyError
from agent.drivers.tpm_fake import FakeTpm
from agent.vault import keys
from agent.vault.keys import EscrowError, SealedKey, SealedKeyError, SealedKeyFile
from agent.wire.pb.attest import attest_pb2


def _tpm(state: MutableMapping[str, bytes] | None = None) -> FakeTpm:
    tpm = FakeTpm(state)
    tpm.provision()
    return tpm


def _extend(tpm: FakeTpm, index: int, what: bytes = b"new boot component") -> None:
    tpm.extend_pcr(index, hashlib.sha256(what).digest())


def test_new_vault_key_is_random_32_bytes() -> None:
    tpm = _tpm()
    a, b = keys.new_vault_key(tpm), keys.new_vault_key(tpm)
    assert len(a) == len(b) == keys.VAULT_KEY_SIZE
    assert a != b
    assert len(keys.new_vault_key(None)) == 32


def test_seal_unseal_roundtrip_records_pcr_values() -> None:
    tpm = _tpm()
    key = keys.new_vault_key(tpm)
    sealed = keys.seal_key(tpm, key)
    assert sealed.pcrs == DEFAULT_SEAL_PCRS
    assert sealed.pcr_values == tpm.read_pcrs(DEFAULT_SEAL_PCRS)
    assert sealed.digest == hashlib.sha256(key).digest()
    assert keys.unseal_key(tpm, sealed) == key
    assert keys.changed_pcrs(tpm, sealed) == ()


def test_unseal_after_pcr_extend_fails_and_names_the_pcr() -> None:
    tpm = _tpm()
    sealed = keys.seal_key(tpm, keys.new_vault_key(tpm))
    _extend(tpm, 8)
    with pytest.raises(TpmPolicyError):
        keys.unseal_key(tpm, sealed)
    assert keys.changed_pcrs(tpm, sealed) == (8,)


def test_pcr_outside_the_policy_does_not_matter() -> None:
    tpm = _tpm()
    key = keys.new_vault_key(tpm)
    sealed = keys.seal_key(tpm, key, (0, 1, 2))
    _extend(tpm, 8)
    assert keys.unseal_key(tpm, sealed) == key


def test_sealed_record_roundtrip_and_file(tmp_path: Path) -> None:
    tpm = _tpm()
    key = keys.new_vault_key(tpm)
    sealed = keys.seal_key(tpm, key)
    assert SealedKey.from_bytes(sealed.to_bytes()) == sealed
    store = SealedKeyFile(tmp_path / "status" / "vault" / "sealed-key.json")
    assert store.load() is None
    store.save(sealed)
    assert store.load() == sealed
    assert keys.unseal_key(tpm, store.load() or sealed) == key
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": 2}',
        b'{"format": 1, "blob": "!!", "pcrs": [0], "pcr_values": {}, "digest": ""}',
        b'{"format": 1, "blob": "AAAA", "pcrs": [], "pcr_values": {}, "digest": "00"}',
    ],
)
def test_damaged_sealed_record_is_refused(raw: bytes) -> None:
    with pytest.raises(SealedKeyError):
        SealedKey.from_bytes(raw)


def test_unsealed_secret_must_match_recorded_digest() -> None:
    tpm = _tpm()
    sealed = keys.seal_key(tpm, keys.new_vault_key(tpm))
    forged = SealedKey(sealed.blob, sealed.pcrs, sealed.pcr_values, digest=bytes(32))
    with pytest.raises(keys.VaultKeyError):
        keys.unseal_key(tpm, forged)


@pytest.mark.parametrize(
    ("pcrs", "ok"),
    [
        ((0, 1, 2), True),
        ((14, 0, 7, 7), True),
        ((1, 2), False),  # no PCR 0
        ((0, 5), False),  # PCR 5 is the GPT
        ((0, 24), False),
        ((), False),
    ],
)
def test_seal_pcr_rules(pcrs: tuple[int, ...], ok: bool) -> None:
    if ok:
        assert keys.check_seal_pcrs(pcrs) == tuple(sorted(set(pcrs)))
    else:
        with pytest.raises(ValueError):
            keys.check_seal_pcrs(pcrs)


# --- escrow -------------------------------------------------------------------------------------


def test_escrow_roundtrip_and_format() -> None:
    tpm = _tpm()
    key = keys.new_vault_key(tpm)
    blob = keys.escrow_wrap(tpm, key)
    data = attest_pb2.AttestVolumeKeyData()
    data.ParseFromString(blob)
    assert data.version == attest_pb2.ATTEST_VOLUME_KEY_VERSION_V1
    assert data.digest_sha256 == hashlib.sha256(key).digest()
    # EVE's AESGCMEncrypt layout: be32 nonce size, nonce, ciphertext || 16-byte tag
    (nonce_size,) = struct.unpack(">I", data.encrypted_key[:4])
    assert nonce_size == 12
    assert len(data.encrypted_key) == 4 + 12 + 32 + 16
    assert key not in blob
    assert keys.escrow_unwrap(tpm, blob) == key


def test_escrow_survives_pcr_changes_and_power_cycles() -> None:
    state: dict[str, bytes] = {}
    tpm = _tpm(state)
    key = keys.new_vault_key(tpm)
    blob = keys.escrow_wrap(tpm, key)
    rebooted = _tpm(state)
    _extend(rebooted, 0)
    assert keys.escrow_unwrap(rebooted, blob) == key


def test_escrow_wrap_key_is_the_device_key_ecdh() -> None:
    """The wrap key is SHA-256(x||y) of ZGen(ECDH key, device key): only the TPM can make it."""
    tpm = _tpm()
    device = tpm.public_key(KeyRole.DEVICE)
    assert isinstance(device, ec.EllipticCurvePublicKey)
    wrap = keys.point_key(tpm.ecdh_shared_point(device))
    key = keys.new_vault_key(tpm)
    data = attest_pb2.AttestVolumeKeyData()
    data.ParseFromString(keys.escrow_wrap(tpm, key))
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = data.encrypted_key
    assert AESGCM(wrap).decrypt(raw[4:16], raw[16:], None) == key


def test_escrow_from_another_tpm_is_refused() -> None:
    mine, other = _tpm(), _tpm()
    blob = keys.escrow_wrap(other, keys.new_vault_key(other))
    with pytest.raises(EscrowError, match="another device"):
        keys.escrow_unwrap(mine, blob)


def test_escrow_bound_to_its_peer_key() -> None:
    tpm = _tpm()
    blob = keys.escrow_wrap(tpm, keys.new_vault_key(tpm))
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(EscrowError):
        keys.escrow_unwrap(tpm, blob, peer=stranger)
    blob2 = keys.escrow_wrap(tpm, b"k" * 32, peer=stranger)
    assert keys.escrow_unwrap(tpm, blob2, peer=stranger) == b"k" * 32
    with pytest.raises(EscrowError):
        keys.escrow_unwrap(tpm, blob2)


def _mutate(blob: bytes, **fields: object) -> bytes:
    data = attest_pb2.AttestVolumeKeyData()
    data.ParseFromString(blob)
    for name, value in fields.items():
        setattr(data, name, value)
    return data.SerializeToString()


def test_tampered_escrow_blobs_are_refused() -> None:
    tpm = _tpm()
    key = keys.new_vault_key(tpm)
    blob = keys.escrow_wrap(tpm, key)
    data = attest_pb2.AttestVolumeKeyData()
    data.ParseFromString(blob)
    enc = bytes(data.encrypted_key)
    flipped = enc[:20] + bytes([enc[20] ^ 1]) + enc[21:]
    cases = {
        "flipped ciphertext bit": _mutate(blob, encrypted_key=flipped),
        "truncated": _mutate(blob, encrypted_key=enc[:-1]),
        "bad nonce size": _mutate(blob, encrypted_key=struct.pack(">I", 99) + enc[4:]),
        "tiny": _mutate(blob, encrypted_key=b"\x00\x00"),
        "empty key": _mutate(blob, encrypted_key=b""),
        "other digest": _mutate(blob, digest_sha256=hashlib.sha256(b"x").digest()),
        "short digest": _mutate(blob, digest_sha256=b"\x01" * 8),
        "unknown version": _mutate(blob, version=7),
        "garbage": b"\xff\xff\xff\xff",
    }
    for name, bad in cases.items():
        with pytest.raises(EscrowError):
            keys.escrow_unwrap(tpm, bad)
            pytest.fail(f"{name} was accepted")


def test_legacy_cfb_escrow_is_accepted_and_digest_checked() -> None:
    """ATTEST_VOLUME_KEY_VERSION_LEGACY: AES-256-CFB with a zero IV under the same wrap key."""
    tpm = _tpm()
    key = keys.new_vault_key(tpm)
    device = tpm.public_key(KeyRole.DEVICE)
    assert isinstance(device, ec.EllipticCurvePublicKey)
    wrap = keys.point_key(tpm.ecdh_shared_point(device))
    enc = Cipher(algorithms.AES(wrap), CFB(bytes(16))).encryptor()
    legacy = attest_pb2.AttestVolumeKeyData(
        encrypted_key=enc.update(key) + enc.finalize(),
        digest_sha256=hashlib.sha256(key).digest(),
        version=attest_pb2.ATTEST_VOLUME_KEY_VERSION_LEGACY,
    ).SerializeToString()
    assert keys.escrow_unwrap(tpm, legacy) == key
    tampered = _mutate(legacy, encrypted_key=bytes(32))
    with pytest.raises(EscrowError, match="digest"):
        keys.escrow_unwrap(tpm, tampered)


# --- derivation ---------------------------------------------------------------------------------


def test_derive_is_stable_and_separated_by_label_and_purpose() -> None:
    key = bytes(range(32))
    a = keys.derive(key, "app", "luks/vol-1")
    assert a == keys.derive(key, "app", "luks/vol-1")
    assert len(a) == 32
    assert a != keys.derive(key, "app", "luks/vol-2")
    assert a != keys.derive(key, "fscrypt", "luks/vol-1")
    assert a != keys.derive(bytes(32), "app", "luks/vol-1")
    assert len(keys.derive(key, "fscrypt", "master-v2", 64)) == 64
    with pytest.raises(ValueError):
        keys.derive(key, "app", "")
    with pytest.raises(ValueError):
        keys.derive(key, "a/b", "x")
    with pytest.raises(keys.VaultKeyError):
        keys.derive(b"short", "app", "x")


def test_point_key_pads_coordinates() -> None:
    assert (
        keys.point_key((1, 2))
        == hashlib.sha256((1).to_bytes(32, "big") + (2).to_bytes(32, "big")).digest()
    )
    with pytest.raises(keys.VaultKeyError):
        keys.point_key((1 << 256, 1))
