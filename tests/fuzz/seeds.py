"""Valid inputs for the parser fuzzing, made by the project's own writers: signed envelopes, a
config, the controller's certificates, an emulated boot's event log and a quote over its PCRs,
newlogs bundles, device reports, TPM structures.  Mutating these reaches deep into a parser;
random bytes mostly stop at its first check.

:func:`world` builds everything once per process (keys and certificates take a second or two).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.drivers.tpm import KeyRole
from agent.drivers.tpm_fake import FakeTpm
from agent.link.gzlog import go_timestamp, gzip_member
from agent.measure.boot import BootComponents, boot_log, expected_pcrs
from agent.wire import envelope, pki, tcglog, tpmwire
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.flowlog import flowlog_pb2
from agent.wire.pb.info import info_pb2
from agent.wire.pb.metrics import metrics_pb2
from agent.wire.pb.register import register_pb2
from controller.api.onboarding import controller_certs
from controller.identity import ControllerIdentity, init_certs
from controller.state import StateDir

DEVICE_UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
NONCE = b"N" * 32
AK_CERT_TYPE = certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING


@dataclass(frozen=True)
class World:
    """Keys, certificates and valid inputs shared by the fuzz targets."""

    controller: ControllerIdentity
    controller_ecdh_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    trusted: dict[bytes, x509.Certificate]
    device: SoftwareSigner
    ak_key: ec.EllipticCurvePrivateKey
    ak_pem: bytes
    #: Valid inputs, by kind.
    envelopes: tuple[bytes, ...]
    config_payloads: tuple[bytes, ...]
    config_checkpoints: tuple[bytes, ...]
    controller_certs: tuple[bytes, ...]
    event_logs: tuple[bytes, ...]
    pcrs: dict[int, bytes]
    quote: attest_pb2.ZAttestQuote
    tpm_attest: tuple[bytes, ...]
    tpm_public: tuple[bytes, ...]
    tpm_sealed: tuple[bytes, ...]
    tpm_signatures: tuple[bytes, ...]
    newlogs: tuple[bytes, ...]
    log_lines: tuple[bytes, ...]
    info: tuple[bytes, ...]
    metrics: tuple[bytes, ...]
    flowlog: tuple[bytes, ...]
    register: tuple[bytes, ...]


def config(salt: int = 0) -> devconfig_pb2.EdgeDevConfig:
    """A small config with one of each object kind the model reads, valid."""
    cfg = devconfig_pb2.EdgeDevConfig()
    cfg.id.uuid = DEVICE_UUID
    cfg.id.version = str(salt)
    cfg.config_timestamp.seconds = 1_700_000_000 + salt
    ds = cfg.datastores.add(id=str(uuid.UUID(int=1)), dType=5, fqdn="docker://127.0.0.1:5000")
    ni = cfg.networkInstances.add(displayname="ni-0", instType=2, activate=True)
    ni.uuidandversion.uuid = str(uuid.UUID(int=10))
    ni.uuidandversion.version = "1"
    ni.ip.subnet = "10.1.0.0/24"
    ni.ip.gateway = "10.1.0.1"
    ni.ip.dhcpRange.start = "10.1.0.10"
    ni.ip.dhcpRange.end = "10.1.0.200"
    tree = cfg.contentInfo.add(
        uuid=str(uuid.UUID(int=20)), URL="app:latest", iformat=8, displayName="img",
        ds_ids_list=[ds.id], sha256="ab" * 32,
    )  # fmt: skip
    vol = cfg.volumes.add(uuid=str(uuid.UUID(int=30)), displayName="vol")
    vol.origin.type = 2  # type: ignore[assignment]
    vol.origin.downloadContentTreeID = tree.uuid
    app = cfg.apps.add(displayname="app", activate=True)
    app.uuidandversion.uuid = str(uuid.UUID(int=40))
    app.uuidandversion.version = "1"
    app.fixedresources.memory = 512 * 1024
    app.fixedresources.vcpus = 1
    app.userData = base64.b64encode(b"#cloud-config\nruncmd:\n - [echo, hi]\n").decode()
    app.volumeRefList.add(uuid=vol.uuid)
    intf = app.interfaces.add(name="eth0", networkId=ni.uuidandversion.uuid)
    ace = intf.acls.add(id=1, name="web")
    ace.matches.add(type="ip", value="192.168.1.0/24")
    ace.matches.add(type="protocol", value="tcp")
    ace.matches.add(type="lport", value="8080")
    ace.actions.add(portmap=True, appPort=80)
    cfg.configItems.add(key="timer.config.interval", value="60")
    cfg.configItems.add(key="debug.enable.ssh", value="false")
    cfg.reboot.counter = 1
    return cfg


def _ak_certificate(
    ak: ec.EllipticCurvePublicKey, device: SoftwareSigner, now: dt.datetime
) -> x509.Certificate:
    """An AK certificate issued by the device key, for a public key only (as tpmmgr makes)."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attestation key")]))
        .issuer_name(device.cert.subject)
        .public_key(ak)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(device.key, hashes.SHA256())
    )


