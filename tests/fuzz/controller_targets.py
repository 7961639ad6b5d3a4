"""Fuzz targets of the TPM structures, the TCG event log and the controller's device
endpoints (the payload functions their handlers call).  See tests/fuzz/targets.py."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError, Message

from agent.link.gzlog import gzip_member
from agent.wire import tcglog, tpmwire
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.flowlog import flowlog_pb2
from agent.wire.pb.info import info_pb2
from agent.wire.pb.metrics import metrics_pb2
from agent.wire.pb.register import register_pb2
from controller import newlogs
from controller.api.attest import _cert_type_name
from controller.api.common import ApiError
from controller.api.objects import object_update
from controller.api.onboarding import _device_cert
from controller.api.reports import _parse
from controller.attestation import apply_policy, pcr_report, verify_quote
from controller.certpolicy import CertPolicy, CertRefused, check_device_cert
from controller.clustermanifest import parse_status
from controller.deviceops import reported_power
from controller.records import DeviceCert, GoldenSource, NonceRecord, PcrPolicy, ReportKind
from tests.fuzz.base import (
    Generator,
    Prepared,
    Target,
    client_error,
    der_of,
    pem_of,
    proto_generators,
)
from tests.fuzz.mutate import hostile_message, mutate, nesting
from tests.fuzz.seeds import AK_CERT_TYPE, NONCE, World, world

# --- TPM structures and the event log -----------------------------------------------------------


def _event_log() -> Prepared:
    w = world()
    reference = tcglog.parse(w.event_logs[0]).events

    def call(data: bytes) -> object:
        log = tcglog.parse(data)
        for event in log.events:
            event.describe()
        diffs = tcglog.diff(log.events, w.pcrs)
        for d in diffs:
            tcglog.changed_events(reference, log.events, d.pcr)
        return tcglog.replay(log), tcglog.touched_pcrs(log)

    return Prepared(call, w.event_logs)


def _tpm_attest() -> Prepared:
    def call(data: bytes) -> object:
        attest = tpmwire.Attest.unmarshal(data)
        return attest.marshal()

    return Prepared(call, world().tpm_attest)


def _tpm_public() -> Prepared:
    def call(data: bytes) -> object:
        public = tpmwire.Public.unmarshal_2b(data)
        return public.name(), public.public_key()

    return Prepared(call, world().tpm_public)


def _tpm_sealed() -> Prepared:
    return Prepared(lambda data: tpmwire.SealedBlob.unmarshal(data).pcr_indexes, world().tpm_sealed)


def _tpm_signature() -> Prepared:
    w = world()
    attest = w.tpm_attest[1]
    key = w.ak_key.public_key()
    der = w.ak_key.sign(attest, ec.ECDSA(hashes.SHA256()))

    def call(data: bytes) -> object:
        with contextlib.suppress(tpmwire.TpmWireError):
            tpmwire.EcdsaSignature.unmarshal(data)
        tpmwire.verify_quote_signature(attest, data, key)
        return None

    return Prepared(call, (*w.tpm_signatures, der))


# --- controller: device endpoints' payloads -----------------------------------------------------


def _quote_generators(w: World) -> tuple[Generator, ...]:
    """Quotes with one part hostile and the rest valid: the TPMS_ATTEST bytes, the event log
    (gzipped again after the mutation, so it inflates), the PCR values."""
    base = w.quote

    def with_attest(rng: random.Random) -> bytes:
        quote = attest_pb2.ZAttestQuote()
        quote.CopyFrom(base)
        quote.attestData = mutate(w.tpm_attest, rng)
        return quote.SerializeToString()

    def with_log(rng: random.Random) -> bytes:
        quote = attest_pb2.ZAttestQuote()
        quote.CopyFrom(base)
        quote.tpm_binary_event_log = gzip_member(mutate(w.event_logs, rng), mtime=0)
        return quote.SerializeToString()

    def with_pcrs(rng: random.Random) -> bytes:
        quote = attest_pb2.ZAttestQuote()
        quote.CopyFrom(base)
        value = rng.choice(quote.pcr_values)
        value.index = rng.choice((value.index, 23, 24, 2**31 - 1))
        value.hash_algo = rng.choice((value.hash_algo, 0, 99))  # type: ignore[assignment]
        value.value = mutate((bytes(value.value),), rng)
        return quote.SerializeToString()

    return (with_attest, with_log, with_pcrs, *proto_generators(attest_pb2.ZAttestQuote))


def _quote() -> Prepared:
    """The controller's verifier.  An input with an empty signature is signed with the AK, so
    hostile TPMS_ATTEST bytes, PCR values and event logs get past the signature check."""
    w = world()
    device_cert = w.device.cert
    certs = [DeviceCert(AK_CERT_TYPE, 0, b"", w.ak_pem, True, True, b"")]
    now = time.time()
    nonce = NonceRecord(nonce=NONCE, issued_at=now, expires_at=now + 10**7)
    signed = attest_pb2.ZAttestQuote()
    signed.CopyFrom(w.quote)
    signed.signature = w.ak_key.sign(bytes(signed.attestData), ec.ECDSA(hashes.SHA256()))
    first = verify_quote(certs=certs, nonce=nonce, quote=signed, now=now)
    report = pcr_report(apply_policy(first, device_cert=device_cert, policy=PcrPolicy()), now)
    assert report is not None, first.reason
    golden = PcrPolicy(
        golden=report.pcrs,
        golden_log=report.event_log,
        golden_source=GoldenSource.FIRST_USE,
        golden_at=now,
    )
    seed = attest_pb2.ZAttestQuote()
    seed.CopyFrom(w.quote)

    def call(data: bytes) -> object:
        quote = attest_pb2.ZAttestQuote()
        quote.ParseFromString(data)
        if not quote.signature and quote.attestData:
            quote.signature = w.ak_key.sign(bytes(quote.attestData), ec.ECDSA(hashes.SHA256()))
        verdict = verify_quote(certs=certs, nonce=nonce, quote=quote, now=time.time())
        for policy in (PcrPolicy(), golden):
            judged = apply_policy(verdict, device_cert=device_cert, policy=policy)
            pcr_report(judged, now)
        return verdict

    return Prepared(call, (seed.SerializeToString(),), _quote_generators(w))


def _ak_certificate() -> Prepared:
    """The attestation key certificate a device stored with ATTEST_REQ_CERT, as DER (armoured
    as PEM by the call), judged with an honest quote: a verdict whatever the certificate."""
    w = world()
    quote = attest_pb2.ZAttestQuote()
    quote.CopyFrom(w.quote)
    quote.signature = w.ak_key.sign(bytes(quote.attestData), ec.ECDSA(hashes.SHA256()))
    now = time.time()
    nonce = NonceRecord(nonce=NONCE, issued_at=now, expires_at=now + 10**7)

    def call(data: bytes) -> object:
        certs = [DeviceCert(AK_CERT_TYPE, 0, b"", pem_of(data), True, True, b"")]
        verdict = verify_quote(certs=certs, nonce=nonce, quote=quote, now=time.time())
        return apply_policy(verdict, device_cert=w.device.cert, policy=PcrPolicy())

    seeds = (der_of(w.ak_pem), w.device.cert.public_bytes(Encoding.DER))
    return Prepared(call, seeds)


def _newlogs() -> Prepared:
    w = world()
    content = b"".join(line + b"\n" for line in w.log_lines)

    def hostile_content(rng: random.Random) -> bytes:
        lines = mutate(w.log_lines, rng) if rng.random() < 0.7 else nesting(rng)
        return gzip_member(lines + b"\n" + content, mtime=rng.getrandbits(32))

    def hostile_comment(rng: random.Random) -> bytes:
        comment = mutate((json.dumps({"devID": "x", "image": "IMGA"}).encode(),), rng)
        return gzip_member(content, mtime=0, comment=comment.decode("latin-1"))

    def many_members(rng: random.Random) -> bytes:
        return gzip_member(content, mtime=1) * rng.choice((2, 50, 1000))

    def call(data: bytes) -> object:
        upload = newlogs.decode_upload(data, 1024 * 1024, 10_000)
        meta = newlogs.device_log_meta(upload.header)
        app = newlogs.app_log_meta(upload.header, "6ba7b810-9dad-11d1-80b4-00c04fd430c8")
        return json.dumps(meta), json.dumps(app)

    return Prepared(call, w.newlogs, (hostile_content, hostile_comment, many_members))


def _report(kind: ReportKind, message_type: type[Message], seeds: Sequence[bytes]) -> Prepared:
    def call(data: bytes) -> object:
        message, rendered = _parse(message_type, data, kind, 100_000)
        if isinstance(message, info_pb2.ZInfoMsg):
            object_update(message, time.time())
            if message.HasField("dinfo"):
                reported_power(time.time(), message.dinfo)
        return rendered

    return Prepared(client_error(call), tuple(seeds), proto_generators(message_type))


def _register() -> Prepared:
    w = world()
    policy = CertPolicy()

    def call(data: bytes) -> object:
        message = register_pb2.ZRegisterMsg()
        message.ParseFromString(data)
        _pem, cert = _device_cert(bytes(message.pemCert))
        check_device_cert(cert, time.time(), policy)
        return message.softSerial or message.serial

    ders = (
        w.device.cert.public_bytes(Encoding.DER),
        der_of(w.ak_pem),
        w.root.public_bytes(Encoding.DER),
    )

    def hostile_cert(rng: random.Random) -> bytes:
        message = register_pb2.ZRegisterMsg.FromString(w.register[0])
        pem = pem_of(mutate(ders, rng))
        message.pemCert = base64.b64encode(pem) if rng.random() < 0.5 else pem
        return message.SerializeToString()

    return Prepared(
        client_error(call),
        w.register,
        (hostile_cert, *proto_generators(register_pb2.ZRegisterMsg)),
    )


def _requests() -> Prepared:
    """The small requests: ConfigRequest, ZAttestReq (the certificates it carries are read
    as the cert step reads them), UuidRequest; the first byte picks which."""
    cert_req = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_CERT)
    cert_req.certs.add(type=AK_CERT_TYPE, cert=world().ak_pem, hashAlgo=1, certHash=b"h" * 32)
    seeds = (
        b"\x00"
        + devconfig_pb2.ConfigRequest(configHash="abc", integrity_token=b"t").SerializeToString(),
        b"\x01" + cert_req.SerializeToString(),
        b"\x02" + eveuuid_pb2.UuidRequest().SerializeToString(),
    )

    def call(data: bytes) -> object:
        kind, payload = (data[0] % 3, data[1:]) if data else (0, b"")
        if kind == 0:
            return devconfig_pb2.ConfigRequest.FromString(payload)
        if kind == 2:
            return eveuuid_pb2.UuidRequest.FromString(payload)
        ask = attest_pb2.ZAttestReq.FromString(payload)
        return [(_cert_type_name(int(c.type)), bytes(c.cert)) for c in ask.certs]

    generators = tuple(
        (lambda rng, p=prefix, d=desc: p + hostile_message(d, rng))
        for prefix, desc in (
            (b"\x00", devconfig_pb2.ConfigRequest),
            (b"\x01", attest_pb2.ZAttestReq),
        )
    )
    return Prepared(call, seeds, generators)


def _cluster_status() -> Prepared:
    doc = {"eve-cluster-manifest": {"result": "applied", "detail": "ok", "url-sha256": "ab" * 32}}
    return Prepared(parse_status, (json.dumps(doc).encode(),), (nesting,))


CONTROLLER_TARGETS: tuple[Target, ...] = (
    Target("tcg.event_log", "TCG event log parsed, described, replayed and diffed: values "
           "or TcgLogError", (tcglog.TcgLogError,), _event_log),
    Target("tpm.attest", "TPMS_ATTEST: an Attest or TpmWireError",
           (tpmwire.TpmWireError,), _tpm_attest),
    Target("tpm.public", "TPM2B_PUBLIC, its name and key: values or TpmWireError",
           (tpmwire.TpmWireError,), _tpm_public),
    Target("tpm.sealed", "sealed blob: a SealedBlob or TpmWireError",
           (tpmwire.TpmWireError,), _tpm_sealed),
    Target("tpm.signature", "TPMT_SIGNATURE and a quote signature check: TpmWireError "
           "(BadSignature) or success", (tpmwire.TpmWireError,), _tpm_signature),
    Target("controller.quote", "/attest quote: the verifier and the PCR policy return a "
           "verdict for any decodable ZAttestQuote", (DecodeError,), _quote),
    Target("controller.ak_certificate", "/attest: any stored attestation key certificate "
           "gives a verdict, never an exception", (), _ak_certificate),
    Target("controller.newlogs", "/newlogs and app logs upload: entries and metadata or "
           "LogUploadError", (newlogs.LogUploadError,), _newlogs),
    Target("controller.info", "/info payload decoded, rendered, object state taken: a 4xx "
           "ApiError at worst", (ApiError,),
           lambda: _report(ReportKind.INFO, info_pb2.ZInfoMsg, world().info)),
    Target("controller.metrics", "/metrics payload decoded and rendered: a 4xx ApiError at "
           "worst", (ApiError,),
           lambda: _report(ReportKind.METRICS, metrics_pb2.ZMetricMsg, world().metrics)),
    Target("controller.flowlog", "/flowlog payload decoded and rendered: a 4xx ApiError at "
           "worst", (ApiError,),
           lambda: _report(ReportKind.FLOWLOG, flowlog_pb2.FlowMessage, world().flowlog)),
    Target("controller.register", "/register payload: serial and device certificate, or "
           "DecodeError, a 4xx ApiError, CertRefused", (DecodeError, ApiError, CertRefused),
           _register),
    Target("controller.requests", "/config, /attest and /uuid requests: decoded or "
           "DecodeError", (DecodeError,), _requests),
    Target("controller.cluster_status", "an app's custom status (cluster manifest result): "
           "a result or None, nothing raises", (), _cluster_status),
)  # fmt: skip
