"""The node's identity on disk: device key and certificate, onboarding credentials, serials, UUID.

The device key is made on first boot and never changes: a new key is a new device to the
controller.  In software mode it is a PEM file in persist (mode 0600); the TPM issue moves it into
the TPM behind the same :class:`agent.wire.envelope.Signer` protocol.

Making the software identity is one step, both files or neither, whatever kills the agent when:
the key and certificate are written into a staging directory beside them, which is renamed to a
commit directory (the commit point), and only then moved into place.  At start an uncommitted
staging directory is removed (roll back) and a commit directory is finished (roll forward); see
:func:`recover_identity`.

What the node knows about having shown its identity to a controller (:func:`registration_evidence`):
the UUID learnt from ``/uuid``, and the registration record written *before* the first
``/register`` or ``/uuid`` request (:func:`record_registration`).  A half-present identity (one of
the two files, as an older agent killed between its two writes left it) of a node with neither is
a first boot that never finished: it is made again, with a log line.  With either, the half that
is left is the only trace of a real device and the agent refuses to replace it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from agent.settings import NodePaths
from agent.util.atomicfile import fsync_dir, read_optional, write_atomic
from agent.util.ids import parse_uuid
from agent.wire import pki
from agent.wire.envelope import Signer, SoftwareSigner

log = logging.getLogger(__name__)

#: EVE's device certificate is long-lived; it identifies the node for its whole life.
DEVICE_CERT_DAYS = 20 * 365


class IdentityError(Exception):
    """The node's configuration partition is incomplete or unreadable; permanent."""


@dataclass(frozen=True)
class NodeIdentity:
    device: Signer
    onboard: SoftwareSigner | None
    serial: str
    soft_serial: str
    server: str
    root_pem: bytes
    #: ``/config/v2tlsbaseroot-certificates.pem``: more roots for the controller's TLS (EVE's
    #: "TLS root of trust"), empty when absent.
    tls_roots_pem: bytes = b""


def tls_roots_path(paths: NodePaths) -> Path:
    return paths.config / "v2tlsbaseroot-certificates.pem"


def _staging(paths: NodePaths) -> Path:
    return paths.device_cert.parent / ".device-identity.new"


def _commit(paths: NodePaths) -> Path:
    return paths.device_cert.parent / ".device-identity.commit"


def registration_record(paths: NodePaths) -> Path:
    """Written before the device certificate is first shown to a controller."""
    return paths.uuid.parent / "registration"


def record_registration(paths: NodePaths, device_cert: x509.Certificate) -> None:
    """Note, durably, that this device certificate is about to be shown to the controller
    (``/register`` or ``/uuid``).  Idempotent.  Raises OSError (then nothing may be sent)."""
    pem = pki.cert_pem(device_cert)
    record = registration_record(paths)
    digest = hashlib.sha256(pem).hexdigest()
    existing = read_optional(record)
    if existing is not None and digest.encode() in existing:
        return
    body = {"device_cert_sha256": digest, "at": time.time()}
    write_atomic(record, json.dumps(body).encode() + b"\n", mode=0o644)


def registration_evidence(paths: NodePaths) -> str | None:
    """Why the node may be known to a controller (a UUID learnt, a registration record), or
    None when its identity was never shown to one."""
    if read_optional(paths.uuid):
        return f"it has a device UUID ({paths.uuid})"
    if read_optional(registration_record(paths)) is not None:
        return f"it has started registering ({registration_record(paths)})"
    return None


def recover_identity(paths: NodePaths) -> None:
    """Finish or undo an identity creation that was interrupted (see the module doc).
    Raises OSError."""
    commit, staging = _commit(paths), _staging(paths)
    if commit.is_dir():
        _finish_commit(paths)
        log.warning("finished making the device identity that was interrupted after its commit")
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("removed a device identity whose creation was interrupted before its commit")


def _finish_commit(paths: NodePaths) -> None:
    """Move the committed files into place (each move atomic; repeatable after a kill)."""
    commit = _commit(paths)
    for name, target in (("key", paths.device_key), ("cert", paths.device_cert)):
        if (commit / name).exists():
            os.replace(commit / name, target)
    fsync_dir(paths.device_cert.parent)
    commit.rmdir()


def _create(paths: NodePaths) -> SoftwareSigner:
    """Make the key and certificate as one step (see the module doc).  Raises OSError, with
    nothing left behind but a staging directory the next start removes."""
    key = pki.new_ec_key()
    cert = pki.make_certificate(key, "eve-agent device", days=DEVICE_CERT_DAYS, client_auth=True)
    staging, commit = _staging(paths), _commit(paths)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True, mode=0o700)
        write_atomic(staging / "key", pki.key_pem(key), mode=0o600)
        write_atomic(staging / "cert", pki.cert_pem(cert), mode=0o644)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # a failure, not an interruption: no trace
        raise
    os.replace(staging, commit)  # the commit point
    fsync_dir(commit.parent)
    _finish_commit(paths)
    return SoftwareSigner(key, cert)


