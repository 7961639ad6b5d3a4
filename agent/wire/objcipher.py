"""EVE object-level encryption, the pure part: ``CipherBlock`` <-> clear bytes, no TPM.

Datastore credentials, Wi-Fi passwords, cloud-init user data and cluster tokens travel encrypted
for one device (``eve:docs/OBJECT-LEVEL-ENCRYPTION.md``, ``pkg/pillar/cipher/handlecipher.go``):

* ``EdgeDevConfig.cipherContexts`` lists ``CipherContext``s: which device certificate and which
  controller certificate were used (``deviceCertHash`` / ``controllerCertHash``: SHA-256 of the
  certificate's PEM bytes, 16 or 32 bytes as ``hashScheme`` says), ``KEA_ECDH`` and
  ``SA_AES_256_CFB``;
* a ``CipherBlock`` names its context, carries the IV (``initialValue``), the ciphertext and
  SHA-256 of the clear text;
* the AES-256 key is SHA-256(x || y) of the ECDH point between the device's ECDH key (in the
  TPM: ``Tpm.ecdh_shared_point``; a software key without TPM) and the controller's ECDH
  certificate key; the cipher is AES-256-CFB (CFB128, as Go's ``cipher.NewCFBDecrypter``);
* the clear text is a marshalled ``EncryptionBlock``.

Config is hostile input: every check failure raises :class:`CipherError` naming the context,
and nothing is returned unless the clear-text digest matched.  :func:`encrypt` does the
controller's half.  The ECDH itself is a plug-in (:data:`SharedPoint`), so this module needs
no TPM and the reference controller can use it (it imports ``agent.wire`` only);
:mod:`agent.vault.cipher` is the agent's front end with the TPM's error types.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.modes import CFB  # EVE uses CFB; it is "decrepit" here
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from google.protobuf.message import DecodeError

from agent.wire.ecdh import point_key, shared_point
from agent.wire.ecdh import shared_point as ecdh_point
from agent.wire.pb.evecommon import acipherinfo_pb2, evecommon_pb2

#: ECDH with a peer public key -> the shared point (x, y).  ``Tpm.ecdh_shared_point`` has this
#: shape; :func:`software_shared_point` makes one from a private key.
SharedPoint = Callable[[ec.EllipticCurvePublicKey], tuple[int, int]]

HASH_16 = evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES
HASH_32 = evecommon_pb2.HASH_ALGORITHM_SHA256_32BYTES
_IV_SIZE = 16


class CipherError(Exception):
    """A CipherBlock cannot be decrypted.  ``context_id`` names the cipher context."""

    def __init__(self, context_id: str, message: str) -> None:
        super().__init__(f"cipher context {context_id!r}: {message}")
        self.context_id = context_id


def cert_hash(cert_pem: bytes, scheme: int) -> bytes:
    """EVE's certificate hash for cipher contexts: SHA-256 over the PEM bytes, truncated to 16
    bytes for ``HASH_ALGORITHM_SHA256_16BYTES``.  ValueError for another scheme."""
    digest = hashlib.sha256(cert_pem).digest()
    if scheme == HASH_32:
        return digest
    if scheme == HASH_16:
        return digest[:16]
    raise ValueError(f"unsupported hash scheme {scheme}")


def software_shared_point(private_key: ec.EllipticCurvePrivateKey) -> SharedPoint:
    """A SharedPoint for a software ECDH key (the no-TPM mode, and the controller's side)."""

    def shared(peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        return shared_point(private_key, peer)

    return shared


# --- decryption ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceCipherKeys:
    """What the device decrypts with.

    ``device_cert_pem``: our ECDH certificate exactly as published to the controller (PEM bytes);
    ``controller_certs``: the controller's ECDH certificates we know (PEM bytes, current first);
    ``shared_point``: ECDH with our ECDH private key (the TPM, or a software key).
    """

    device_cert_pem: bytes
    controller_certs: tuple[bytes, ...]
    shared_point: SharedPoint


def _index(
    contexts: Iterable[acipherinfo_pb2.CipherContext] | Mapping[str, acipherinfo_pb2.CipherContext],
) -> Mapping[str, acipherinfo_pb2.CipherContext]:
    if isinstance(contexts, Mapping):
        return contexts
    return {c.contextId: c for c in contexts}


def decrypt(
    block: acipherinfo_pb2.CipherBlock,
    contexts: Iterable[acipherinfo_pb2.CipherContext] | Mapping[str, acipherinfo_pb2.CipherContext],
    keys: DeviceCipherKeys,
    *,
    ecdh_errors: tuple[type[Exception], ...] = (),
) -> bytes:
    """The clear bytes of ``block``; CipherError when anything does not check out.

    ``keys.shared_point`` failing with ValueError or one of ``ecdh_errors`` (a TPM's error
    types) is a CipherError too; anything else it raises propagates.
    """
    cid = block.cipherContextId
    if not cid:
        raise CipherError(cid, "the cipher block names no cipher context")
    context = _index(contexts).get(cid)
    if context is None:
        raise CipherError(cid, "no such cipher context in the config")
    if context.keyExchangeScheme != acipherinfo_pb2.KEA_ECDH:
        raise CipherError(cid, f"key exchange scheme {context.keyExchangeScheme} is not ECDH")
    if context.encryptionScheme != acipherinfo_pb2.SA_AES_256_CFB:
        raise CipherError(cid, f"encryption scheme {context.encryptionScheme} is not AES-256-CFB")
    if context.hashScheme not in (HASH_16, HASH_32):
        raise CipherError(cid, f"unsupported certificate hash scheme {context.hashScheme}")
    if not hmac.compare_digest(
        cert_hash(keys.device_cert_pem, context.hashScheme), bytes(context.deviceCertHash)
    ):
        raise CipherError(cid, "deviceCertHash does not match this device's ECDH certificate")
    controller_pem = next(
        (
            pem
            for pem in keys.controller_certs
            if hmac.compare_digest(
                cert_hash(pem, context.hashScheme), bytes(context.controllerCertHash)
            )
        ),
        None,
    )
    if controller_pem is None:
        raise CipherError(cid, "controllerCertHash matches no known controller ECDH certificate")
    if len(block.initialValue) != _IV_SIZE:
        raise CipherError(cid, f"initial value has {len(block.initialValue)} bytes, not 16")
    if not block.cipherData:
        raise CipherError(cid, "the cipher block carries no data")
    if len(block.clearTextSha256) != 32:
        raise CipherError(cid, "the cipher block has no valid clearTextSha256")
    try:
        peer = x509.load_pem_x509_certificate(controller_pem).public_key()
    except ValueError as exc:
        raise CipherError(cid, f"controller ECDH certificate unreadable: {exc}") from exc
    if not isinstance(peer, ec.EllipticCurvePublicKey) or not isinstance(peer.curve, ec.SECP256R1):
        raise CipherError(cid, "controller ECDH certificate does not hold a P-256 key")
    caught: tuple[type[Exception], ...] = (ValueError, *ecdh_errors)
    try:
        key = point_key(keys.shared_point(peer))
    except caught as exc:
        raise CipherError(cid, f"ECDH failed: {exc}") from exc
    decryptor = Cipher(algorithms.AES(key), CFB(bytes(block.initialValue))).decryptor()
    clear = decryptor.update(bytes(block.cipherData)) + decryptor.finalize()
    if not hmac.compare_digest(hashlib.sha256(clear).digest(), bytes(block.clearTextSha256)):
        raise CipherError(
            cid, "clear text does not match clearTextSha256 (wrong key or tampered data)"
        )
    return clear


def decrypt_block(
    block: acipherinfo_pb2.CipherBlock,
    contexts: Iterable[acipherinfo_pb2.CipherContext] | Mapping[str, acipherinfo_pb2.CipherContext],
    keys: DeviceCipherKeys,
    *,
    ecdh_errors: tuple[type[Exception], ...] = (),
) -> acipherinfo_pb2.EncryptionBlock:
    """Decrypt and parse the ``EncryptionBlock``; CipherError on any failure."""
    clear = decrypt(block, contexts, keys, ecdh_errors=ecdh_errors)
    out = acipherinfo_pb2.EncryptionBlock()
    try:
        out.ParseFromString(clear)
    except DecodeError as exc:
        raise CipherError(
            block.cipherContextId, f"clear text is not an EncryptionBlock: {exc}"
        ) from exc
    return out


# --- the controller's side -------------------------------------------------------------------


def make_context(
    context_id: str,
    *,
    device_cert_pem: bytes,
    controller_cert_pem: bytes,
    hash_scheme: int = HASH_32,
) -> acipherinfo_pb2.CipherContext:
    """A ``CipherContext`` for ECDH + AES-256-CFB between these two certificates."""
    return acipherinfo_pb2.CipherContext(
        contextId=context_id,
        hashScheme=hash_scheme,  # type: ignore[arg-type]
        keyExchangeScheme=acipherinfo_pb2.KEA_ECDH,
        encryptionScheme=acipherinfo_pb2.SA_AES_256_CFB,
        deviceCertHash=cert_hash(device_cert_pem, hash_scheme),
        controllerCertHash=cert_hash(controller_cert_pem, hash_scheme),
    )


def encrypt(
    clear: bytes,
    *,
    context: acipherinfo_pb2.CipherContext,
    controller_key: ec.EllipticCurvePrivateKey,
    device_public_key: ec.EllipticCurvePublicKey,
    iv: bytes | None = None,
) -> acipherinfo_pb2.CipherBlock:
    """What a controller does: encrypt ``clear`` for the device whose ECDH public key is
    ``device_public_key``, with the controller ECDH private key of ``context``."""
    iv = iv if iv is not None else os.urandom(_IV_SIZE)
    if len(iv) != _IV_SIZE:
        raise ValueError("the IV has 16 bytes")
    key = point_key(shared_point(controller_key, device_public_key))
    encryptor = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return acipherinfo_pb2.CipherBlock(
        cipherContextId=context.contextId,
        initialValue=iv,
        cipherData=encryptor.update(clear) + encryptor.finalize(),
        clearTextSha256=hashlib.sha256(clear).digest(),
    )


def encrypt_block(
    block: acipherinfo_pb2.EncryptionBlock,
    *,
    context: acipherinfo_pb2.CipherContext,
    controller_key: ec.EllipticCurvePrivateKey,
    device_public_key: ec.EllipticCurvePublicKey,
) -> acipherinfo_pb2.CipherBlock:
    """:func:`encrypt` of a marshalled ``EncryptionBlock``."""
    return encrypt(
        block.SerializeToString(),
        context=context,
        controller_key=controller_key,
        device_public_key=device_public_key,
    )


__all__ = [
    "CipherError",
    "DeviceCipherKeys",
    "SharedPoint",
    "cert_hash",
    "decrypt",
    "decrypt_block",
    "ecdh_point",
    "encrypt",
    "encrypt_block",
    "make_context",
    "point_key",
    "software_shared_point",
]
