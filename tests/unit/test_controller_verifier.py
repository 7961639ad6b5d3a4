"""controller.attestation: the quote verifier and the PCR policy, with quotes from the fake TPM
and hand-made TPMS_ATTEST structures; then the whole exchange over HTTP and the admin commands.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sqlite3
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from agent.drivers.tpm import QUOTE_PCRS, KeyRole
from agent.drivers.tpm_fake import FakeTpm
from agent.measure import attestation_log, gzip_log
from agent.measure.boot import BootComponents, measure_boot
from agent.measure.configfs import measure_config
from agent.wire import pki, tpmwire
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from controller import cli, db
from controller.attestation import (
    Verdict,
    VerdictCode,
    apply_policy,
    pcr_report,
    verify_quote,
)
from controller.records import (
    DEFAULT_POLICY_PCRS,
    AttestState,
    DeviceCert,
    GoldenSource,
    NonceRecord,
    PcrPolicy,
    PcrReport,
)
from controller.store import Store
from tests.unit.test_controller_harness import FakeDevice, Harness, controller_harness

AK_TYPE = certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING
SHA256 = attest_pb2.TPM_HASH_ALGO_SHA256


def issue(
    public_key: ec.EllipticCurvePublicKey,
    name: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate,
    *,
    valid_from: dt.datetime | None = None,
    days: int = 3650,
) -> x509.Certificate:
    """A leaf for a public key only (the AK's private key stays in the TPM), as tpmmgr makes."""
    start = valid_from or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class Node:
    """An emulated node: a fake TPM (kept across power cycles), a device key, the AK cert."""

    root: Path
    tpm_state: MutableMapping[str, bytes]
    device_key: ec.EllipticCurvePrivateKey = field(default_factory=pki.new_ec_key)
    device_cert: x509.Certificate | None = None
    tpm: FakeTpm | None = None

    def __post_init__(self) -> None:
        if self.device_cert is None:
            self.device_cert = pki.make_certificate(self.device_key, "device")

    @property
    def cert(self) -> x509.Certificate:
        assert self.device_cert is not None
        return self.device_cert

    def ak_cert(self, *, issuer_key: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
        ak = FakeTpm(self.tpm_state).public_key(KeyRole.AK)
        assert isinstance(ak, ec.EllipticCurvePublicKey)
        return issue(ak, "attestation key", issuer_key or self.device_key, self.cert)

    def certs(self, ak_cert: x509.Certificate | None = None) -> list[DeviceCert]:
        pem = (ak_cert or self.ak_cert()).public_bytes(Encoding.PEM)
        return [DeviceCert(AK_TYPE, 0, b"", pem, True, True, b"")]

    def power_on(self, components: BootComponents, server: str = "ctl.example:8443") -> FakeTpm:
        """A TPM reset, then the emulated boot and measure-config."""
        if self.tpm is not None:
            self.tpm.close()
        self.tpm = FakeTpm(self.tpm_state)
        config = self.root / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "server").write_text(server)
        (config / "root-certificate.pem").write_text("ROOT\n")
        assert measure_boot(self.tpm, components, self.root / "bios").ok
        assert measure_config(self.tpm, config, self.root / "measurefs").ok
        return self.tpm

    def event_log(self) -> bytes:
        data = attestation_log(self.root / "bios", self.root / "measurefs")
        assert data is not None
        return data

    def quote(
        self, nonce: bytes, *, pcrs: Sequence[int] = QUOTE_PCRS, log: bytes | None = None
    ) -> attest_pb2.ZAttestQuote:
        """The ZAttestQuote EVE's zedagent builds (attesttask.go SendAttestQuote)."""
        assert self.tpm is not None
        made = self.tpm.quote(nonce, pcrs)
        quote = attest_pb2.ZAttestQuote(attestData=made.attest, signature=made.signature)
        for index, value in sorted(self.tpm.read_pcrs(list(range(24))).items()):
            quote.pcr_values.add(index=index, hash_algo=SHA256, value=value)
        quote.tpm_binary_event_log = gzip_log(self.event_log() if log is None else log)
        quote.versions.add(version_type=attest_pb2.ATTEST_VERSION_TYPE_EVE, version="1.0.0")
        return quote


@pytest.fixture(scope="module")
def tpm_state() -> MutableMapping[str, bytes]:
    state: dict[str, bytes] = {}
    FakeTpm(state).provision()
    return state


@pytest.fixture(scope="module")
def other_tpm_state() -> MutableMapping[str, bytes]:
    state: dict[str, bytes] = {}
    FakeTpm(state).provision()
    return state


@pytest.fixture
def node(tmp_path: Path, tpm_state: MutableMapping[str, bytes]) -> Node:
    n = Node(tmp_path / "node", tpm_state)
    n.power_on(boot())
    return n


def boot(version: str = "1.0.0", **kwargs: object) -> BootComponents:
    return BootComponents.for_node(agent_version=version, **kwargs)  # type: ignore[arg-type]


def fresh_nonce(value: bytes = b"N" * 32, *, age: float = 0.0) -> NonceRecord:
    now = time.time()
    return NonceRecord(nonce=value, issued_at=now - age, expires_at=now - age + 300)


def judge(
    node: Node,
    quote: attest_pb2.ZAttestQuote,
    *,
    nonce: NonceRecord | None = None,
    policy: PcrPolicy | None = None,
    certs: Sequence[DeviceCert] | None = None,
) -> Verdict:
    """Both steps, as controller.api.attest runs them."""
    first = verify_quote(
        certs=node.certs() if certs is None else certs,
        nonce=nonce or fresh_nonce(),
        quote=quote,
        now=time.time(),
    )
    return apply_policy(first, device_cert=node.cert, policy=policy or PcrPolicy())


def learnt(node: Node, verdict: Verdict) -> PcrPolicy:
    """The policy after a first-use verdict, as the store would keep it."""
    assert verdict.learn
    report = pcr_report(verdict, time.time())
    assert report is not None
    return PcrPolicy(
        golden=report.pcrs,
        golden_log=report.event_log,
        golden_source=GoldenSource.FIRST_USE,
        golden_at=report.reported_at,
    )


# --- the honest case ------------------------------------------------------------------------


def test_honest_quote_is_accepted_and_learnt_then_matches(node: Node) -> None:
    nonce = b"N" * 32
    verdict = judge(node, node.quote(nonce))
    assert verdict.ok, verdict.reason
    assert verdict.learn
    assert "trust on first use" in verdict.reason
    assert verdict.evidence is not None
    assert verdict.evidence.quoted == QUOTE_PCRS
    assert set(verdict.evidence.pcrs) == set(range(24))
    assert verdict.evidence.versions == (("EVE", "1.0.0"),)
    policy = learnt(node, verdict)

    # The next boot of the same components: same PCRs, accepted without learning.
    node.power_on(boot())
    again = judge(node, node.quote(nonce), policy=policy)
    assert again.ok and not again.learn
    assert "match the golden values" in again.reason


def test_quote_without_event_log_is_accepted(node: Node) -> None:
    quote = node.quote(b"N" * 32)
    quote.ClearField("tpm_binary_event_log")
    verdict = judge(node, quote)
    assert verdict.ok
    assert "no event log sent" in verdict.reason


def test_raw_r_s_signatures_are_accepted_like_adam_does(node: Node) -> None:
    quote = node.quote(b"N" * 32)
    quote.signature = tpmwire.EcdsaSignature.from_der(quote.signature).raw()
    assert judge(node, quote).ok


# --- freshness ------------------------------------------------------------------------------


def test_quote_over_another_nonce_is_a_nonce_mismatch(node: Node) -> None:
    quote = node.quote(b"A" * 32)  # e.g. a quote replayed from an earlier exchange
    verdict = judge(node, quote, nonce=fresh_nonce(b"B" * 32))
    assert verdict.code is VerdictCode.NONCE_MISMATCH
    assert "another nonce" in verdict.reason


def test_stale_nonce_is_refused(node: Node) -> None:
    quote = node.quote(b"N" * 32)
    verdict = judge(node, quote, nonce=fresh_nonce(age=301))
    assert verdict.code is VerdictCode.NONCE_MISMATCH
    assert verdict.reason == "nonce expired"
    # Even when the record claims it has not expired yet.
    now = time.time()
    record = NonceRecord(b"N" * 32, issued_at=now - 400, expires_at=now + 100)
    assert judge(node, quote, nonce=record).reason == "nonce expired"


# --- who signed -----------------------------------------------------------------------------


def test_quote_signed_by_another_tpm_is_refused(
    node: Node, tmp_path: Path, other_tpm_state: MutableMapping[str, bytes]
) -> None:
    other = Node(tmp_path / "other", other_tpm_state, device_key=node.device_key)
    other.device_cert = node.cert
    other.power_on(boot())
    verdict = judge(node, other.quote(b"N" * 32))  # checked with node's AK certificate
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.reason == "the quote signature does not verify with the attestation key"


def test_ak_certificate_must_be_signed_by_the_device_certificate(node: Node) -> None:
    stranger = pki.new_ec_key()
    forged = node.ak_cert(issuer_key=stranger)  # right issuer name, wrong key
    verdict = judge(node, node.quote(b"N" * 32), certs=node.certs(forged))
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.reason == (
        "the attestation key certificate is not signed by the device certificate"
    )
    assert verdict.evidence is None
    assert pcr_report(verdict, time.time()) is None  # nothing to accept later


def test_missing_or_unusable_ak_certificate(node: Node) -> None:
    quote = node.quote(b"N" * 32)
    none = judge(node, quote, certs=[])
    assert none.code is VerdictCode.NO_CERT_FOUND
    assert "CERT_TYPE_DEVICE_RESTRICTED_SIGNING" in none.reason
    garbage = [DeviceCert(AK_TYPE, 0, b"", b"not a PEM", True, True, b"")]
    assert judge(node, quote, certs=garbage).code is VerdictCode.NO_CERT_FOUND
    ak = FakeTpm(node.tpm_state).public_key(KeyRole.AK)
    assert isinstance(ak, ec.EllipticCurvePublicKey)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = issue(ak, "ak", node.device_key, node.cert, valid_from=old, days=1)
    verdict = judge(node, quote, certs=node.certs(expired))
    assert verdict.code is VerdictCode.NO_CERT_FOUND
    assert "not valid now" in verdict.reason


# --- hand-made TPMS_ATTEST --------------------------------------------------------------------


def hand_made(
    node: Node, nonce: bytes, mutate: int | None = None
) -> tuple[attest_pb2.ZAttestQuote, list[DeviceCert]]:
    """A TPMS_ATTEST built and signed in software (a software "AK" the device certified)."""
    key = pki.new_ec_key()
    ak_cert = issue(key.public_key(), "soft ak", node.device_key, node.cert)
    pcrs = {i: bytes([i]) * 32 for i in range(24)}
    selection = tpmwire.sha256_selection(range(16))
    attest = bytearray(
        tpmwire.Attest(
            qualified_signer=b"\x00\x0b" + bytes(32),
            extra_data=nonce,
            pcr_select=selection,
            pcr_digest=tpmwire.pcr_digest(pcrs, selection),
        ).marshal()
    )
    if mutate is not None:
        attest[mutate] ^= 0xFF
    quote = attest_pb2.ZAttestQuote(
        attestData=bytes(attest), signature=key.sign(bytes(attest), ec.ECDSA(hashes.SHA256()))
    )
    for index, value in pcrs.items():
        quote.pcr_values.add(index=index, hash_algo=SHA256, value=value)
    return quote, node.certs(ak_cert)


def test_hand_made_quote_verifies(node: Node) -> None:
    quote, certs = hand_made(node, b"N" * 32)
    assert judge(node, quote, certs=certs).ok


@pytest.mark.parametrize(("offset", "what"), [(0, "magic"), (4, "type")])
def test_attest_must_be_a_tpm_generated_quote(node: Node, offset: int, what: str) -> None:
    quote, certs = hand_made(node, b"N" * 32, mutate=offset)
    verdict = judge(node, quote, certs=certs)
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.reason.startswith("attestData is not a TPM-generated quote")
    assert what in verdict.reason


# --- PCR values -------------------------------------------------------------------------------


def test_pcr_value_altered_after_the_quote_is_refused(node: Node) -> None:
    quote = node.quote(b"N" * 32)
    quote.pcr_values[4].value = b"\x00" * 32
    verdict = judge(node, quote)
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.reason == "the reported PCR values do not match the digest the quote signed"


def test_quote_must_cover_pcrs_0_to_15(node: Node) -> None:
    verdict = judge(node, node.quote(b"N" * 32, pcrs=range(8)))
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert "does not cover SHA-256 PCRs 0-15 (missing 8, 9, 10, 11, 12, 13, 14, 15)" in (
        verdict.reason
    )


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda q: setattr(q.pcr_values[0], "hash_algo", 1), "not SHA-256"),
        (lambda q: q.pcr_values.add(index=3, hash_algo=SHA256, value=bytes(32)), "twice"),
        (lambda q: setattr(q.pcr_values[2], "value", b"short"), "not 32"),
        (lambda q: q.pcr_values.add(index=99, hash_algo=SHA256, value=bytes(32)), "0-23"),
        (lambda q: q.pcr_values.pop(5), "no value reported for quoted PCR(s) 5"),
    ],
)
def test_malformed_pcr_values_are_refused(node: Node, edit: object, reason: str) -> None:
    quote = node.quote(b"N" * 32)
    assert callable(edit)
    edit(quote)
    verdict = judge(node, quote)
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert reason in verdict.reason


