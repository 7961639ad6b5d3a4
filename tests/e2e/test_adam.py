"""End to end: our agent against lf-edge/adam, the open-source EVE controller, unmodified.

Adam is a Go program that is not built in this repository (and cannot be built in CI: there are no
Go sources there). These tests run only when ``EVE_ADAM_BIN`` names an ``adam`` binary built
elsewhere; see docs/adam.md. Without it every test here is skipped with that reason.

What happens:

* a throw-away PKI is made with ``cryptography``: a root CA (the node's root-certificate.pem) that
  signs Adam's TLS, signing and ECDH certificates, and a self-signed ECDSA P-256 onboarding cert;
* ``adam server`` runs on 127.0.0.1 on a free port with a file database in a tmp dir;
* the onboarding cert is registered with ``adam admin onboard add`` for the node's soft serial;
* ``eve-agent --root NODE_DIR run --no-tpm`` onboards, attests (empty quote, no TPM), fetches
  config, and reports info, metrics and logs, all checked on Adam's side (admin REST API and the
  files of its database) and through ``eve-agent status --json``;
* ``eve-agent --root NODE_DIR run --swtpm`` (its own swtpm; needs root): Adam verifies its real TPM
  quotes (checked with a PCR template Adam enforces, first refusing, then accepting), stores its
  escrowed vault key, and attests it again after a power cycle, when the vault opens locally.
* the sample apps of tests/e2e/sample_apps.py (the test VM and the test container, side by side;
  needs root, dockerd, libvirtd and the local registry) deployed through Adam: they run on the
  node, Adam receives their ZInfoApp RUNNING and their logs, and a config without them removes
  them. Adam reads the admin config as Go ``encoding/json``, not protojson (see ``_go_json``).

Adam answers 404 to ``/config`` until a config has been set for the device (its file driver makes
none at registration), so the config checks come after ``PUT /admin/device/{uuid}/config``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import json_format
from google.protobuf.message import Message

from agent.settings import AgentSettings, NodePaths
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from tests.e2e.harness import sample_images
from tests.e2e.sample_apps import (
    APP_CT,
    APP_VM,
    CT_GREETING,
    CT_NAME,
    VM_MARKER,
    VM_NAME,
    FileServer,
    SampleImages,
    apps_config,
    host_name,
    open_path_for_qemu,
    purge_host_objects,
)

ADAM_BIN_ENV = "EVE_ADAM_BIN"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get(ADAM_BIN_ENV),
        reason=(
            f"{ADAM_BIN_ENV} is not set: these tests need an lf-edge/adam binary built outside "
            "the repository (see docs/adam.md)"
        ),
    ),
]

# How long to wait for each stage. The agent's default config poll is EVE's 60 s (with jitter);
# after the test sets timer.config.interval=10 a change must show within about one poll.
ADAM_START_S = 30.0
ONBOARD_S = 90.0
FIRST_CONFIG_S = 150.0
NEXT_CONFIG_S = 45.0
REPORTS_S = 180.0
STOP_GRACE_S = 15.0
# apps: the container image comes from the local registry, the VM disk from an HTTP datastore,
# and the VM boots under TCG
APPS_RUNNING_S = 300.0
APP_LOGS_S = 120.0
APPS_GONE_S = 120.0

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    root_cert: Path
    server_cert: Path
    server_key: Path
    signing_cert: Path
    signing_key: Path
    encrypt_cert: Path
    encrypt_key: Path
    onboard_cert: Path
    onboard_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "eve-agent e2e"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name = issuer[0].subject if issuer else _name(cn)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
    else:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
    builder = builder.add_extension(usage, critical=True)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write_pair(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # "EC PRIVATE KEY", as EVE keeps it
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    """Root CA signing Adam's server/signing/ECDH certs, and a self-signed onboarding cert.

    Adam's own ``--auto-cert`` is not used: it makes three unrelated self-signed RSA certs and
    publishes only the TLS one as root-certificate.pem, so the signing cert in /certs would not
    chain to the node's root as EVE (and our agent) require.
    """
    directory.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("eve-agent e2e root CA", root_key, ca=True)
    root_cert, _ = _write_pair(directory, "root-certificate", root, root_key)
    pairs: dict[str, tuple[Path, Path]] = {}
    for stem in ("server", "signing", "encrypt"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"adam-{stem}", key, (root, root_key), server=stem == "server")
        pairs[stem] = _write_pair(directory, stem, cert, key)
    onboard_key = ec.generate_private_key(ec.SECP256R1())
    onboard = _cert("onboard", onboard_key)
    onboard_cert, onboard_key_path = _write_pair(directory, "onboard", onboard, onboard_key)
    return Pki(
        root_cert=root_cert,
        server_cert=pairs["server"][0],
        server_key=pairs["server"][1],
        signing_cert=pairs["signing"][0],
        signing_key=pairs["signing"][1],
        encrypt_cert=pairs["encrypt"][0],
        encrypt_key=pairs["encrypt"][1],
        onboard_cert=onboard_cert,
        onboard_key=onboard_key_path,
    )


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<no {path.name}>"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started, then SIGKILL its own process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: group id == pid
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=STOP_GRACE_S)


def _spawn(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


# --------------------------------------------------------------------------------------------
# Adam
# --------------------------------------------------------------------------------------------


@dataclass
class Adam:
    binary: Path
    port: int
    pki: Pki
    db: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.root_cert))

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def admin_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, f"GET {path}: {status} {body[:200]!r}\n{self.diag()}"
        return json.loads(body)

    def devices(self) -> list[str]:
        status, body = self.request("GET", "/admin/device")
        assert status == 200, f"GET /admin/device: {status} {body[:200]!r}"
        return [line for line in body.decode().split() if line]

    def set_config(self, device: str, config: dict[str, Any]) -> None:
        # Adam decodes this JSON with Go's encoding/json into EdgeDevConfig: use the proto field
        # names as in the Go struct tags ("configItems", "id"), not protojson's lowerCamelCase.
        status, body = self.request(
            "PUT",
            f"/admin/device/{device}/config",
            json.dumps(config).encode(),
            "application/json",
        )
        assert status == 200, f"PUT config: {status} {body[:300]!r}\n{self.diag()}"

    def set_global_options(self, options: dict[str, Any]) -> None:
        """``PUT /admin/options``: Adam's ``GlobalOptions`` (template attestation), Go JSON."""
        status, body = self.request(
            "PUT", "/admin/options", json.dumps(options).encode(), "application/json"
        )
        assert status == 200, f"PUT options: {status} {body[:300]!r}\n{self.diag()}"

    def device_dir(self, device: str) -> Path:
        return self.db / "device" / device

    def requests_seen(self, device: str) -> list[str]:
        """The device's API requests as Adam recorded them (method and URL path)."""
        seen: list[str] = []
        for record in _json_records(self.device_dir(device) / "requests"):
            seen.append(f"{record.get('method')} {record.get('url')}")
        return seen

    def unrouted(self) -> list[str]:
        """Paths Adam's router had no route for (it logs each as "404 returned for <path>")."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        marker = "404 returned for "
        return [line.split(marker, 1)[1] for line in text.splitlines() if marker in line]

    def diag(self) -> str:
        return f"--- adam log ({self.log}) ---\n{_tail(self.log)}"


def _json_records(directory: Path) -> list[dict[str, Any]]:
    """JSON objects from every file of an Adam data dir, oldest file first.

    Adam's file driver appends info, metrics and requests as one JSON object per line, but log
    entries back to back with no separator, so decode a stream of objects.
    """
    records: list[dict[str, Any]] = []
    if not directory.is_dir():
        return records
    decoder = json.JSONDecoder()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        text = path.read_text(errors="replace")
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break  # a record still being written
            if isinstance(obj, dict):
                records.append(obj)
    return records


@pytest.fixture(scope="module")
def adam_bin() -> Path:
    path = Path(os.environ[ADAM_BIN_ENV])
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{ADAM_BIN_ENV}={path} is not an executable file")
    return path


@pytest.fixture(scope="module")
def agent_bin() -> Path:
    path = Path(sys.executable).parent / "eve-agent"
    if not path.is_file():
        pytest.fail(f"eve-agent is not installed next to {sys.executable} (pip install -e .)")
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def adam(adam_bin: Path, pki: Pki, tmp_path: Path) -> Iterator[Adam]:
    base = tmp_path / "adam"
    base.mkdir()
    port = _free_port()
    log = base / "adam.log"
    argv = [
        str(adam_bin), "server",
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--db-url", str(base / "db"),
        "--conf-dir", str(base / "conf"),
        "--server-cert", str(pki.server_cert),
        "--server-key", str(pki.server_key),
        "--signing-cert", str(pki.signing_cert),
        "--signing-key", str(pki.signing_key),
        "--encrypt-cert", str(pki.encrypt_cert),
        "--encrypt-key", str(pki.encrypt_key),
    ]  # fmt: skip
    server = Adam(adam_bin, port, pki, base / "db", log, _spawn(argv, log, base))
    try:
        deadline = time.monotonic() + ADAM_START_S
        while True:
            if server.proc.poll() is not None:
                pytest.fail(f"adam exited with {server.proc.returncode}\n{server.diag()}")
            try:
                status, _ = server.request("GET", "/api/v2/edgedevice/certs")
                if status == 200:
                    break
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"adam did not answer /certs within {ADAM_START_S}s\n{server.diag()}")
            time.sleep(0.3)
        yield server
    finally:
        _stop(server.proc)


# --------------------------------------------------------------------------------------------
# the node and the agent
# --------------------------------------------------------------------------------------------


@dataclass
class AgentNode:
    root: Path
    soft_serial: str
    agent_bin: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    #: ``--no-tpm`` (software identity) or ``--swtpm`` (the node's own swtpm in persist/tpm)
    mode: str = "--no-tpm"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        argv = [str(self.agent_bin), "--root", str(self.root), "run", self.mode]
        self.proc = _spawn(argv, self.log, self.log.parent)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def poweroff(self) -> None:
        """Emulated power off: unmount the vault image and stop the node's swtpm."""
        done = subprocess.run(
            [str(self.agent_bin), "--root", str(self.root), "poweroff"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"eve-agent poweroff: {done.stderr.decode(errors='replace')}"

    def log_text(self, start: int = 0) -> str:
        """The agent log from byte ``start`` on (every run appends to the same file)."""
        try:
            with self.log.open("rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    @property
    def uuid_file(self) -> Path:
        return self.root / "persist" / "status" / "uuid"

    @property
    def lastconfig(self) -> Path:
        return self.root / "persist" / "checkpoint" / "lastconfig"

    def status(self) -> dict[str, Any] | None:
        try:
            done = subprocess.run(
                [str(self.agent_bin), "--root", str(self.root), "status", "--json"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0:
            return None
        try:
            value = json.loads(done.stdout)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def diag(self) -> str:
        return f"--- agent log ({self.log}) ---\n{_tail(self.log)}"


def _prepare_node(root: Path, adam: Adam, soft_serial: str) -> None:
    """The layout EVE has under /config, with our node root in place of '/'."""
    config = root / "config"
    config.mkdir(parents=True)
    (config / "server").write_text(f"127.0.0.1:{adam.port}\n")
    (config / "root-certificate.pem").write_bytes(adam.pki.root_cert.read_bytes())
    (config / "onboard.cert.pem").write_bytes(adam.pki.onboard_cert.read_bytes())
    (config / "onboard.key.pem").write_bytes(adam.pki.onboard_key.read_bytes())
    (config / "onboard.key.pem").chmod(0o600)
    (config / "soft_serial").write_text(f"{soft_serial}\n")


def _onboard_in_adam(adam: Adam, serial: str) -> None:
    """Pre-register the onboarding cert for this serial, with Adam's own admin CLI."""
    argv = [
        str(adam.binary), "admin",
        "--server", adam.url,
        "--server-ca", str(adam.pki.root_cert),
        "onboard", "add",
        "--path", str(adam.pki.onboard_cert),
        "--serial", serial,
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        timeout=30,
        check=False,
        cwd=adam.db.parent,
    )
    assert done.returncode == 0, f"adam admin onboard add: {done.stderr.decode()}\n{adam.diag()}"
    # the CLI does not look at the HTTP status: check that Adam has it
    status, body = adam.request("GET", "/admin/onboard/onboard")
    assert status == 200, f"onboarding cert not registered: {status} {body!r}\n{adam.diag()}"
    assert json.loads(body)["Serial"] == serial


@pytest.fixture
def adam_node(adam: Adam, agent_bin: Path, tmp_path: Path) -> Iterator[AgentNode]:
    soft_serial = f"e2e-{secrets.token_hex(6)}"
    root = tmp_path / "node"
    _prepare_node(root, adam, soft_serial)
    _onboard_in_adam(adam, soft_serial)
    node = AgentNode(root, soft_serial, agent_bin, tmp_path / "agent.log")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def adam_tpm_node(adam: Adam, agent_bin: Path, tmp_path: Path) -> Iterator[AgentNode]:
    """A node with its own swtpm (``run --swtpm``), not started yet; powered off at the end."""
    missing = [tool for tool in ("swtpm", "swtpm_setup", "mkfs.ext4") if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        reason = f"a TPM node needs root and {', '.join(missing) or 'nothing else'}"
        if os.environ.get("EVE_AGENT_REQUIRE_SERVICES") or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    soft_serial = f"e2e-tpm-{secrets.token_hex(6)}"
    root = tmp_path / "tpm-node"
    _prepare_node(root, adam, soft_serial)
    _onboard_in_adam(adam, soft_serial)
    node = AgentNode(root, soft_serial, agent_bin, tmp_path / "agent.log", mode="--swtpm")
    try:
        yield node
    finally:
        # always: the agent, then the node's swtpm and vault mount, also when the test failed
        try:
            node.stop()
        finally:
            node.poweroff()


@dataclass
class AppsNode:
    node: AgentNode
    images: SampleImages


@pytest.fixture
def adam_apps_node(adam: Adam, agent_bin: Path, tmp_path: Path) -> Iterator[AppsNode]:
    """A ``--no-tpm`` node that can run the sample apps, started; its apps removed at the end.

    The node lives under /var/tmp in directories QEMU's user can pass (the VM disk is in the
    node's vault); its log stays in the test's tmp dir. Teardown stops the agent and removes the
    node's containers and domains (apps outlive their agent by design), also on failure.
    """
    images = sample_images("apps through Adam")
    base = Path(tempfile.mkdtemp(prefix="eve-e2e-adam-apps-", dir="/var/tmp"))
    open_path_for_qemu(base)
    soft_serial = f"e2e-apps-{secrets.token_hex(6)}"
    root = base / "node"
    node = AgentNode(root, soft_serial, agent_bin, tmp_path / "agent.log")
    try:
        _prepare_node(root, adam, soft_serial)
        _onboard_in_adam(adam, soft_serial)
        node.start()
        yield AppsNode(node, images)
    finally:
        try:
            node.stop()
        finally:
            purge_host_objects(root)
            shutil.rmtree(base, ignore_errors=True)


def _wait(
    what: str,
    timeout: float,
    probe: Callable[[], T | None],
    node: AgentNode,
    adam: Adam,
    interval: float = 1.0,
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        assert node.proc is not None
        if node.proc.poll() is not None:
            pytest.fail(
                f"eve-agent exited ({node.proc.returncode}) while waiting for {what}\n"
                f"{node.diag()}\n{adam.diag()}"
            )
        if adam.proc.poll() is not None:
            pytest.fail(f"adam exited while waiting for {what}\n{adam.diag()}")
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout:.0f}s waiting for {what}\n{node.diag()}\n{adam.diag()}"
            )
        time.sleep(interval)


def _config_items(status: dict[str, Any]) -> dict[str, str]:
    """``config_items`` as a mapping, whether the agent prints a mapping or a list of pairs."""
    items = status.get("config_items")
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    if isinstance(items, list):
        return {
            str(i["key"]): str(i["value"])
            for i in items
            if isinstance(i, dict) and "key" in i and "value" in i
        }
    return {}


def _attestation_complete(status: dict[str, Any]) -> bool:
    attestation = status.get("attestation")
    if isinstance(attestation, dict):
        return attestation.get("state") == "complete"
    return attestation == "complete"


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


def test_adam_harness_serves_signed_certs(adam: Adam) -> None:
    """The harness itself: Adam answers /certs over TLS we trust, carrying our signing cert."""
    status, body = adam.request("GET", "/api/v2/edgedevice/certs")
    assert status == 200
    signing_pem = adam.pki.signing_cert.read_bytes().strip()
    encrypt_pem = adam.pki.encrypt_cert.read_bytes().strip()
    # the AuthContainer payload is a ZControllerCert holding each cert's PEM text (trimmed)
    assert signing_pem in body
    assert encrypt_pem in body
    assert adam.devices() == []


@pytest.mark.timeout(900)
def test_agent_against_adam(adam: Adam, adam_node: AgentNode) -> None:
    node = adam_node

    # 1. onboarding: /register with the onboarding cert, then /uuid with the device cert
    def stored_uuid() -> str | None:
        try:
            text = node.uuid_file.read_text().strip()
        except OSError:
            return None
        return text or None

    device = _wait("persist/status/uuid", ONBOARD_S, stored_uuid, node, adam)
    assert device in adam.devices(), f"{device} not in Adam's device list {adam.devices()}"
    record = adam.admin_json(f"/admin/device/{device}")
    assert record["Serial"] == node.soft_serial, record
    assert record["Onboard"], "Adam kept no onboarding cert for the device"

    # 2. attestation without a TPM: an empty quote earns an integrity token
    def attested() -> dict[str, Any] | None:
        status, body = adam.request("GET", f"/admin/device/{device}/options")
        if status != 200:
            return None
        options: dict[str, Any] = json.loads(body)
        return options if options.get("attested") and options.get("integrityToken") else None

    _wait("Adam to record the device as attested", ONBOARD_S, attested, node, adam)

    # 3. config: Adam has none for a new device (404) until one is set
    adam.set_config(
        device,
        {
            "id": {"uuid": device, "version": "1"},
            "configItems": [{"key": "timer.config.interval", "value": "10"}],
        },
    )

    def applied(value: str) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            if not node.lastconfig.is_file():
                return None
            status = node.status()
            if status is None:
                return None
            return status if _config_items(status).get("timer.config.interval") == value else None

        return probe

    status = _wait("config v1 to be fetched and applied", FIRST_CONFIG_S, applied("10"), node, adam)
    assert status.get("uuid") == device, status
    assert _attestation_complete(status), f"attestation not complete in status: {status}"
    first_hash = status.get("config_hash")
    assert first_hash, f"no config_hash in status: {status}"
    assert node.lastconfig.stat().st_size > 0
    config_posts = [r for r in adam.requests_seen(device) if r.endswith("/config")]
    assert config_posts, adam.requests_seen(device)

    # with timer.config.interval=10 in force, the next change shows within about one poll
    adam.set_config(
        device,
        {
            "id": {"uuid": device, "version": "2"},
            "configItems": [{"key": "timer.config.interval", "value": "11"}],
        },
    )
    status = _wait("config v2 within one 10s poll", NEXT_CONFIG_S, applied("11"), node, adam)
    assert status.get("config_hash") not in (None, "", first_hash), status

    # 4. reports: info, metrics and logs landed in Adam's database
    device_dir = adam.device_dir(device)

    def reported(kind: str) -> Callable[[], list[dict[str, Any]] | None]:
        def probe() -> list[dict[str, Any]] | None:
            return _json_records(device_dir / kind) or None

        return probe

    infos = _wait("info in Adam", REPORTS_S, reported("info"), node, adam)
    for info in infos:
        assert info.get("devId", device) == device, info
    metrics = _wait("metrics in Adam", REPORTS_S, reported("metrics"), node, adam)
    for metric in metrics:
        assert metric.get("devID", device) == device, metric
    logs = _wait("logs in Adam", REPORTS_S, reported("logs"), node, adam)
    assert any(entry.get("content") for entry in logs), logs[:5]

    final = node.status()
    assert final is not None
    # every request went to a path Adam serves (register, uuid and certs have no /id/{uuid})
    assert adam.unrouted() == [], f"agent used paths Adam does not route: {adam.unrouted()}"
    assert final.get("controller_reachable") is True, final
    assert final.get("uuid") == device, final


def _adam_options(adam: Adam, device: str) -> dict[str, Any] | None:
    """Adam's ``options.json`` for the device: nonce, integrityToken, attested."""
    status, body = adam.request("GET", f"/admin/device/{device}/options")
    if status != 200:
        return None
    options = json.loads(body)
    return options if isinstance(options, dict) else None


def _current_status(
    node: AgentNode, want: Callable[[dict[str, Any]], bool]
) -> Callable[[], dict[str, Any] | None]:
    """A probe for a status the *running* agent wrote (not a stale one) that satisfies ``want``."""

    def probe() -> dict[str, Any] | None:
        status = node.status()
        if not status or node.proc is None or status.get("pid") != node.proc.pid:
            return None
        return status if want(status) else None

    return probe


def _vault_unlocked(status: dict[str, Any]) -> bool:
    vault = status.get("vault")
    return isinstance(vault, dict) and vault.get("state") == "unlocked"


def _attestation_error(status: dict[str, Any]) -> str:
    attestation = status.get("attestation")
    return str(attestation.get("error") or "") if isinstance(attestation, dict) else ""


def _adam_log_lines(adam: Adam, marker: str) -> list[str]:
    try:
        text = adam.log.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if marker in line]


def _template(version: str, pcrs: dict[int, str]) -> dict[str, Any]:
    """Adam's ``GlobalOptions`` enforcing one PCR template (``common.PCRTemplate``)."""
    return {
        "enforceTemplateAttestation": True,
        "PCRTemplates": [
            {
                "eveVersion": version,
                "firmwareVersion": "",
                "PCRValues": [{"index": i, "value": v} for i, v in sorted(pcrs.items())],
            }
        ],
    }


@pytest.mark.timeout(900)
def test_tpm_node_quote_verified_by_adam(adam: Adam, adam_tpm_node: AgentNode) -> None:
    """A ``--swtpm`` node against Adam: Adam verifies its real TPM quote (AK signature over
    attestData, nonce, PCR digest) and, with template attestation enforced, its PCR values;
    stores the escrowed vault key; attests it again after a power cycle, when the vault opens
    locally from the TPM.

    ``attested`` alone does not show that Adam verified a quote: an empty quote ("TPM disabled")
    is attested too, and the ``receivedPCRTemplate`` that ``templateAttest`` records for an
    accepted quote is overwritten at once (``attestProcess`` then saves the copy of the options it
    read before the quote). So the test enforces a PCR template: first a wrong one, which Adam
    can only refuse after ``quoteValidate`` passed (AK signature, nonce, PCR digest) and it has
    compared our quote's PCRs (a refused quote's PCRs stay in ``options.json``); then the node's
    real PCR values, which Adam accepts, before and after a power cycle.
    """
    node = adam_tpm_node
    # the EVE version the agent puts in its quotes (ATTEST_VERSION_TYPE_EVE); checked below
    version = AgentSettings(paths=NodePaths.from_root(node.root)).version
    wrong_pcr0 = "00" * 32  # PCR 0 after the emulated firmware is never zero
    adam.set_global_options(_template(version, {0: wrong_pcr0}))
    node.start()

    def stored_uuid() -> str | None:
        try:
            return node.uuid_file.read_text().strip() or None
        except OSError:
            return None

    device = _wait("persist/status/uuid", ONBOARD_S, stored_uuid, node, adam)
    assert device in adam.devices(), f"{device} not in Adam's device list {adam.devices()}"
    assert adam.admin_json(f"/admin/device/{device}")["Serial"] == node.soft_serial

    # 1. a wrong template: Adam verified the quote, compared its PCRs, and refused it
    rejected = _wait(
        "Adam to refuse the quote for the wrong PCR 0 template",
        ONBOARD_S,
        lambda: _adam_log_lines(adam, "templateAttest failed"),
        node,
        adam,
    )
    assert "PCR index 0 value missmatch" in rejected[0], rejected
    status = _wait(
        "the agent to see QUOTE_FAILED",
        ONBOARD_S,
        _current_status(node, lambda s: "QUOTE_FAILED" in _attestation_error(s)),
        node,
        adam,
    )
    assert status.get("mode") == "TPM (swtpm)", status
    assert status.get("version") == version, status
    assert not (_adam_options(adam, device) or {}).get("attested")
    # no escrow without an integrity token
    keys_file = adam.device_dir(device) / "storage-keys.json"
    assert not keys_file.exists()

    # ATTEST_REQ_CERT: Adam verifies quotes with the AK certificate the node sent
    certs_dir = node.root / "persist" / "certs"
    stored = adam.admin_json(f"/admin/device/{device}/certs")
    by_type = {int(c["type"]): base64.b64decode(c["cert"]) for c in stored.get("certs", [])}
    assert (
        by_type.get(certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING)
        == (certs_dir / "attest.cert.pem").read_bytes()
    ), f"Adam's AK cert is not the node's: {sorted(by_type)}"

    # The PCRs the vault key was sealed to at this boot (0-4, 6-14): the node's real values.
    _wait("the vault", ONBOARD_S, _current_status(node, _vault_unlocked), node, adam)
    sealed = json.loads((node.root / "persist/status/vault/sealed-key.json").read_text())
    golden = {int(i): str(v) for i, v in sealed["pcr_values"].items()}
    assert sorted(golden) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14], sorted(golden)
    for index in (0, 1, 2, 3, 4, 6, 7, 8, 9, 13, 14):  # the emulated boot, and the config
        assert golden[index] != "00" * 32, f"PCR {index} was not measured: {golden}"
    # what Adam took from the quote is what the TPM has (a refused quote's PCRs stay recorded)
    assert f"received {golden[0]}" in rejected[0], (rejected[0], golden[0])
    received = (_adam_options(adam, device) or {}).get("receivedPCRTemplate") or {}
    assert received.get("eveVersion") == version, received
    quoted = {int(p["index"]): str(p["value"]) for p in received.get("PCRValues") or []}
    assert sorted(quoted) == list(range(24)), f"Adam got PCRs {sorted(quoted)}"
    assert {i: quoted[i] for i in golden} == golden, (quoted, golden)

    # 2. the real values as the template: the next quote (agent's retry) passes
    adam.set_global_options(_template(version, golden))
    status = _wait(
        "status: attestation complete and vault unlocked",
        ONBOARD_S,
        _current_status(node, lambda s: _attestation_complete(s) and _vault_unlocked(s)),
        node,
        adam,
    )
    assert status.get("uuid") == device, status
    options = _adam_options(adam, device)
    assert options and options.get("attested") and options.get("integrityToken"), options
    failures = _adam_log_lines(adam, "quoteValidate failed")
    assert failures == [], failures
    refused = len(_adam_log_lines(adam, "templateAttest failed"))

    # 3. STORE_KEYS: Adam stored the escrowed vault key with the token (file driver:
    # storage-keys.json, Go encoding/json of AttestStorageKeys; no admin route shows it)
    def escrowed() -> dict[str, Any] | None:
        try:
            doc = json.loads(keys_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return doc if isinstance(doc, dict) and doc.get("keys") else None

    storage = _wait("Adam to store the escrowed vault key", ONBOARD_S, escrowed, node, adam)
    token = base64.b64decode(storage["integrity_token"])
    assert token == str(options["integrityToken"]).encode()
    (vsk,) = storage["keys"]
    assert int(vsk["key_type"]) == attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, vsk
    blob = attest_pb2.AttestVolumeKeyData()
    blob.ParseFromString(base64.b64decode(vsk["key"]))
    assert blob.version == attest_pb2.ATTEST_VOLUME_KEY_VERSION_V1, blob
    assert len(blob.encrypted_key) > 32
    assert blob.digest_sha256.hex() == sealed["digest"], "Adam holds another vault key"

    # 4. config set in Adam reaches the node (the token of the verified quote opens /config)
    adam.set_config(
        device,
        {
            "id": {"uuid": device, "version": "1"},
            "configItems": [{"key": "timer.config.interval", "value": "10"}],
        },
    )
    _wait(
        "config from Adam on the TPM node",
        FIRST_CONFIG_S,
        _current_status(node, lambda s: _config_items(s).get("timer.config.interval") == "10"),
        node,
        adam,
    )

    # 5. power cycle: stop the agent, power off (swtpm stopped: PCRs reset, vault unmounted)
    nonce_before = str(options["nonce"])
    node.stop()
    node.poweroff()
    log_mark = node.log.stat().st_size
    node.start()
    status = _wait(
        "after the power cycle: attestation complete and vault unlocked",
        ONBOARD_S,
        _current_status(node, lambda s: _attestation_complete(s) and _vault_unlocked(s)),
        node,
        adam,
    )
    options = _adam_options(adam, device)
    assert options and options.get("attested") and options["nonce"] != nonce_before, options
    assert _adam_log_lines(adam, "quoteValidate failed") == []
    # the new boot measured the same PCRs, which matched the enforced template again
    assert len(_adam_log_lines(adam, "templateAttest failed")) == refused
    run_log = node.log_text(log_mark)
    assert "boot measurement: measured" in run_log, run_log[-3000:]
    # opened locally by unsealing from the TPM at start, not through Adam's escrowed copy
    assert "vault unlocked" in run_log, run_log[-3000:]
    assert "vault after attestation" not in run_log, run_log[-3000:]
    assert _config_items(status).get("timer.config.interval") == "10", status
    assert adam.unrouted() == [], f"agent used paths Adam does not route: {adam.unrouted()}"


# --------------------------------------------------------------------------------------------
# apps through Adam
# --------------------------------------------------------------------------------------------


def _go_json(message: Message) -> dict[str, Any]:
    """``message`` as JSON that Adam's ``PUT /admin/device/{uuid}/config`` reads.

    Adam decodes that body with Go's ``encoding/json`` into eve-api's generated structs, not
    with protojson: keys are the *proto* field names of the struct tags (``ds_ids_list``, not
    protojson's ``dsIdsList``; unknown keys are silently dropped, and a case-insensitive match
    is all ``encoding/json`` adds), enums must be numbers (eve-api's Go enums have no
    ``UnmarshalJSON``), 64-bit integers numbers, ``Timestamp`` ``{"seconds", "nanos"}`` and
    bytes base64. Real oneofs cannot be expressed at all (an interface field).
    """
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        oneof = field.containing_oneof
        if oneof is not None and oneof.name != f"_{field.name}":  # "_x": proto3 optional
            raise ValueError(f"{field.full_name}: oneofs cannot go through Adam's JSON")
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _go_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_go_value(field, v) for v in value]
        else:
            out[field.name] = _go_value(field, value)
    return out


def _go_value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return _go_json(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value  # enums and integers stay numbers, strings and bools as they are


def _apps_edge_config(
    device: str, version: str, doc: dict[str, Any]
) -> devconfig_pb2.EdgeDevConfig:
    """The EdgeDevConfig of the protojson fragment ``doc`` (as our controller reads it)."""
    full = {
        "id": {"uuid": device, "version": version},
        "configItems": [{"key": "timer.config.interval", "value": "5"}],
        **doc,
    }
    return json_format.ParseDict(full, devconfig_pb2.EdgeDevConfig())


def _set_and_check_config(adam: Adam, device: str, config: devconfig_pb2.EdgeDevConfig) -> None:
    """PUT the config as Adam's JSON, and read back what Adam stored (the binary protobuf it
    serves): it must be the message we meant, nothing dropped on the way."""
    adam.set_config(device, _go_json(config))
    status, body = adam.request(
        "GET", f"/admin/device/{device}/config", accept="application/x-proto-binary"
    )
    assert status == 200, f"GET config: {status} {body[:200]!r}\n{adam.diag()}"
    stored = devconfig_pb2.EdgeDevConfig()
    stored.ParseFromString(body)
    assert stored == config, (
        f"Adam stored another config than was set:\n{stored}\n--- set ---\n{config}"
    )


class _AdamStream:
    """Adam's live feed of one admin data route (``X-Stream: true``): one JSON object a line,
    collected by a thread until :meth:`close` (or until Adam stops)."""

    def __init__(self, adam: Adam, path: str) -> None:
        self._conn = http.client.HTTPSConnection(
            "127.0.0.1", adam.port, context=adam._ssl(), timeout=10
        )
        self._conn.request("GET", path, headers={"X-Stream": "true"})
        resp = self._conn.getresponse()
        assert resp.status == 200, f"GET {path} (stream): {resp.status}"
        assert self._conn.sock is not None
        self._sock = self._conn.sock
        self._sock.settimeout(None)  # the feed is quiet until something arrives
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._read, args=(resp,), daemon=True, name=f"adam-stream {path}"
        )
        self._thread.start()

    def _read(self, resp: http.client.HTTPResponse) -> None:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            for line in resp:
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        with self._lock:
                            self._records.append(record)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        """End the feed: Adam's graceful shutdown waits for open streams otherwise."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._conn.close()


def _app_phases(node: AgentNode) -> dict[str, str] | None:
    """Phase of each app in the running agent's status (``owners`` of kind "app"); None while
    there is no status of the running agent."""
    status = node.status()
    if not status or node.proc is None or status.get("pid") != node.proc.pid:
        return None
    return {
        str(o.get("name", "")): str(o.get("phase", ""))
        for o in status.get("owners", [])
        if isinstance(o, dict) and o.get("kind") == "app"
    }


def _phases_are(node: AgentNode, want: dict[str, str]) -> Callable[[], bool]:
    def probe() -> bool:
        return _app_phases(node) == want

    return probe


def _host_objects(root: Path) -> list[str]:
    """The node's containers and libvirt domains on this host."""
    from agent.drivers.containers import container_prefix
    from agent.drivers.hypervisor import domain_prefix

    name = host_name(root)
    names = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
        timeout=60, check=False,
    ).stdout.split()  # fmt: skip
    names += subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
        text=True, timeout=60, check=False,
    ).stdout.split()  # fmt: skip
    return [n for n in names if n.startswith((container_prefix(name), domain_prefix(name)))]


def _adam_app_states(adam: Adam, device: str) -> dict[str, set[str]]:
    """App UUID -> the states of the ZInfoApp messages Adam stored (info files, protojson)."""
    states: dict[str, set[str]] = {}
    for record in _json_records(adam.device_dir(device) / "info"):
        ainfo = record.get("ainfo")
        if record.get("ztype") == "ZiApp" and isinstance(ainfo, dict):
            states.setdefault(str(ainfo.get("AppID")), set()).add(str(ainfo.get("state")))
    return states


def _adam_last_app_info(adam: Adam, device: str) -> dict[str, dict[str, Any]]:
    """App UUID -> the ``ainfo`` of the last ZInfoApp Adam stored for it."""
    last: dict[str, dict[str, Any]] = {}
    for record in _json_records(adam.device_dir(device) / "info"):
        ainfo = record.get("ainfo")
        if record.get("ztype") == "ZiApp" and isinstance(ainfo, dict):
            last[str(ainfo.get("AppID"))] = ainfo
    return last


def _adam_app_names(adam: Adam, device: str) -> dict[str, str]:
    return {
        str(r["ainfo"].get("AppID")): str(r["ainfo"].get("AppName"))
        for r in _json_records(adam.device_dir(device) / "info")
        if r.get("ztype") == "ZiApp" and isinstance(r.get("ainfo"), dict)
    }


def _adam_app_log(adam: Adam, device: str, app: str) -> str:
    """The app's log lines as Adam's file driver stored them: ``device/<uuid>/<app-uuid>/``,
    protojson LogEntry objects back to back."""
    return "\n".join(
        str(entry.get("content", "")) for entry in _json_records(adam.device_dir(device) / app)
    )


def _app_log_has(adam: Adam, device: str, app: str, text: str) -> Callable[[], bool]:
    def probe() -> bool:
        return text in _adam_app_log(adam, device, app)

    return probe


@pytest.mark.timeout(1200)
def test_apps_through_adam(adam: Adam, adam_apps_node: AppsNode) -> None:
    """The sample apps of our controller's end-to-end test (the test VM and the test container,
    side by side), deployed through Adam: they run on the node, Adam receives their
    ZInfoApp RUNNING and their logs; a config without them removes them again."""
    node, images = adam_apps_node.node, adam_apps_node.images

    def stored_uuid() -> str | None:
        try:
            return node.uuid_file.read_text().strip() or None
        except OSError:
            return None

    device = _wait("persist/status/uuid", ONBOARD_S, stored_uuid, node, adam)
    assert device in adam.devices(), f"{device} not in Adam's device list {adam.devices()}"

    # Adam's live app-log feeds, subscribed before any app exists
    streams: dict[str, _AdamStream] = {}
    disks = FileServer(images.disk.parent)
    try:
        for app in (APP_VM, APP_CT):
            streams[app] = _AdamStream(adam, f"/admin/device/{device}/app/{app}/logs")
        config = _apps_edge_config(device, "1", apps_config(images, disks.port))
        _set_and_check_config(adam, device, config)

        # 1. the node runs both
        want = {VM_NAME: "RUNNING", CT_NAME: "RUNNING"}
        _wait(f"apps {want} in the node's status", APPS_RUNNING_S, _phases_are(node, want),
              node, adam)  # fmt: skip
        assert len(_host_objects(node.root)) == 2, _host_objects(node.root)

        # 2. Adam has ZInfoApp RUNNING for both
        def running_in_adam() -> dict[str, set[str]] | None:
            states = _adam_app_states(adam, device)
            ok = all("RUNNING" in states.get(app, set()) for app in (APP_VM, APP_CT))
            return states if ok else None

        states = _wait("ZInfoApp RUNNING for both apps in Adam", REPORTS_S, running_in_adam,
                       node, adam)  # fmt: skip
        names = _adam_app_names(adam, device)
        assert names.get(APP_VM) == VM_NAME and names.get(APP_CT) == CT_NAME, (names, states)

        # 3. Adam has each app's logs: the VM's console shows its user data, the container
        # prints its environment (from its user data)
        markers = {APP_VM: VM_MARKER, APP_CT: f"GREETING={CT_GREETING}"}
        for app, marker in markers.items():
            _wait(f"{marker!r} in Adam's logs of app {app}", APP_LOGS_S,
                  _app_log_has(adam, device, app, marker), node, adam)  # fmt: skip
        # ... and its admin API streamed them live (a stream drops entries for a slow reader
        # beyond 100 queued, so only the container's few lines are checked to the marker)
        ct_streamed = _wait(
            "the container's output on Adam's app-log stream",
            APP_LOGS_S,
            lambda: (
                [e for e in streams[APP_CT].records() if markers[APP_CT] in str(e.get("content"))]
                or None
            ),  # _wait takes any value but None and False
            node,
            adam,
        )
        assert all("timestamp" in e for e in ct_streamed), ct_streamed
        _wait("the VM's console on Adam's app-log stream", APP_LOGS_S,
              lambda: streams[APP_VM].records() or None, node, adam)  # fmt: skip

        # 4. a config without the apps: both go, from the node and the host
        _set_and_check_config(adam, device, _apps_edge_config(device, "2", {}))
        _wait("the apps to be deleted from the node", APPS_GONE_S, _phases_are(node, {}),
              node, adam)  # fmt: skip
        _wait("the apps' containers and domains to go", APPS_GONE_S,
              lambda: not _host_objects(node.root), node, adam)  # fmt: skip

        # Adam's last ZInfoApp of each is EVE's "deleted" message: only the AppID
        def deleted_in_adam() -> dict[str, dict[str, Any]] | None:
            last = _adam_last_app_info(adam, device)
            gone = all(set(last.get(app, {"x": 1})) == {"AppID"} for app in (APP_VM, APP_CT))
            return last if gone else None

        _wait("Adam to see both apps deleted", REPORTS_S, deleted_in_adam, node, adam)
        assert node.proc is not None and node.proc.poll() is None
        final = node.status()
        assert final is not None and final.get("controller_reachable") is True, final
        assert adam.unrouted() == [], f"agent used paths Adam does not route: {adam.unrouted()}"
    finally:
        disks.close()
        for stream in streams.values():
            stream.close()
