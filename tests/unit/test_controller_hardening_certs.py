"""Issue 9, controller side: registration refuses expired, not yet valid and weak certificates.

The harness's clock is fixed at T0 (2027-01-15); certificates are made around it.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from agent.wire import envelope
from controller.certpolicy import CertPolicy, CertRefused, check_device_cert
from tests.unit.test_controller_harness import T0, Harness, controller_harness

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
DAY = dt.timedelta(days=1)
NOW = dt.datetime.fromtimestamp(T0, dt.UTC)


def certificate(
    key: Key, *, not_before: dt.datetime = NOW - DAY, not_after: dt.datetime = NOW + 7300 * DAY
) -> x509.Certificate:
    """Self-signed, as EVE makes its device certificate (but with the dates given)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EVE")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path) as harness:
        harness.allow()
        yield harness


async def register(ctl: Harness, cert: x509.Certificate, serial: str = "s1") -> tuple[int, str]:
    pem = base64.b64encode(cert.public_bytes(Encoding.PEM))
    answer = await ctl.device(serial).register(pem_cert=pem)
    return answer.status, answer.body.decode()


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        (
            certificate(ec.generate_private_key(ec.SECP256R1()), not_after=NOW - DAY),
            "expired on 2027-01-14",
        ),
        (
            certificate(ec.generate_private_key(ec.SECP256R1()), not_before=NOW + DAY),
            "not valid before 2027-01-16",
        ),
        (
            certificate(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "RSA key of 1024 bits (at least 2048 required)",
        ),
        (
            certificate(ec.generate_private_key(ec.SECP256K1())),
            "EC key on curve secp256k1",
        ),
        (
            certificate(ec.generate_private_key(ec.SECP521R1())),
            "EC key on curve secp521r1",
        ),
        (
            certificate(ec.generate_private_key(ec.BrainpoolP256R1())),
            "EC key on curve brainpoolP256r1",
        ),
        (certificate(ed25519.Ed25519PrivateKey.generate()), "Ed25519PublicKey keys"),
    ],
    ids=["expired", "not-yet-valid", "rsa-1024", "secp256k1", "p-521", "brainpool", "ed25519"],
)
async def test_registration_refuses_the_certificate(
    ctl: Harness, caplog: pytest.LogCaptureFixture, cert: x509.Certificate, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="controller.api")
    status, body = await register(ctl, cert)
    assert status == 400
    assert reason in body
    assert ctl.store.list_devices() == []
    [line] = [r for r in caplog.records if r.name == "controller.api"]
    assert line.levelno == logging.WARNING
    assert "device certificate refused (serial 's1')" in line.getMessage()
    assert reason in line.getMessage()


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["p-256", "p-384", "rsa-2048"],
)
async def test_registration_accepts_eve_like_certificates(ctl: Harness, key: Key) -> None:
    status, _ = await register(ctl, certificate(key))
    assert status == 201


async def test_small_clock_differences_are_tolerated(ctl: Harness) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # Made by a device whose clock runs two minutes ahead, without EVE's one-day backdating.
    status, _ = await register(ctl, certificate(key, not_before=NOW + dt.timedelta(minutes=2)))
    assert status == 201


async def test_an_onboarding_certificate_with_a_weak_key_is_refused(ctl: Harness) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ctl.onboard = envelope.SoftwareSigner(key=weak, cert=certificate(weak))
    ctl.allow()
    status, body = await register(ctl, certificate(ec.generate_private_key(ec.SECP256R1())))
    assert status == 400
    assert "onboarding certificate refused: RSA key of 1024 bits" in body


def test_keys_that_cannot_sign_are_refused() -> None:
    signer = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EVE")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(x25519.X25519PrivateKey.generate().public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(signer, hashes.SHA256())
    )
    with pytest.raises(CertRefused, match="X25519PublicKey keys are not accepted"):
        check_device_cert(cert, T0, CertPolicy())
