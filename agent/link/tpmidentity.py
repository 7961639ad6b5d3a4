"""The node's identity when it has a TPM: keys in the TPM, certificates on disk.

As EVE's tpmmgr does it (``pkg/pillar/cmd/tpmmgr/tpmmgr.go``): the device certificate is
self-signed by the TPM's device key; the quote key (AK), the ECDH key and the EK each get a
certificate issued by the device key, kept in ``/persist/certs`` and sent to the controller with
``ATTEST_REQ_CERT`` as ``ZCert`` records (certHash = first 16 bytes of SHA-256 over the PEM file,
no attributes; the EK certificate carries its TPM2B_PUBLIC as metadata).  No private key ever
leaves the TPM: certificates are signed through :func:`agent.wire.pki.sign_certificate_externally`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent.drivers.tpm import REPORTED_PCRS, KeyRole, Tpm
from agent.link.identity import DEVICE_CERT_DAYS, IdentityError, registration_evidence
from agent.measure import attestation_log, gzip_log
from agent.settings import NodePaths
from agent.util.atomicfile import read_optional, write_atomic
from agent.wire import pki
from agent.wire.envelope import ecdsa_raw_to_der
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.evecommon import evecommon_pb2

log = logging.getLogger(__name__)

#: EVE drops the event log from the quote when the request would grow past its payload limit.
MAX_EVENT_LOG = 62 * 1024


class TpmSigner:
    """The device key in the TPM behind the envelope ``Signer`` protocol."""

    def __init__(self, tpm: Tpm, cert: x509.Certificate) -> None:
        self._tpm = tpm
        self._cert = cert

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    def sign_digest(self, digest: bytes) -> bytes:
        return self._tpm.sign_digest(KeyRole.DEVICE, digest)


def _sign_tbs_with(tpm: Tpm) -> Callable[[bytes], bytes]:
    def sign(tbs: bytes) -> bytes:
        raw = tpm.sign_digest(KeyRole.DEVICE, hashlib.sha256(tbs).digest())
        return ecdsa_raw_to_der(raw, 256)

    return sign


@dataclass(frozen=True)
class TpmIdentity:
    signer: TpmSigner
    attest_pem: bytes
    ecdh_pem: bytes
    ek_pem: bytes
    ek_public_area: bytes

    def zcerts(self) -> list[certs_pb2.ZCert]:
        """The ATTEST_REQ_CERT payload, as EVE builds it."""
        out = []
        for pem, kind in (
            (self.ecdh_pem, certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE),
            (self.attest_pem, certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING),
            (self.ek_pem, certs_pb2.CERT_TYPE_DEVICE_ENDORSEMENT_RSA),
        ):
            zc = certs_pb2.ZCert(
                hashAlgo=evecommon_pb2.HASH_ALGORITHM_SHA256_16BYTES,
                certHash=hashlib.sha256(pem).digest()[:16],
                type=kind,
                cert=pem,
            )
            if kind == certs_pb2.CERT_TYPE_DEVICE_ENDORSEMENT_RSA:
                zc.meta_data_items.add(
                    type=certs_pb2.Z_CERT_META_DATA_TYPE_TPM2_PUBLIC, meta_data=self.ek_public_area
                )
            out.append(zc)
        return out


def _cert_for(
    path: Path,
    tpm: Tpm,
    role: KeyRole,
    common_name: str,
    issuer: x509.Certificate | None,
    *,
    key_agreement: bool = False,
) -> bytes:
    """The PEM of the certificate for ``role``'s key: kept when it still matches the TPM key,
    otherwise (first boot, or the TPM was cleared) made anew and stored atomically."""
    public = tpm.public_key(role)
    existing = read_optional(path)
    if existing:
        try:
            if pki.load_cert(existing).public_key() == public:
                return existing
        except ValueError:
            log.warning("unreadable %s: making a new one", path)
    builder = pki.certificate_builder(
        public, common_name, issuer=issuer, days=DEVICE_CERT_DAYS, key_agreement=key_agreement,
        org="eve-agent",
    )  # fmt: skip
    cert = pki.sign_certificate_externally(builder, _sign_tbs_with(tpm))
    pem = pki.cert_pem(cert)
    write_atomic(path, pem, mode=0o644)
    log.info("made %s", path.name)
    return pem


def _manufacturer_ek_pem(tpm: Tpm) -> bytes | None:
    """The TPM maker's EK certificate from NV, when it certifies our EK (the same public key).

    A real EK certificate lets a controller check the TPM's origin; EVE sends one it issues
    itself, which is what we fall back to when the TPM has none.
    """
    der = tpm.ek_certificate()
    if der is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        log.warning("the TPM's EK certificate is unreadable; sending a device-issued one")
        return None
    if cert.public_key() != tpm.public_key(KeyRole.EK):
        log.warning("the TPM's EK certificate is for another key; sending a device-issued one")
        return None
    return pki.cert_pem(cert)


def load_tpm_identity(paths: NodePaths, tpm: Tpm) -> TpmIdentity:
    """Provision the TPM (idempotent) and load or make the certificates of its keys.

    Raises IdentityError when a device certificate exists but does not match the TPM's device
    key (the TPM was replaced or cleared: this would be a different device), or is missing on a
    node that registered (:func:`agent.link.identity.registration_evidence`); TpmError when the
    TPM fails, and OSError (StorageError on a full disk) when a certificate cannot be written.
    A certificate is one file written atomically, so an interrupted first boot leaves none or
    all of each.
    """
    tpm.provision()
    device_public = tpm.public_key(KeyRole.DEVICE)
    if not isinstance(device_public, ec.EllipticCurvePublicKey):
        raise IdentityError("the TPM device key is not an ECC key")
    existing = read_optional(paths.device_cert)
    evidence = registration_evidence(paths) if existing is None else None
    if evidence is not None:
        # A new certificate, even for the same TPM key, is a new device to the controller.
        raise IdentityError(
            f"{paths.device_cert} is missing and {evidence}: refusing to make a new device "
            "certificate for a node the controller knows by the old one"
        )
    if existing is not None and pki.load_cert(existing).public_key() != device_public:
        raise IdentityError(
            f"{paths.device_cert} does not belong to this TPM's device key: the TPM was cleared "
            "or replaced; this node would be a new device"
        )
    if read_optional(paths.device_key) is not None:
        raise IdentityError(
            f"{paths.device_key} exists: this node was set up in software mode (--no-tpm); "
            "moving it to a TPM makes it a new device, so remove the software identity first"
        )
    device_pem = _cert_for(paths.device_cert, tpm, KeyRole.DEVICE, "eve-agent device", None)
    device_cert = pki.load_cert(device_pem)
    certs_dir = paths.device_cert.parent
    attest_pem = _cert_for(
        certs_dir / "attest.cert.pem",
        tpm,
        KeyRole.AK,
        "Device Attestation certificate",
        device_cert,
    )
    ecdh_pem = _cert_for(
        certs_dir / "ecdh.cert.pem", tpm, KeyRole.ECDH, "Device ECDH certificate", device_cert,
        key_agreement=True,
    )  # fmt: skip
    ek_pem = _manufacturer_ek_pem(tpm) or _cert_for(
        certs_dir / "ek.cert.pem", tpm, KeyRole.EK, "Device Endorsement Key certificate",
        device_cert,
    )  # fmt: skip
    return TpmIdentity(
        signer=TpmSigner(tpm, device_cert),
        attest_pem=attest_pem,
        ecdh_pem=ecdh_pem,
        ek_pem=ek_pem,
        ek_public_area=tpm.public_area(KeyRole.EK),
    )


class TpmQuotes:
    """The attestation ``QuoteSource`` backed by the TPM and the node's event logs."""

    def __init__(
        self,
        tpm: Tpm,
        identity: TpmIdentity,
        *,
        boot_log: Path,
        config_log: Path | None,
        versions: dict[int, str],
    ) -> None:
        self._tpm = tpm
        self._identity = identity
        self._boot_log = boot_log
        self._config_log = config_log
        self._versions = versions

    def attestation_certs(self) -> list[certs_pb2.ZCert]:
        return self._identity.zcerts()

    def quote(self, nonce: bytes) -> attest_pb2.ZAttestQuote:
        """TPM2_Quote over SHA-256 PCRs 0-15, PCRs 0-23 attached, gzipped event log, versions."""
        result = self._tpm.quote(nonce)
        msg = attest_pb2.ZAttestQuote(attestData=result.attest, signature=result.signature)
        for index, value in sorted(self._tpm.read_pcrs(REPORTED_PCRS).items()):
            msg.pcr_values.add(index=index, hash_algo=attest_pb2.TPM_HASH_ALGO_SHA256, value=value)
        for kind, version in self._versions.items():
            msg.versions.add(version_type=kind, version=version)
        log_bytes = attestation_log(self._boot_log, self._config_log)
        if log_bytes:
            packed = gzip_log(log_bytes)
            if len(packed) <= MAX_EVENT_LOG:
                msg.tpm_binary_event_log = packed
            else:
                log.warning("event log of %d bytes left out of the quote (too large)", len(packed))
        return msg
