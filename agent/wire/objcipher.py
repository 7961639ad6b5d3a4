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


def point_key(point: tuple[int, int], coordinate_size: int = 32) -> bytes:
    """EVE's KDF on an ECDH point (``Sha256FromECPoint``): SHA-256(x || y), each coordinate
    big-endian, left-padded to ``coordinate_size`` bytes.  ValueError for an oversized one."""
    x, y = point
    try:
        raw = x.to_bytes(coordinate_size, "big") + y.to_bytes(coordinate_size, "big")
    except OverflowError as exc:
        raise ValueError("ECDH point coordinate larger than the curve") from exc
    return hashlib.sha256(raw).digest()


def software_shared_point(private_key: ec.EllipticCurvePrivateKey) -> SharedPoint:
    """A SharedPoint for a software ECDH key (the no-TPM mode, and the controller's side)."""

    def shared(peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        return ecdh_point(private_key, peer)

    return shared


# --- the full ECDH point in software ----------------------------------------------------------
# OpenSSL's ECDH returns x only, and EVE's KDF hashes x and y.  y is one of the two square roots
# of x^3 + ax + b; the right one is found without doing secret scalar arithmetic in Python: with
# R = d*Q the shared point and D = d*G our public key, d*(Q + G) = R + D, so the candidate whose
# sum with D has the x that OpenSSL computes for d*(Q + G) is R.  Only public points and the
# shared point are handled here; the private scalar stays inside OpenSSL.

_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_A = _P256_P - 3
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_P256_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)

_Point = tuple[int, int]


def _add(p1: _Point, p2: _Point) -> _Point | None:
    p = _P256_P
    x1, y1 = p1
    x2, y2 = p2
    if x1 == x2 and (y1 + y2) % p == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + _P256_A) * pow(2 * y1, -1, p) % p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (slope * slope - x1 - x2) % p
    return x3, (slope * (x1 - x3) - y1) % p


def _exchange_x(private_key: ec.EllipticCurvePrivateKey, point: _Point) -> int:
    peer = ec.EllipticCurvePublicNumbers(point[0], point[1], ec.SECP256R1()).public_key()
    return int.from_bytes(private_key.exchange(ec.ECDH(), peer), "big")


def ecdh_point(
    private_key: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey
) -> tuple[int, int]:
    """The ECDH shared point d * Q on P-256 (what TPM2_ECDH_ZGen returns), in software."""
    if not isinstance(peer.curve, ec.SECP256R1) or not isinstance(private_key.curve, ec.SECP256R1):
        raise ValueError("ECDH needs P-256 keys")
    p = _P256_P
    q = (peer.public_numbers().x, peer.public_numbers().y)
    x = _exchange_x(private_key, q)
    y = pow((x * x * x + _P256_A * x + _P256_B) % p, (p + 1) // 4, p)  # p = 3 mod 4
    q_plus_g = _add(q, _P256_G)
    own = private_key.public_key().public_numbers()
    if q_plus_g is None:
        raise ValueError("degenerate ECDH peer")
    target = _exchange_x(private_key, q_plus_g)
    for candidate in ((x, y), (x, (p - y) % p)):
        total = _add(candidate, (own.x, own.y))
        if total is not None and total[0] == target:
            return candidate
    raise ValueError("ECDH point could not be recovered")


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
    key = point_key(ecdh_point(controller_key, device_public_key))
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
