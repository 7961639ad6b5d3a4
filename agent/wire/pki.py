"""X.509 helpers shared by agent, controller and tests: key and certificate making, PEM I/O,
and chain verification to a pinned root.

Chain verification is done by hand rather than with a TLS-server policy, because EVE checks the
controller's signing and ECDH certificates as plain leaves (Go's ``x509.Verify`` with
``ExtKeyUsageAny`` in ``VerifyLeavesCertChainWithRootPEM``): no host name, any key usage.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class ChainError(ValueError):
    """A certificate does not chain to the trusted root, or is outside its validity."""


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key, the curve EVE uses for every device and controller key."""
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_certificate(
    key: PrivateKey,
    common_name: str,
    *,
    issuer_key: PrivateKey | None = None,
    issuer_cert: x509.Certificate | None = None,
    is_ca: bool = False,
    days: int = 3650,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server_auth: bool = False,
    client_auth: bool = False,
    org: str | None = None,
) -> x509.Certificate:
    """Make a certificate for ``key``; self-signed unless an issuer is given.

    Validity starts one hour in the past so that small clock skews between hosts do not matter.
    """
    if (issuer_key is None) != (issuer_cert is None):
        raise ValueError("issuer_key and issuer_cert go together")
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name, org)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if is_ca:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
    else:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
            key_agreement=isinstance(key, ec.EllipticCurvePrivateKey), key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False,
        )  # fmt: skip
    builder = builder.add_extension(usage, critical=True)
    ekus = []
    if server_auth:
        ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client_auth:
        ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if issuer_cert is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
        builder = builder.add_extension(aki, critical=False)
    signing_key = issuer_key if issuer_key is not None else key
    return builder.sign(signing_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the files live on the node's config partition, as on EVE."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_cert(pem: bytes) -> x509.Certificate:
    """Load the first certificate of a PEM blob; raises ValueError when there is none, or when
    its version, names, validity or public key cannot be read."""
    try:
        return _read_now(x509.load_pem_x509_certificate(pem))
    except _UNUSABLE as exc:
        raise ValueError(f"unusable certificate: {exc}") from None


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle (root-certificate.pem may hold several); ValueError as
    :func:`load_cert` for any of them."""
    try:
        return [_read_now(c) for c in x509.load_pem_x509_certificates(pem)]
    except _UNUSABLE as exc:
        raise ValueError(f"unusable certificate: {exc}") from None


#: What cryptography raises besides ValueError for a certificate it cannot use: an impossible
#: version, an unknown key algorithm or curve, and TypeError for a name attribute of a type its
#: OID does not allow (a BIT STRING common name).
_UNUSABLE = (x509.InvalidVersion, UnsupportedAlgorithm, TypeError)


def _read_now(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` after reading the fields cryptography parses lazily: a malformed name or an
    unsupported key is then an error of loading (ValueError, UnsupportedAlgorithm), not of
    whichever later check happens to touch it first."""
    _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
    cert.public_key()
    return cert


def load_key(pem: bytes) -> PrivateKey:
    """Load an unencrypted EC or RSA private key; raises ValueError for anything else."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # an encrypted key: cryptography says "password was not given"
        raise ValueError(f"private key is not usable: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        # Old v1 roots carry no extensions; a pinned root is trusted as a CA regardless.
        return False
    except ValueError:  # extensions are parsed lazily: malformed or duplicate ones
        return False


def _check_time(cert: x509.Certificate, now: dt.datetime) -> None:
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        raise ChainError(
            f"certificate {cert.subject.rfc4514_string()} is not valid now "
            f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})"
        )


def verify_chain(
    leaf: x509.Certificate,
    roots: Sequence[x509.Certificate],
    intermediates: Iterable[x509.Certificate] = (),
    *,
    now: dt.datetime | None = None,
    max_depth: int = 8,
) -> list[x509.Certificate]:
    """Verify that ``leaf`` chains through ``intermediates`` to one of ``roots``.

    Checks signatures, validity periods and that every issuer below the root is a CA.
    Returns the chain leaf-first (root last).  Raises ChainError.
    """
    now = now or dt.datetime.now(dt.UTC)
    pool = list(intermediates)
    chain = [leaf]
    current = leaf
    for _ in range(max_depth):
        _check_time(current, now)
        for root in roots:
            if root.subject == current.issuer and _signed_by(current, root):
                _check_time(root, now)
                if root != current:
                    chain.append(root)
                return chain
        issuer = next(
            (
                c
                for c in pool
                if c.subject == current.issuer and c != current and _signed_by(current, c)
            ),
            None,
        )
        if issuer is None:
            raise ChainError(
                f"certificate {current.subject.rfc4514_string()} does not chain to the root "
                "certificate"
            )
        if not _is_ca(issuer):
            raise ChainError(f"issuer {issuer.subject.rfc4514_string()} is not a CA")
        chain.append(issuer)
        current = issuer
    raise ChainError("certificate chain too long")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# ---- certificates whose key lives elsewhere (a TPM) ------------------------------------------

_ECDSA_WITH_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def sign_certificate_externally(
    builder: x509.CertificateBuilder, sign_tbs: Callable[[bytes], bytes]
) -> x509.Certificate:
    """Finish ``builder`` with a signature made outside this process (a TPM key).

    ``sign_tbs`` receives the DER TBSCertificate and returns an ASN.1 ECDSA-with-SHA256
    signature over it.  cryptography cannot sign with a key it does not hold, so the builder is
    first signed with a throw-away key of the same algorithm (which fixes the signature algorithm
    inside the TBS), and the outer signature is then replaced.  Raises ValueError when the result
    is not a valid certificate.
    """
    scratch = new_ec_key()
    draft = builder.sign(scratch, hashes.SHA256())
    tbs = draft.tbs_certificate_bytes
    signature = sign_tbs(tbs)
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = tbs + _ECDSA_WITH_SHA256 + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_length(len(body)) + body)


def certificate_builder(
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    common_name: str,
    *,
    issuer: x509.Certificate | None = None,
    days: int = 3650,
    key_agreement: bool = False,
    org: str | None = None,
) -> x509.CertificateBuilder:
    """An end-entity certificate builder for a key held elsewhere; self-issued unless ``issuer``.

    The caller finishes it with :func:`sign_certificate_externally`.
    """
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name, org)
    usage = x509.KeyUsage(
        digital_signature=not key_agreement, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=key_agreement, key_cert_sign=False,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
