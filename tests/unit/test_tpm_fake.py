"""What the fake TPM does beyond the shared contract (tests/integration/test_tpm_contract.py):
state kept across power cycles, blobs bound to one TPM, its EK certificate chain."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.drivers.tpm import KeyRole, Tpm, TpmError, TpmPolicyError, TpmUnavailable
from agent.drivers.tpm_fake import FAKE_FIRMWARE_VERSION, FakeTpm, manufacturer_ca
from agent.wire import ecdh, tpmwire


@pytest.fixture
def fake() -> FakeTpm:
    tpm = FakeTpm()
    tpm.provision()
    return tpm


def test_fake_is_a_tpm() -> None:
    tpm: Tpm = FakeTpm()  # checked by mypy against the Protocol
    assert tpm.ek_certificate() is None


def test_state_survives_a_power_cycle() -> None:
    state: dict[str, bytes] = {}
    first = FakeTpm(state)
    first.provision()
    keys = {role: first.public_area(role) for role in KeyRole}
    first.extend_pcr(0, bytes(32))
    quote_before = tpmwire.Attest.unmarshal(first.quote(b"n" * 12).attest)
    first.close()
    second = FakeTpm(state)
    assert {role: second.public_area(role) for role in KeyRole} == keys
    assert second.read_pcrs([0]) == {0: bytes(32)}
    quote_after = tpmwire.Attest.unmarshal(second.quote(b"n" * 12).attest)
    assert quote_after.clock_info.reset_count == quote_before.clock_info.reset_count + 1
    assert quote_after.firmware_version == FAKE_FIRMWARE_VERSION


def test_without_state_every_fake_is_another_tpm() -> None:
    one, two = FakeTpm(), FakeTpm()
    one.provision()
    two.provision()
    assert one.public_area(KeyRole.DEVICE) != two.public_area(KeyRole.DEVICE)
    blob = one.seal(b"vault key")
    with pytest.raises(TpmError) as info:
        two.unseal(blob)
    assert not isinstance(info.value, TpmPolicyError)


def test_ek_certificate_chains_to_the_fake_manufacturer() -> None:
    state: dict[str, bytes] = {}
    fake = FakeTpm(state, ek_certificate=True)
    fake.provision()
    der = fake.ek_certificate()
    assert der is not None
    ca = manufacturer_ca(state)
    assert ca is not None
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    cert.verify_directly_issued_by(ca)
    ek = fake.public_key(KeyRole.EK)
    assert isinstance(ek, rsa.RSAPublicKey)
    certified = cert.public_key()
    assert isinstance(certified, rsa.RSAPublicKey)
    assert certified.public_numbers() == ek.public_numbers()
    assert manufacturer_ca({}) is None


def test_provision_creates_only_what_is_missing() -> None:
    state: dict[str, bytes] = {}
    fake = FakeTpm(state)
    fake.provision()
    device = state["key.DEVICE"]
    del state["key.ECDH"]
    fake.provision()
    assert state["key.DEVICE"] == device
    assert "key.ECDH" in state


def test_quote_clock_advances_and_signer_is_the_ak(fake: FakeTpm) -> None:
    first = tpmwire.Attest.unmarshal(fake.quote(b"a" * 12).attest)
    second = tpmwire.Attest.unmarshal(fake.quote(b"b" * 12).attest)
    assert second.clock_info.clock >= first.clock_info.clock
    assert first.clock_info.safe
    ak = tpmwire.Public.unmarshal_2b(fake.public_area(KeyRole.AK))
    owner = tpmwire.hierarchy_name(tpmwire.RH_OWNER)
    assert first.qualified_signer == tpmwire.qualified_name(owner, ak.name())


def test_unseal_reports_the_sealed_pcrs(fake: FakeTpm) -> None:
    blob = fake.seal(b"k", pcrs=(3, 1))
    fake.extend_pcr(3, hashlib.sha256(b"x").digest())
    with pytest.raises(TpmPolicyError, match=r"\[1, 3\]"):
        fake.unseal(blob)


def test_unseal_refuses_a_selection_it_cannot_evaluate(fake: FakeTpm) -> None:
    sealed = tpmwire.SealedBlob.unmarshal(fake.seal(b"k", pcrs=(0,)))
    sha1 = (tpmwire.PcrSelection(tpmwire.Alg.SHA1, (0,)),)
    with pytest.raises(TpmError):
        fake.unseal(tpmwire.SealedBlob(sha1, sealed.public, sealed.private).marshal())


def test_ecdh_point_is_the_software_equivalent(fake: FakeTpm) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    ecdh_public = fake.public_key(KeyRole.ECDH)
    assert isinstance(ecdh_public, ec.EllipticCurvePublicKey)
    assert fake.ecdh_shared_point(peer.public_key()) == ecdh.shared_point(peer, ecdh_public)


def test_everything_after_close_is_unavailable(fake: FakeTpm) -> None:
    fake.close()
    for call in (
        lambda: fake.provision(),
        lambda: fake.public_key(KeyRole.AK),
        lambda: fake.quote(b"n" * 12),
        lambda: fake.random(4),
        lambda: fake.ek_certificate(),
        lambda: fake.extend_pcr(0, bytes(32)),
    ):
        with pytest.raises(TpmUnavailable):
            call()
    with pytest.raises(ValueError):
        fake.random(-1)
