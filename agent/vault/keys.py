"""The vault key: made once, sealed in the TPM to PCRs, escrowed to the controller.

The vault key is 32 random bytes (the TPM's RNG hashed together with ``os.urandom``).  It never
touches the disk in clear.  Two wrapped copies exist:

**Sealed** (local unlock).  ``Tpm.seal`` binds it to the current values of a PCR set (EVE's
``DefaultDiskKeySealingPCRs`` unless the controller gave another list).  The blob is stored in
persist as JSON (:class:`SealedKey`) together with the PCR values seen when sealing, so that a
failed unseal can say *which* PCRs moved, and with SHA-256(key) so that an escrowed copy can be
recognised before it is tried.

**Escrowed** (recovery after a PCR change).  EVE's ``AttestVolumeKeyData``, version
``ATTEST_VOLUME_KEY_VERSION_V1`` ("AES-GCM with a TPM-bound key"):

* ``(x, y) = TPM2_ECDH_ZGen(ECDH key 0x81000005, public key of the device key 0x817FFFFF)``
* ``wrap key = SHA-256(x || y)``, both coordinates left-padded to 32 bytes
* ``encrypted_key = be32(12) || nonce(12) || AES-256-GCM(wrap key, nonce, vault key)``
  (EVE's ``AESGCMEncrypt`` layout, no associated data)
* ``digest_sha256 = SHA-256(vault key)``

The peer is the *device* certificate's key, as in EVE (``evetpm.deriveEncryptDecryptKey``), not
the controller's ECDH certificate: both private keys stay in this TPM, so only this TPM can
compute the wrap key.  With the controller's ECDH key as peer the controller could compute it
too (it holds its private key and receives our ECDH public key in ``ATTEST_REQ_CERT``) and read
every vault key it stores.  The wrap is not bound to PCRs: that is the point of the escrow.
``ATTEST_VOLUME_KEY_VERSION_LEGACY`` blobs (AES-256-CFB, zero IV, same wrap key) are accepted
on unwrap for EVE compatibility; this agent never writes them.

Keys for the store and for other users are derived with HKDF-SHA256 and a label
(:func:`derive`), never used directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.modes import CFB  # EVE uses CFB; it is "decrepit" here
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from agent.drivers.tpm import DEFAULT_SEAL_PCRS, PCR_COUNT, KeyRole, Tpm, TpmError
from agent.util.atomicfile import read_optional, write_atomic
from agent.wire import ecdh
from agent.wire.pb.attest import attest_pb2

#: Length of the vault key.
VAULT_KEY_SIZE = 32
#: The AttestVolumeKeyData version we write: V1 is AES-GCM with the TPM-bound ECDH key.
ESCROW_VERSION = attest_pb2.ATTEST_VOLUME_KEY_VERSION_V1
_GCM_NONCE_SIZE = 12
_SEALED_FORMAT = 1
#: Every HKDF info string starts with this, then a purpose, so labels cannot collide.
_HKDF_PREFIX = b"eve-agent/vault/"


class VaultKeyError(Exception):
    """A vault key operation failed; the message says what and why."""


class SealedKeyError(VaultKeyError):
    """The sealed-key file is unreadable or malformed."""


class EscrowError(VaultKeyError):
    """An escrowed key blob cannot be unwrapped or does not check out."""


# --- the key and what is derived from it ----------------------------------------------------


def new_vault_key(tpm: Tpm | None) -> bytes:
    """32 fresh random bytes: SHA-256 over the TPM's RNG output and ``os.urandom``, so neither
    source alone decides the key.  Raises TpmError from the TPM."""
    tpm_part = tpm.random(32) if tpm is not None else b""
    return hashlib.sha256(b"eve-agent vault key\0" + tpm_part + os.urandom(32)).digest()


def key_digest(key: bytes) -> bytes:
    """SHA-256 of the key: ``digest_sha256`` of the escrow, also kept beside the sealed blob."""
    return hashlib.sha256(key).digest()


def derive(key: bytes, purpose: str, label: str, length: int = 32) -> bytes:
    """HKDF-SHA256(key, info = ``eve-agent/vault/<purpose>/<label>``) of ``length`` bytes."""
    if len(key) != VAULT_KEY_SIZE:
        raise VaultKeyError(f"the vault key has {VAULT_KEY_SIZE} bytes, not {len(key)}")
    if not purpose or "/" in purpose:
        raise ValueError(f"bad key derivation purpose {purpose!r}")
    if not label:
        raise ValueError("a derived key needs a non-empty label")
    if not 16 <= length <= 255 * 32:
        raise ValueError(f"cannot derive {length} bytes")
    info = _HKDF_PREFIX + purpose.encode() + b"/" + label.encode()
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


# --- sealing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedKey:
    """The sealed vault key as stored in persist."""

    blob: bytes
    pcrs: tuple[int, ...]
    #: SHA-256 PCR values when the key was sealed (index -> 32 bytes)
    pcr_values: Mapping[int, bytes] = field(default_factory=dict)
    #: SHA-256 of the key (not secret: it is sent to the controller with the escrow)
    digest: bytes = b""

    def to_bytes(self) -> bytes:
        doc = {
            "format": _SEALED_FORMAT,
            "blob": base64.b64encode(self.blob).decode(),
            "pcrs": list(self.pcrs),
            "pcr_values": {str(i): v.hex() for i, v in sorted(self.pcr_values.items())},
            "digest": self.digest.hex(),
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> SealedKey:
        """Parse the stored JSON; SealedKeyError when it is not a sealed key of ours."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != _SEALED_FORMAT:
                raise SealedKeyError(f"unknown sealed key format {doc.get('format')!r}")
            blob = base64.b64decode(doc["blob"], validate=True)
            pcrs = tuple(int(i) for i in doc["pcrs"])
            values = {int(i): bytes.fromhex(v) for i, v in dict(doc["pcr_values"]).items()}
            digest = bytes.fromhex(doc["digest"])
        except SealedKeyError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise SealedKeyError(f"sealed key record is malformed: {exc}") from exc
        if not blob or not pcrs or len(digest) != 32:
            raise SealedKeyError("sealed key record is incomplete")
        return cls(blob=blob, pcrs=pcrs, pcr_values=values, digest=digest)