# --- the event log ----------------------------------------------------------------------------


def test_event_log_that_does_not_replay_is_refused(node: Node, tmp_path: Path) -> None:
    liar = Node(tmp_path / "liar", node.tpm_state)
    liar.power_on(boot(kernel_cmdline="console=ttyS0 init=/bin/sh"))
    wrong_log = liar.event_log()  # another boot's log...
    node.power_on(boot())
    verdict = judge(node, node.quote(b"N" * 32, log=wrong_log))  # ...beside this boot's PCRs
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.reason == "the event log does not replay to the reported value of PCR(s) 8"
    assert verdict.mismatched_pcrs == (8,)


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (b"not gzip at all", "the event log is not usable: corrupt gzip data"),
        (gzip.compress(bytes(3 << 20)), "inflates to more than"),
        (gzip.compress(b"\x00" * 64), "the event log is malformed"),
    ],
)
def test_unusable_event_logs_are_refused(node: Node, log: bytes, reason: str) -> None:
    quote = node.quote(b"N" * 32)
    quote.tpm_binary_event_log = log
    verdict = judge(node, quote)
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert reason in verdict.reason


# --- the policy -------------------------------------------------------------------------------


def test_changed_boot_component_fails_the_golden_values_naming_pcrs_and_events(
    node: Node,
) -> None:
    policy = learnt(node, judge(node, node.quote(b"N" * 32)))
    node.power_on(boot(kernel=("a kernel nobody approved")))
    verdict = judge(node, node.quote(b"N" * 32), policy=policy)
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.mismatched_pcrs == (4, 9)
    assert verdict.reason.startswith("PCR values differ from the golden values (first use ")
    assert "PCR 4: #" in verdict.reason and "EV_EFI_BOOT_SERVICES_APPLICATION" in verdict.reason
    assert "PCR 9: #" in verdict.reason and "'(hd0,gpt2)/boot/kernel'" in verdict.reason
    # Only the kernel's records are named, not the unchanged boot loader or separator.
    pcr4 = [line for line in verdict.detail.splitlines() if line.startswith("PCR 4:")]
    assert len(pcr4) == 1
    # The evidence is kept so that the admin can accept these values.
    report = pcr_report(verdict, time.time())
    assert report is not None and report.mismatched == (4, 9)

    # A policy that does not check PCRs 4 and 9 accepts this boot.
    narrow = PcrPolicy(pcrs=(0, 1, 2, 3, 7, 8), golden=policy.golden)
    assert judge(node, node.quote(b"N" * 32), policy=narrow).ok


