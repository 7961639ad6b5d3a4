"""A zero-touch K3s cluster with its VMs booting, end to end: a real controller and three real
agents, each an emulated node with its own root, TPM (swtpm) and network namespace, the three
namespaces' cluster ports on one LAN; the K3s VMs under libvirt/QEMU (TCG) are the test guest of
images/vm acting its role at the guest boundary (no K3s binary here: docs/clusters-node.md).

Two nodes tagged and ``cluster create --servers 1:1 --agents 1:2``: the cluster comes up on
them, the init server's VM serves its stand-in API and posts its kubeconfig, the agent's VM
joins it across the cluster network; the third node tagged joins as an agent; ``cluster show``
lists the members, their roles and readiness from the nodes' ZInfoKubeCluster reports; the
node firewall lets the K3s ports in on the cluster interface and drops the others (real
packets from the LAN); the manifest URL is fetched by the init server's VM and ``manifest
applied`` lands once in the cluster's event history; deactivate stops the three VMs, activate
brings them back, and the init server's VM, finding the manifest gone (404), makes the history
say ``manifest failed: HTTP 404``, once; the third node untagged, its VM, volume and cluster
network are deleted and the cluster's API marks it NotReady (not drained); the cluster token
and the manifest URL are in no log.

Names: namespaces ``e3k<tag>-*``, nodes' roots under ``/var/tmp/eve-e2e-k3s-*``.  Teardown
removes the domains, dnsmasq processes, agents, swtpms, namespaces and files, also when the
test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.hypervisor import domain_prefix
from controller import clusterconfig
from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node, require, wait_for
from tests.e2e.sample_apps import FileServer, host_name, open_path_for_qemu
from tests.integration.images import vm_images

pytestmark = pytest.mark.e2e

DS = "7a1e5f0c-3b2d-4c8e-9f10-00000000d0c2"
TREE = "7a1e5f0c-3b2d-4c8e-9f10-00000000c0c2"
NET = "7a1e5f0c-3b2d-4c8e-9f10-00000000e0c2"
CLUSTER = "e2ek3s"
APP = f"k3s-{CLUSTER}"
LABEL = "clusterlan"
#: A member of the cluster's subnet on the LAN (the probe's address) and the LAN's own.
PROBE, LAN_IP = "10.244.0.200", "192.0.2.1"
MANIFEST = "kind: ConfigMap\napiVersion: v1\nmetadata: {name: eve-e2e-manifest}\n"
#: The guest's kubelet version: a member's Kubernetes node came from a ZInfoKubeCluster.
GUEST_VERSION = "v1.30.0+eve-test-guest"

TCP_PROBE = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.settimeout(float(sys.argv[3]))\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2])))\n"
    "    print('open')\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "except OSError:\n"
    "    print('timeout')\n"
)


def _sh(*argv: str, check: bool = True, timeout: float = 30) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          check=check).stdout  # fmt: skip


@dataclass
class Site:
    controller: Controller
    nodes: list[Node]
    tag: str
    lan: str
    base: Path
    manifest_port: int

    def ns(self, i: int) -> str:
        return f"e3k{self.tag}-n{i}"

    def uuids(self) -> list[str]:
        return [n.uuid or "" for n in self.nodes]

    def domains(self, node: Node, *, running_only: bool = False) -> list[str]:
        prefix = domain_prefix(host_name(node.root))
        args = ["--name"] if running_only else ["--all", "--name"]
        out = _sh("virsh", "-c", "qemu:///system", "list", *args, check=False, timeout=60)
        return [n for n in out.split() if n.startswith(prefix)]

    def consoles(self, node: Node) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in (node.root / "run" / "domains").glob("*/console.log"))  # fmt: skip

    def diagnose(self) -> str:
        """The guests' own console lines, the agents' last warnings and cluster lines, and
        what the controller shows."""
        out = []
        for i, node in enumerate(self.nodes, 1):
            guest = [ln for ln in self.consoles(node).splitlines() if "eve-test-guest:" in ln]
            out.append(f"--- node {i} ({node.uuid}) console\n" + "\n".join(guest[-40:]))
            keep = (" WARNING ", " ERROR ", "kube", "Kube")
            lines = [ln for ln in node.log().splitlines()
                     if "pyroute2" not in ln and any(k in ln for k in keep)]  # fmt: skip
            out.append(f"--- node {i} agent log\n" + "\n".join(lines[-30:]))
        shown = self.controller.cli("cluster", "show", CLUSTER, check=False)
        out.append(f"--- cluster show\n{shown.stdout}{shown.stderr}")
        return "\n".join(out)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """``wait_for``, with the VMs' consoles and the agents' logs when it times out."""
        try:
            return wait_for(predicate, timeout, what, interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from None

    def show(self) -> dict[str, Any]:
        out = json.loads(self.controller.cli("cluster", "show", CLUSTER, "--json").stdout)
        assert isinstance(out, dict)
        return out

    def app_phase(self, node: Node) -> str:
        status = node.status()
        if not status or node.agent is None or status.get("pid") != node.agent.proc.pid:
            return ""
        return next((o.get("phase", "") for o in status.get("owners", [])
                     if o.get("kind") == "app" and o.get("name") == APP), "")  # fmt: skip

    def probe(self, address: str, port: int, seconds: float = 3.0) -> str:
        """A TCP connection from the LAN (as another member on the cluster's segment):
        ``open``, ``refused`` (it reached the VM, nothing listens) or ``timeout`` (dropped)."""
        return _sh("ip", "netns", "exec", self.lan, "python3", "-c", TCP_PROBE, address,
                   str(port), str(seconds)).strip()  # fmt: skip


def _topology(tag: str) -> list[str]:
    """A LAN namespace (bridge lan0: 192.0.2.1/24 and the probe's 10.244.0.200/24) and three
    node namespaces, each with its cluster port cp0 (192.0.2.1i/24) on the LAN."""
    lan = f"e3k{tag}-lan"
    made = [lan]
    _sh("ip", "netns", "add", lan)
    for argv in (
        ["link", "set", "lo", "up"],
        ["link", "add", "lan0", "type", "bridge"],
        ["addr", "add", f"{LAN_IP}/24", "dev", "lan0"],
        ["addr", "add", f"{PROBE}/24", "dev", "lan0"],
        ["link", "set", "lan0", "up"],
    ):
        _sh("ip", "-n", lan, *argv)  # fmt: skip
    for i in (1, 2, 3):
        node = f"e3k{tag}-n{i}"
        made.append(node)
        _sh("ip", "netns", "add", node)
        _sh("ip", "-n", node, "link", "set", "lo", "up")
        _sh("ip", "-n", node, "link", "add", "cp0", "type", "veth", "peer", "name", f"l{i}",
            "netns", lan)  # fmt: skip
        _sh("ip", "-n", node, "addr", "add", f"192.0.2.1{i}/24", "dev", "cp0")
        _sh("ip", "-n", node, "link", "set", "cp0", "up")
        _sh("ip", "-n", lan, "link", "set", f"l{i}", "master", "lan0", "up")
    return made


def _base_config(disk: Path, disk_port: int) -> dict[str, Any]:
    """Every node's default config: the cluster port cp0 (for apps only, labelled
    ``clusterlan``, addressed by the test), and the guest's disk as a content tree."""
    sha = hashlib.sha256(disk.read_bytes()).hexdigest()
    return {
        **FAST_ITEMS,
        "configItems": [*FAST_ITEMS["configItems"],
                        {"key": "timer.metric.interval", "value": "5"}],
        "networks": [{"id": NET, "type": "V4", "ip": {"dhcp": "DHCPNone"}}],
        "deviceIoList": [{"ptype": "PhyIoNetEth", "phylabel": "cp0", "logicallabel": "cp0",
                          "phyaddrs": {"ifname": "cp0"}, "usage": "PhyIoUsageShared"}],
        "systemAdapterList": [{"name": "cp0", "lowerLayerName": "cp0", "networkUUID": NET,
                               "sharedLabels": [LABEL]}],
        "datastores": [{"id": DS, "dType": "DsHttp", "fqdn": f"http://127.0.0.1:{disk_port}"}],
        "contentInfo": [{"uuid": TREE, "URL": disk.name, "iformat": "QCOW2",
                         "displayName": "k3s-test-guest", "sha256": sha, "dsIdsList": [DS]}],
    }  # fmt: skip


@pytest.fixture
def site() -> Iterator[Site]:
    with open_site() as made:
        yield made


@contextlib.contextmanager
def open_site() -> Iterator[Site]:
    """The controller (started, the base config set) and three nodes (not started) on the LAN,
    the manifest server and the guest's disk served; everything removed on leaving, also on
    failure.  Also used by ``tools/bench_cluster_vms.py``.  A missing tool, service or image
    is :func:`require`'s (a skip or failure)."""
    for tool in ("swtpm", "swtpm_setup", "mkfs.ext4", "dnsmasq", "virsh"):
        if shutil.which(tool) is None:
            require("a K3s cluster with VMs", f"{tool} is not installed")
    guest = vm_images()
    if isinstance(guest, str):
        require("the test VM image", guest)
    probe = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                           timeout=30, check=False)  # fmt: skip
    if probe.returncode != 0:
        require("libvirtd", probe.stderr.decode(errors="replace")[-300:])
    tag = uuid.uuid4().hex[:6]
    base = Path(tempfile.mkdtemp(prefix="eve-e2e-k3s-", dir="/var/tmp"))
    open_path_for_qemu(base)
    made: list[str] = []
    nodes: list[Node] = []
    stops: list[Callable[[], None]] = []
    ctl = Controller(base / "controller")
    try:
        made += _topology(tag)
        disks = FileServer(guest.disk.parent)
        stops.append(disks.close)
        # The manifest URL's server, on the LAN (the init server's VM reaches it NATed).
        port = 18080
        server = subprocess.Popen(
            ["ip", "netns", "exec", made[0], "python3", "-c", _SERVE_MANIFEST, str(port)],
            stdout=(base / "manifest-gets.log").open("w"), stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def stop_server() -> None:
            server.kill()
            server.wait()

        stops.append(stop_server)
        ctl.init()
        ctl.set_default_config(_base_config(guest.disk, disks.port))
        ctl.start()
        stops.append(ctl.stop)
        for i in (1, 2, 3):
            nodes.append(Node(base / f"n{i}", ctl, serial=f"e2e-k3s-{tag}-{i}", swtpm=True,
                              netns=f"e3k{tag}-n{i}"))  # fmt: skip
        yield Site(ctl, nodes, tag, made[0], base, port)
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.shutdown()  # agent, swtpm, the node's domains and dnsmasq
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


#: The manifest server, run in the LAN namespace: /manifest.yaml the first time it is asked (then
#: it is gone: 404), 404 for any other path; prints each GET.
_SERVE_MANIFEST = f"""
import http.server, sys
BODY = {MANIFEST.encode()!r}
SERVED = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print("GET", self.path, flush=True)
        body = BODY if self.path == "/manifest.yaml" and not SERVED else b""
        SERVED.append(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("{LAN_IP}", int(sys.argv[1])), H).serve_forever()
"""


def _member_ready(member: dict[str, Any]) -> bool:
    """Ready as the cluster's API says (ZInfoKubeCluster), not only as the VM's state says."""
    kube = member.get("kubernetes") or {}
    return bool(member.get("ready")) and kube.get("version") == GUEST_VERSION


def test_a_cluster_of_vms_comes_up_grows_stops_and_starts(site: Site) -> None:
    ctl, nodes = site.controller, site.nodes
    started = time.monotonic()
    marks: dict[str, float] = {}
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_onboarded(90)
    for node in nodes:
        node.wait_status(lambda s: s["attestation"]["state"] == "complete", 120,
                         "attestation (the ECDH certificate the token is sealed to)")  # fmt: skip
    marks["nodes attested"] = time.monotonic() - started
    n1, n2, n3 = site.uuids()
    outputs = [ctl.cli("device", "tag", u, f"pool={site.tag}").stdout for u in (n1, n2)]
    url = f"http://{LAN_IP}:{site.manifest_port}/manifest.yaml"
    created = time.monotonic()
    outputs.append(ctl.cli(
        "cluster", "create", CLUSTER, "--select", f"pool={site.tag}", "--servers", "1:1",
        "--agents", "1:2", "--network-tag", LABEL, "--k3s-image", TREE, "--vm-memory", "256",
        "--vm-cpus", "1", "--manifest-url", url,
    ).stdout)  # fmt: skip

    # Up on the two: both VMs boot, the init server serves its API and posts its kubeconfig,
    # the agent joins it across the cluster network.
    shown = site.show()
    roles = {m["node"]: m["role"] for m in shown["members"]}
    assert sorted(roles.values()) == ["agent", "init"], shown
    init = next(u for u, r in roles.items() if r == "init")
    agent = next(u for u, r in roles.items() if r == "agent")
    by_uuid = dict(zip(site.uuids(), nodes, strict=True))
    site.wait(lambda: all(site.app_phase(by_uuid[u]) == "RUNNING" for u in (init, agent)), 240,
              "both K3s VMs running")  # fmt: skip
    marks["two VMs running"] = time.monotonic() - created
    site.wait(lambda: "eve-test-guest: kubeconfig posted" in site.consoles(by_uuid[init]), 120,
              "the init server's VM to post its kubeconfig")  # fmt: skip
    marks["kubeconfig posted"] = time.monotonic() - created
    site.wait(lambda: "eve-test-guest: k3s agent joined https://10.244.0.10:6443"
              in site.consoles(by_uuid[agent]), 120, "the agent's VM to join")  # fmt: skip
    marks["agent joined"] = time.monotonic() - created

    def members_ready(count: int) -> dict[str, Any] | None:
        got = site.show()
        members = got["members"]
        return got if len(members) == count and all(map(_member_ready, members)) else None

    shown = site.wait(lambda: members_ready(2), 120, "both members ready in cluster show")
    marks["two members ready"] = time.monotonic() - created
    assert shown["state"] == "up"
    for m in shown["members"]:
        assert m["kubernetes"]["role"] == ("server" if m["role"] == "init" else "agent"), m
        assert m["vm_state"] == "RUNNING" and m["problems"] == [], m
    addresses = {m["node"]: m["address"] for m in shown["members"]}
    assert addresses[init] == "10.244.0.10"

    # The node firewall, with real packets from another host on the cluster's LAN segment: the
    # K3s API port reaches the init server's VM; the kubelet port the agent's (the guest serves
    # it); a port not in the list is dropped (no answer: the VM would refuse it if it came);
    # the kubelet port of the init server is open and reaches it (refused: nothing listens).
    assert site.probe(addresses[init], 6443) == "open"
    assert site.probe(addresses[agent], 10250) == "open"
    assert site.probe(addresses[init], 10250) == "refused"
    assert site.probe(addresses[init], 22) == "timeout"
    assert site.probe(addresses[agent], 6443) == "timeout"  # not a server: 6443 not opened

    # The third node tagged: it joins as an agent and its VM boots and joins.
    grown = time.monotonic()
    outputs.append(ctl.cli("device", "tag", n3, f"pool={site.tag}").stdout)
    shown = site.show()
    third = next(m for m in shown["members"] if m["node"] == n3)
    assert third["role"] == "agent", shown
    site.wait(lambda: site.app_phase(nodes[2]) == "RUNNING", 240, "the third VM running")
    site.wait(lambda: "eve-test-guest: k3s agent joined" in site.consoles(nodes[2]), 120,
              "the third VM to join")  # fmt: skip
    shown = site.wait(lambda: members_ready(3), 120, "three members ready in cluster show")
    marks["third member ready"] = time.monotonic() - grown
    assert sorted(m["role"] for m in shown["members"]) == ["agent", "agent", "init"]

    # The manifest URL: fetched by the init server's VM, its result once in the history.
    def manifest_events() -> list[str]:
        events = json.loads(ctl.cli("cluster", "events", CLUSTER, "--json").stdout)
        return [e["text"] for e in events if e["text"].startswith("manifest")]

    def gets() -> list[str]:
        return (site.base / "manifest-gets.log").read_text().splitlines()

    site.wait(lambda: manifest_events(), 120, "the manifest's result in the cluster's history")
    assert manifest_events() == ["manifest applied"], manifest_events()
    assert gets() == ["GET /manifest.yaml"]  # the init server's VM only, once

    # Deactivate: the three VMs stop (libvirt has none of them running); activate: they run.
    outputs.append(ctl.cli("cluster", "deactivate", CLUSTER).stdout)
    site.wait(lambda: all(site.app_phase(n) == "HALTED" for n in nodes), 120,
              "the three K3s VMs halted")  # fmt: skip
    assert not any(site.domains(n, running_only=True) for n in nodes)
    outputs.append(ctl.cli("cluster", "activate", CLUSTER).stdout)
    site.wait(lambda: all(site.app_phase(n) == "RUNNING" for n in nodes), 240,
              "the three K3s VMs running again")  # fmt: skip
    assert all(len(site.domains(n, running_only=True)) == 1 for n in nodes)

    # The restarted init server's VM fetches the manifest again: it is gone now (404), a
    # failure the history records, once (each result once: a recomposition adds nothing).
    def since_boot() -> str:
        return site.consoles(by_uuid[init]).rpartition("eve-test-guest: up, kernel")[2]

    site.wait(lambda: "eve-test-guest: manifest status posted" in since_boot(), 120,
              "the restarted VM to post the manifest's result again")  # fmt: skip
    assert "eve-test-guest: k3s: manifest failed (HTTP 404)" in since_boot()
    assert gets() == ["GET /manifest.yaml"] * 2
    failed = ["manifest applied", "manifest failed: HTTP 404"]
    site.wait(lambda: manifest_events() == failed, 90, "the failure in the cluster's history")
    outputs.append(ctl.cli("device", "tag", init, f"pool={site.tag}").stdout)  # recomposes
    assert manifest_events() == failed

    # A member removed (untagged): its config loses the cluster part; its node deletes the K3s
    # VM (the domain, the volume) and the cluster network.  No drain: see docs/clusters-node.md.
    persist = nodes[2].root / "persist"
    # The vault: an ext4 image loop-mounted (fscrypt-image) or a directory in persist.
    volumes = next(v / "volumes" for v in (persist / "vault.fs" / "vault", persist / "vault")
                   if (v / "volumes").is_dir())  # fmt: skip
    assert len(list(volumes.iterdir())) == 1, list(volumes.iterdir())
    outputs.append(ctl.cli("device", "untag", n3, "pool").stdout)
    site.wait(lambda: nodes[2].status().get("apps") == [] and not site.domains(nodes[2]), 120,
              "the removed member's VM deleted")  # fmt: skip
    site.wait(lambda: not any(volumes.iterdir()), 60, "the removed member's volume deleted")
    site.wait(lambda: len(_sh("ip", "-n", site.ns(3), "-o", "link", "show").splitlines()) == 2, 60,
              "only lo and cp0 left in the removed member's namespace")  # fmt: skip
    shown = site.show()
    assert sorted(m["node"] for m in shown["members"]) == sorted([init, agent]), shown
    left = [e["text"] for e in json.loads(ctl.cli("cluster", "events", CLUSTER, "--json").stdout)]
    assert f"node {n3} left (agent)" in left, left
    assert all(len(site.domains(by_uuid[u], running_only=True)) == 1 for u in (init, agent))

    # Not drained (see docs/clusters-node.md): as with real K3s, the cluster's API keeps the
    # departed node and marks it NotReady once its status stops (the stand-in's grace: 30 s),
    # which the init server's node reports; cluster show lists only the members.
    def departed_ready() -> bool | None:
        with contextlib.closing(sqlite3.connect(ctl.state / "controller.db")) as db:
            row = db.execute(
                "SELECT json FROM report WHERE device_uuid = ?"
                " AND json_extract(json, '$.ztype') = 'ZiKubeCluster' ORDER BY id DESC LIMIT 1",
                (init,),
            ).fetchone()
        nodes_seen = json.loads(row[0])["clusterInfo"]["nodes"] if row else []
        for kube_node in nodes_seen:
            if kube_node.get("nodeId") == n3:
                ready = [c for c in kube_node.get("conditions", [])
                         if c.get("type") == "KUBE_NODE_CONDITION_TYPE_READY"]  # fmt: skip
                return bool(ready and ready[0].get("set") is True)
        return None

    site.wait(lambda: departed_ready() is False, 120, "the departed node NotReady in the API")

    # The token: in no log, no output, no console shipped to the controller.
    with contextlib.closing(sqlite3.connect(ctl.state / "controller.db")) as db:
        (token,) = db.execute("SELECT token FROM cluster").fetchone()
    assert isinstance(token, str) and len(token) > 20
    assert ctl.server is not None
    shipped = []
    for u in site.uuids():
        app_id = clusterconfig.object_ids(shown["id"], u).app
        shipped.append(ctl.cli("logs", u, "--app", app_id, check=False).stdout)
    assert all("eve-test-guest: k3s role" in text for text in shipped), "a console not shipped"
    texts = [
        *outputs,
        json.dumps(site.show()),
        ctl.server.output(),
        *shipped,
        *(n.log() for n in nodes),
        *(site.consoles(n) for n in nodes),
    ]
    for text in texts:
        assert token not in text
    # Nor the manifest URL (an import URL often carries a token), outside the operator's own
    # commands: not in the controller's log, the agents' logs or the VMs' consoles.
    for text in texts[len(outputs) + 1 :]:
        assert url not in text
    print("k3s cluster e2e timings (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in marks.items())
          + f", total {time.monotonic() - started:.0f}")  # fmt: skip