def check_seal_pcrs(pcrs: Sequence[int]) -> tuple[int, ...]:
    """A sealing PCR list as EVE accepts it from the controller: sorted, unique, in 0..23,
    including PCR 0 and excluding PCR 5 (the GPT).  ValueError otherwise."""
    indexes = tuple(sorted(set(pcrs)))
    if not indexes:
        raise ValueError("empty PCR list")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in indexes):
        raise ValueError(f"PCR indexes must be integers: {list(pcrs)!r}")
    if indexes[0] < 0 or indexes[-1] >= PCR_COUNT:
        raise ValueError(f"PCR indexes must be in 0..{PCR_COUNT - 1}: {list(indexes)}")
    if 0 not in indexes:
        raise ValueError("a sealing policy must include PCR 0")
    if 5 in indexes:
        raise ValueError("a sealing policy must not include PCR 5 (the GPT)")
    return indexes


def seal_key(tpm: Tpm, key: bytes, pcrs: Sequence[int] = DEFAULT_SEAL_PCRS) -> SealedKey:
    """Seal ``key`` to the current values of ``pcrs``.  Raises TpmError."""
    if len(key) != VAULT_KEY_SIZE:
        raise VaultKeyError(f"the vault key has {VAULT_KEY_SIZE} bytes, not {len(key)}")
    indexes = check_seal_pcrs(pcrs)
    values = tpm.read_pcrs(indexes)
    blob = tpm.seal(key, indexes)
    return SealedKey(blob=blob, pcrs=indexes, pcr_values=values, digest=key_digest(key))


def unseal_key(tpm: Tpm, sealed: SealedKey) -> bytes:
    """Unseal; raises TpmPolicyError when the PCRs moved, TpmError otherwise, VaultKeyError
    when what comes out is not the key that was sealed."""
    key = tpm.unseal(sealed.blob)
    if len(key) != VAULT_KEY_SIZE or not hmac.compare_digest(key_digest(key), sealed.digest):
        raise VaultKeyError("the unsealed secret is not the vault key recorded beside it")
    return key


def changed_pcrs(tpm: Tpm, sealed: SealedKey) -> tuple[int, ...]:
    """Indexes of the sealing PCRs whose value differs from the one recorded when sealing.
    Empty when the values were not recorded or the TPM cannot be read."""
    if not sealed.pcr_values:
        return ()
    try:
        now = tpm.read_pcrs(sealed.pcrs)
    except TpmError:
        return ()
    return tuple(i for i in sealed.pcrs if now.get(i) != sealed.pcr_values.get(i))


class SealedKeyFile:
    """The sealed key in persist, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> SealedKey | None:
        """The stored record, None when there is none; SealedKeyError when it is damaged."""
        try:
            raw = read_optional(self.path)
        except OSError as exc:
            raise SealedKeyError(f"cannot read {self.path}: {exc.strerror}") from exc
        return None if raw is None else SealedKey.from_bytes(raw)

    def save(self, sealed: SealedKey) -> None:
        write_atomic(self.path, sealed.to_bytes(), mode=0o600)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --- escrow ---------------------------------------------------------------------------------


def point_key(point: tuple[int, int], coordinate_size: int = 32) -> bytes:
    """EVE's KDF on an ECDH point (:func:`agent.wire.ecdh.point_key`); VaultKeyError for a
    coordinate larger than the curve."""
    try:
        return ecdh.point_key(point, coordinate_size)
    except ValueError as exc:
        raise VaultKeyError(str(exc)) from exc


def escrow_peer(tpm: Tpm) -> ec.EllipticCurvePublicKey:
    """The public key the escrow wrap uses as ECDH peer: the device key's.  Raises TpmError."""
    key = tpm.public_key(KeyRole.DEVICE)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VaultKeyError("the device key is not an EC key; cannot escrow the vault key")
    return key