def quote_for(
    pcrs: dict[int, bytes], log: bytes, ak_key: ec.EllipticCurvePrivateKey
) -> attest_pb2.ZAttestQuote:
    """The ZAttestQuote EVE sends over NONCE: TPMS_ATTEST over SHA-256 PCRs 0-15, all 24 PCR
    values, the gzipped event log; the signature left empty (the fuzz target signs)."""
    selection = tpmwire.sha256_selection(range(16))
    attest = tpmwire.Attest(
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=NONCE,
        pcr_select=selection,
        pcr_digest=tpmwire.pcr_digest(pcrs, selection),
    ).marshal()
    quote = attest_pb2.ZAttestQuote(attestData=attest)
    for index, value in sorted(pcrs.items()):
        quote.pcr_values.add(index=index, hash_algo=attest_pb2.TPM_HASH_ALGO_SHA256, value=value)
    quote.tpm_binary_event_log = gzip_member(log, mtime=0)
    quote.versions.add(version_type=attest_pb2.ATTEST_VERSION_TYPE_EVE, version="1.0.0")
    return quote


def _log_lines() -> tuple[bytes, ...]:
    now = time.time()
    entries = [
        {"severity": "info", "source": "zedagent", "content": "config applied",
         "timestamp": go_timestamp(now), "filename": "agent.go:12", "function": "apply"},
        {"severity": "error", "source": "app", "content": "x" * 300, "msgid": 7,
         "timestamp": go_timestamp(now + 1)},
    ]  # fmt: skip
    return tuple(json.dumps(e).encode() for e in entries)


def _reports(now: float) -> tuple[tuple[bytes, ...], tuple[bytes, ...], tuple[bytes, ...]]:
    dev = info_pb2.ZInfoMsg(ztype=info_pb2.ZiDevice, devId=DEVICE_UUID)
    dev.atTimeStamp.seconds = int(now)
    dev.dinfo.state = info_pb2.ZDEVICE_STATE_ONLINE
    dev.dinfo.rebootConfigCounter = 1
    dev.dinfo.lastRebootTime.seconds = int(now) - 60
    app = info_pb2.ZInfoMsg(ztype=info_pb2.ZiApp, devId=DEVICE_UUID)
    app.ainfo.AppID = str(uuid.UUID(int=40))
    app.ainfo.AppName = "app"
    app.ainfo.state = info_pb2.RUNNING
    err = app.ainfo.appErr.add(description="boom", severity=2)
    err.timestamp.seconds = int(now)
    ni = info_pb2.ZInfoMsg(ztype=info_pb2.ZiNetworkInstance, devId=DEVICE_UUID)
    ni.niinfo.networkID = str(uuid.UUID(int=10))
    ni.niinfo.state = 2  # type: ignore[assignment]
    metric = metrics_pb2.ZMetricMsg(devID=DEVICE_UUID)
    metric.atTimeStamp.seconds = int(now)
    metric.dm.memory.usedMem = 100
    metric.am.add(AppID=str(uuid.UUID(int=40)), AppName="app")
    flow = flowlog_pb2.FlowMessage(devId=DEVICE_UUID)
    record = flow.flows.add()
    record.flow.src = "10.1.0.10"
    record.flow.dest = "10.1.0.1"
    record.flow.protocol = 6
    flow.dnsReqs.add(hostName="example.com", addrs=["1.2.3.4"])
    return (
        tuple(m.SerializeToString() for m in (dev, app, ni)),
        (metric.SerializeToString(),),
        (flow.SerializeToString(),),
    )


