"""The controller's certificates: fetched from ``GET /certs``, checked, checkpointed.

EVE unwraps the /certs AuthContainer without checking its signature and instead verifies that the
SIGNING and ECDH certificates chain to ``/config/root-certificate.pem``
(``VerifyLeavesCertChainWithRootPEM``): exactly one signing certificate, intermediates only as a
pool, an ECDH certificate required, any other type an error.  We do the same, and we also check the
envelope signature when it verifies, since a genuine controller always signs it.

The checkpoint (``controllercerts`` and its ``.bak``) is written when the certificates change; a
write the disk refuses leaves them in memory, reported to the storage health, and
:meth:`ControllerCertStore.save_pending` tries again.  A ``.bak`` that does not parse or verify
is replaced by a primary that does, at load and at the next save: a corrupt fallback must not
stay for ever.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cryptography import x509
from google.protobuf.message import DecodeError

from agent.link.checkpoint import CheckpointStore
from agent.link.transport import ControllerClient, TransportError
from agent.util.storagehealth import StorageHealth
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

    #: What a failing checkpoint write is called in the storage report.
    WHAT = "controller certificates"

    def __init__(
        self, checkpoints: CheckpointStore, root_pem: bytes, *, health: StorageHealth | None = None
    ) -> None:
        self._checkpoints = checkpoints
        self._roots = pki.load_certs(root_pem)
        self._health = health or StorageHealth()
        self.current: ControllerCerts | None = None
        #: The bytes in the primary checkpoint as far as we know (None: none, or unknown).
        self._saved: bytes | None = None
        #: The .bak does not parse or verify: rewrite it at the next save.
        self._backup_bad = False

    def _verifies(self, raw: bytes) -> bool:
        try:
            parse_controller_certs(raw, self._roots)
        except ControllerCertError:
            return False
        return True

    def load_checkpoint(self) -> ControllerCerts | None:
        """Load the saved certificates (primary, then .bak); None when neither verifies.

        A .bak that does not verify while the primary does is replaced by the primary (blocking:
        call it in a worker thread).  Never raises for disk trouble."""
        candidates = dict(self._checkpoints.candidates())
        primary, backup = self._checkpoints.primary.name, self._checkpoints.backup.name
        # A missing .bak is seeded by the next save; a present one must verify.
        self._backup_bad = backup in candidates and not self._verifies(candidates[backup])
        for name in (primary, backup):
            raw = candidates.get(name)
            if raw is None:
                continue
            try:
                self.current = parse_controller_certs(raw, self._roots)
            except ControllerCertError as exc:
                log.warning("saved controller certificates %s rejected: %s", name, exc)
                continue
            if name == primary:
                self._saved = raw
                if self._backup_bad:
                    log.warning("saved controller certificates %s unusable: replacing it", backup)
                    self._save_backup(raw)
            return self.current
        return None

    def _save_backup(self, raw: bytes) -> None:
        try:
            self._checkpoints.replace_backup(raw)
        except OSError as exc:
            self._health.failed(self.WHAT, exc)
            return
        self._backup_bad = False

    def _save(self, raw: bytes) -> bool:
        """Checkpoint ``raw`` (and a fresh .bak when the old one is bad).  Blocking.  False when
        the disk refused it (reported; :meth:`save_pending` tries again)."""
        try:
            self._checkpoints.save(raw)
            if self._backup_bad:
                self._checkpoints.replace_backup(raw)
                self._backup_bad = False
        except OSError as exc:
            self._health.failed(self.WHAT, exc)
            return False
        self._saved = raw
        self._health.ok(self.WHAT)
        return True

    async def save_pending(self) -> bool:
        """Write the current certificates if their checkpoint is behind.  True when it is on
        disk.  Never raises for disk trouble."""
        current = self.current
        if current is None or current.raw == self._saved:
            return True
        return await asyncio.to_thread(self._save, current.raw)

    async def refresh(self, client: ControllerClient) -> ControllerCerts:
        """GET /certs, verify, checkpoint.  Raises TransportError or ControllerCertError; a
        checkpoint the disk refuses is not an error here (see :meth:`save_pending`)."""
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
            log.info("controller signing certificate %s", certs.signing_hash[:16])
        self.current = certs
        if certs.raw != self._saved:
            await asyncio.to_thread(self._save, certs.raw)
        return certs


__all__ = [
    "ControllerCertError",
    "ControllerCertStore",
    "ControllerCerts",
    "TransportError",
    "parse_controller_certs",
]
