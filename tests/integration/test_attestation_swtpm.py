# SPDX-License-Identifier: Apache-2.0
"""The controller's quote verifier against real quotes from a swtpm-backed node.

The unit tests (``tests/unit/test_controller_verifier.py``) judge quotes from the in-memory fake
TPM; here the same checks run on what the real driver produces.  Each test has its own emulated
node: a swtpm (manufactured once per session by swtpm_setup, then copied into the node's
``persist/tpm`` so every test starts from a factory-fresh TPM, and stopped in teardown also when
the test fails), measured boot and measure-config into it as ``agent.boot`` does, the TPM
identity of ``load_tpm_identity`` and the ``ZAttestQuote`` of ``TpmQuotes.quote``, as the agent
sends it.

The controller side is a real store in a temporary state directory: the certificates and the
nonce go through the attest endpoint's own handlers, and quotes are judged with
``verify_quote`` then ``apply_policy`` on the stored certificate records, the nonce record taken
from the store and the store's clock, as ``controller.api.attest`` does.  The store's clock is
the test's, so a nonce can grow stale without waiting.

Without swtpm these tests fail when services are required (CI) and skip otherwise.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.drivers.swtpm import SwtpmError, SwtpmProcess
from agent.drivers.tpm import QUOTE_PCRS, KeyRole, Tpm
from agent.link.tpmidentity import TpmIdentity, TpmQuotes, load_tpm_identity
from agent.measure import MeasureState
from agent.measure.boot import BootComponents, measure_boot
from agent.measure.configfs import measure_config
from agent.settings import NodePaths
from agent.wire import envelope, pki, tcglog
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from controller import admin, configs
from controller.api.attest import _check_quote, _issue_nonce, _store_certs
from controller.api.common import DeviceRequest
from controller.api.context import ApiContext
from controller.attestation import (
    MAX_NONCE_AGE,
    Verdict,
    VerdictCode,
    apply_policy,
    pcr_report,
    verify_quote,
)
from controller.identity import ControllerIdentity
from controller.records import AttestState, Device, GoldenSource, NonceRecord
from controller.state import StateDir
from controller.store import Store
from tests.integration.conftest import swtpm_missing

VERSION = "1.0.0"
SUCCESS = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
NONCE_MISMATCH = attest_pb2.Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH


# --- the TPMs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Factories:
    """Two manufactured swtpm states: different seeds, so different attestation keys."""

    node: Path
    other: Path


@pytest.fixture(scope="session")
def swtpm_states(tmp_path_factory: pytest.TempPathFactory) -> _Factories | str:
    """The manufactured states to copy, or the reason there are none."""
    reason = swtpm_missing()
    if reason is not None:
        return reason
    made: list[Path] = []
    for name in ("node", "other"):
        state = tmp_path_factory.mktemp(f"swtpm-factory-{name}")
        try:
            SwtpmProcess(state).manufacture()
        except SwtpmError as exc:
            return str(exc)
        made.append(state)
    return _Factories(*made)


@dataclass
class Node:
    """An emulated node as ``eve-agent run`` opens its platform (``agent.boot.boot``, then
    ``daemon._open_platform``): swtpm in ``persist/tpm``, the boot measured into PCRs 0-9 and
    13, the config partition into PCR 14, the TPM identity, the quote source."""

    paths: NodePaths
    proc: SwtpmProcess
    tpm: Tpm | None = None
    identity: TpmIdentity | None = None
    quotes: TpmQuotes | None = None

    @property
    def boot_log(self) -> Path:
        return self.paths.run / "boot" / "binary_bios_measurements"

    @property
    def config_log(self) -> Path:
        return self.paths.persist / "status" / "measurefs_tpm_event_log"

    def power_on(self, components: BootComponents, version: str = VERSION) -> None:
        """Power the TPM off (if on) and on again, then boot: PCRs start from reset."""
        from agent.drivers.tpm_device import DeviceTpm

        self.power_off()
        self.proc.start()
        # The run directory goes away with a reboot, like securityfs.
        shutil.rmtree(self.paths.run, ignore_errors=True)
        tpm = self.tpm = DeviceTpm(self.proc.tcti)
        booted = measure_boot(tpm, components, self.boot_log)
        assert booted.state is MeasureState.MEASURED, booted.problem
        config = measure_config(tpm, self.paths.config, self.config_log)
        assert config.state is MeasureState.MEASURED, config.problem
        self.identity = load_tpm_identity(self.paths, tpm)
        self.quotes = TpmQuotes(
            tpm,
            self.identity,
            boot_log=self.boot_log,
            config_log=self.config_log,
            versions={attest_pb2.ATTEST_VERSION_TYPE_EVE: version},
        )

    def power_off(self) -> None:
        try:
            if self.tpm is not None:
                self.tpm.close()
                self.tpm = None
        finally:
            self.proc.stop()

    def quote(self, nonce: bytes) -> attest_pb2.ZAttestQuote:
        assert self.quotes is not None, "power the node on first"
        return self.quotes.quote(nonce)

    def zcerts(self) -> list[certs_pb2.ZCert]:
        assert self.quotes is not None
        return self.quotes.attestation_certs()

    @property
    def ak_public(self) -> bytes:
        assert self.tpm is not None
        return self.tpm.public_area(KeyRole.AK)


NodeMaker = Callable[[str], Node]


@pytest.fixture
def make_node(
    swtpm_states: _Factories | str,
    tmp_path: Path,
    require_service: Callable[[str, str], NoReturn],
) -> Iterator[NodeMaker]:
    """``make_node(factory)``: a node under tmp_path on a copy of the ``"node"`` or ``"other"``
    manufactured TPM, booted with the default components.  Every swtpm is stopped in teardown."""
    if isinstance(swtpm_states, str):
        require_service("swtpm", swtpm_states)
    states = swtpm_states
    teardown = contextlib.ExitStack()

    def make(factory: str) -> Node:
        paths = NodePaths.from_root(tmp_path / f"{factory}-node")
        paths.config.mkdir(parents=True)
        (paths.config / "server").write_text("ctl.example:8443\n")
        (paths.config / "root-certificate.pem").write_text("ROOT\n")
        (paths.config / "onboard.cert.pem").write_text(f"ONBOARD {factory}\n")
        shutil.copytree(getattr(states, factory), paths.persist / "tpm")
        node = Node(paths, SwtpmProcess(paths.persist / "tpm"))
        teardown.callback(node.power_off)
        node.power_on(components())
        return node

    with teardown:
        yield make


@pytest.fixture
def node(make_node: NodeMaker) -> Node:
    return make_node("node")


def components(version: str = VERSION, **kwargs: object) -> BootComponents:
    return BootComponents.for_node(agent_version=version, **kwargs)  # type: ignore[arg-type]


# --- the controller ----------------------------------------------------------------------------


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Controller:
    """A controller's store with one registered device; the attest endpoint's steps."""

    state: StateDir
    store: Store
    clock: Clock
    ctx: ApiContext
    uuid: str

    @property
    def device(self) -> Device:
        return self.store.require_device(self.uuid)

    def _request(self) -> DeviceRequest:
        return DeviceRequest(device=self.device, payload=b"")

    def upload_certs(self, node: Node) -> str:
        """ATTEST_REQ_CERT with the node's certificates, through the endpoint's handler."""
        ask = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_CERT)
        ask.certs.extend(node.zcerts())
        _, note = _store_certs(self.ctx, self._request(), ask)
        return note

    def issue_nonce(self) -> bytes:
        """ATTEST_REQ_NONCE, through the endpoint's handler."""
        answer, _ = _issue_nonce(self.ctx, self._request())
        return bytes(answer.nonce.nonce)

    def take_nonce(self) -> NonceRecord:
        record = self.store.take_nonce(self.uuid)
        assert record is not None, "no nonce outstanding"
        return record

    def verify(self, record: NonceRecord, quote: attest_pb2.ZAttestQuote) -> Verdict:
        """Step 1, with the stored certificate records and the store's time."""
        return verify_quote(
            certs=self.store.device_certs(self.uuid),
            nonce=record,
            quote=quote,
            now=self.store.now(),
        )

    def judge(self, first: Verdict) -> Verdict:
        """Step 2 and the report, as ``controller.api.attest._check_quote`` does."""
        verdict = apply_policy(
            first, device_cert=self.device.cert, policy=self.store.pcr_policy(self.uuid)
        )
        report = pcr_report(verdict, self.store.now())
        if report is not None:
            self.store.record_pcr_report(self.uuid, report, learn=verdict.learn)
        return verdict

    def attest(self, node: Node) -> Verdict:
        """One honest exchange: nonce, the node's quote over it, both steps."""
        quote = node.quote(self.issue_nonce())
        return self.judge(self.verify(self.take_nonce(), quote))

    def check_quote(self, quote: attest_pb2.ZAttestQuote) -> tuple[int, str]:
        """ATTEST_REQ_QUOTE through the endpoint's own handler: (response code, note)."""
        answer, note = _check_quote(self.ctx, self._request(), quote)
        return int(answer.quoteResp.response), note


