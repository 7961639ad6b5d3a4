"""The registry of fuzz targets: every parser that takes bytes from outside the process.

A :class:`Target` names a parser, its contract and the errors it declares.  The contract is the
same for all: for ANY input the call returns, or raises one of ``allowed`` (the module's own
error types); anything else (IndexError, KeyError, TypeError, UnicodeDecodeError,
RecursionError, struct.error, a protobuf DecodeError the module does not declare, MemoryError,
a controller ApiError of status 500 or more) is a crash.  Hangs are caught by the runner's time
limit per input.  ``prepare()`` builds the call and its inputs once: valid seeds to mutate and
structure-aware generators (protobuf messages with hostile values, gzip members of hostile
content, re-signed quotes over hostile TPM structures).

Used by tests/unit/test_fuzz_parsers.py (Hypothesis, a few hundred inputs per target) and by
tools/fuzz.py (``make fuzz``: a million inputs).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError, Message

from agent.drivers.dhcpclient import parse_lease
from agent.drivers.dnsmasqconf import parse_leases
from agent.drivers.kubeapi import KubeConfig, KubeConfigError
from agent.link.attestation import AttestationRejected, quote_outcome
from agent.link.checkpoint import CheckpointStore
from agent.link.configsync import ConfigRejected, _open_response, bound_errors
from agent.link.controllercerts import (
    ControllerCertError,
    ControllerCertStore,
    parse_controller_certs,
)
from agent.link.deviceops import DeviceOps
from agent.link.gzlog import gzip_member
from agent.model.config import NodeConfig, from_proto
from agent.reconcile.portselect import Selection
from agent.reconcile.records import RecordBook
from agent.reconcile.userdata import UserDataError, for_container
from agent.util import bootreason
from agent.util.ids import parse_uuid
from agent.vault.keys import EscrowError, SealedKey, SealedKeyError, parse_escrow
from agent.wire import envelope, objcipher, pki, tcglog, tpmwire
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.auth import auth_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2
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
from tests.fuzz.mutate import hostile_message, mutate, nested_message, nesting
from tests.fuzz.seeds import AK_CERT_TYPE, NONCE, World, world

Generator = Callable[[random.Random], bytes]


class ContractViolation(AssertionError):
    """A call broke its contract without an exception of its own (a 5xx ApiError, say)."""


@dataclass(frozen=True)
class Prepared:
    """A target's call and inputs, built once."""

    call: Callable[[bytes], object]
    seeds: tuple[bytes, ...]
    generators: tuple[Generator, ...] = ()


@dataclass(frozen=True)
class Target:
    name: str
    #: What the parser promises, in one line (docs/development.md lists these).
    contract: str
    #: The errors the parser declares; any other exception is a crash.
    allowed: tuple[type[BaseException], ...]
    prepare: Callable[[], Prepared] = field(repr=False)


def _proto_generators(message_type: type[Message]) -> tuple[Generator, ...]:
    return (
        lambda rng: hostile_message(message_type, rng),
        lambda rng: nested_message(message_type, rng),
    )


