"""The controller's own keys and certificates: made once by ``init``, loaded by ``serve``.

Trust model, as EVE sees it: a device pins ``root-certificate.pem``.  TLS is checked against it
(the server certificate is issued by the root), and so is every signed response, because the
signing and ECDH certificates are issued by the same root and delivered by ``GET /certs``.
The onboarding certificate is unrelated to the root: it is a convenience for test devices and
the operator still has to put it on the allow-list (``onboard add``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from agent.wire import envelope, pki
from controller.state import StateDir, write_atomic

ALWAYS_DNS = ("localhost",)
ALWAYS_IPS = ("127.0.0.1", "::1")


class InitRefused(Exception):
    """``init`` would overwrite or mix with existing certificates; the message says why."""


def init_certs(
    state: StateDir,
    *,
    hostnames: Sequence[str] = (),
    ips: Sequence[str] = (),
    force: bool = False,
) -> bool:
    """Make every controller certificate; return False when they already exist and fit.

    Idempotent: a complete set whose server certificate already names every requested host and
    address is left alone.  A partial set, or one missing a requested name, raises InitRefused
    unless ``force`` is given; ``force`` makes a new root, so every device must be re-provisioned
    with the new ``root-certificate.pem``.  Raises ValueError for an invalid IP address.
    """
    for ip in ips:
        ipaddress.ip_address(ip)
    dns_names = _unique([*hostnames, *ALWAYS_DNS])
    ip_names = _unique([str(ipaddress.ip_address(a)) for a in (*ips, *ALWAYS_IPS)])
    state.ensure()
    existing = [p for p in state.cert_files() if p.exists()]
    if existing and not force:
        missing = [p.name for p in state.cert_files() if not p.exists()]
        if missing:
            raise InitRefused(
                f"{state.certs} is incomplete (missing {', '.join(missing)}); "
                "use --force to make a new set"
            )
        lacking = _missing_names(pki.load_cert(state.server_cert.read_bytes()), dns_names, ip_names)
        if lacking:
            raise InitRefused(
                f"the existing server certificate does not name {', '.join(lacking)}; "
                "use --force to make a new set (devices then need the new root certificate)"
            )
        return False

    root_key = pki.new_ec_key()
    root = pki.make_certificate(root_key, "eve-controller root CA", is_ca=True, days=3650)
    server_key = pki.new_ec_key()
    server = pki.make_certificate(
        server_key,
        dns_names[0],
        issuer_key=root_key,
        issuer_cert=root,
        dns_names=dns_names,
        ip_addresses=ip_names,
        server_auth=True,
        days=825,
    )
    signing_key = pki.new_ec_key()
    signing = pki.make_certificate(
        signing_key, "eve-controller signing", issuer_key=root_key, issuer_cert=root
    )
    ecdh_key = pki.new_ec_key()
    ecdh = pki.make_certificate(
        ecdh_key, "eve-controller ecdh", issuer_key=root_key, issuer_cert=root
    )
    onboard_key = pki.new_ec_key()
    onboard = pki.make_certificate(onboard_key, "onboard", client_auth=True)

    # Keys first, certificates after: a crash in between leaves an incomplete set that the next
    # run refuses, rather than certificates whose keys are gone.
    for path, key in (
        (state.root_key, root_key),
        (state.server_key, server_key),
        (state.signing_key, signing_key),
        (state.ecdh_key, ecdh_key),
        (state.onboard_key, onboard_key),
    ):
        write_atomic(path, pki.key_pem(key), mode=0o600)
    for path, cert in (
        (state.root_cert, root),
        (state.server_cert, server),
        (state.signing_cert, signing),
        (state.ecdh_cert, ecdh),
        (state.onboard_cert, onboard),
    ):
        write_atomic(path, pki.cert_pem(cert), mode=0o644)
    return True


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _missing_names(
    cert: x509.Certificate, dns_names: Sequence[str], ips: Sequence[str]
) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [*dns_names, *ips]
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return [n for n in dns_names if n not in have_dns] + [a for a in ips if a not in have_ips]


@dataclass(frozen=True)
class ControllerIdentity:
    """What ``serve`` needs: the signer for responses and the certificates ``/certs`` hands out.

    ``signing_pem`` and ``ecdh_pem`` are the file bytes exactly; EVE hashes the PEM bytes as
    delivered in ``ZCert.cert``, so they must never be re-encoded between hashing and sending.
    """

    root_cert: x509.Certificate
    signer: envelope.SoftwareSigner
    signing_pem: bytes
    ecdh_pem: bytes

    @classmethod
    def load(cls, state: StateDir) -> ControllerIdentity:
        """Read the certificates made by ``init``.

        Raises FileNotFoundError when ``init`` has not run, ValueError for unreadable PEM, and
        pki.ChainError when the signing or ECDH certificate does not chain to the root (devices
        would reject every response, so better to refuse to start).
        """
        root = pki.load_cert(state.root_cert.read_bytes())
        signing_pem = state.signing_cert.read_bytes()
        ecdh_pem = state.ecdh_cert.read_bytes()
        signing = pki.load_cert(signing_pem)
        pki.verify_chain(signing, [root])
        pki.verify_chain(pki.load_cert(ecdh_pem), [root])
        key = pki.load_key(state.signing_key.read_bytes())
        return cls(
            root_cert=root,
            signer=envelope.SoftwareSigner(key=key, cert=signing),
            signing_pem=signing_pem,
            ecdh_pem=ecdh_pem,
        )

    @property
    def sender_cert_hash(self) -> bytes:
        """senderCertHash of every response: SHA-256 of the signing PEM, all 32 bytes."""
        return envelope.pem_cert_hash(self.signing_pem, envelope.HASH_SHA256_32)

    def seal(self, payload: bytes) -> bytes:
        """Wrap a serialised response message in an AuthContainer signed by the signing key."""
        return envelope.seal(
            payload,
            self.signer,
            sender_cert_hash=self.sender_cert_hash,
            algo=envelope.HASH_SHA256_32,
        )
