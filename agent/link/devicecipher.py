"""The device's ECDH key for object-level encryption, and the config decryptor made from it.

The controller encrypts config secrets (``CipherBlock``) for the device's ECDH certificate,
which the device sends with ``ATTEST_REQ_CERT`` (``CERT_TYPE_DEVICE_ECDH_EXCHANGE``).  With a
TPM the key is the TPM's ECDH key and its certificate is made by :mod:`agent.link.tpmidentity`.
In software mode (``--no-tpm``) the key is a P-256 key in ``persist/certs/ecdh.key.pem`` (mode
0600) with a certificate ``ecdh.cert.pem`` issued by the device key, made on first boot: the
same files and the same certificate shape as EVE's tpmmgr, so the controller handles both alike.

:func:`config_decryptor` turns our key and the controller's current ECDH certificate into the
``decrypt`` callable that :func:`agent.model.config.from_proto` takes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from agent.link.identity import DEVICE_CERT_DAYS, IdentityError
from agent.model.config import Decrypt
from agent.settings import NodePaths
from agent.util.atomicfile import read_optional, write_atomic
from agent.vault import cipher
from agent.vault.cipher import DeviceCipherKeys, SharedPoint
from agent.wire import pki
from agent.wire.envelope import Signer, ecdsa_raw_to_der
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2, evecommon_pb2

log = logging.getLogger(__name__)

ECDH_CERT_NAME = "Device ECDH certificate"


@dataclass(frozen=True)
class DeviceEcdh:
    """Our ECDH certificate exactly as sent to the controller (PEM bytes: EVE hashes these),
    and ECDH with its private key (the TPM, or a software key)."""

    cert_pem: bytes
    shared_point: SharedPoint

    def zcert(self) -> certs_pb2.ZCert:
        """The ``ATTEST_REQ_CERT`` record, as EVE builds it (16-byte hash of the PEM)."""
        return ecdh_zcert(self.cert_pem)


def ecdh_zcert(cert_pem: bytes) -> certs_pb2.ZCert:
    return certs_pb2.ZCert(
        hashAlgo=evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES,
        certHash=hashlib.sha256(cert_pem).digest()[:16],
        type=certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE,
        cert=cert_pem,
    )


def ecdh_paths(paths: NodePaths) -> tuple[Path, Path]:
    """(key, certificate) of the ECDH key, beside the device certificate."""
    certs_dir = paths.device_cert.parent
    return certs_dir / "ecdh.key.pem", certs_dir / "ecdh.cert.pem"


def _issue_cert(device: Signer, public: ec.EllipticCurvePublicKey) -> bytes:
    """A certificate for the ECDH ``public`` key issued by the device key (as tpmmgr does)."""
    device_public = device.certificate.public_key()
    if not isinstance(device_public, ec.EllipticCurvePublicKey):
        raise IdentityError("the device key is not an ECC key: cannot issue the ECDH certificate")
    bits = device_public.curve.key_size

    def sign(tbs: bytes) -> bytes:
        return ecdsa_raw_to_der(device.sign_digest(hashlib.sha256(tbs).digest()), bits)

    builder = pki.certificate_builder(
        public, ECDH_CERT_NAME, issuer=device.certificate, days=DEVICE_CERT_DAYS,
        key_agreement=True, org="eve-agent",
    )  # fmt: skip
    return pki.cert_pem(pki.sign_certificate_externally(builder, sign))


def load_software_ecdh(paths: NodePaths, device: Signer) -> DeviceEcdh:
    """Load the software ECDH key and certificate, making them on first boot.  Idempotent.

    The certificate is kept while it certifies the key and is signed by the device key;
    otherwise (first boot, a lost certificate) a new one is issued by the device key.
    Raises IdentityError when the key file is unreadable (a new key would silently orphan
    every secret encrypted for the old one), OSError when the files cannot be written.
    """
    key_path, cert_path = ecdh_paths(paths)
    key_pem = read_optional(key_path)
    if key_pem is None:
        key: ec.EllipticCurvePrivateKey = ec.generate_private_key(ec.SECP256R1())
        write_atomic(key_path, pki.key_pem(key), mode=0o600)
        log.info("made a new software ECDH key in %s", key_path.parent)
    else:
        try:
            loaded = pki.load_key(key_pem)
        except ValueError as exc:
            raise IdentityError(f"{key_path} unreadable: {exc}") from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            raise IdentityError(f"{key_path} does not hold a P-256 key")
        key = loaded
    device_cert = device.certificate
    cert_pem = read_optional(cert_path)
    if cert_pem is not None:
        try:
            cert = pki.load_cert(cert_pem)
            cert.verify_directly_issued_by(device_cert)
            current = cert.public_key() == key.public_key()
        except (ValueError, TypeError, InvalidSignature):
            current = False
        if not current:
            log.warning(
                "%s does not match the ECDH key or the device: issuing a new one", cert_path
            )
            cert_pem = None
    if cert_pem is None:
        cert_pem = _issue_cert(device, key.public_key())
        write_atomic(cert_path, cert_pem, mode=0o644)
        log.info("made %s", cert_path.name)
    return DeviceEcdh(cert_pem=cert_pem, shared_point=cipher.software_shared_point(key))


def config_decryptor(ecdh: DeviceEcdh, controller_ecdh_pems: tuple[bytes, ...]) -> Decrypt:
    """The ``decrypt`` for :func:`agent.model.config.from_proto`: our ECDH key against the
    controller's ECDH certificates (current first).  May block on the TPM."""
    keys = DeviceCipherKeys(
        device_cert_pem=ecdh.cert_pem,
        controller_certs=controller_ecdh_pems,
        shared_point=ecdh.shared_point,
    )

    def decrypt(
        block: acipherinfo_pb2.CipherBlock,
        contexts: Mapping[str, acipherinfo_pb2.CipherContext],
    ) -> acipherinfo_pb2.EncryptionBlock:
        return cipher.decrypt_block(block, contexts, keys)

    return decrypt


__all__ = [
    "DeviceEcdh",
    "config_decryptor",
    "ecdh_paths",
    "ecdh_zcert",
    "load_software_ecdh",
]