def _controller_identity() -> ControllerIdentity:
    """Only the store and the verifier are exercised; nothing is sealed with this identity."""
    key = pki.new_ec_key()
    cert = pki.make_certificate(key, "test controller")
    pem = cert.public_bytes(Encoding.PEM)
    return ControllerIdentity(
        root_cert=cert,
        signer=envelope.SoftwareSigner(key=key, cert=cert),
        signing_pem=pem,
        ecdh_pem=pem,
    )


@pytest.fixture
def controller(tmp_path: Path, node: Node) -> Iterator[Controller]:
    """A controller that registered ``node`` (its device certificate from the TPM) and stored
    the certificates it sent with ATTEST_REQ_CERT."""
    state = StateDir(tmp_path / "controller")
    state.root.mkdir()
    clock = Clock()
    with Store.open(state.database, clock=clock) as store:
        device_cert = pki.load_cert(node.paths.device_cert.read_bytes())
        _, device = store.register_device(
            onboard_sha256="ab" * 32,
            serial="swtpm-node",
            cert_pem=device_cert.public_bytes(Encoding.PEM),
            cert_sha256=envelope.device_cert_hash(device_cert),
            default_config=configs.default_config,
        )
        ctl = Controller(
            state, store, clock, ApiContext(store, _controller_identity()), device.uuid
        )
        ctl.upload_certs(node)
        yield ctl


