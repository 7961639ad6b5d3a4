"""Judging a device's attestation quote.

The request flow (certs, nonce, quote, key escrow) lives in :mod:`controller.api.attest`; this
module only answers "is this quote good?".  It is pure: everything it needs is passed in, so it
is tested with quotes made by the fake TPM and no server.

A quote is *empty* when the device has no TPM: EVE's tpmmgr then sends a ``ZAttestQuote``
without attestData, signature or PCR values (``cmd/tpmmgr/tpmmgr.go`` ``getQuote``).  Whether an
empty quote is acceptable is per-device policy, decided by the caller before it gets here.

A real quote is judged in two steps, each check giving its own reason:

1. :func:`verify_quote` (the pluggable ``ApiContext.verify_quote``): the evidence is genuine and
   fresh.  The nonce is young enough; an attestation key certificate
   (``CERT_TYPE_DEVICE_RESTRICTED_SIGNING``) is stored and valid; the signature over
   SHA-256(attestData) verifies with its key (DER or raw ``r || s`` ECDSA, as Adam accepts);
   attestData is a TPM-generated ``TPMS_ATTEST`` quote; its extraData is the nonce; it selects
   the SHA-256 bank and at least PCRs 0-15; the reported PCR values hash to its pcrDigest; the
   event log (gunzipped under a size cap) parses and replays to the reported value of every PCR
   it touches.  Success carries the :class:`Evidence`.
2. :func:`apply_policy`: the evidence is this device's and its PCRs are acceptable.  The
   attestation key certificate must be signed by the device certificate's key (EVE's tpmmgr
   issues it with the device key, ``createQuoteCertOnTpm``); then the policy's PCRs are compared
   with the golden values.  Without golden values the verdict says to learn them (trust on first
   use).  A mismatch names the PCRs and the log events that changed them.

Adam's order is the same for step 1 (``pkg/server/attestation.go`` ``quoteValidate``); its
``templateAttest`` compares PCRs with templates the admin keeps per EVE version, where we keep
golden values per device.
"""

from __future__ import annotations

import datetime as dt
import enum
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.wire import pki, tcglog, tpmwire
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from controller.newlogs import LogUploadError, inflate
from controller.records import DeviceCert, NonceRecord, PcrPolicy, PcrReport, rfc3339

MAX_NONCE_AGE = 300.0
"""Seconds: a quote over an older nonce is refused even if the nonce record says otherwise."""
MAX_EVENT_LOG = 2 << 20
"""Largest inflated event log accepted (EVE drops logs over ~62 KB compressed)."""
REQUIRED_QUOTE_PCRS: tuple[int, ...] = tuple(range(16))
"""EVE quotes SHA-256 PCRs 0-15 (``evetpm`` ``PcrListForQuote``)."""
MAX_EVENTS_NAMED = 3
"""Events named per differing PCR in the verdict's reason (all of them go in the detail)."""


class VerdictCode(enum.Enum):
    """Outcome of a quote check; mapped one to one onto ``ZAttestResponseCode``."""

    SUCCESS = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
    NONCE_MISMATCH = attest_pb2.Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH
    NO_CERT_FOUND = attest_pb2.Z_ATTEST_RESPONSE_CODE_NO_CERT_FOUND
    QUOTE_FAILED = attest_pb2.Z_ATTEST_RESPONSE_CODE_QUOTE_FAILED


@dataclass(frozen=True)
class Evidence:
    """What a genuine quote proves: the PCRs the device's TPM reported, and the log behind them."""

    ak_cert: x509.Certificate
    pcrs: Mapping[int, bytes]
    """Reported SHA-256 values, by index (0-23; only ``quoted`` ones are signed)."""
    quoted: tuple[int, ...]
    """PCR indexes the quote's signed digest covers."""
    event_log: bytes | None
    """The inflated event log, or None when the device sent none."""
    events: tuple[tcglog.Event, ...]
    versions: tuple[tuple[str, str], ...]
    """``(version type name, version)`` pairs from the quote."""


