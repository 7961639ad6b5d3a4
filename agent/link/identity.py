"""The node's identity on disk: device key and certificate, onboarding credentials, serials, UUID.

The device key is made on first boot and never changes: a new key is a new device to the
controller.  In software mode it is a PEM file in persist (mode 0600); the TPM issue moves it into
the TPM behind the same :class:`agent.wire.envelope.Signer` protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from agent.settings import NodePaths
from agent.util.atomicfile import read_optional, write_atomic
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


def load_or_create_device_signer(paths: NodePaths) -> SoftwareSigner:
    """Load the device key and certificate, making both on first boot.  Idempotent.

    Raises IdentityError when one of the two exists without the other: making a new key then
    would silently turn the node into a different device.
    """
    key_pem = read_optional(paths.device_key)
    cert_pem = read_optional(paths.device_cert)
    if key_pem is None and cert_pem is None:
        key = pki.new_ec_key()
        cert = pki.make_certificate(
            key, "eve-agent device", days=DEVICE_CERT_DAYS, client_auth=True
        )
        # Key first: a crash between the two writes leaves a key without a cert, reported below.
        write_atomic(paths.device_key, pki.key_pem(key), mode=0o600)
        write_atomic(paths.device_cert, pki.cert_pem(cert), mode=0o644)
        log.info("made a new device key and certificate in %s", paths.device_cert.parent)
        return SoftwareSigner(key, cert)
    if key_pem is None or cert_pem is None:
        raise IdentityError(
            f"device key or certificate missing in {paths.device_cert.parent}: refusing to make a "
            "new identity over a half-present one"
        )
    try:
        key_obj = pki.load_key(key_pem)
        cert_obj = pki.load_cert(cert_pem)
    except ValueError as exc:
        raise IdentityError(f"device key or certificate unreadable: {exc}") from exc
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