# --- helpers -----------------------------------------------------------------------------------


def _log_events(quote: attest_pb2.ZAttestQuote) -> tcglog.EventLog:
    return tcglog.parse(gzip.decompress(quote.tpm_binary_event_log))


def _with_events(
    quote: attest_pb2.ZAttestQuote, log: tcglog.EventLog, events: list[tcglog.Event]
) -> attest_pb2.ZAttestQuote:
    forged = attest_pb2.ZAttestQuote()
    forged.CopyFrom(quote)
    forged.tpm_binary_event_log = gzip.compress(tcglog.write_log(events, log.spec), mtime=0)
    return forged


def _assert_failed(verdict: Verdict, code: VerdictCode, reason: str) -> None:
    assert verdict.code is code, verdict.reason
    assert reason in verdict.reason


# --- the honest node ---------------------------------------------------------------------------


def test_honest_quote_is_accepted_and_golden_values_are_learnt(
    node: Node, controller: Controller
) -> None:
    assert controller.store.pcr_policy(controller.uuid).golden is None
    verdict = controller.attest(node)
    assert verdict.code is VerdictCode.SUCCESS, verdict.reason
    assert verdict.learn
    assert verdict.reason == "quote verified; PCR values learnt as golden (trust on first use)"
    evidence = verdict.evidence
    assert evidence is not None
    assert evidence.quoted == QUOTE_PCRS
    assert evidence.versions == (("EVE", VERSION),)
    assert evidence.event_log is not None
    assert evidence.event_log.startswith(node.boot_log.read_bytes())
    assert evidence.event_log.endswith(node.config_log.read_bytes())
    assert tcglog.touched_pcrs(evidence.events) == {*range(10), 13, 14}
    assert node.tpm is not None
    assert dict(evidence.pcrs) == node.tpm.read_pcrs()

    policy = controller.store.pcr_policy(controller.uuid)
    assert policy.golden_source is GoldenSource.FIRST_USE
    assert policy.golden == evidence.pcrs
    assert policy.golden_log == evidence.event_log

    # Same node, same TPM power cycle: matches.  After a power cycle with the same components
    # the PCRs are measured again to the same values: matches too, nothing relearnt.
    again = controller.attest(node)
    assert again.code is VerdictCode.SUCCESS and not again.learn
    assert again.reason == "quote verified; PCRs match the golden values"
    node.power_on(components())
    rebooted = controller.attest(node)
    assert rebooted.code is VerdictCode.SUCCESS, rebooted.reason
    assert rebooted.reason == "quote verified; PCRs match the golden values"
    assert controller.store.pcr_policy(controller.uuid).golden_at == policy.golden_at