@dataclass(frozen=True)
class Verdict:
    """What the verifier concluded, and why, in words fit for ``device show``."""

    code: VerdictCode
    reason: str
    mismatched_pcrs: tuple[int, ...] = ()
    """PCR indexes whose values differ from what was expected (empty when not compared)."""
    evidence: Evidence | None = field(default=None, compare=False)
    """Set when the quote is genuine (step 1 passed), even if the policy then failed."""
    learn: bool = False
    """Success without golden values: the caller stores these PCRs as golden (first use)."""
    detail: str = ""
    """The events behind ``mismatched_pcrs``, one per line."""

    @property
    def ok(self) -> bool:
        return self.code is VerdictCode.SUCCESS


def quote_is_empty(quote: attest_pb2.ZAttestQuote) -> bool:
    """True for the quote a device without a TPM sends (no attestData, signature or PCRs)."""
    return not quote.attestData and not quote.signature and len(quote.pcr_values) == 0


def _failed(reason: str, pcrs: Sequence[int] = ()) -> Verdict:
    return Verdict(VerdictCode.QUOTE_FAILED, reason, tuple(pcrs))


def verify_quote(
    *,
    certs: Sequence[DeviceCert],
    nonce: NonceRecord,
    quote: attest_pb2.ZAttestQuote,
    now: float,
) -> Verdict:
    """Step 1: is this a genuine, fresh TPM quote whose event log matches its PCRs?

    ``certs`` are the certificates the device sent with ATTEST_REQ_CERT; ``nonce`` was already
    taken from the store (single use, so it is spent whatever the verdict); ``now`` is the
    caller's clock.  Never raises on bad input: any problem with the quote is a verdict.  On
    success the verdict carries the :class:`Evidence`; :func:`apply_policy` must follow.
    """
    if now > nonce.expires_at or now - nonce.issued_at > MAX_NONCE_AGE:
        return Verdict(VerdictCode.NONCE_MISMATCH, "nonce expired")

    ak_certs = [c for c in certs if c.cert_type == certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING]
    if not ak_certs:
        return Verdict(
            VerdictCode.NO_CERT_FOUND,
            "no attestation key certificate (CERT_TYPE_DEVICE_RESTRICTED_SIGNING) is stored",
        )
    try:
        ak_cert = pki.load_cert(ak_certs[0].pem)
    except ValueError as exc:
        return Verdict(
            VerdictCode.NO_CERT_FOUND, f"the attestation key certificate is not usable: {exc}"
        )
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    if not ak_cert.not_valid_before_utc <= when <= ak_cert.not_valid_after_utc:
        return Verdict(
            VerdictCode.NO_CERT_FOUND,
            f"the attestation key certificate is not valid now (valid "
            f"{rfc3339(ak_cert.not_valid_before_utc.timestamp())} to "
            f"{rfc3339(ak_cert.not_valid_after_utc.timestamp())})",
        )
    ak_key = ak_cert.public_key()
    if not isinstance(ak_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return Verdict(
            VerdictCode.NO_CERT_FOUND,
            f"the attestation key is a {type(ak_key).__name__}, not ECDSA or RSA",
        )

    attest_data = bytes(quote.attestData)
    try:
        tpmwire.verify_quote_signature(attest_data, bytes(quote.signature), ak_key)
    except tpmwire.TpmWireError:
        return _failed("the quote signature does not verify with the attestation key")
    try:
        attest = tpmwire.Attest.unmarshal(attest_data)
    except tpmwire.TpmWireError as exc:
        return _failed(f"attestData is not a TPM-generated quote: {exc}")
    if not hmac.compare_digest(attest.extra_data, nonce.nonce):
        return Verdict(
            VerdictCode.NONCE_MISMATCH, "the quote was made over another nonce (extraData)"
        )

    banks = [s for s in attest.pcr_select if s.pcrs]
    if len(banks) != 1 or banks[0].hash_alg != tpmwire.Alg.SHA256:
        return _failed("the quote does not select exactly one PCR bank, SHA-256")
    quoted = banks[0].pcrs
    missing = [i for i in REQUIRED_QUOTE_PCRS if i not in quoted]
    if missing:
        return _failed(
            f"the quote does not cover SHA-256 PCRs 0-15 (missing {_list(missing)})", missing
        )

    reported, problem = _reported_pcrs(quote)
    if problem:
        return _failed(problem)
    unreported = [i for i in quoted if i not in reported]
    if unreported:
        return _failed(f"no value reported for quoted PCR(s) {_list(unreported)}", unreported)
    try:
        digest = tpmwire.pcr_digest(reported, attest.pcr_select)
    except tpmwire.TpmWireError as exc:
        return _failed(f"cannot compute the digest of the reported PCR values: {exc}")
    if not hmac.compare_digest(digest, attest.pcr_digest):
        return _failed("the reported PCR values do not match the digest the quote signed")

    event_log: bytes | None = None
    events: tuple[tcglog.Event, ...] = ()
    if quote.tpm_binary_event_log:
        try:
            event_log = inflate(bytes(quote.tpm_binary_event_log), MAX_EVENT_LOG)
        except LogUploadError as exc:
            return _failed(f"the event log is not usable: {exc}")
        try:
            events = tcglog.parse(event_log).events
            diffs = tcglog.diff(events, reported)
        except tcglog.TcgLogError as exc:
            return _failed(f"the event log is malformed: {exc}")
        if diffs:
            pcrs = [d.pcr for d in diffs]
            return _failed(
                f"the event log does not replay to the reported value of PCR(s) {_list(pcrs)}",
                pcrs,
            )

    evidence = Evidence(
        ak_cert=ak_cert,
        pcrs=reported,
        quoted=quoted,
        event_log=event_log,
        events=events,
        versions=tuple((_version_type(v.version_type), v.version) for v in quote.versions),
    )
    note = "" if event_log is not None else " (no event log sent)"
    return Verdict(VerdictCode.SUCCESS, f"quote verified{note}", evidence=evidence)


def apply_policy(verdict: Verdict, *, device_cert: x509.Certificate, policy: PcrPolicy) -> Verdict:
    """Step 2: bind the evidence to the device and compare its PCRs with the policy.

    A failed verdict is returned as it is.  A successful one without evidence comes from a
    verifier that judged everything itself (tests plug such verifiers in) and is returned as it
    is too.  Otherwise: the attestation key certificate must be signed by ``device_cert``
    (failing that, the evidence is dropped: it is not this device's); then every PCR of
    ``policy.pcrs`` must be quoted and equal its golden value.  With no golden values yet the
    verdict succeeds with ``learn`` set.
    """
    evidence = verdict.evidence
    if not verdict.ok or evidence is None:
        return verdict
    try:
        evidence.ak_cert.verify_directly_issued_by(device_cert)
    except (ValueError, TypeError, InvalidSignature):
        return _failed("the attestation key certificate is not signed by the device certificate")

    unquoted = [i for i in policy.pcrs if i not in evidence.quoted]
    if unquoted:
        return replace(
            _failed(f"policy PCR(s) {_list(unquoted)} are not covered by the quote", unquoted),
            evidence=evidence,
        )
    if evidence.event_log is not None:
        # The log must account for every policy PCR, not only those it touches: a log with
        # all events of one PCR stripped would otherwise pass, and the events named to explain a
        # later mismatch could not be trusted.  (A platform that extends a PCR outside the log,
        # e.g. IMA into PCR 10, needs that PCR left out of the policy with `attest policy --pcrs`.)
        replayed = tcglog.replay(evidence.events)
        unaccounted = [i for i in policy.pcrs if replayed.get(i) != evidence.pcrs.get(i)]
        if unaccounted:
            return _failed(
                f"the event log does not account for policy PCR(s) {_list(unaccounted)}",
                unaccounted,
            )
    if policy.golden is None:
        return replace(
            verdict,
            reason=f"{verdict.reason}; PCR values learnt as golden (trust on first use)",
            learn=True,
        )

    golden = policy.golden
    differing = [i for i in policy.pcrs if golden.get(i) != evidence.pcrs.get(i)]
    if not differing:
        return replace(verdict, reason=f"{verdict.reason}; PCRs match the golden values")

    reference = _golden_events(policy)
    summary: list[str] = []
    detail: list[str] = []
    for pcr in differing:
        if pcr not in golden:
            summary.append(f"PCR {pcr}: no golden value")
            detail.append(f"PCR {pcr}: no golden value was learnt or accepted")
            continue
        changed = _changed(reference, evidence.events, pcr)
        named = [e.describe(pcr=False) for e in changed]
        detail += [f"PCR {pcr}: {text}" for text in named] or [f"PCR {pcr}: (no event log)"]
        shown = "; ".join(named[:MAX_EVENTS_NAMED])
        if len(named) > MAX_EVENTS_NAMED:
            shown += f"; and {len(named) - MAX_EVENTS_NAMED} more"
        summary.append(f"PCR {pcr}: {shown}" if shown else f"PCR {pcr}")
    source = policy.golden_source.value if policy.golden_source else "set"
    reason = (
        f"PCR values differ from the golden values ({source}"
        f"{' ' + (rfc3339(policy.golden_at) or '') if policy.golden_at else ''}): "
        + " | ".join(summary)
    )
    return Verdict(
        VerdictCode.QUOTE_FAILED,
        reason,
        tuple(differing),
        evidence=evidence,
        detail="\n".join(detail),
    )


def pcr_report(verdict: Verdict, now: float) -> PcrReport | None:
    """What to remember of a judged quote: its PCRs, when the quote was genuine and this
    device's (also when the policy then failed, so the admin can accept them)."""
    evidence = verdict.evidence
    if evidence is None:
        return None
    return PcrReport(
        pcrs=dict(evidence.pcrs),
        quoted=evidence.quoted,
        event_log=evidence.event_log,
        versions=evidence.versions,
        reported_at=now,
        mismatched=verdict.mismatched_pcrs if not verdict.ok else (),
        detail=verdict.detail,
    )


def _golden_events(policy: PcrPolicy) -> tuple[tcglog.Event, ...] | None:
    if policy.golden_log is None:
        return None
    try:
        return tcglog.parse(policy.golden_log).events
    except tcglog.TcgLogError:
        return None


def _changed(
    reference: tuple[tcglog.Event, ...] | None, current: tuple[tcglog.Event, ...], pcr: int
) -> tuple[tcglog.Event, ...]:
    """The current log's events that make ``pcr`` differ: those the golden log lacks, or every
    event of that PCR when there is no golden log to compare with."""
    if reference is None:
        return tcglog.events_for(current, pcr)
    return tcglog.changed_events(reference, current, pcr) or tcglog.events_for(current, pcr)


def _reported_pcrs(quote: attest_pb2.ZAttestQuote) -> tuple[dict[int, bytes], str]:
    reported: dict[int, bytes] = {}
    for value in quote.pcr_values:
        if value.hash_algo != attest_pb2.TPM_HASH_ALGO_SHA256:
            return {}, (
                f"PCR {value.index} is reported in hash algorithm {value.hash_algo}, not SHA-256"
            )
        if value.index >= tcglog.NUM_PCRS:
            return {}, f"PCR index {value.index} is reported; PCRs are 0-23"
        if len(value.value) != 32:
            return {}, f"PCR {value.index} value is {len(value.value)} bytes, not 32"
        if value.index in reported:
            return {}, f"PCR {value.index} is reported twice"
        reported[value.index] = bytes(value.value)
    return reported, ""


def _version_type(version_type: int) -> str:
    try:
        return attest_pb2.AttestVersionType.Name(version_type).removeprefix("ATTEST_VERSION_TYPE_")
    except ValueError:
        return str(version_type)


def _list(pcrs: Sequence[int]) -> str:
    return ", ".join(str(i) for i in pcrs)