def _wrap_key(tpm: Tpm, peer: ec.EllipticCurvePublicKey | None) -> bytes:
    peer = peer if peer is not None else escrow_peer(tpm)
    return point_key(tpm.ecdh_shared_point(peer))


def escrow_wrap(tpm: Tpm, key: bytes, *, peer: ec.EllipticCurvePublicKey | None = None) -> bytes:
    """The serialised ``AttestVolumeKeyData`` (V1) for ``key``: what goes in
    ``AttestVolumeKey.key`` of the STORE_KEYS request.  Raises TpmError."""
    if len(key) != VAULT_KEY_SIZE:
        raise VaultKeyError(f"the vault key has {VAULT_KEY_SIZE} bytes, not {len(key)}")
    nonce = os.urandom(_GCM_NONCE_SIZE)
    sealed = AESGCM(_wrap_key(tpm, peer)).encrypt(nonce, key, None)
    data = attest_pb2.AttestVolumeKeyData(
        encrypted_key=struct.pack(">I", len(nonce)) + nonce + sealed,
        digest_sha256=key_digest(key),
        version=ESCROW_VERSION,
    )
    return data.SerializeToString()


@dataclass(frozen=True)
class EscrowedKey:
    """A parsed, not yet unwrapped escrow blob."""

    encrypted_key: bytes
    digest: bytes
    version: int


def parse_escrow(blob: bytes) -> EscrowedKey:
    """Decode ``AttestVolumeKeyData`` bytes; EscrowError when they are not one."""
    data = attest_pb2.AttestVolumeKeyData()
    try:
        data.ParseFromString(blob)
    except DecodeError as exc:
        raise EscrowError(f"escrowed key is not an AttestVolumeKeyData: {exc}") from exc
    if not data.encrypted_key:
        raise EscrowError("escrowed key has no encrypted_key")
    if len(data.digest_sha256) != 32:
        raise EscrowError(f"escrowed key digest has {len(data.digest_sha256)} bytes, not 32")
    return EscrowedKey(bytes(data.encrypted_key), bytes(data.digest_sha256), int(data.version))


def escrow_unwrap(tpm: Tpm, blob: bytes, *, peer: ec.EllipticCurvePublicKey | None = None) -> bytes:
    """The vault key from an escrowed ``AttestVolumeKeyData``, unwrapped with this TPM and
    checked against ``digest_sha256``.  EscrowError when it was made by another TPM, is
    tampered with or malformed; TpmError when the TPM fails."""
    escrowed = parse_escrow(blob)
    wrap_key = _wrap_key(tpm, peer)
    if escrowed.version == attest_pb2.ATTEST_VOLUME_KEY_VERSION_V1:
        raw = escrowed.encrypted_key
        if len(raw) < 4:
            raise EscrowError("escrowed key too short for its nonce size")
        (nonce_size,) = struct.unpack(">I", raw[:4])
        if nonce_size != _GCM_NONCE_SIZE or len(raw) < 4 + nonce_size + 16:
            raise EscrowError(f"escrowed key has a malformed GCM header (nonce {nonce_size})")
        nonce = raw[4 : 4 + nonce_size]
        try:
            key = AESGCM(wrap_key).decrypt(nonce, raw[4 + nonce_size :], None)
        except InvalidTag as exc:
            raise EscrowError(
                "escrowed key does not decrypt with this TPM (made by another device, or "
                "tampered with)"
            ) from exc
    elif escrowed.version == attest_pb2.ATTEST_VOLUME_KEY_VERSION_LEGACY:
        decryptor = Cipher(algorithms.AES(wrap_key), CFB(bytes(16))).decryptor()
        key = decryptor.update(escrowed.encrypted_key) + decryptor.finalize()
    else:
        raise EscrowError(f"escrowed key has unknown version {escrowed.version}")
    if len(key) != VAULT_KEY_SIZE:
        raise EscrowError(f"escrowed key has {len(key)} bytes, not {VAULT_KEY_SIZE}")
    if not hmac.compare_digest(key_digest(key), escrowed.digest):
        raise EscrowError("escrowed key does not match its digest_sha256")
    return key


__all__ = [
    "ESCROW_VERSION",
    "VAULT_KEY_SIZE",
    "EscrowError",
    "EscrowedKey",
    "SealedKey",
    "SealedKeyError",
    "SealedKeyFile",
    "VaultKeyError",
    "changed_pcrs",
    "check_seal_pcrs",
    "derive",
    "escrow_peer",
    "escrow_unwrap",
    "escrow_wrap",
    "key_digest",
    "new_vault_key",
    "parse_escrow",
    "point_key",
    "seal_key",
    "unseal_key",
]
