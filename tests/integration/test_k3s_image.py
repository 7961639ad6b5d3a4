"""The K3s VM image (images/k3s) booted as the agent boots a cluster member's VM, with the
agent's own cloud-config (agent/reconcile/cluster.py) in the agent's own NoCloud seed
(agent/drivers/cloudinit.py), under QEMU: real cloud-init processes it.

- ``test_standin_member``: the image built with a **stand-in k3s** (:data:`STANDIN`, a Python
  script: it reports on the console what it was started with and the config it read, with
  the token replaced by its SHA-256, writes a kubeconfig as a K3s server does, then sleeps).
  Parametrised by role: the cluster's first server (``init``, with the controller's user data
  fetching a manifest, so the seed is a MIME multipart) and an agent.  Checked from the serial
  console and a small HTTP server standing for the node's metadata server: cloud-init
  finished; K3s's config.yaml (0600) has the role's settings; the role's unit started
  ``k3s server`` / ``k3s agent``; the kubeconfig poster posted K3s's kubeconfig to
  ``http://169.254.169.254/eve/v1/kubeconfig``; the controller's manifest landed in K3s's
  auto-deploy directory; the token is nowhere on the console.  About a minute per boot under
  TCG with a cached image; the first image build takes about 3.5 minutes
  (``EVE_TEST_K3S_IMAGE=0`` skips it; see docs/k3s-image.md).
- ``test_real_k3s_ready``: the image built with the K3s binary in ``K3S_BIN`` (none can be
  downloaded here), booted as the cluster's first server; waits for the kubeconfig K3s posts
  and for ``k3s kubectl get nodes`` to say Ready (the VM runs it and prints the answer on the
  console).  Skipped, saying so, without ``K3S_BIN``.

QEMU runs as the agent's domains do (``pc`` machine, SeaBIOS booting the first virtio disk, a
qcow2 overlay of the image, the seed on an IDE CD-ROM, a virtio NIC, the console on the first
serial port) with TCG, user networking, in a network namespace of the test where
169.254.169.254 is an address of ``lo``: the guest's connections to the metadata address leave
through QEMU's user networking and reach the test's HTTP server there.  Boots take the
machine-wide QEMU lock (``$EVE_QEMU_LOCK``, default /tmp/eve-qemu.lock; empty: the caller
holds it), once for the module's boots; the stand-in test's time limit counts neither that
wait nor the image build.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from agent.drivers import netns
from agent.drivers.cloudinit import NoCloud, make_seed_sync
from agent.model.config import ClusterConfig
from agent.model.secret import Secret
from agent.reconcile import cluster
from controller.clusterconfig import manifest_user_data
from tests.integration.conftest import service_missing

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
OPT_OUT_ENV = "EVE_TEST_K3S_IMAGE"
K3S_BIN_ENV = "K3S_BIN"
QEMU_LOCK = "/tmp/eve-qemu.lock"
METADATA_IP = "169.254.169.254"

CLUSTER_ID = "6d3b3b4e-8a3c-4c47-9d41-0000000000ca"
DEVICE = "3c33469c-1f0e-4d6b-9a57-5b2f7c9e0a11"
TOKEN = "K10-k3s-image-token-that-must-never-be-printed-7f3a"
NODE_IP = "10.44.0.2"
SERVER_IP = "10.44.0.1"
#: QEMU's user network stands for the cluster instance: the VM gets its cluster address.
CLUSTER_NET = "10.44.0.0/24"
GATEWAY = "10.44.0.254"
DNS = "10.44.0.253"
MANIFEST_PATH = "/manifests/sjc.yaml"
MANIFEST = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: eve-k3s-image-test\n"
#: The stand-in's kubeconfig (as K3s writes /etc/rancher/k3s/k3s.yaml), posted by the poster.
STANDIN_KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:6443\n"
    "  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n"
    "  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n"
    "    token: eve-k3s-image-standin\n"
)
#: The stand-in k3s: its text is part of the image's input hash, so keep it stable.
STANDIN = f'''#!/usr/bin/python3
"""A stand-in for k3s (tests/integration/test_k3s_image.py): says on the console what it was
started with and the K3s config it read (the token only as its SHA-256), writes a kubeconfig
when it is a server, says when the controller's manifest is there, then sleeps."""
import hashlib, json, os, sys, time
import yaml

CONFIG = "/etc/rancher/k3s/config.yaml"
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
MANIFEST = "/var/lib/rancher/k3s/server/manifests/eve-cluster.yaml"


def say(text):
    with open("/dev/console", "w") as console:
        console.write("K3S-STANDIN " + text + "\\n")


tool = os.path.basename(sys.argv[0])
if tool != "k3s":
    say(json.dumps({{"tool": tool, "argv": sys.argv[1:]}}))
    sys.exit(0)
