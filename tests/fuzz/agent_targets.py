"""Fuzz targets of the agent's parsers: envelopes, the config into the model (with secrets),
cipher blocks, checkpoints, the controller's answers, files of the agent and its neighbours
(leases, state), user data and kubeconfigs.  See tests/fuzz/targets.py."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from agent.drivers import nfnetlink as nf
from agent.drivers.dhcpclient import parse_lease
from agent.drivers.dnsmasqconf import parse_leases
from agent.drivers.kubeapi import KubeConfig, KubeConfigError
from agent.drivers.nflog import parse_packet
from agent.link.attestation import AttestationRejected, quote_outcome
from agent.link.checkpoint import CheckpointStore
from agent.link.configsync import ConfigRejected, _open_response, bound_errors
from agent.link.controllercerts import (
    ControllerCertError,
    ControllerCertStore,
    parse_controller_certs,
)
from agent.link.deviceops import DeviceOps
from agent.link.onboarding import OnboardingError, uuid_answer
from agent.model.config import NodeConfig, from_proto
from agent.reconcile.dnslog import parse_answer
from agent.reconcile.portselect import Selection
from agent.reconcile.records import RecordBook
from agent.reconcile.switchlearn import parse_ack, parse_arp
from agent.reconcile.userdata import UserDataError, for_container
from agent.util import bootreason
from agent.util.ids import parse_uuid
from agent.vault.keys import EscrowError, SealedKey, SealedKeyError, parse_escrow
from agent.wire import envelope, objcipher, pki
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.auth import auth_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2
from agent.wire.pb.eveuuid import eveuuid_pb2
from tests.fuzz.base import (
    Prepared,
    Target,
    der_of,
    pem_of,
    proto_generators,
    scratch_dir,
    sometimes,
)
from tests.fuzz.mutate import hostile_message, mutate, nesting
from tests.fuzz.seeds import World, world
from tests.netpackets import arp, dhcp_ack, dns_answer

# --- agent: envelopes, config, checkpoints, controller answers ----------------------------------


def _envelope_parse() -> Prepared:
    return Prepared(envelope.parse, world().envelopes, proto_generators(auth_pb2.AuthContainer))


def _envelope_open() -> Prepared:
    w = world()
    trusted = dict(w.trusted)
    trusted[envelope.device_cert_hash(w.device.cert)] = w.device.cert
    return Prepared(
        lambda data: envelope.open_signed(data, trusted),
        w.envelopes,
        proto_generators(auth_pb2.AuthContainer),
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
        proto_generators(devconfig_pb2.ConfigResponse),
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

    return Prepared(call, (seed,), (hostile_clear, *proto_generators(acipherinfo_pb2.CipherBlock)))


def _config_checkpoint() -> Prepared:
    """The checkpoint file read back: the primary and the .bak, each re-verified."""
    w = world()
    store = CheckpointStore(scratch_dir(), "config")

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
    directory = scratch_dir()
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
        (hostile_cert, *proto_generators(certs_pb2.ZControllerCert)),
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
        proto_generators(attest_pb2.ZAttestResponse),
    )


def _uuid_response() -> Prepared:
    answer = eveuuid_pb2.UuidResponse(
        uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8", manufacturer="QEMU", product_name="pc"
    )
    return Prepared(
        uuid_answer, (answer.SerializeToString(),), proto_generators(eveuuid_pb2.UuidResponse)
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
        proto_generators(attest_pb2.AttestVolumeKeyData),
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


def _dhcp_answer() -> Prepared:
    """A DHCP server's answer the firewall logged on a switch instance (the outside network's)."""
    seeds = (dhcp_ack(), dhcp_ack(lease=None, options=b"\x00\x0c\x03abc"), dhcp_ack(kind=2))
    return Prepared(parse_ack, seeds)


def _arp_sender() -> Prepared:
    """An ARP packet an app on a switch instance sent (the app chose every byte)."""
    seeds = (arp(), arp(op=2), arp(sender_ip="0.0.0.0"))
    return Prepared(parse_arp, seeds)


def _nflog_message() -> Prepared:
    """A packet message of the kernel's NFLOG (the packet's bytes are an app's or the
    outside network's)."""
    seeds = tuple(
        b"\x02\x00\x00\x00" + nf.attr(1, struct.pack("!HBB", proto, 3, 0))
        + nf.attr(10, b"arp\0") + nf.attr(9, payload)
        for proto, payload in ((0x0806, arp()), (0x0800, dhcp_ack()), (0, dns_answer()))
    )  # fmt: skip
    return Prepared(lambda data: parse_packet(data, 0.0), seeds)


def _dns_answer() -> Prepared:
    """A DNS answer the firewall logged for flow logs (the app chose the name, upstream the
    answer)."""
    seeds = (dns_answer(), dns_answer(addrs=("1.2.3.4", "5.6.7.8", "9.9.9.9")),
             dns_answer(name="a.b.c.example.org", addrs=()))  # fmt: skip
    return Prepared(parse_answer, seeds)


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
    directory = scratch_dir()
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
    directory = scratch_dir()
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
        (sometimes(lambda rng: b"#cloud-config\n" + nesting(rng), seeds, 0.02),),
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
    return Prepared(KubeConfig.parse, (text,), (sometimes(nesting, (text,), 0.02),))


AGENT_TARGETS: tuple[Target, ...] = (
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
    Target("agent.uuid_response", "/uuid answer: the device UUID or OnboardingError",
           (OnboardingError,), _uuid_response),
    Target("agent.escrow", "escrowed vault key from the controller: EscrowedKey or "
           "EscrowError", (EscrowError,), _escrow),
    Target("agent.sealed_key", "sealed vault key record: SealedKey or SealedKeyError",
           (SealedKeyError,), _sealed_key),
    Target("agent.dhcp_lease", "udhcpc lease file: a Lease, None or ValueError",
           (ValueError,), _dhcp_lease),
    Target("agent.dhcp_answer", "DHCP answer logged on a switch instance: an Ack or None, "
           "nothing raises", (), _dhcp_answer),
    Target("agent.arp_sender", "ARP an app sent on a switch instance: (MAC, address) or None, "
           "nothing raises", (), _arp_sender),
    Target("agent.nflog_message", "NFLOG packet message: a LoggedPacket or None, nothing "
           "raises", (), _nflog_message),
    Target("agent.dns_answer", "DNS answer logged for flow logs: a DnsAnswer or None, "
           "nothing raises", (), _dns_answer),
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
)  # fmt: skip