@functools.cache
def world() -> World:
    """Everything, built once per process."""
    with tempfile.TemporaryDirectory(prefix="eve-fuzz-") as tmp:
        state = StateDir(Path(tmp))
        init_certs(state)
        controller = ControllerIdentity.load(state)
        ecdh_key = pki.load_key(state.ecdh_key.read_bytes())
        assert isinstance(ecdh_key, ec.EllipticCurvePrivateKey)
        root = pki.load_cert(state.root_cert.read_bytes())
    trusted = {controller.sender_cert_hash: pki.load_cert(controller.signing_pem)}
    device_key = pki.new_ec_key()
    device = SoftwareSigner(device_key, pki.make_certificate(device_key, "device"))
    now = dt.datetime.now(dt.UTC)
    ak_key = pki.new_ec_key()
    ak_pem = pki.cert_pem(_ak_certificate(ak_key.public_key(), device, now))

    payloads = tuple(
        devconfig_pb2.ConfigResponse(config=config(salt), configHash=f"h{salt}").SerializeToString()
        for salt in range(2)
    )
    checkpoints = tuple(controller.seal(p) for p in payloads)
    certs_answer = controller_certs(controller)
    boot = BootComponents.for_node(agent_version="1.0.0", platform={"smt": "on"})
    log = boot_log(boot)
    pcrs = expected_pcrs(boot)
    quote = quote_for(pcrs, log, ak_key)
    other = boot_log(BootComponents(secure_boot=True, kernel_cmdline="quiet"))

    tpm = FakeTpm()
    tpm.provision()
    made = tpm.quote(NONCE)
    sealed = tpm.seal(b"k" * 32)
    publics = tuple(tpm.public_area(role) for role in (KeyRole.AK, KeyRole.EK, KeyRole.ECDH))
    tpm.close()
    ecdsa = tpmwire.EcdsaSignature.from_der(made.signature).marshal()

    lines = _log_lines()
    content = b"".join(line + b"\n" for line in lines)
    comment = json.dumps({"devID": DEVICE_UUID, "image": "IMGA", "eveVersion": "1.0.0"})
    newlogs = (
        gzip_member(content, mtime=int(time.time()), comment=comment),
        gzip_member(content, mtime=0, name="app.log"),
        gzip_member(content, mtime=1, comment="{}") + gzip_member(lines[0] + b"\n", mtime=2),
    )
    info, metrics, flowlog = _reports(time.time())
    register = register_pb2.ZRegisterMsg(
        onBoardKey="", serial="serial-1", softSerial="soft-1",
        pemCert=base64.b64encode(pki.cert_pem(device.cert)),
    )  # fmt: skip
    envelopes = (
        checkpoints[0],
        envelope.seal_as_device(b"payload", device),
        envelope.seal_as_device(register.SerializeToString(), device, include_cert=True),
        certs_answer,
    )
    return World(
        controller=controller,
        controller_ecdh_key=ecdh_key,
        root=root,
        trusted=trusted,
        device=device,
        ak_key=ak_key,
        ak_pem=ak_pem,
        envelopes=envelopes,
        config_payloads=payloads,
        config_checkpoints=checkpoints,
        controller_certs=(envelope.parse(certs_answer).payload,),
        event_logs=(log, other, log + tcglog.encode_events(tcglog.parse(other).events[:3])),
        pcrs=pcrs,
        quote=quote,
        tpm_attest=(made.attest, quote.attestData),
        tpm_public=publics,
        tpm_sealed=(sealed,),
        tpm_signatures=(ecdsa,),
        newlogs=newlogs,
        log_lines=lines,
        info=info,
        metrics=metrics,
        flowlog=flowlog,
        register=(register.SerializeToString(),),
    )