def load_or_create_device_signer(paths: NodePaths) -> SoftwareSigner:
    """Load the device key and certificate, making both on first boot.  Idempotent.

    A half-present identity is made again when the node never showed it to a controller (see
    the module doc), and raises IdentityError when it did: making a new key then would
    silently turn the node into a different device.  Raises OSError (StorageError when the
    disk is full) when the files cannot be written.
    """
    recover_identity(paths)
    key_pem = read_optional(paths.device_key)
    cert_pem = read_optional(paths.device_cert)
    if (key_pem is None) != (cert_pem is None):
        present = paths.device_key if key_pem is not None else paths.device_cert
        evidence = registration_evidence(paths)
        if evidence is not None:
            raise IdentityError(
                f"device key or certificate missing in {paths.device_cert.parent} and {evidence}:"
                " refusing to make a new identity over a half-present one"
            )
        log.warning(
            "half-made device identity (only %s) of a node that never registered: the first "
            "boot was interrupted; making the identity again",
            present.name,
        )
        with contextlib.suppress(FileNotFoundError):
            present.unlink()
        key_pem = cert_pem = None
    if key_pem is None or cert_pem is None:
        signer = _create(paths)
        log.info("made a new device key and certificate in %s", paths.device_cert.parent)
        return signer
    try:
        key_obj = pki.load_key(key_pem)
    except ValueError as exc:
        raise IdentityError(f"{paths.device_key} unreadable: {exc}") from exc
    try:
        cert_obj = pki.load_cert(cert_pem)
    except ValueError as exc:
        raise IdentityError(f"{paths.device_cert} unreadable: {exc}") from exc
    # A certificate damaged where it still parses (one byte of its signature...) is no longer
    # the one the controller registered: every request would be refused, and the logs and info
    # refused "for good" moved aside.  Refuse to start instead, naming the file.
    try:
        if cert_obj.public_key() != key_obj.public_key():
            raise ValueError("its public key is not the device key's")
        cert_obj.verify_directly_issued_by(cert_obj)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise IdentityError(f"{paths.device_cert} is damaged: {exc}") from exc
    return SoftwareSigner(key_obj, cert_obj)


def _read_text(path: Path, default: str = "") -> str:
    data = read_optional(path)
    return data.decode("utf-8", "replace").strip() if data is not None else default


def load_identity(paths: NodePaths, device: Signer | None = None) -> NodeIdentity:
    """Read the config partition; the device identity is ``device`` (a TPM signer) or, in
    software mode, the key and certificate in persist (made on first boot).

    Raises IdentityError.
    """
    server = _read_text(paths.server)
    if not server:
        raise IdentityError(f"{paths.server} is missing or empty: no controller to talk to")
    root_pem = read_optional(paths.root_certificate)
    if not root_pem:
        raise IdentityError(f"{paths.root_certificate} is missing")
    try:
        pki.load_certs(root_pem)
    except ValueError as exc:
        raise IdentityError(f"{paths.root_certificate} holds no certificate: {exc}") from exc
    tls_roots = read_optional(tls_roots_path(paths)) or b""
    if tls_roots.strip():
        try:
            pki.load_certs(tls_roots)
        except ValueError as exc:
            raise IdentityError(f"{tls_roots_path(paths)} holds no certificate: {exc}") from exc
    onboard: SoftwareSigner | None = None
    ocert, okey = read_optional(paths.onboard_cert), read_optional(paths.onboard_key)
    if ocert and okey:
        try:
            onboard = SoftwareSigner(pki.load_key(okey), pki.load_cert(ocert))
        except ValueError as exc:
            raise IdentityError(f"onboarding certificate or key unreadable: {exc}") from exc
    return NodeIdentity(
        device=device if device is not None else load_or_create_device_signer(paths),
        onboard=onboard,
        serial=_read_text(paths.serial),
        soft_serial=_read_text(paths.soft_serial),
        server=server,
        root_pem=root_pem,
        tls_roots_pem=tls_roots,
    )


def load_uuid(paths: NodePaths) -> str | None:
    """The UUID learnt from the controller, or None before onboarding (or if unreadable)."""
    text = _read_text(paths.uuid)
    if not text:
        return None
    try:
        return parse_uuid(text, "stored device uuid")
    except ValueError:
        log.warning("ignoring unreadable %s", paths.uuid)
        return None


def store_uuid(
    paths: NodePaths, device_uuid: str, *, manufacturer: str = "", product_name: str = ""
) -> None:
    """Persist what ``/uuid`` said.  Like EVE's client, a manufacturer and product name given
    together become the hardware model override (``/persist/status/hardwaremodel``)."""
    write_atomic(paths.uuid, (device_uuid + "\n").encode(), mode=0o644)
    if manufacturer and product_name:
        model = f"{manufacturer}.{product_name}".replace("\n", " ")[:256]
        write_atomic(paths.hardware_model, (model + "\n").encode(), mode=0o644)