report = {{"argv": sys.argv[1:], "hostname": os.uname().nodename}}
with open("/proc/self/cgroup") as f:
    report["unit"] = f.read().strip().rsplit("/", 1)[-1]
try:
    st = os.stat(CONFIG)
    report["config_mode"] = "%o" % (st.st_mode & 0o777)
    report["config_owner"] = [st.st_uid, st.st_gid]
    with open(CONFIG) as f:
        doc = yaml.safe_load(f)
    token = str(doc.pop("token", ""))
    report["token_sha256"] = hashlib.sha256(token.encode()).hexdigest() if token else ""
    report["config"] = doc
except OSError as exc:
    report["config_error"] = str(exc)
with open("/etc/eve/k3s-member.env") as f:
    report["member_env"] = f.read()
report["links"] = {{n: os.readlink("/usr/local/bin/" + n) for n in ("kubectl", "crictl", "ctr")}}
say(json.dumps(report, sort_keys=True))
if sys.argv[1:2] == ["server"]:
    old = os.umask(0o077)
    with open(KUBECONFIG + ".tmp", "w") as f:
        f.write({STANDIN_KUBECONFIG!r})
    os.rename(KUBECONFIG + ".tmp", KUBECONFIG)
    os.umask(old)
    say("kubeconfig written")
    for _ in range(300):
        if os.path.exists(MANIFEST):
            with open(MANIFEST, "rb") as f:
                say("manifest " + hashlib.sha256(f.read()).hexdigest())
            break
        time.sleep(1)
while True:
    time.sleep(3600)