def test_changed_configuration_fails_pcr_14(node: Node) -> None:
    policy = learnt(node, judge(node, node.quote(b"N" * 32)))
    node.power_on(boot(), server="evil.example:8443")
    verdict = judge(node, node.quote(b"N" * 32), policy=policy)
    assert verdict.mismatched_pcrs == (14,)
    assert "file:/config/server exist:true content-hash:" in verdict.reason


def test_golden_values_without_a_log_name_every_event_of_the_pcr(node: Node) -> None:
    first = judge(node, node.quote(b"N" * 32))
    policy = PcrPolicy(golden=learnt(node, first).golden, golden_source=GoldenSource.ADMIN)
    node.power_on(boot(kernel_cmdline="quiet"))
    verdict = judge(node, node.quote(b"N" * 32), policy=policy)
    assert verdict.mismatched_pcrs == (8,)
    assert "(admin)" in verdict.reason
    assert "and " in verdict.reason and " more" in verdict.reason  # grub ran many commands


def test_policy_pcrs_outside_the_quote_or_without_golden_values(node: Node) -> None:
    quote = node.quote(b"N" * 32)
    outside = judge(node, quote, policy=PcrPolicy(pcrs=(0, 16)))
    assert outside.code is VerdictCode.QUOTE_FAILED
    assert "policy PCR(s) 16 are not covered by the quote" in outside.reason
    partial = PcrPolicy(pcrs=(0, 1), golden={0: bytes(32)})
    verdict = judge(node, quote, policy=partial)
    assert verdict.mismatched_pcrs == (0, 1)
    assert "PCR 1: no golden value" in verdict.reason