def _client_error(call: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """``call`` with a controller ApiError of status 500 or more turned into a violation: an
    endpoint answers a bad payload with a 4xx, a 5xx is always a controller bug."""

    def wrapped(data: bytes) -> object:
        try:
            return call(data)
        except ApiError as exc:
            if exc.status >= 500:
                raise ContractViolation(f"ApiError {exc.status}: {exc.reason}") from exc
            raise

    return wrapped


def pem_of(der: bytes) -> bytes:
    """``der`` armoured as a PEM certificate, whatever it holds."""
    body = base64.encodebytes(der)
    return b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"


def der_of(pem: bytes) -> bytes:
    return pki.load_cert(pem).public_bytes(Encoding.DER)


def _sometimes(generator: Generator, seeds: Sequence[bytes], share: float) -> Generator:
    """``generator`` for ``share`` of the inputs, mutated seeds for the rest (a slow generator:
    deep YAML takes the parser most of a second)."""
    return lambda rng: generator(rng) if rng.random() < share else mutate(seeds, rng)


def _scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="eve-fuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


# --- agent: envelopes, config, checkpoints, controller answers ----------------------------------


def _envelope_parse() -> Prepared:
    return Prepared(envelope.parse, world().envelopes, _proto_generators(auth_pb2.AuthContainer))


def _envelope_open() -> Prepared:
    w = world()
    trusted = dict(w.trusted)
    trusted[envelope.device_cert_hash(w.device.cert)] = w.device.cert
    return Prepared(
        lambda data: envelope.open_signed(data, trusted),
        w.envelopes,
        _proto_generators(auth_pb2.AuthContainer),
    )


def model_config(w: World, raw: bytes) -> NodeConfig:
    """What ConfigSync._verify does with a config response, but the freshness checks: open the
    envelope, parse, check the device UUID, model, bound the errors.  Raises ConfigRejected or
    envelope.UnknownSigner; the model must not raise past a valid UUID."""
    resp = _open_response(raw, w.trusted)
    try:
        parse_uuid(resp.config.id.uuid, "config device uuid")
    except ValueError as exc:
        raise ConfigRejected(f"config carries no valid device UUID: {exc}") from exc
    return bound_errors(from_proto(resp.config))


def _config() -> Prepared:
    """The payload is fuzzed and then signed, so every input gets past the signature check."""
    w = world()
    return Prepared(
        lambda data: model_config(w, w.controller.seal(data)),
        w.config_payloads,
        _proto_generators(devconfig_pb2.ConfigResponse),
    )


@dataclass(frozen=True)
class _Secrets:
    """A device ECDH key, the keys to open blocks with, a context and an encrypter."""

    keys: objcipher.DeviceCipherKeys
    context: acipherinfo_pb2.CipherContext
    device_public: ec.EllipticCurvePublicKey

    def seal(self, w: World, clear: bytes) -> acipherinfo_pb2.CipherBlock:
        return objcipher.encrypt(
            clear,
            context=self.context,
            controller_key=w.controller_ecdh_key,
            device_public_key=self.device_public,
        )

    def open(
        self,
        block: acipherinfo_pb2.CipherBlock,
        contexts: Mapping[str, acipherinfo_pb2.CipherContext],
    ) -> acipherinfo_pb2.EncryptionBlock:
        return objcipher.decrypt_block(block, contexts, self.keys)


def _secrets(w: World) -> _Secrets:
    key = pki.new_ec_key()
    pem = pki.cert_pem(pki.make_certificate(key, "device ecdh"))
    context = objcipher.make_context(
        "ctx-1", device_cert_pem=pem, controller_cert_pem=w.controller.ecdh_pem
    )
    keys = objcipher.DeviceCipherKeys(
        pem, (w.controller.ecdh_pem,), objcipher.software_shared_point(key)
    )
    return _Secrets(keys, context, key.public_key())


def _config_secrets() -> Prepared:
    """A config whose datastore credentials, app user data and cluster token are encrypted,
    modelled with a decryptor: hostile EncryptionBlocks (encrypted properly) and hostile
    cipher blocks reach the model."""
    w = world()
    s = _secrets(w)
    cfg = devconfig_pb2.EdgeDevConfig()
    cfg.ParseFromString(
        devconfig_pb2.ConfigResponse.FromString(w.config_payloads[0]).config.SerializeToString()
    )
    cfg.cipherContexts.append(s.context)
    clear = acipherinfo_pb2.EncryptionBlock(
        dsAPIKey="user", dsPassword="pw", protectedUserData="I0EgY2xvdWQtY29uZmlnCg==",
        cluster_token="token",
    )  # fmt: skip
    cfg.datastores[0].cipherData.CopyFrom(s.seal(w, clear.SerializeToString()))
    cfg.apps[0].cipherData.CopyFrom(s.seal(w, clear.SerializeToString()))
    seed = devconfig_pb2.ConfigResponse(config=cfg, configHash="s").SerializeToString()

    def hostile_block(rng: random.Random) -> bytes:
        inner = hostile_message(acipherinfo_pb2.EncryptionBlock, rng)
        out = devconfig_pb2.ConfigResponse.FromString(seed)
        target = rng.choice((out.config.datastores[0], out.config.apps[0]))
        target.cipherData.CopyFrom(s.seal(w, inner))
        return out.SerializeToString()

    def call(data: bytes) -> object:
        resp = _open_response(w.controller.seal(data), w.trusted)
        try:
            parse_uuid(resp.config.id.uuid, "config device uuid")
        except ValueError as exc:
            raise ConfigRejected(f"config carries no valid device UUID: {exc}") from exc
        return bound_errors(from_proto(resp.config, decrypt=s.open))

    return Prepared(call, (seed,), (hostile_block,))


def _cipher_block() -> Prepared:
    """objcipher.decrypt_block: any CipherBlock against the config's contexts."""
    w = world()
    s = _secrets(w)
    contexts = {s.context.contextId: s.context}
    clear = acipherinfo_pb2.EncryptionBlock(dsAPIKey="user", dsPassword="pw")
    seed = s.seal(w, clear.SerializeToString()).SerializeToString()

    def hostile_clear(rng: random.Random) -> bytes:
        inner = hostile_message(acipherinfo_pb2.EncryptionBlock, rng)
        return s.seal(w, inner).SerializeToString()

    def call(data: bytes) -> object:
        block = acipherinfo_pb2.CipherBlock.FromString(data)
        return objcipher.decrypt_block(block, contexts, s.keys)

    return Prepared(call, (seed,), (hostile_clear, *_proto_generators(acipherinfo_pb2.CipherBlock)))


def _config_checkpoint() -> Prepared:
    """The checkpoint file read back: the primary and the .bak, each re-verified."""
    w = world()
    store = CheckpointStore(_scratch_dir(), "config")

    def call(data: bytes) -> object:
        store.primary.write_bytes(data)
        store.backup.write_bytes(data[: len(data) // 2])
        out = []
        for _name, raw in store.candidates():
            try:
                out.append(model_config(w, raw))
            except (ConfigRejected, envelope.UnknownSigner):
                continue
        return out

    return Prepared(call, w.config_checkpoints)


def _certs_checkpoint() -> Prepared:
    w = world()
    directory = _scratch_dir()
    root_pem = pki.cert_pem(w.root)

    def call(data: bytes) -> object:
        checkpoints = CheckpointStore(directory, "controllercerts")
        checkpoints.primary.write_bytes(data)
        checkpoints.backup.write_bytes(w.controller_certs[0] if len(data) % 2 else data[1:])
        store = ControllerCertStore(checkpoints, root_pem)
        return store.load_checkpoint()

    return Prepared(call, w.controller_certs)


def _controller_certs() -> Prepared:
    w = world()
    answer = certs_pb2.ZControllerCert.FromString(w.controller_certs[0])
    ders = tuple(der_of(bytes(c.cert)) for c in answer.certs)

    def hostile_cert(rng: random.Random) -> bytes:
        """One certificate's DER mutated (PEM armour kept): the X.509 parser's turn."""
        message = certs_pb2.ZControllerCert()
        message.CopyFrom(answer)
        zcert = rng.choice(message.certs)
        zcert.cert = pem_of(mutate(ders, rng))
        return message.SerializeToString()

    return Prepared(
        lambda data: parse_controller_certs(data, [w.root]),
        w.controller_certs,
        (hostile_cert, *_proto_generators(certs_pb2.ZControllerCert)),
    )


def _attest_answer(data: bytes) -> object:
    resp = attest_pb2.ZAttestResponse()
    resp.ParseFromString(data)
    return quote_outcome(resp)


def _attest_response() -> Prepared:
    ok = attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_QUOTE_RESP)
    ok.quoteResp.response = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
    ok.quoteResp.integrity_token = b"t" * 43
    key = ok.quoteResp.keys.add(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=b"k" * 60)
    key.has_policy_pcr_list = True
    key.policy_pcr_list.pcr_indices.extend([0, 1, 7])
    return Prepared(
        _attest_answer,
        (ok.SerializeToString(),),
        _proto_generators(attest_pb2.ZAttestResponse),
    )


def _escrow() -> Prepared:
    data = attest_pb2.AttestVolumeKeyData(
        encrypted_key=b"\x00\x00\x00\x0c" + b"n" * 12 + b"c" * 48,
        digest_sha256=b"d" * 32,
        version=attest_pb2.ATTEST_VOLUME_KEY_VERSION_V1,
    )
    return Prepared(
        parse_escrow,
        (data.SerializeToString(),),
        _proto_generators(attest_pb2.AttestVolumeKeyData),
    )


def _sealed_key() -> Prepared:
    w = world()
    record = SealedKey(w.tpm_sealed[0], (0, 7), {0: bytes(32), 7: b"\x07" * 32}, b"d" * 32)
    return Prepared(SealedKey.from_bytes, (record.to_bytes(),), (nesting,))


def _dhcp_lease() -> Prepared:
    lease = {"event": "bound", "ip": "10.0.2.15", "mask": "24", "router": "10.0.2.2",
             "dns": "10.0.2.3 1.1.1.1", "lease": "86400", "at": str(int(time.time()))}  # fmt: skip
    seeds = (json.dumps(lease).encode(), b'{"event": "deconfig"}')
    return Prepared(lambda data: parse_lease(data, time.time()), seeds, (nesting,))


def _dnsmasq_leases() -> Prepared:
    now = int(time.time())
    seed = (
        f"{now + 3600} 52:54:00:12:34:56 10.1.0.10 app-1 01:52:54:00:12:34:56\n"
        f"0 02:00:00:00:00:01 10.1.0.11 * *\n"
        "duid 00:01:00:01:2c:3e:4f:50:52:54:00:aa:bb:cc\n"
    ).encode()
    return Prepared(parse_leases, (seed,))


def _deviceops_state() -> Prepared:
    """The device operation counters file, read at start: any content is counters or none."""
    directory = _scratch_dir()
    ops = DeviceOps(
        directory, cast(Any, None), announce=cast(Any, None), halt_apps=cast(Any, None),
        stopped=cast(Any, None),
    )  # fmt: skip
    ops.file.parent.mkdir(parents=True, exist_ok=True)
    seed = json.dumps({"rebootConfigCounter": 3, "shutdownConfigCounter": 1}).encode()

    def call(data: bytes) -> object:
        ops.file.write_bytes(data)
        ops.load()
        return ops.facts()

    return Prepared(call, (seed,), (nesting,))


def _state_files() -> Prepared:
    """The agent's own state files read back (a failing disk, a hand edit): boot reason,
    reconciler records, port selection.  Each loader's own refusal is caught here."""
    directory = _scratch_dir()
    boot = directory / "boot.json"
    book = RecordBook(directory / "records")
    (book.root / "apps").mkdir(parents=True)
    record = book.root / "apps" / "a1.json"
    seed = json.dumps({"version": 1, "last_working": None, "failed": {}, "boot_id": "b",
                       "state": "running", "at": 1.5}).encode()  # fmt: skip

    def call(data: bytes) -> object:
        boot.write_bytes(data)
        record.write_bytes(data)
        out: list[object] = [bootreason._json(boot), book._load("apps")]
        with contextlib.suppress(ValueError):
            out.append(Selection.from_bytes(data))
        return out

    return Prepared(call, (seed,), (nesting,))


def _user_data() -> Prepared:
    cloud = (
        b"#cloud-config\nruncmd:\n  - [sh, -c, 'echo $A']\n  - echo b\nwrite_files:\n"
        b"  - path: /etc/a.conf\n    content: aGVsbG8=\n    encoding: b64\n"
        b"    permissions: '0600'\nbootcmd: [x]\n"
    )
    seeds = (cloud, b"A=1\nB=two words\n# comment\n", base64.b64encode(cloud))
    return Prepared(
        lambda data: for_container(data.decode("utf-8", "replace")),
        seeds,
        (_sometimes(lambda rng: b"#cloud-config\n" + nesting(rng), seeds, 0.02),),
    )


def _kubeconfig() -> Prepared:
    ca = b"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
    text = (
        "apiVersion: v1\nkind: Config\ncurrent-context: default\nclusters:\n"
        "- name: default\n  cluster:\n    server: https://10.1.0.2:6443\n"
        f"    certificate-authority-data: {ca.decode()}\n"
        "users:\n- name: default\n  user:\n    token: s3cret\n"
        "contexts:\n- name: default\n  context: {cluster: default, user: default}\n"
    ).encode()
    return Prepared(KubeConfig.parse, (text,), (_sometimes(nesting, (text,), 0.02),))


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

    return (with_attest, with_log, with_pcrs, *_proto_generators(attest_pb2.ZAttestQuote))


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

    return Prepared(_client_error(call), tuple(seeds), _proto_generators(message_type))


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
        _client_error(call),
        w.register,
        (hostile_cert, *_proto_generators(register_pb2.ZRegisterMsg)),
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


TARGETS: tuple[Target, ...] = (
    Target("envelope.parse", "AuthContainer bytes: an Envelope or MalformedEnvelope",
           (envelope.MalformedEnvelope,), _envelope_parse),
    Target("envelope.open_signed", "parse and verify: an Envelope or an EnvelopeError",
           (envelope.EnvelopeError,), _envelope_open),
    Target("agent.config", "signed ConfigResponse into the model: a NodeConfig or "
           "ConfigRejected; from_proto never raises past a valid device UUID",
           (ConfigRejected, envelope.UnknownSigner), _config),
    Target("agent.config.secrets", "signed config with encrypted credentials, user data "
           "and token, modelled with a decryptor: a NodeConfig or ConfigRejected",
           (ConfigRejected, envelope.UnknownSigner), _config_secrets),
    Target("agent.cipher_block", "CipherBlock against the config's contexts: the "
           "EncryptionBlock or CipherError (DecodeError: not a CipherBlock at all)",
           (objcipher.CipherError, DecodeError), _cipher_block),
    Target("agent.checkpoint.config", "config checkpoint (primary and .bak) read back and "
           "re-verified: unusable files are skipped, nothing raises", (), _config_checkpoint),
    Target("agent.checkpoint.certs", "controller certificates checkpoint read back: "
           "certificates or None, nothing raises", (), _certs_checkpoint),
    Target("agent.controller_certs", "/certs payload: verified certificates or "
           "ControllerCertError", (ControllerCertError,), _controller_certs),
    Target("agent.attest_response", "/attest answer to a quote: token and keys or "
           "AttestationRejected (DecodeError is caught by the attestation loop)",
           (AttestationRejected, DecodeError), _attest_response),
    Target("agent.escrow", "escrowed vault key from the controller: EscrowedKey or "
           "EscrowError", (EscrowError,), _escrow),
    Target("agent.sealed_key", "sealed vault key record: SealedKey or SealedKeyError",
           (SealedKeyError,), _sealed_key),
    Target("agent.dhcp_lease", "udhcpc lease file: a Lease, None or ValueError",
           (ValueError,), _dhcp_lease),
    Target("agent.dnsmasq_leases", "dnsmasq lease file: the well-formed IPv4 leases, "
           "nothing raises", (), _dnsmasq_leases),
    Target("agent.deviceops_state", "device operation counters file: counters, or none "
           "when unreadable; nothing raises", (), _deviceops_state),
    Target("agent.state_files", "the agent's own state files read back (boot reason, "
           "records, port selection): a value, None or the loader's ValueError", (),
           _state_files),
    Target("agent.user_data", "app user data for a container: env and files or "
           "UserDataError", (UserDataError,), _user_data),
    Target("agent.kubeconfig", "kubeconfig posted by a cluster VM: KubeConfig or "
           "KubeConfigError", (KubeConfigError,), _kubeconfig),
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

BY_NAME = {t.name: t for t in TARGETS}


def check(target: Target, prepared: Prepared, data: bytes) -> BaseException | None:
    """Run one input; the exception that breaks the contract, or None."""
    try:
        prepared.call(data)
    except target.allowed:
        return None
    except Exception as exc:  # noqa: BLE001 - every other exception is the finding
        return exc
    return None


def generate(prepared: Prepared, rng: random.Random) -> bytes:
    """One input: mostly a mutated seed, else a structure-aware generator or random bytes."""
    roll = rng.random()
    if roll < 0.55 or (roll < 0.9 and not prepared.generators):
        return mutate(prepared.seeds, rng)
    if roll < 0.9:
        return rng.choice(prepared.generators)(rng)
    if roll < 0.95:
        return rng.choice(prepared.seeds)
    return rng.randbytes(rng.choice((0, 1, 2, 4, 16, 100, 1000)))