'''
#: cloud-init's last word on the console (cloud_final_modules' final_message).
CLOUD_INIT_DONE = re.compile(r"Cloud-init v\. \S+ finished at")
BUILD_TIMEOUT = 900.0
BOOT_TIMEOUT = 420.0


def _opted_out() -> bool:
    return os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "not root (the image recipe, network namespaces)"
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                          ("mmdebstrap", "mmdebstrap"), ("genisoimage", "genisoimage"),
                          ("ip", "iproute2")):  # fmt: skip
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian: {package})"
    return None


def _member(role: str) -> ClusterConfig:
    """This node's cluster part: the first server (``init``) or an agent joining it."""
    own = SERVER_IP if role == "init" else NODE_IP
    return ClusterConfig(
        id=CLUSTER_ID, name="sjc", interface="uplink", ip_prefix=f"{own}/24",
        is_worker=role == "agent", join_server_ip=SERVER_IP, cluster_type=1,
        tie_breaker_node_id="", token=Secret(TOKEN),
    )  # fmt: skip


def build_image(k3s_bin: Path, *, airgap: bool) -> Path:
    """``images/build.sh k3s`` with ``K3S_BIN=k3s_bin`` (and ``K3S_AIRGAP_IMAGES`` from the
    environment when ``airgap``); the disk's path (its last line)."""
    env = {**os.environ, "K3S_BIN": str(k3s_bin)}
    if not airgap:
        env.pop("K3S_AIRGAP_IMAGES", None)
    done = subprocess.run(
        ["bash", str(ROOT / "images/build.sh"), "k3s"], env=env, capture_output=True,
        text=True, timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"images/build.sh k3s failed: {done.stderr[-3000:]}"
    sha, path = done.stdout.strip().splitlines()[-1].split()
    disk = Path(path)
    assert disk.name == "disk.qcow2" and re.fullmatch(r"[0-9a-f]{64}", sha)
    return disk


@dataclass
class Request:
    method: str
    path: str
    content_type: str
    body: bytes


@dataclass
class MetadataStandIn:
    """What the test's HTTP server at 169.254.169.254:80 (in the namespace) was asked."""

    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, method: str, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]


def _handler(state: MetadataStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self, body: bytes) -> None:
            with state.lock:
                state.requests.append(
                    Request(self.command, self.path, self.headers.get("Content-Type", ""), body)
                )

        def do_GET(self) -> None:
            self._record(b"")
            if self.path == MANIFEST_PATH:
                self._answer(200, MANIFEST.encode())
            else:
                self._answer(404, b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0") or 0)
            self._record(self.rfile.read(min(length, 1 << 20)))
            # The kubeconfig, and the manifest's custom status when the controller's part
            # posts one: taken, as the node's metadata server does.
            self._answer(200 if self.path.startswith("/eve/v1/") else 404, b"")

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def metadata_namespace() -> Iterator[tuple[str, MetadataStandIn]]:
    """A network namespace with lo up, 169.254.169.254/32 on it and an HTTP server there."""
    ns = f"k3i{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    state = MetadataStandIn()
    servers: list[http.server.ThreadingHTTPServer] = []
    ready = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            netns.enter(f"/run/netns/{ns}")
            server = http.server.ThreadingHTTPServer((METADATA_IP, 80), _handler(state))
        except Exception as exc:  # noqa: BLE001 (reported to the test below)
            failed.append(exc)
            ready.set()
            return
        servers.append(server)
        ready.set()
        server.serve_forever(poll_interval=0.2)

    thread: threading.Thread | None = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{METADATA_IP}/32", "dev", "lo"],
                       check=True)  # fmt: skip
        thread = threading.Thread(target=serve, name=f"metadata-{ns}", daemon=True)
        thread.start()
        ready.wait(10)
        assert not failed, f"metadata stand-in: {failed[0]!r}"
        yield ns, state
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(10)
        subprocess.run(["ip", "netns", "delete", ns], check=False)


@pytest.fixture(scope="module")
def qemu_slot() -> Iterator[None]:
    """The machine-wide QEMU lock, held for this module's boots (one wait, not one per boot):
    ``$EVE_QEMU_LOCK``, default /tmp/eve-qemu.lock; empty when the caller holds it."""
    path = os.environ.get("EVE_QEMU_LOCK", QEMU_LOCK)
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Vm:
    console: Path
    process: subprocess.Popen[bytes]
    started: float

    def text(self) -> str:
        try:
            return self.console.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, what: str, check: Callable[[], T | None], deadline: float) -> T:
        """Poll ``check()`` until it gives something true, or fail with the console's end."""
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            if self.process.poll() is not None:
                break
            time.sleep(1)
        tail = "\n".join(self.text().splitlines()[-60:])
        state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
        pytest.fail(f"no {what} after {time.monotonic() - self.started:.0f} s (QEMU {state}); "
                    f"console:\n{tail}")  # fmt: skip


@contextlib.contextmanager
def boot(
    image: Path, user_data: bytes, work: Path, ns: str, memory_mib: int, address: str
) -> Iterator[Vm]:
    """The image under QEMU (TCG) as the agent boots a VM app, with this NoCloud seed; its NIC
    gets ``address`` (in 10.44.0.0/24) by DHCP, as the node's dnsmasq gives the planned one."""
    overlay = work / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                    str(overlay)], check=True)  # fmt: skip
    seed = work / "seed.iso"
    make_seed_sync(seed, NoCloud(instance_id=f"{uuid.uuid4()}-1", hostname="k3s-sjc",
                                 user_data=user_data))  # fmt: skip
    console = work / "console.log"
    argv = [
        "ip", "netns", "exec", ns,
        "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", str(memory_mib), "-smp", "2",
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
        "-drive", f"file={seed},if=ide,media=cdrom,format=raw,readonly=on",
        "-netdev", f"user,id=n0,net={CLUSTER_NET},host={GATEWAY},dns={DNS},dhcpstart={address}",
        "-device", "virtio-net-pci,netdev=n0",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
    ]  # fmt: skip
    with open(work / "qemu.err", "wb") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=err, start_new_session=True)  # fmt: skip
        vm = Vm(console, process, time.monotonic())
        try:
            yield vm
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def _standin_reports(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        if line.startswith("K3S-STANDIN {"):
            out.append(json.loads(line.removeprefix("K3S-STANDIN ")))
    return out


@pytest.fixture(scope="module")
def standin_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _opted_out():
        pytest.skip(f"{OPT_OUT_ENV}={os.environ[OPT_OUT_ENV]}: the K3s image test is off")
    reason = _missing()
    if reason:
        service_missing("K3s image test", reason)
    path = tmp_path_factory.mktemp("standin") / "k3s-standin"
    path.write_text(STANDIN)
    path.chmod(0o755)
    return build_image(path, airgap=False)


# The boot only: the build (900 s at most) and the wait for the QEMU lock are fixtures.
@pytest.mark.timeout(int(BOOT_TIMEOUT + 120), func_only=True)
@pytest.mark.parametrize("role", ["init", "agent"])
def test_standin_member(standin_image: Path, qemu_slot: None, tmp_path: Path, role: str) -> None:
    member = _member(role)
    controller = b""
    if role == "init":
        url = f"http://{METADATA_IP}{MANIFEST_PATH}"
        controller = base64.b64decode(manifest_user_data(url))
    user_data = cluster.user_data(controller, member, DEVICE)
    assert (b"multipart" in user_data) == (role == "init")
    own = SERVER_IP if role == "init" else NODE_IP
    with (
        metadata_namespace() as (ns, meta),
        boot(standin_image, user_data, tmp_path, ns, 1024, own) as vm,
    ):
        deadline = vm.started + BOOT_TIMEOUT
        reports = vm.wait_for("stand-in k3s report", lambda: _standin_reports(vm.text()),
                              deadline)  # fmt: skip
        report = reports[0]
        if role == "init":
            posted = vm.wait_for(
                "kubeconfig POST", lambda: meta.seen("POST", "/eve/v1/kubeconfig"), deadline
            )
            vm.wait_for(
                "manifest in K3s's auto-deploy directory",
                lambda: "K3S-STANDIN manifest " in vm.text(),
                deadline,
            )
        vm.wait_for("cloud-init finished", lambda: CLOUD_INIT_DONE.search(vm.text()), deadline)
        took = time.monotonic() - vm.started
        text = vm.text()
    print(f"{role}: stand-in report, cloud-init done after {took:.0f} s")

    # The unit of the role ran k3s with the role's command; K3s's config as the agent wrote it.
    unit, command = ("k3s.service", "server") if role == "init" else ("k3s-agent.service", "agent")
    assert report["unit"] == unit
    assert report["argv"] == [command]
    assert report["config_mode"] == "600" and report["config_owner"] == [0, 0]
    assert report["token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    config = report["config"]
    assert isinstance(config, dict)
    expected: dict[str, object] = {
        "node-ip": own,
        "node-name": f"sjc-{DEVICE[:8]}",
        "node-label": [f"node-uuid={DEVICE}", f"eve-cluster-id={CLUSTER_ID}"],
    }
    if role == "init":
        expected |= {"cluster-init": True, "tls-san": [own]}
    else:
        expected["server"] = f"https://{SERVER_IP}:6443"
    assert config == expected
    assert f"EVE_K3S_ROLE={role}\n" in str(report["member_env"])
    assert report["hostname"] == "k3s-sjc"
    assert report["links"] == {"kubectl": "k3s", "crictl": "k3s", "ctr": "k3s"}
    assert len(reports) == 1, "k3s started more than once"

    if role == "init":
        # The poster sent K3s's kubeconfig as EVE's K3s VM does; the controller's bootcmd
        # (the first part of the multipart) fetched the manifest into the auto-deploy dir.
        assert posted[0].body == STANDIN_KUBECONFIG.encode()
        assert posted[0].content_type == "application/json"
        assert f"K3S-STANDIN manifest {hashlib.sha256(MANIFEST.encode()).hexdigest()}" in text
        assert meta.seen("GET", MANIFEST_PATH)
    else:
        assert not meta.seen("POST", "/eve/v1/kubeconfig"), "an agent posted a kubeconfig"
        assert "K3S-STANDIN kubeconfig written" not in text
    # cloud-init ran every module without a failure; nothing secret reached the console.
    bad = re.compile(r"(?i:failed to run module|failed to start cloud)|Traceback|"
                     r"cloud-init\[\d+\]:.*\[(WARNING|ERROR|CRITICAL)\]")  # fmt: skip
    assert not bad.search(text), text[-4000:]
    assert TOKEN not in text
    assert "eve-k3s-image-standin" not in text


@pytest.mark.timeout(int(BUILD_TIMEOUT + 1200))
def test_real_k3s_ready(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    k3s_bin = os.environ.get(K3S_BIN_ENV, "")
    if not k3s_bin:
        pytest.skip(f"{K3S_BIN_ENV} is not set: this test needs a real K3s binary (none can be "
                    "downloaded here; see docs/k3s-image.md)")  # fmt: skip
    reason = _missing()
    if reason:
        service_missing("K3s image test", reason)
    image = build_image(Path(k3s_bin), airgap=True)
    request.getfixturevalue("qemu_slot")
    member = _member("init")
    # The controller's part, as an operator's user data would be: print the node list on the
    # console once K3s answers (the kubeconfig's credentials are K3s's own; never printed).
    watch = (
        "for i in $(seq 180); do "
        "out=$(k3s kubectl get nodes --no-headers 2>/dev/null) && "
        "echo \"$out\" | grep -q ' Ready ' && "
        '{ echo "K3S-NODES $out" >/dev/console; break; }; '
        "sleep 5; done"
    )
    controller = ("#cloud-config\n" + json.dumps(
        {"bootcmd": [["sh", "-c", f"({watch}) >/dev/null 2>&1 &"]]})).encode()  # fmt: skip
    user_data = cluster.user_data(controller, member, DEVICE)
    with (
        metadata_namespace() as (ns, meta),
        boot(image, user_data, tmp_path, ns, 2048, SERVER_IP) as vm,
    ):
        deadline = vm.started + 1200
        posted = vm.wait_for(
            "kubeconfig POST from K3s", lambda: meta.seen("POST", "/eve/v1/kubeconfig"), deadline
        )
        line = vm.wait_for(
            "a Ready node from k3s kubectl get nodes",
            lambda: re.search(r"K3S-NODES (\S+)\s+Ready", vm.text()),
            deadline,
        )
        text = vm.text()
    assert line.group(1) == f"sjc-{DEVICE[:8]}"
    body = posted[0].body
    assert b"certificate-authority-data" in body and b"https://127.0.0.1:6443" in body
    assert TOKEN not in text