# --- freshness ---------------------------------------------------------------------------------


def test_replayed_quote_is_refused(node: Node, controller: Controller) -> None:
    nonce = controller.issue_nonce()
    quote = node.quote(nonce)
    code, note = controller.check_quote(quote)  # the attest endpoint's handler
    assert code == SUCCESS, note
    assert controller.device.integrity_token is not None

    # The nonce was spent: sending the same quote again finds none outstanding.
    code, note = controller.check_quote(quote)
    assert code == NONCE_MISMATCH
    assert "no nonce outstanding (nonces are single use)" in note
    device = controller.device
    assert device.attest_state is AttestState.FAILED and device.integrity_token is None

    # With a new nonce outstanding, the old quote is over the wrong one.
    controller.issue_nonce()
    record = controller.take_nonce()
    assert record.nonce != nonce
    _assert_failed(
        controller.verify(record, quote),
        VerdictCode.NONCE_MISMATCH,
        "the quote was made over another nonce (extraData)",
    )
    # The same record with a quote over it passes: the refusal was the nonce.
    assert controller.verify(record, node.quote(record.nonce)).ok


@pytest.mark.parametrize(
    ("lifetime", "age"),
    [(60.0, 61.0), (3600.0, MAX_NONCE_AGE + 1)],
    ids=["record-expired", "older-than-max-age"],
)
def test_stale_nonce_is_refused(
    node: Node, controller: Controller, lifetime: float, age: float
) -> None:
    """The nonce record expired, or the nonce is older than MAX_NONCE_AGE although its record
    (a longer nonce lifetime) says it has not expired yet: the quote is refused either way."""
    issued = controller.store.put_nonce(controller.uuid, b"S" * 32, lifetime)
    quote = node.quote(issued.nonce)
    record = controller.take_nonce()
    controller.clock.now = record.issued_at + age - 2
    assert controller.verify(record, quote).ok  # still fresh: fine
    controller.clock.now = record.issued_at + age
    verdict = controller.verify(record, quote)
    assert verdict.code is VerdictCode.NONCE_MISMATCH
    assert verdict.reason == "nonce expired"


# --- who signed --------------------------------------------------------------------------------


def test_quote_signed_by_another_tpm_is_refused(
    node: Node, controller: Controller, make_node: NodeMaker
) -> None:
    other = make_node("other")  # another swtpm, manufactured with its own seeds
    assert other.ak_public != node.ak_public
    controller.issue_nonce()
    record = controller.take_nonce()
    assert controller.verify(record, node.quote(record.nonce)).ok

    # The other TPM's quote over this device's nonce, checked with this device's AK.
    forged = other.quote(record.nonce)
    verdict = controller.verify(record, forged)
    _assert_failed(
        verdict,
        VerdictCode.QUOTE_FAILED,
        "the quote signature does not verify with the attestation key",
    )
    assert verdict.evidence is None

    # The other TPM's certificates cannot replace this device's: the agent sends them without
    # attributes, so they are immutable (pinned) once stored.
    note = controller.upload_certs(other)
    assert "refused to replace immutable certificate(s)" in note
    assert "CERT_TYPE_DEVICE_RESTRICTED_SIGNING" in note
    assert controller.verify(record, forged).code is VerdictCode.QUOTE_FAILED
    # Had they been the first stored, the quote would be genuine, but its AK was certified by
    # another device key: not this device's evidence.
    controller.store.set_device_certs(controller.uuid, [])
    assert controller.upload_certs(other) == "stored 3 certificate(s)"
    first = controller.verify(record, forged)
    assert first.ok, first.reason
    verdict = controller.judge(first)
    _assert_failed(
        verdict,
        VerdictCode.QUOTE_FAILED,
        "the attestation key certificate is not signed by the device certificate",
    )
    assert verdict.evidence is None
    assert controller.store.pcr_report(controller.uuid) is None  # nothing for the admin to accept
    assert controller.store.pcr_policy(controller.uuid).golden is None  # nothing learnt