def test_verdicts_without_evidence_pass_through_apply_policy() -> None:
    """Stand-in verifiers in tests judge everything themselves."""
    device_cert = pki.make_certificate(pki.new_ec_key(), "device")
    ok = Verdict(VerdictCode.SUCCESS, "stand-in")
    assert apply_policy(ok, device_cert=device_cert, policy=PcrPolicy()) is ok
    failed = Verdict(VerdictCode.QUOTE_FAILED, "no")
    assert apply_policy(failed, device_cert=device_cert, policy=PcrPolicy()) is failed


# --- over HTTP, with the store and the admin commands ---------------------------------------


async def upload_ak(device: FakeDevice, ak_cert: x509.Certificate) -> None:
    request = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_CERT)
    request.certs.add(type=AK_TYPE, cert=ak_cert.public_bytes(Encoding.PEM))
    await device.attest(request)


async def escrow(device: FakeDevice, key: bytes) -> None:
    request = attest_pb2.ZAttestReq(reqType=attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS)
    request.storage_keys.integrity_token = device.token
    request.storage_keys.keys.add(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=key)
    response = await device.attest(request)
    assert response.storage_keys_resp.response == (
        attest_pb2.ATTEST_STORAGE_KEYS_RESPONSE_CODE_SUCCESS
    )


