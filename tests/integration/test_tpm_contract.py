"""One contract for both TPM drivers: FakeTpm and DeviceTpm on a fresh swtpm.

Every test runs twice, against the in-memory fake and against the real driver talking to its
own swtpm (manufactured once per session by swtpm_setup, then copied into the test's tmp_path,
so each test starts from a factory-fresh TPM).  The swtpm is stopped in teardown, also when the
test fails.  Without swtpm the real half fails when services are required (CI) and skips
otherwise; the fake half always runs.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from agent.drivers.swtpm import SwtpmError, SwtpmProcess
from agent.drivers.tpm import (
    DEFAULT_SEAL_PCRS,
    QUOTE_PCRS,
    REPORTED_PCRS,
    TEMPLATES,
    KeyRole,
    Tpm,
    TpmError,
    TpmNotProvisioned,
    TpmPolicyError,
    TpmUnavailable,
)
from agent.drivers.tpm_fake import FakeTpm
from agent.wire import ecdh, tpmwire
from tests.integration.conftest import swtpm_missing

NONCE = b"adam-nonce12"  # Adam hands out 12-character nonces


@dataclass
class Env:
    """A TPM under test and how to power-cycle it."""

    kind: str
    tpm: Tpm
    power_cycle: Callable[[], Tpm]
    ek_certificate_expected: bool
    proc: SwtpmProcess | None = None

    def restart(self) -> Tpm:
        self.tpm = self.power_cycle()
        return self.tpm


# --- fixtures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Factory:
    state_dir: Path
    ek_certificate: bool


@pytest.fixture(scope="session")
def swtpm_factory(tmp_path_factory: pytest.TempPathFactory) -> _Factory | str:
    """A manufactured swtpm state to copy, or the reason there is none."""
    reason = swtpm_missing()
    if reason is not None:
        return reason
    state = tmp_path_factory.mktemp("swtpm-factory")
    proc = SwtpmProcess(state)
    try:
        proc.manufacture()
    except SwtpmError as exc:
        return str(exc)
    return _Factory(state, bool(proc.ek_certificate_made))


def _fake_env() -> Env:
    state: dict[str, bytes] = {}
    fake = FakeTpm(state, ek_certificate=True)

    def power_cycle() -> Tpm:
        made.tpm.close()
        return FakeTpm(state)

    made = Env("fake", fake, power_cycle, ek_certificate_expected=True)
    return made


def _swtpm_env(
    factory: _Factory | str,
    tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> Env:
    if isinstance(factory, str):
        require_service("swtpm", factory)
    from agent.drivers.tpm_device import DeviceTpm

    state = tmp_path / "swtpm"
    shutil.copytree(factory.state_dir, state)
    proc = SwtpmProcess(state)
    proc.start()

    def power_cycle() -> Tpm:
        made.tpm.close()
        proc.stop()
        proc.start()
        return DeviceTpm(proc.tcti)

    made = Env("swtpm", DeviceTpm(proc.tcti), power_cycle, factory.ek_certificate, proc)
    return made


@pytest.fixture(params=["fake", "swtpm"])
def env(
    request: pytest.FixtureRequest,
    swtpm_factory: _Factory | str,
    tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> Iterator[Env]:
    made = (
        _fake_env()
        if request.param == "fake"
        else _swtpm_env(swtpm_factory, tmp_path, require_service)
    )
    try:
        yield made
    finally:
        made.tpm.close()
        if made.proc is not None:
            made.proc.stop()


@pytest.fixture
def tpm(env: Env) -> Tpm:
    env.tpm.provision()
    return env.tpm


def _publics(tpm: Tpm) -> dict[KeyRole, bytes]:
    return {role: tpm.public_area(role) for role in KeyRole}


# --- provisioning and keys -----------------------------------------------------------------------


def test_keys_are_missing_before_provision(env: Env) -> None:
    with pytest.raises(TpmNotProvisioned):
        env.tpm.public_key(KeyRole.AK)
    with pytest.raises(TpmNotProvisioned):
        env.tpm.quote(NONCE)
    with pytest.raises(TpmNotProvisioned):
        env.tpm.sign_digest(KeyRole.DEVICE, bytes(32))
    with pytest.raises(TpmNotProvisioned):
        env.tpm.seal(b"secret")
    assert len(env.tpm.read_pcrs()) == len(REPORTED_PCRS)  # PCRs need no keys


def test_provision_twice_keeps_the_same_keys(env: Env) -> None:
    env.tpm.provision()
    first = _publics(env.tpm)
    env.tpm.provision()
    assert _publics(env.tpm) == first
    assert len(set(first.values())) == len(KeyRole)  # five different keys


def test_public_areas_follow_the_templates(tpm: Tpm) -> None:
    for role in KeyRole:
        area = tpmwire.Public.unmarshal_2b(tpm.public_area(role))
        template = TEMPLATES[role]
        assert (area.type, area.name_alg, area.attributes) == (
            template.type,
            template.name_alg,
            template.attributes,
        ), role
        assert (area.scheme, area.curve, area.symmetric) == (
            template.scheme,
            template.curve,
            template.symmetric,
        ), role
        assert area.auth_policy == template.auth_policy
        assert area.public_key().public_numbers() == tpm.public_key(role).public_numbers()
    assert isinstance(tpm.public_key(KeyRole.EK), rsa.RSAPublicKey)
    for role in (KeyRole.SRK, KeyRole.AK, KeyRole.ECDH, KeyRole.DEVICE):
        key = tpm.public_key(role)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)


def test_device_key_signature_verifies(tpm: Tpm) -> None:
    digest = hashlib.sha256(b"an envelope").digest()
    signature = tpm.sign_digest(KeyRole.DEVICE, digest)
    assert len(signature) == 64
    key = tpm.public_key(KeyRole.DEVICE)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.verify(der, b"an envelope", ec.ECDSA(hashes.SHA256()))


def test_sign_digest_refuses_bad_arguments(tpm: Tpm) -> None:
    with pytest.raises(ValueError):
        tpm.sign_digest(KeyRole.AK, bytes(32))
    with pytest.raises(ValueError):
        tpm.sign_digest(KeyRole.DEVICE, bytes(31))


def test_ek_certificate_matches_the_ek(env: Env, tpm: Tpm) -> None:
    der = tpm.ek_certificate()
    if not env.ek_certificate_expected:
        pytest.skip("swtpm_setup made no EK certificate on this host")
    assert der is not None
    certified = x509.load_der_x509_certificate(der).public_key()
    ek = tpm.public_key(KeyRole.EK)
    assert isinstance(ek, rsa.RSAPublicKey)
    assert isinstance(certified, rsa.RSAPublicKey)
    assert certified.public_numbers() == ek.public_numbers()


# --- PCRs and quotes ------------------------------------------------------------------------------


def test_pcrs_start_at_their_reset_values(env: Env) -> None:
    values = env.tpm.read_pcrs()
    assert sorted(values) == list(REPORTED_PCRS)
    for index, value in values.items():
        expected = b"\xff" * 32 if 17 <= index <= 22 else bytes(32)
        assert value == expected, index


def test_extend_is_sha256_of_old_and_digest(env: Env) -> None:
    before = env.tpm.read_pcrs()
    digest = hashlib.sha256(b"measured").digest()
    env.tpm.extend_pcr(14, digest)
    env.tpm.extend_pcr(14, digest)
    once = hashlib.sha256(before[14] + digest).digest()
    after = env.tpm.read_pcrs()
    assert after[14] == hashlib.sha256(once + digest).digest()
    assert {i: v for i, v in after.items() if i != 14} == {
        i: v for i, v in before.items() if i != 14
    }


def test_extend_refuses_bad_arguments_and_locality_pcrs(env: Env) -> None:
    with pytest.raises(ValueError):
        env.tpm.extend_pcr(24, bytes(32))
    with pytest.raises(ValueError):
        env.tpm.extend_pcr(0, b"short")
    with pytest.raises(TpmError):
        env.tpm.extend_pcr(17, bytes(32))
    env.tpm.extend_pcr(16, bytes(32))  # the debug PCR is open to locality 0
    env.tpm.extend_pcr(23, bytes(32))


def test_quote_verifies_with_the_ak(tpm: Tpm) -> None:
    tpm.extend_pcr(8, hashlib.sha256(b"grub.cfg").digest())
    quote = tpm.quote(NONCE)
    values = tpm.read_pcrs()
    key = tpm.public_key(KeyRole.AK)
    attest = tpmwire.verify_quote(
        quote.attest, quote.signature, key, nonce=NONCE, pcr_values=values
    )
    assert quote.pcrs == QUOTE_PCRS
    assert attest.extra_data == NONCE
    assert attest.pcr_select == tpmwire.sha256_selection(QUOTE_PCRS)
    assert attest.pcr_digest == tpmwire.pcr_digest(values, attest.pcr_select)
    ak = tpmwire.Public.unmarshal_2b(tpm.public_area(KeyRole.AK))
    owner = tpmwire.hierarchy_name(tpmwire.RH_OWNER)
    assert attest.qualified_signer == tpmwire.qualified_name(owner, ak.name())
    # EVE's encoding: DER SEQUENCE {r, s}, as tpmmgr's asn1.Marshal produces
    assert tpmwire.EcdsaSignature.from_der(quote.signature).der() == quote.signature


def test_quote_checks_fail_on_wrong_nonce_values_or_bytes(tpm: Tpm) -> None:
    quote = tpm.quote(NONCE, pcrs=(0, 1, 2, 7))
    key = tpm.public_key(KeyRole.AK)
    values = tpm.read_pcrs()
    with pytest.raises(tpmwire.NonceMismatch):
        tpmwire.verify_quote(quote.attest, quote.signature, key, nonce=b"x" * 12, pcr_values=values)
    changed = {**values, 7: bytes(31) + b"\x01"}
    with pytest.raises(tpmwire.PcrDigestMismatch):
        tpmwire.verify_quote(quote.attest, quote.signature, key, nonce=NONCE, pcr_values=changed)
    tampered = quote.attest[:-1] + bytes([quote.attest[-1] ^ 1])
    with pytest.raises(tpmwire.BadSignature):
        tpmwire.verify_quote(tampered, quote.signature, key, nonce=NONCE, pcr_values=values)


def test_quote_refuses_bad_arguments(tpm: Tpm) -> None:
    with pytest.raises(ValueError):
        tpm.quote(bytes(33))
    with pytest.raises(ValueError):
        tpm.quote(NONCE, pcrs=())
    with pytest.raises(ValueError):
        tpm.quote(NONCE, pcrs=(24,))


# --- sealing --------------------------------------------------------------------------------------


def test_seal_unseal_round_trip(tpm: Tpm) -> None:
    secret = bytes(range(32))
    blob = tpm.seal(secret)
    assert tpm.unseal(blob) == secret
    assert tpm.unseal(blob) == secret
    sealed = tpmwire.SealedBlob.unmarshal(blob)
    assert sealed.pcr_indexes == DEFAULT_SEAL_PCRS
    public = tpmwire.Public.unmarshal(sealed.public)
    expected = tpmwire.policy_pcr_digest(tpm.read_pcrs(), sealed.pcrs)
    assert public.auth_policy == expected
    assert secret not in blob


def test_unseal_refuses_after_a_sealed_pcr_changes(tpm: Tpm) -> None:
    blob = tpm.seal(b"vault key", pcrs=(0, 7, 14))
    tpm.extend_pcr(7, hashlib.sha256(b"new firmware").digest())
    with pytest.raises(TpmPolicyError):
        tpm.unseal(blob)


def test_unseal_ignores_pcrs_outside_the_policy(tpm: Tpm) -> None:
    blob = tpm.seal(b"vault key")  # DEFAULT_SEAL_PCRS: not 5, not 15
    tpm.extend_pcr(5, hashlib.sha256(b"new GPT").digest())
    tpm.extend_pcr(15, hashlib.sha256(b"os").digest())
    assert tpm.unseal(blob) == b"vault key"


def test_unseal_refuses_broken_blobs(tpm: Tpm) -> None:
    blob = tpm.seal(b"vault key", pcrs=(0, 1))
    for broken in (b"", b"EVSB", blob[:-1], blob + b"\0"):
        with pytest.raises(TpmError) as info:
            tpm.unseal(broken)
        assert not isinstance(info.value, TpmPolicyError)
    flipped = blob[:-1] + bytes([blob[-1] ^ 0x55])  # inside the TPM2B_PRIVATE
    with pytest.raises(TpmError) as info:
        tpm.unseal(flipped)
    assert not isinstance(info.value, TpmPolicyError)


def test_unseal_refuses_a_blob_with_another_pcr_selection(tpm: Tpm) -> None:
    sealed = tpmwire.SealedBlob.unmarshal(tpm.seal(b"vault key", pcrs=(0, 1)))
    widened = tpmwire.SealedBlob(tpmwire.sha256_selection((0,)), sealed.public, sealed.private)
    with pytest.raises(TpmPolicyError):
        tpm.unseal(widened.marshal())


def test_seal_refuses_bad_arguments(tpm: Tpm) -> None:
    with pytest.raises(ValueError):
        tpm.seal(b"")
    with pytest.raises(ValueError):
        tpm.seal(bytes(129))
    with pytest.raises(ValueError):
        tpm.seal(b"x", pcrs=(30,))
    assert tpm.unseal(tpm.seal(bytes(128))) == bytes(128)


# --- ECDH, randomness, power cycles ----------------------------------------------------------


def test_ecdh_shared_point_matches_the_peer_side(tpm: Tpm) -> None:
    peer = ec.generate_private_key(ec.SECP256R1())
    ecdh_public = tpm.public_key(KeyRole.ECDH)
    assert isinstance(ecdh_public, ec.EllipticCurvePublicKey)
    x, y = tpm.ecdh_shared_point(peer.public_key())
    assert peer.exchange(ec.ECDH(), ecdh_public) == x.to_bytes(32, "big")
    assert (x, y) == ecdh.shared_point(peer, ecdh_public)
    with pytest.raises(ValueError):
        tpm.ecdh_shared_point(ec.generate_private_key(ec.SECP384R1()).public_key())


def test_random(env: Env) -> None:
    assert env.tpm.random(0) == b""
    assert len(env.tpm.random(1)) == 1
    a, b = env.tpm.random(100), env.tpm.random(100)
    assert len(a) == 100 and a != b


def test_keys_survive_a_power_cycle_and_pcrs_reset(env: Env) -> None:
    env.tpm.provision()
    keys = _publics(env.tpm)
    blob = env.tpm.seal(b"vault key")
    env.tpm.extend_pcr(0, hashlib.sha256(b"tampered").digest())
    with pytest.raises(TpmPolicyError):
        env.tpm.unseal(blob)
    tpm = env.restart()
    assert tpm.read_pcrs([0])[0] == bytes(32)
    assert _publics(tpm) == keys  # before provision: the keys are persistent
    assert tpm.unseal(blob) == b"vault key"
    tpm.provision()
    assert _publics(tpm) == keys


def test_close_is_idempotent_and_final(env: Env) -> None:
    env.tpm.close()
    env.tpm.close()
    with pytest.raises(TpmUnavailable):
        env.tpm.read_pcrs()


# --- the real driver only --------------------------------------------------------------------


def test_device_tpm_without_a_tpm_is_unavailable() -> None:
    pytest.importorskip("tpm2_pytss")
    from agent.drivers.tpm_device import DeviceTpm

    device = DeviceTpm("swtpm:host=127.0.0.1,port=1")
    with pytest.raises(TpmUnavailable):
        device.read_pcrs()
    device.close()


def test_device_tpm_reconnects_after_swtpm_comes_back(
    swtpm_factory: _Factory | str,
    tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> None:
    env = _swtpm_env(swtpm_factory, tmp_path, require_service)
    assert env.proc is not None
    try:
        env.tpm.provision()
        key = env.tpm.public_area(KeyRole.DEVICE)
        env.tpm.extend_pcr(0, bytes(32))
        env.proc.stop()
        with pytest.raises(TpmUnavailable):
            env.tpm.read_pcrs()
        env.proc.start()  # same state directory, same port
        assert env.tpm.public_area(KeyRole.DEVICE) == key
        assert env.tpm.read_pcrs([0])[0] == bytes(32)
    finally:
        env.tpm.close()
        env.proc.stop()


def test_swtpm_process_lifecycle(
    swtpm_factory: _Factory | str,
    tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> None:
    if isinstance(swtpm_factory, str):
        require_service("swtpm", swtpm_factory)
    state = tmp_path / "node-tpm"
    proc = SwtpmProcess(state)
    other = SwtpmProcess(state)
    try:
        proc.stop()  # never started: nothing to do
        proc.start()
        assert proc.manufactured and proc.running
        tcti = proc.tcti
        proc.start()  # running: nothing to do
        assert proc.tcti == tcti
        other.start()  # a second agent process adopts the running swtpm
        assert other.running and other.tcti == tcti
        other.stop()
        assert not proc.running
        proc.stop()
        proc.start()  # restarts after the process died under it
        assert proc.running and proc.tcti == tcti
        assert proc.log_path.exists()
    finally:
        proc.stop()
        other.stop()
    assert not proc.running