# --- the evidence ------------------------------------------------------------------------------


@pytest.mark.parametrize("pcr", [0, 4, 9, 13, 14])
def test_pcr_value_altered_after_the_quote_is_refused(
    node: Node, controller: Controller, pcr: int
) -> None:
    controller.issue_nonce()
    record = controller.take_nonce()
    quote = node.quote(record.nonce)
    assert controller.verify(record, quote).ok
    forged = attest_pb2.ZAttestQuote()
    forged.CopyFrom(quote)
    (value,) = [v for v in forged.pcr_values if v.index == pcr]
    value.value = tcglog.extend(bytes(value.value), bytes(32))
    _assert_failed(
        controller.verify(record, forged),
        VerdictCode.QUOTE_FAILED,
        "the reported PCR values do not match the digest the quote signed",
    )


def _changed_cmdline(events: list[tcglog.Event]) -> tuple[list[tcglog.Event], int]:
    """The kernel command line event says (and digests) another command line."""
    (i,) = [i for i, e in enumerate(events) if e.data.startswith(b"kernel_cmdline: ")]
    lie = "/boot/kernel rootfstype=squashfs init=/bin/sh"
    events[i] = tcglog.make_event(
        8, tcglog.EV_IPL, f"kernel_cmdline: {lie}".encode() + b"\0", digested=lie.encode()
    )
    return events, 8


def _dropped_config_file(events: list[tcglog.Event]) -> tuple[list[tcglog.Event], int]:
    """measure-config's record of /config/server is left out."""
    (i,) = [i for i, e in enumerate(events) if e.data.startswith(b"file:/config/server ")]
    assert events[i].pcr == 14
    del events[i]
    return events, 14


def _dropped_kernel_load(events: list[tcglog.Event]) -> tuple[list[tcglog.Event], int]:
    """The kernel's EV_EFI_BOOT_SERVICES_APPLICATION record is left out (the boot loader's
    stays, so PCR 4 is still in the log)."""
    loads = [
        i for i, e in enumerate(events) if e.event_type == tcglog.EV_EFI_BOOT_SERVICES_APPLICATION
    ]
    assert len(loads) == 2
    del events[loads[-1]]
    return events, 4


@pytest.mark.parametrize(
    "tamper",
    [_changed_cmdline, _dropped_config_file, _dropped_kernel_load],
    ids=["event-changed", "config-event-dropped", "boot-event-dropped"],
)
def test_event_log_that_does_not_replay_is_refused(
    node: Node,
    controller: Controller,
    tamper: Callable[[list[tcglog.Event]], tuple[list[tcglog.Event], int]],
) -> None:
    controller.issue_nonce()
    record = controller.take_nonce()
    quote = node.quote(record.nonce)
    log = _log_events(quote)
    # Re-encoding the untouched events is harmless: the control case passes.
    assert controller.verify(record, _with_events(quote, log, list(log.events))).ok
    events, pcr = tamper(list(log.events))
    verdict = controller.verify(record, _with_events(quote, log, events))
    assert verdict.code is VerdictCode.QUOTE_FAILED, verdict.reason
    assert verdict.reason == (
        f"the event log does not replay to the reported value of PCR(s) {pcr}"
    )
    assert verdict.mismatched_pcrs == (pcr,)


