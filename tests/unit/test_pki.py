# SPDX-License-Identifier: Apache-2.0
"""agent.wire.pki: certificate making, PEM loading and chain verification to a pinned root."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.wire import pki
from agent.wire.pki import ChainError

NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Pair:
    key: pki.PrivateKey
    cert: x509.Certificate


def root(name: str = "root") -> Pair:
    key = pki.new_ec_key()
    return Pair(key, pki.make_certificate(key, name, is_ca=True))


def issue(issuer: Pair, name: str, *, is_ca: bool = False, days: int = 3650) -> Pair:
    key = pki.new_ec_key()
    cert = pki.make_certificate(
        key, name, issuer_key=issuer.key, issuer_cert=issuer.cert, is_ca=is_ca, days=days
    )
    return Pair(key, cert)


@pytest.fixture(scope="module")
def ca() -> Pair:
    return root()


@pytest.fixture(scope="module")
def intermediate(ca: Pair) -> Pair:
    return issue(ca, "intermediate", is_ca=True)


def cn(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


# ---------------------------------------------------------------- make_certificate


def test_self_signed(ca: Pair) -> None:
    cert = ca.cert
    assert cert.subject == cert.issuer
    assert cn(cert) == "root"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.verify_directly_issued_by(cert)
    assert cert.public_key() == ca.key.public_key()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_validity_window() -> None:
    key = pki.new_ec_key()
    before = dt.datetime.now(dt.UTC)
    cert = pki.make_certificate(key, "leaf", days=10)
    assert before - dt.timedelta(minutes=61) <= cert.not_valid_before_utc
    assert cert.not_valid_before_utc <= before - dt.timedelta(minutes=59)
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(span - dt.timedelta(days=10, hours=1)) < dt.timedelta(seconds=5)


def test_issued(ca: Pair) -> None:
    leaf = issue(ca, "leaf")
    cert = leaf.cert
    assert cert.issuer == ca.cert.subject
    assert cert.subject != cert.issuer
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not usage.key_cert_sign
    assert usage.digital_signature and usage.key_agreement  # EC key: ECDH allowed
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    cert.verify_directly_issued_by(ca.cert)
    with pytest.raises(ValueError):
        cert.verify_directly_issued_by(cert)


def test_extensions_sans_ekus_org() -> None:
    key = pki.new_ec_key()
    cert = pki.make_certificate(
        key,
        "controller",
        dns_names=["ctrl.example", "localhost"],
        ip_addresses=["127.0.0.1", "::1"],
        server_auth=True,
        client_auth=True,
        org="LF Edge",
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ctrl.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in org] == ["LF Edge"]


def test_no_optional_extensions_by_default() -> None:
    cert = pki.make_certificate(pki.new_ec_key(), "plain")
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_rsa_leaf_key_usage(ca: Pair) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = pki.make_certificate(key, "rsa", issuer_key=ca.key, issuer_cert=ca.cert)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment and not usage.key_agreement
    assert pki.verify_chain(cert, [ca.cert]) == [cert, ca.cert]


def test_issuer_key_and_cert_go_together(ca: Pair) -> None:
    with pytest.raises(ValueError, match="go together"):
        pki.make_certificate(pki.new_ec_key(), "x", issuer_key=ca.key)
    with pytest.raises(ValueError, match="go together"):
        pki.make_certificate(pki.new_ec_key(), "x", issuer_cert=ca.cert)


def test_serials_differ() -> None:
    key = pki.new_ec_key()
    assert (
        pki.make_certificate(key, "a").serial_number != pki.make_certificate(key, "a").serial_number
    )


# ---------------------------------------------------------------- PEM round trips and errors


def test_pem_round_trip(ca: Pair) -> None:
    assert pki.load_cert(pki.cert_pem(ca.cert)) == ca.cert
    pem = pki.key_pem(ca.key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    loaded = pki.load_key(pem)
    assert loaded.public_key() == ca.key.public_key()


def test_load_rsa_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    loaded = pki.load_key(pki.key_pem(key))
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == key.private_numbers()


def test_load_certs_bundle(ca: Pair, intermediate: Pair) -> None:
    bundle = pki.cert_pem(ca.cert) + b"\n" + pki.cert_pem(intermediate.cert)
    assert pki.load_certs(bundle) == [ca.cert, intermediate.cert]
    assert pki.load_cert(bundle) == ca.cert


@pytest.mark.parametrize("blob", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_load_certs_errors(blob: bytes) -> None:
    with pytest.raises(ValueError):
        pki.load_certs(blob)
    with pytest.raises(ValueError):
        pki.load_cert(blob)


def test_load_cert_of_a_key(ca: Pair) -> None:
    with pytest.raises(ValueError):
        pki.load_cert(pki.key_pem(ca.key))
    with pytest.raises(ValueError):
        pki.load_certs(pki.key_pem(ca.key))


@pytest.mark.parametrize("blob", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_load_key_garbage(blob: bytes) -> None:
    with pytest.raises(ValueError):
        pki.load_key(blob)


def test_load_key_of_a_cert(ca: Pair) -> None:
    with pytest.raises(ValueError):
        pki.load_key(pki.cert_pem(ca.cert))


def test_load_key_unsupported_type() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="unsupported private key type"):
        pki.load_key(pem)


def test_load_key_encrypted_is_value_error() -> None:
    """The contract: ValueError for anything but an unencrypted EC/RSA key (callers catch it)."""
    pem = pki.new_ec_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError):
        pki.load_key(pem)


# ---------------------------------------------------------------- verify_chain


def test_chain_leaf_to_root(ca: Pair) -> None:
    leaf = issue(ca, "leaf")
    assert pki.verify_chain(leaf.cert, [ca.cert]) == [leaf.cert, ca.cert]


def test_chain_through_intermediate(ca: Pair, intermediate: Pair) -> None:
    leaf = issue(intermediate, "signing")
    chain = pki.verify_chain(leaf.cert, [ca.cert], [intermediate.cert])
    assert chain == [leaf.cert, intermediate.cert, ca.cert]


def test_chain_picks_the_right_root_and_ignores_unrelated_intermediates(
    ca: Pair, intermediate: Pair
) -> None:
    other = root("other-root")
    unrelated = issue(other, "unrelated-intermediate", is_ca=True)
    leaf = issue(intermediate, "signing")
    chain = pki.verify_chain(leaf.cert, [other.cert, ca.cert], [unrelated.cert, intermediate.cert])
    assert chain == [leaf.cert, intermediate.cert, ca.cert]


def test_chain_two_intermediates(ca: Pair, intermediate: Pair) -> None:
    second = issue(intermediate, "second-intermediate", is_ca=True)
    leaf = issue(second, "leaf")
    chain = pki.verify_chain(leaf.cert, [ca.cert], [intermediate.cert, second.cert])
    assert [cn(c) for c in chain] == ["leaf", "second-intermediate", "intermediate", "root"]


def test_missing_intermediate(ca: Pair, intermediate: Pair) -> None:
    leaf = issue(intermediate, "signing")
    with pytest.raises(ChainError, match="does not chain"):
        pki.verify_chain(leaf.cert, [ca.cert])


def test_root_itself(ca: Pair) -> None:
    assert pki.verify_chain(ca.cert, [ca.cert]) == [ca.cert]


def test_wrong_root_rejected(ca: Pair) -> None:
    leaf = issue(ca, "leaf")
    with pytest.raises(ChainError):
        pki.verify_chain(leaf.cert, [root("other").cert])


def test_impostor_root_same_name_rejected(ca: Pair) -> None:
    """A root with the right subject but another key must not be accepted."""
    leaf = issue(ca, "leaf")
    impostor = root("root")
    assert impostor.cert.subject == ca.cert.subject
    with pytest.raises(ChainError):
        pki.verify_chain(leaf.cert, [impostor.cert])


def test_forged_leaf_rejected(ca: Pair) -> None:
    """Leaf naming the root as issuer but self-signed by an attacker key."""
    key = pki.new_ec_key()
    attacker = Pair(key, pki.make_certificate(key, "root", is_ca=True))
    forged = issue(attacker, "leaf")
    assert forged.cert.issuer == ca.cert.subject
    with pytest.raises(ChainError):
        pki.verify_chain(forged.cert, [ca.cert], [attacker.cert])


def test_expired_leaf_rejected(ca: Pair) -> None:
    leaf = issue(ca, "short", days=1)
    assert pki.verify_chain(leaf.cert, [ca.cert], now=NOW) == [leaf.cert, ca.cert]
    with pytest.raises(ChainError, match="not valid now"):
        pki.verify_chain(leaf.cert, [ca.cert], now=NOW + dt.timedelta(days=2))


def test_not_yet_valid_leaf_rejected(ca: Pair) -> None:
    leaf = issue(ca, "leaf")
    with pytest.raises(ChainError, match="not valid now"):
        pki.verify_chain(leaf.cert, [ca.cert], now=NOW - dt.timedelta(hours=2))


def test_expired_intermediate_rejected(ca: Pair) -> None:
    inter = issue(ca, "short-intermediate", is_ca=True, days=1)
    leaf = issue(inter, "leaf")
    later = NOW + dt.timedelta(days=2)
    with pytest.raises(ChainError, match="short-intermediate"):
        pki.verify_chain(leaf.cert, [ca.cert], [inter.cert], now=later)


def test_expired_root_rejected() -> None:
    key = pki.new_ec_key()
    short_root = Pair(key, pki.make_certificate(key, "short-root", is_ca=True, days=1))
    leaf = issue(short_root, "leaf", days=30)
    with pytest.raises(ChainError, match="short-root"):
        pki.verify_chain(leaf.cert, [short_root.cert], now=NOW + dt.timedelta(days=2))


def test_non_ca_intermediate_rejected(ca: Pair) -> None:
    not_ca = issue(ca, "not-a-ca", is_ca=False)
    leaf = issue(not_ca, "leaf")
    with pytest.raises(ChainError, match="not a CA"):
        pki.verify_chain(leaf.cert, [ca.cert], [not_ca.cert])


def test_chain_too_long(ca: Pair) -> None:
    pairs = [ca]
    for i in range(4):
        pairs.append(issue(pairs[-1], f"level-{i}", is_ca=True))
    leaf = issue(pairs[-1], "leaf")
    pool = [p.cert for p in pairs[1:]]
    assert len(pki.verify_chain(leaf.cert, [ca.cert], pool)) == 6
    with pytest.raises(ChainError, match="too long"):
        pki.verify_chain(leaf.cert, [ca.cert], pool, max_depth=3)


def test_external_signature_makes_a_verifiable_self_signed_certificate() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = pki.new_ec_key()
    calls: list[bytes] = []

    def sign(tbs: bytes) -> bytes:
        calls.append(tbs)
        return key.sign(tbs, ec.ECDSA(hashes.SHA256()))

    cert = pki.sign_certificate_externally(pki.certificate_builder(key.public_key(), "dev"), sign)
    cert.verify_directly_issued_by(cert)
    assert calls == [cert.tbs_certificate_bytes]
    assert cert.public_key() == key.public_key()


def test_external_signature_by_the_wrong_key_does_not_verify() -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    device, other = pki.new_ec_key(), pki.new_ec_key()
    issuer = pki.sign_certificate_externally(
        pki.certificate_builder(device.public_key(), "dev"),
        lambda tbs: device.sign(tbs, ec.ECDSA(hashes.SHA256())),
    )
    ak = pki.new_ec_key()
    forged = pki.sign_certificate_externally(
        pki.certificate_builder(ak.public_key(), "ak", issuer=issuer),
        lambda tbs: other.sign(tbs, ec.ECDSA(hashes.SHA256())),
    )
    assert forged.issuer == issuer.subject
    with pytest.raises(InvalidSignature):
        forged.verify_directly_issued_by(issuer)