def admin(ctl: Harness, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = cli.main(["--state", str(ctl.state.root), *args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


async def test_attestation_exchange_with_a_measured_node(
    tmp_path: Path, tpm_state: MutableMapping[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    async with controller_harness(tmp_path) as ctl:
        ctl.allow()
        device = ctl.device()
        await device.onboard()
        key = device.signer.key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        node = Node(tmp_path / "node", tpm_state, device_key=key, device_cert=device.signer.cert)
        node.power_on(boot())
        await upload_ak(device, node.ak_cert())

        # First verified quote: token, golden values learnt.
        nonce = await device.nonce()
        honest = node.quote(nonce)
        result = await device.quote(honest)
        assert result.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
        stored = ctl.store.require_device(device.uuid)
        assert stored.attest_state is AttestState.ATTESTED
        assert "trust on first use" in stored.attest_reason
        policy = ctl.store.pcr_policy(device.uuid)
        assert policy.golden_source is GoldenSource.FIRST_USE
        assert policy.pcrs == DEFAULT_POLICY_PCRS
        assert (await device.config())[0].status == 200
        await escrow(device, b"vault key")

        # The same quote again, over a new nonce: refused, and the token goes with it.
        await device.nonce()
        replayed = await device.quote(honest)
        assert replayed.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH
        assert not replayed.keys and not replayed.integrity_token
        assert ctl.store.require_device(device.uuid).integrity_token is None
        assert (await device.config())[0].status == 403

        # Back to honest: keys come back.
        ok = await device.quote(node.quote(await device.nonce()))
        assert [k.key for k in ok.keys] == [b"vault key"]

        # A new kernel: the golden values no longer hold.
        node.power_on(boot(kernel="unapproved kernel"))
        failed = await device.quote(node.quote(await device.nonce()))
        assert failed.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_QUOTE_FAILED
        assert not failed.keys and not failed.integrity_token
        stored = ctl.store.require_device(device.uuid)
        assert stored.attest_state is AttestState.FAILED
        assert stored.attest_reason.endswith("(PCRs differing: 4, 9)")
        assert stored.integrity_token is None
        assert (await device.config())[0].status == 403
        report = ctl.store.pcr_report(device.uuid)
        assert report is not None and report.mismatched == (4, 9)

        status, out = admin(ctl, capsys, "attest", "policy", device.uuid[:8])
        assert status == 0
        assert "DIFFERS" in out and "EV_EFI_BOOT_SERVICES_APPLICATION" in out
        status, out = admin(ctl, capsys, "device", "show", device.uuid, "--json")
        shown = json.loads(out)["attestation"]["pcr_policy"]
        assert shown["mismatched_pcrs"] == [4, 9]
        assert shown["golden_source"] == "first use"
        status, out = admin(ctl, capsys, "device", "show", device.uuid)
        assert "last quote differs in PCR(s) 4, 9" in out

        # The admin accepts the new boot; the device attests and gets its keys.
        status, out = admin(ctl, capsys, "attest", "policy", device.uuid, "--accept-current")
        assert status == 0, out
        assert ctl.store.pcr_policy(device.uuid).golden_source is GoldenSource.ADMIN
        accepted = await device.quote(node.quote(await device.nonce()))
        assert accepted.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
        assert [k.key for k in accepted.keys] == [b"vault key"]
        assert (await device.config())[0].status == 200

        # Narrow the policy, then forget the golden values (trust on first use again).
        status, out = admin(ctl, capsys, "attest", "policy", device.uuid, "--pcrs", "0-3,7")
        assert status == 0 and "0-3,7" in out
        assert ctl.store.pcr_policy(device.uuid).pcrs == (0, 1, 2, 3, 7)
        status, out = admin(ctl, capsys, "attest", "policy", device.uuid, "--pcrs", "16")
        assert status == 1 and "0-15" in out
        status, _ = admin(ctl, capsys, "attest", "policy", device.uuid, "--reset")
        assert status == 0
        assert ctl.store.pcr_policy(device.uuid).golden is None
        status, out = admin(ctl, capsys, "attest", "policy", device.uuid, "--json")
        shown = json.loads(out)
        assert shown["golden"] is None and shown["pcrs"] == [0, 1, 2, 3, 7]
        node.power_on(boot(kernel="yet another kernel"))
        relearnt = await device.quote(node.quote(await device.nonce()))
        assert relearnt.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
        assert ctl.store.pcr_policy(device.uuid).golden_source is GoldenSource.FIRST_USE


async def test_accept_current_needs_a_verified_quote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with controller_harness(tmp_path) as ctl:
        ctl.allow()
        device = ctl.device()
        await device.onboard()
        status, out = admin(ctl, capsys, "attest", "policy", device.uuid, "--accept-current")
        assert status == 1 and "nothing to accept" in out
        status, out = admin(ctl, capsys, "attest", "policy", device.uuid)
        assert status == 0 and "none verified yet" in out
        assert "(default)" in out and "none yet" in out


# --- schema -----------------------------------------------------------------------------------


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in db._statements(db.MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO device (uuid, cert_sha256, cert_pem, registered_at, attest_state)"
        " VALUES ('d1', x'00', x'00', 1.0, 'attested')"
    )
    conn.close()
    with Store.open(path) as store:
        version = store._conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == db.SCHEMA_VERSION >= 2
        assert store.pcr_policy("d1") == PcrPolicy()
        assert store.pcr_report("d1") is None
        assert store.set_policy_pcrs("d1", [3, 1]).pcrs == (1, 3)
        store.set_golden("d1", {0: bytes(32)}, None, GoldenSource.ADMIN)
        assert store.pcr_policy("d1").golden == {0: bytes(32)}
        store.remove_device("d1")
        assert store._conn.execute("SELECT count(*) FROM pcr_policy").fetchone()[0] == 0


def test_first_use_learns_only_once(tmp_path: Path) -> None:
    with Store.open(tmp_path / "controller.db") as store:
        store._conn.execute(
            "INSERT INTO device (uuid, cert_sha256, cert_pem, registered_at)"
            " VALUES ('d1', x'00', x'00', 1.0)"
        )

        def report(value: int) -> PcrReport:
            return PcrReport(
                pcrs={0: bytes([value]) * 32},
                quoted=(0,),
                event_log=None,
                versions=(),
                reported_at=1.0,
            )

        assert store.record_pcr_report("d1", report(1), learn=True)
        # A second "first use" (say, a concurrent quote) does not replace what was learnt...
        assert not store.record_pcr_report("d1", report(2), learn=True)
        assert store.pcr_policy("d1").golden == {0: b"\x01" * 32}
        # ...but the report is always the latest.
        latest = store.pcr_report("d1")
        assert latest is not None and latest.pcrs == {0: b"\x02" * 32}
        assert store.accept_reported_pcrs("d1") is not None
        assert store.pcr_policy("d1").golden == {0: b"\x02" * 32}
