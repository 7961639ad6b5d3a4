"""The signed envelope of EVE API v2: ``org.lfedge.eve.auth.AuthContainer``.

Every POST body a device sends and every protobuf body a controller returns travels in an
AuthContainer.  The rules below follow what EVE does (``pkg/pillar/controllerconn/authen.go``),
which is stricter in places than the prose in eve-api's OBJECT-SIGNING.md:

* the signature is always over SHA-256 of the payload bytes;
* ECDSA signatures are raw ``r || s``, each left-padded to the curve size (not DER);
* a controller may also sign with RSA PKCS#1 v1.5 / SHA-256 (Adam uses RSA-2048);
* ``senderCertHash`` is a lookup key only: a device sends SHA-256 of its certificate's DER
  (32 bytes, ``HASH_ALGORITHM_SHA256_32BYTES``); a controller sends SHA-256 of its signing
  certificate's PEM exactly as delivered in ``ZCert.cert``, 16 or 32 bytes;
* ``senderCert``, when present (``/register``), is base64 of the certificate PEM.

This module is shared by the agent and the controller and never touches the network or disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError

from agent.wire.pb.auth import auth_pb2
from agent.wire.pb.evecommon import evecommon_pb2

HASH_SHA256_16 = evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES
HASH_SHA256_32 = evecommon_pb2.HASH_ALGORITHM_SHA256_32BYTES


class EnvelopeError(ValueError):
    """Base of every envelope problem; the message is meant for a log line and a report."""


class MalformedEnvelope(EnvelopeError):
    """The bytes are not an AuthContainer, or a field has an impossible value."""


class UnknownSigner(EnvelopeError):
    """The senderCertHash matches no certificate the receiver trusts."""


class BadSignature(EnvelopeError):
    """The signature does not verify with the sender's certificate."""


class Signer(Protocol):
    """Something that can sign a SHA-256 digest with the key of ``certificate``.

    The TPM-backed signer (later) implements the same protocol, so the key may never leave it.
    """

    @property
    def certificate(self) -> x509.Certificate: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Return the envelope-format signature of a 32-byte SHA-256 digest.

        ECDSA keys return raw ``r || s`` padded to the curve size; RSA keys PKCS#1 v1.5.
        """
        ...


@dataclass(frozen=True)
class SoftwareSigner:
    """A signer whose private key is in process memory (onboarding key, controller keys)."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def certificate(self) -> x509.Certificate:
        return self.cert

    def sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        der = self.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return ecdsa_der_to_raw(der, self.key.curve.key_size)


def ecdsa_der_to_raw(der: bytes, curve_bits: int) -> bytes:
    """Convert an ASN.1 ECDSA signature to EVE's raw ``r || s`` form."""
    r, s = decode_dss_signature(der)
    size = (curve_bits + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_to_der(raw: bytes, curve_bits: int) -> bytes:
    """Convert raw ``r || s`` to ASN.1; raises BadSignature for a length wrong for the curve."""
    size = (curve_bits + 7) // 8
    if len(raw) != 2 * size:
        raise BadSignature(
            f"ECDSA signature is {len(raw)} bytes, expected {2 * size} for P-{curve_bits}"
        )
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )


def device_cert_hash(cert: x509.Certificate) -> bytes:
    """senderCertHash a device sends: SHA-256 over the certificate's DER, all 32 bytes."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def pem_cert_hash(pem: bytes, algo: int = HASH_SHA256_32) -> bytes:
    """Hash of a certificate PEM as EVE computes it for controller certs (16 or 32 bytes)."""
    digest = hashlib.sha256(pem).digest()
    if algo == HASH_SHA256_16:
        return digest[:16]
    if algo == HASH_SHA256_32:
        return digest
    raise MalformedEnvelope(f"unsupported certificate hash algorithm {algo}")


@dataclass(frozen=True)
class Envelope:
    """A parsed, not yet verified AuthContainer."""

    payload: bytes
    algo: int
    sender_cert_hash: bytes
    signature: bytes
    sender_cert_pem: bytes | None

    @property
    def payload_digest(self) -> bytes:
        return hashlib.sha256(self.payload).digest()


def seal(
    payload: bytes,
    signer: Signer,
    *,
    sender_cert_hash: bytes,
    algo: int = HASH_SHA256_32,
    sender_cert_pem: bytes | None = None,
) -> bytes:
    """Wrap ``payload`` in a signed AuthContainer and return its serialised bytes.

    ``sender_cert_pem`` is put in ``senderCert`` (base64 of the PEM), as ``/register`` needs.
    """
    container = auth_pb2.AuthContainer()
    container.protectedPayload.payload = payload
    container.algo = algo  # type: ignore[assignment]
    container.senderCertHash = sender_cert_hash
    container.signatureHash = signer.sign_digest(hashlib.sha256(payload).digest())
    if sender_cert_pem is not None:
        container.senderCert = base64.b64encode(sender_cert_pem)
    return container.SerializeToString()


def seal_as_device(payload: bytes, signer: Signer, *, include_cert: bool = False) -> bytes:
    """Seal as EVE's device does: DER hash, 32 bytes; the PEM attached when asked (register)."""
    cert = signer.certificate
    return seal(
        payload,
        signer,
        sender_cert_hash=device_cert_hash(cert),
        algo=HASH_SHA256_32,
        sender_cert_pem=cert.public_bytes(Encoding.PEM) if include_cert else None,
    )


