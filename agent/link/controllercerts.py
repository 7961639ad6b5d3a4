"""The controller's certificates: fetched from ``GET /certs``, checked, checkpointed.

EVE unwraps the /certs AuthContainer without checking its signature and instead verifies that the
SIGNING and ECDH certificates chain to ``/config/root-certificate.pem``
(``VerifyLeavesCertChainWithRootPEM``): exactly one signing certificate, intermediates only as a
pool, an ECDH certificate required, any other type an error.  We do the same, and we also check the
envelope signature when it verifies, since a genuine controller always signs it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cryptography import x509
from google.protobuf.message import DecodeError

from agent.link.checkpoint import CheckpointStore
from agent.link.transport import ControllerClient, TransportError
from agent.wire import envelope, pki
from agent.wire.envelope import HASH_SHA256_16, HASH_SHA256_32, pem_cert_hash
from agent.wire.pb.certs import certs_pb2

log = logging.getLogger(__name__)

SIGNING = certs_pb2.CERT_TYPE_CONTROLLER_SIGNING
INTERMEDIATE = certs_pb2.CERT_TYPE_CONTROLLER_INTERMEDIATE
ECDH = certs_pb2.CERT_TYPE_CONTROLLER_ECDH_EXCHANGE


class ControllerCertError(Exception):
    """The controller's certificates are missing, malformed or do not chain to our root."""


@dataclass(frozen=True)
class ControllerCerts:
    """A verified ZControllerCert.  ``raw`` is the ZControllerCert bytes, kept for checkpoints."""

    signing: x509.Certificate
    signing_pem: bytes
    ecdh: x509.Certificate
    ecdh_pem: bytes
    raw: bytes

    def trusted_signers(self) -> dict[bytes, x509.Certificate]:
        """senderCertHash -> certificate for envelope verification (16- and 32-byte forms)."""
        return {
            pem_cert_hash(self.signing_pem, HASH_SHA256_16): self.signing,
            pem_cert_hash(self.signing_pem, HASH_SHA256_32): self.signing,
        }

    @property
    def signing_hash(self) -> str:
        return pem_cert_hash(self.signing_pem).hex()


def parse_controller_certs(raw: bytes, roots: list[x509.Certificate]) -> ControllerCerts:
    """Decode and verify ZControllerCert bytes.  Raises ControllerCertError."""
    msg = certs_pb2.ZControllerCert()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ControllerCertError(f"ZControllerCert undecodable: {exc}") from exc
    signing: list[tuple[x509.Certificate, bytes]] = []
    ecdh: list[tuple[x509.Certificate, bytes]] = []
    intermediates: list[x509.Certificate] = []
    for zcert in msg.certs:
        try:
            cert = pki.load_cert(zcert.cert)
        except ValueError as exc:
            raise ControllerCertError(
                f"controller certificate of type {zcert.type} unreadable"
            ) from exc
        if zcert.type == SIGNING:
            signing.append((cert, bytes(zcert.cert)))
        elif zcert.type == ECDH:
            ecdh.append((cert, bytes(zcert.cert)))
        elif zcert.type == INTERMEDIATE:
            intermediates.append(cert)
        else:
            raise ControllerCertError(f"unexpected controller certificate type {zcert.type}")
    if len(signing) != 1:
        raise ControllerCertError(f"expected one signing certificate, got {len(signing)}")
    if not ecdh:
        raise ControllerCertError("no ECDH certificate from the controller")
    for cert, _ in (signing[0], ecdh[0]):
        try:
            pki.verify_chain(cert, roots, intermediates)
        except pki.ChainError as exc:
            raise ControllerCertError(str(exc)) from exc
    return ControllerCerts(
        signing=signing[0][0],
        signing_pem=signing[0][1],
        ecdh=ecdh[0][0],
        ecdh_pem=ecdh[0][1],
        raw=raw,
    )


class ControllerCertStore:
    """Holds the current controller certificates; refreshes them and checkpoints them.

    The checkpoint (``controllercerts`` + ``.bak``) lets a node that boots without the controller
    verify its saved config.
    """

    def __init__(self, checkpoints: CheckpointStore, root_pem: bytes) -> None:
        self._checkpoints = checkpoints
        self._roots = pki.load_certs(root_pem)
        self.current: ControllerCerts | None = None

    def load_checkpoint(self) -> ControllerCerts | None:
        """Load the saved certificates (primary, then .bak); None when neither verifies."""
        for name, raw in self._checkpoints.candidates():
            try:
                self.current = parse_controller_certs(raw, self._roots)
            except ControllerCertError as exc:
                log.warning("saved controller certificates %s rejected: %s", name, exc)
                continue
            return self.current
        return None

    async def refresh(self, client: ControllerClient) -> ControllerCerts:
        """GET /certs, verify, checkpoint.  Raises TransportError or ControllerCertError."""
        resp = await client.request("certs", device_path=False)
        if resp.status != 200:
            raise ControllerCertError(f"GET /certs answered {resp.status}")
        try:
            env = envelope.parse(resp.body)
        except envelope.EnvelopeError as exc:
            raise ControllerCertError(f"/certs body: {exc}") from exc
        certs = parse_controller_certs(env.payload, self._roots)
        try:
            envelope.open_signed(resp.body, certs.trusted_signers())
        except envelope.EnvelopeError as exc:
            # EVE does not check this signature; a mismatch is worth a warning, not a refusal.
            log.warning("/certs envelope signature did not verify: %s", exc)
        if self.current is None or self.current.raw != certs.raw:
            await asyncio.to_thread(self._checkpoints.save, certs.raw)
            log.info("controller signing certificate %s", certs.signing_hash[:16])
        self.current = certs
        return certs


__all__ = [
    "ControllerCertError",
    "ControllerCertStore",
    "ControllerCerts",
    "TransportError",
    "parse_controller_certs",
]