@pytest.mark.parametrize("stripped", [13, 14])
def test_a_log_with_a_whole_pcr_stripped_fails_the_policy(
    node: Node, controller: Controller, stripped: int
) -> None:
    """Every event of one policy PCR removed: the rest still replays (step 1 passes), but the
    log no longer accounts for that PCR, so the policy refuses it and names the PCR."""
    controller.issue_nonce()
    record = controller.take_nonce()
    quote = node.quote(record.nonce)
    log = _log_events(quote)
    events = [e for e in log.events if e.pcr != stripped]
    assert len(events) < len(log.events)
    first = controller.verify(record, _with_events(quote, log, events))
    assert first.ok, first.reason
    verdict = controller.judge(first)
    _assert_failed(
        verdict,
        VerdictCode.QUOTE_FAILED,
        f"the event log does not account for policy PCR(s) {stripped}",
    )
    assert verdict.mismatched_pcrs == (stripped,)


# --- the policy across a power cycle -----------------------------------------------------------


@pytest.mark.parametrize(
    ("new_version", "change", "differing"),
    [
        (VERSION, {"kernel": "eve-agent kernel nobody approved"}, (4, 9)),
        ("2.0.0", {}, (4, 9, 13)),
    ],
    ids=["new-kernel", "new-version"],
)
def test_changed_boot_fails_the_golden_values_until_the_admin_accepts_them(
    node: Node,
    controller: Controller,
    capsys: pytest.CaptureFixture[str],
    new_version: str,
    change: dict[str, str],
    differing: tuple[int, ...],
) -> None:
    assert controller.attest(node).learn
    learnt = controller.store.pcr_policy(controller.uuid)
    assert learnt.golden_source is GoldenSource.FIRST_USE

    node.power_on(components(new_version, **change), version=new_version)
    controller.issue_nonce()
    record = controller.take_nonce()
    first = controller.verify(record, node.quote(record.nonce))
    assert first.code is VerdictCode.SUCCESS, first.reason  # genuine, fresh, replays
    assert first.reason == "quote verified"
    verdict = controller.judge(first)
    assert verdict.code is VerdictCode.QUOTE_FAILED
    assert verdict.mismatched_pcrs == differing
    assert verdict.reason.startswith("PCR values differ from the golden values (first use ")
    summary = verdict.reason.split("): ", 1)[1].split(" | ")
    assert [part.split(":")[0] for part in summary] == [f"PCR {i}" for i in differing]
    # Each PCR names only the new record behind it, as the golden log lacks it.
    assert "EV_EFI_BOOT_SERVICES_APPLICATION" in summary[0] and ";" not in summary[0]
    assert "EV_IPL" in summary[1] and "'(hd0,gpt2)/boot/kernel'" in summary[1]
    if 13 in differing:
        assert "EV_IPL" in summary[2] and "'squash4 " in summary[2]
    assert not verdict.learn
    assert controller.store.pcr_policy(controller.uuid) == learnt  # golden values kept

    # The report keeps the evidence for the admin, who accepts it (`attest policy
    # --accept-current`).
    report = controller.store.pcr_report(controller.uuid)
    assert report is not None
    assert report.mismatched == differing
    assert report.versions == (("EVE", new_version),)
    capsys.readouterr()
    admin.attest_policy(controller.state, controller.uuid, accept_current=True)
    assert "the last reported PCR values are now the golden values" in capsys.readouterr().out
    accepted = controller.store.pcr_policy(controller.uuid)
    assert accepted.golden_source is GoldenSource.ADMIN
    assert accepted.golden == report.pcrs
    assert learnt.golden is not None
    assert [i for i in accepted.pcrs if accepted.golden[i] != learnt.golden[i]] == list(differing)

    again = controller.attest(node)
    assert again.code is VerdictCode.SUCCESS, again.reason
    assert again.reason == "quote verified; PCRs match the golden values"
    assert not again.learn
    # The old boot is now the one that differs.
    node.power_on(components())
    back = controller.attest(node)
    assert back.code is VerdictCode.QUOTE_FAILED
    assert back.mismatched_pcrs == differing
    assert back.reason.startswith("PCR values differ from the golden values (admin ")