def parse(data: bytes) -> Envelope:
    """Parse AuthContainer bytes without verifying anything.

    Raises MalformedEnvelope for undecodable bytes, an encrypted payload (not used by EVE for
    config) or a senderCert that is not base64 of a PEM.
    """
    container = auth_pb2.AuthContainer()
    try:
        container.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedEnvelope(f"not an AuthContainer: {exc}") from exc
    if container.HasField("cipherData") and not container.HasField("protectedPayload"):
        raise MalformedEnvelope("encrypted AuthContainer payloads are not supported")
    if not container.signatureHash:
        raise MalformedEnvelope("AuthContainer has no signature")
    sender_pem: bytes | None = None
    if container.senderCert:
        try:
            sender_pem = base64.b64decode(container.senderCert, validate=True)
        except binascii.Error as exc:
            raise MalformedEnvelope("senderCert is not base64") from exc
        if b"-----BEGIN CERTIFICATE-----" not in sender_pem:
            raise MalformedEnvelope("senderCert is not a PEM certificate")
    return Envelope(
        payload=container.protectedPayload.payload,
        algo=int(container.algo),
        sender_cert_hash=bytes(container.senderCertHash),
        signature=bytes(container.signatureHash),
        sender_cert_pem=sender_pem,
    )


def verify_signature(envelope: Envelope, cert: x509.Certificate) -> None:
    """Check the envelope's signature with ``cert``'s public key.

    Accepts ECDSA (raw r||s, P-256 or P-384) and RSA PKCS#1 v1.5 with SHA-256.
    Raises BadSignature; returns nothing on success.
    """
    key = cert.public_key()
    digest = envelope.payload_digest
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.key_size not in (256, 384):
                raise BadSignature(f"unsupported ECDSA curve {key.curve.name}")
            der = ecdsa_raw_to_der(envelope.signature, key.curve.key_size)
            key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(envelope.signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            raise BadSignature(f"unsupported signer key type {type(key).__name__}")
    except InvalidSignature as exc:
        raise BadSignature("signature does not match the payload") from exc


def open_signed(data: bytes, trusted: dict[bytes, x509.Certificate]) -> Envelope:
    """Parse and verify an envelope whose signer must be one of ``trusted``.

    ``trusted`` maps a senderCertHash (16 or 32 bytes) to the certificate it stands for.  Raises
    MalformedEnvelope, UnknownSigner or BadSignature; on success returns the verified envelope.
    """
    envelope = parse(data)
    if envelope.algo not in (HASH_SHA256_16, HASH_SHA256_32):
        raise MalformedEnvelope(f"unsupported senderCertHash algorithm {envelope.algo}")
    expected_len = 16 if envelope.algo == HASH_SHA256_16 else 32
    if len(envelope.sender_cert_hash) != expected_len:
        raise MalformedEnvelope(
            f"senderCertHash is {len(envelope.sender_cert_hash)} bytes, "
            f"its algorithm says {expected_len}"
        )
    cert = trusted.get(envelope.sender_cert_hash)
    if cert is None:
        raise UnknownSigner(f"unknown signer certificate hash {envelope.sender_cert_hash.hex()}")
    verify_signature(envelope, cert)
    return envelope
