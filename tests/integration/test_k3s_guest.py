"""A cluster member's K3s VM, end to end at the guest boundary, on real libvirt/QEMU, dnsmasq,
nftables and the metadata server (no K3s binary can be had here: the test guest of images/vm
acts its role, see docs/clusters-node.md).

The node's networking runs in a network namespace of this test (``kgt<random>``): its port (one
end of a veth pair, 192.0.2.1/24), the cluster instance's bridge (spread over that port, as on
a cluster member), its dnsmasq, the firewall and the metadata server.  The VM app (the test
guest's disk from a local HTTPS datastore, as in test_workloads_real.py) has its interface at
the node's cluster address, so the agent writes the K3s configuration into its user data; the
guest reads it, takes its address by DHCP, serves a "Kubernetes API" with its own CA and posts
a kubeconfig to the metadata server; the agent's ClusterWatch reads that API from the
namespace with the real KubeApi.

libvirtd lives in the root namespace, the bridge in the node's: the hypervisor driver makes the
VM's NIC an ethernet tap and moves it onto the bridge after the start (``nic_netns``, as an
emulated node's agent does).  Teardown removes the domain, dnsmasq, both namespaces' links and
the files, also when the test fails.

The other roles (a joining server, an agent) are checked without a VM, in seconds: the guest's
initramfs unpacked, its role script run in a chroot with namespaces of its own (network, PID).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gzip
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from agent.drivers.dnsmasq import DnsmasqDriver
from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.kubeapi import KubeApi, KubeConfig
from agent.drivers.libvirt import LibvirtHypervisor
from agent.drivers.metadata import MetadataServer
from agent.drivers.netlink import NetlinkDriver
from agent.drivers.nft import LibNft, NftSettings
from agent.model.config import ClusterConfig, NodeConfig
from agent.model.secret import Secret
from agent.reconcile import cluster
from agent.reconcile.appmeta import AppMetaStore
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.kubestatus import parse
from agent.reconcile.kubewatch import ClusterWatch
from agent.reconcile.metadata import KUBECONFIG, MetadataAnswers
from agent.reconcile.networks import Networks
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.records import RecordBook
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from tests.integration.conftest import service_missing
from tests.integration.images import vm_images
from tests.unit.blob_server import Blob, blob_server
from tests.unit.workload_env import APP_VM, DEVICE, DS_HTTP, VOL_DISK, Env, Registry

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000000e4"
CLUSTER = "6d3b3b4e-8a3c-4c47-9d41-0000000000c9"
TOKEN = "K10-cluster-token-that-must-never-be-logged-5e1d"
NODE_IP = "10.44.0.2"
MARKER = "eve-agent-k3s-guest-marker-2c9b"


@dataclass
class Site:
    env: Env
    rec: NodeReconciler
    netns: str
    node: str
    port: str
    store: AppMetaStore
    posted: list[tuple[str, int, bytes]]
    hypervisor: LibvirtHypervisor


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    if os.geteuid() != 0:
        service_missing("root", "network namespaces and libvirt need root")
    for tool in ("ip", "dnsmasq"):
        if shutil.which(tool) is None:
            service_missing(tool, "not installed")
    guest = vm_images()
    if isinstance(guest, str):
        service_missing("test VM image", guest)
    tag = uuid.uuid4().hex[:8]
    node, netns = f"kg{tag}", f"kgt{tag}"
    hypervisor = LibvirtHypervisor(HypervisorSettings(node, state_dir=Path("/nonexistent")))
    try:
        await hypervisor.list_owned()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable libvirtd
        service_missing("libvirtd", str(exc))
    finally:
        await hypervisor.close()
    base = Path(tempfile.mkdtemp(prefix="eve-kg-", dir="/var/tmp"))
    os.chmod(base, 0o711)  # QEMU (libvirt-qemu) and dnsmasq reach files below it
    hypervisor = LibvirtHypervisor(
        HypervisorSettings(node, state_dir=base / "domains", nic_netns=netns)
    )
    containers = FakeContainerRuntime(node)
    port = f"kgp{tag}"
    try:
        await asyncio.to_thread(_run, "ip", "netns", "add", netns)
        for argv in (["link", "set", "lo", "up"],
                     ["link", "add", port, "type", "veth", "peer", "name", f"kgq{tag}"],
                     ["addr", "add", "192.0.2.1/24", "dev", port],
                     ["link", "set", f"kgq{tag}", "up"], ["link", "set", port, "up"]):  # fmt: skip
            await asyncio.to_thread(_run, "ip", "-n", netns, *argv)
        async with blob_server(tmp_path / "tls") as server:
            disk = await asyncio.to_thread(guest.disk.read_bytes)
            server.blobs["disk.raw"] = Blob(disk)
            env = Env(base, server, Registry(), "", disk, RuntimeItems(), containers,
                      hypervisor)  # fmt: skip
            env.disk_format = "QCOW2"
            env.vm_memory_kib = 128 * 1024
            env.vm_user_data = f"#cloud-config\n# {MARKER}\n".encode()
            ws = Workspace(
                root=lambda: env.vault,
                items=lambda: env.runtime.current,
                settings=WorkloadSettings(vm_halt_grace=0.5, watch_interval=1.0, reserve=0),
            )
            env.workloads = Workloads(WorkloadDrivers(containers, hypervisor), ws)
            env.made.append(env.workloads)
            store = AppMetaStore(lambda: env.vault)
            posted: list[tuple[str, int, bytes]] = []

            async def sink(app_id: str, kind: int, data: bytes) -> None:
                posted.append((app_id, kind, data))
                await asyncio.to_thread(store.save, app_id, kind, data)

            dnsmasq = DnsmasqDriver(node, base / "dnsmasq", netns=netns)
            nft = LibNft(NftSettings(node, netns=netns))
            netlink = NetlinkDriver(node, netns)
            holder: list[NodeReconciler] = []
            answers = MetadataAnswers(lambda: holder[0].current, lambda: holder[0].layout,
                                      netlink, sink)  # fmt: skip
            md_server = MetadataServer(answers, netns=netns, poster=answers.post)
            nets = Networks(netlink, containers, RecordBook(base / "net"),
                            dnsmasq=dnsmasq, nft=nft, metadata=md_server)  # fmt: skip
            rec = NodeReconciler(env.runtime, workloads=env.workloads, networks=nets,
                                 settings=EngineSettings(resync_interval=3600))  # fmt: skip
            holder.append(rec)
            rec.set_condition(VAULT_READY, None)
            env.reconciler = rec
            try:
                yield Site(env, rec, netns, node, port, store, posted, hypervisor)
            finally:
                for info in await hypervisor.list_owned():
                    with contextlib.suppress(Exception):
                        await hypervisor.undefine(info.mark.app_uuid)
                for inst in await dnsmasq.list_owned():
                    await dnsmasq.stop(inst.instance_id)
                for made in env.made:
                    await made.close()
                await nft.close()
                await md_server.stop()
    finally:
        await hypervisor.close()
        await containers.close()
        await asyncio.to_thread(_run, "ip", "netns", "del", netns, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _member(**changes: Any) -> ClusterConfig:
    """This node as the cluster's first server (it initialises the cluster), or ``changes``."""
    member = ClusterConfig(
        id=CLUSTER, name="store1", interface="uplink", ip_prefix=f"{NODE_IP}/24",
        is_worker=False, join_server_ip=NODE_IP, cluster_type=1, tie_breaker_node_id="",
        token=Secret(TOKEN),
    )  # fmt: skip
    return dataclasses.replace(member, **changes)


def _config(env: Env, port: str) -> NodeConfig:
    """The VM app alone, on a local instance 10.44.0.0/24 (NATed out of ``port``) at the node's
    cluster address; the node is the cluster's first server (it initialises the cluster)."""
    doc = env.document()
    doc["apps"] = [a for a in doc["apps"] if a["uuidandversion"]["uuid"] == APP_VM]
    doc["volumes"] = [v for v in doc["volumes"] if v["uuid"] == VOL_DISK]
    doc["contentInfo"] = [t for t in doc["contentInfo"] if t["displayName"] == "disk"]
    doc["datastores"] = [d for d in doc["datastores"] if d["id"] == DS_HTTP]
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "cluster",
        "instType": "ZnetInstLocal", "activate": True,
        "ip": {"subnet": "10.44.0.0/24", "gateway": "10.44.0.1",
               "dhcpRange": {"start": "10.44.0.10", "end": "10.44.0.50"}},
        "port": {"name": "uplink"},
    }]  # fmt: skip
    doc["deviceIoList"] = [
        {
            "ptype": "PhyIoNetEth",
            "phylabel": "up0",
            "logicallabel": "up0",
            "phyaddrs": {"ifname": port},
            "usage": "PhyIoUsageMgmtAndApps",
        }
    ]
    doc["systemAdapterList"] = [{"name": "up0"}]
    doc["apps"][0]["interfaces"] = [{"name": "eth0", "networkId": NI, "addr": NODE_IP}]
    return dataclasses.replace(env.config(doc), cluster=_member())


async def _console(site: Site) -> str:
    path = site.hypervisor.console_log(uuid.UUID(APP_VM))
    if not path.exists():
        return ""
    return await asyncio.to_thread(path.read_text, errors="replace")


async def _until(what: str, check: Any, seconds: float, site: Site) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            tail = (await _console(site))[-3000:]
            raise AssertionError(f"timed out waiting for {what}; the console shows:\n{tail}")
        await asyncio.sleep(0.5)


async def test_a_k3s_member_vm_acts_its_role_and_the_agent_reads_its_api(site: Site) -> None:
    env, rec = site.env, site.rec
    config = _config(env, site.port)
    api = KubeApi(site.netns)
    try:
        started = asyncio.get_running_loop().time()
        assert await rec.apply(config, 180), rec.report
        assert env.phases()[("app", APP_VM)] == "RUNNING"
        assert not rec.report.item_errors, rec.report

        # The guest acts its role: its address from the instance's dnsmasq, the API, the post.
        async def posted() -> bool:
            return "eve-test-guest: kubeconfig posted" in await _console(site)

        await _until("the guest to post its kubeconfig", posted, 120, site)
        booted = asyncio.get_running_loop().time() - started
        console = await _console(site)
        assert f"eve-test-guest: k3s role init on {NODE_IP}" in console
        assert f"eve-test-guest: eth0 {NODE_IP}/24 via" in console  # the instance's dnsmasq
        assert MARKER in console  # the controller's own user data is still printed

        # The metadata server took it (200) from the VM, and the sink kept it.
        assert [(a, k) for a, k, _ in site.posted] == [(APP_VM, KUBECONFIG)]
        data = site.store.load()[(APP_VM, KUBECONFIG)]
        kube = KubeConfig.parse(data)
        assert kube.port == 6443 and kube.token and kube.cert_pem is None
        assert b"server: https://127.0.0.1:6443" in data

        # The agent's ClusterWatch reads the guest's API from the node's namespace (TLS verified
        # against the posted CA and the VM's address).
        watch = ClusterWatch(api, site.store, lambda: rec.current, lambda: rec.layout)
        status = await watch.sample()
        assert status is not None, "ClusterWatch read nothing"
        assert status.cluster_id == CLUSTER
        (member,) = status.nodes
        assert member.name == f"store1-{DEVICE[:8]}"
        assert member.node_uuid == DEVICE
        assert member.ready and member.server and member.schedulable
        assert member.internal_ip == NODE_IP
        assert member.version.startswith("v1.")
        (ns,) = status.namespaces
        assert ns.namespace == "kube-system" and ns.running == ns.total > 0

        # No token in the console (it goes to the controller as app logs): neither the
        # cluster's nor the kubeconfig's; the seed's token line is printed redacted.
        console = await _console(site)
        assert TOKEN not in console
        assert kube.token is not None and kube.token not in console
        assert "token: <redacted>" in console
        print(f"k3s guest: kubeconfig posted {booted:.1f} s after apply started")
    finally:
        await api.close()


# --- the other roles, without a VM ---------------------------------------------------------


def _unpack_newc(archive: bytes, dest: Path) -> None:
    """Unpack a cpio "newc" archive (what images/vm/build.sh makes): directories, files and
    symlinks, with their modes."""
    at = 0
    while True:
        head = archive[at : at + 110]
        assert head[:6] == b"070701", f"not a newc header at {at}"
        fields = [int(head[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = archive[at + 110 : at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) & ~3
        data = archive[at : at + size]
        at = (at + size + 3) & ~3
        if name == "TRAILER!!!":
            return
        path = dest / name
        kind = mode & 0o170000
        if kind == 0o040000:
            path.mkdir(parents=True, exist_ok=True)
        elif kind == 0o120000:
            path.symlink_to(data.decode())
            continue
        elif kind == 0o100000:
            path.write_bytes(data)
        path.chmod(mode & 0o7777)


@pytest.fixture(scope="module")
def guest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test guest's initramfs, unpacked, with the device nodes its role script uses."""
    if os.geteuid() != 0:
        service_missing("root", "chroot and namespaces need root")
    guest = vm_images()
    if isinstance(guest, str):
        service_missing("test VM image", guest)
    root = tmp_path_factory.mktemp("guest-root")
    _unpack_newc(gzip.decompress(guest.initrd.read_bytes()), root)
    for name, minor in (("null", 3), ("urandom", 9)):
        os.mknod(root / "dev" / name, 0o20666, os.makedev(1, minor))
    _run("chroot", str(root), "/bin/busybox", "--install", "-s", "/bin")
    return root


def _start(root: Path, member: ClusterConfig, netns: str | None = None) -> subprocess.Popen[bytes]:
    """Start the role script on ``member``'s user data in ``root``: in a network namespace of
    its own, or in ``netns`` (shared with another member); a PID namespace of its own, so
    everything it starts dies with it (a shell stays as its PID 1, as /init in the VM)."""
    data = cluster.user_data(f"#cloud-config\n# {MARKER}\n".encode(), member, DEVICE)
    (root / "seed-user-data").write_bytes(data)
    (root / "dev" / "console").write_text("")  # a file here: the console lines land in it
    shutil.rmtree(root / "run" / "eve-k3s", ignore_errors=True)
    where = ["ip", "netns", "exec", netns, "unshare"] if netns else ["unshare", "--net"]
    return subprocess.Popen(
        [*where, "--pid", "--fork", "--kill-child", "chroot", str(root), "/bin/sh", "-c",
         "/bin/eve-k3s-guest /seed-user-data; sleep 600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _console_says(root: Path, until: str, seconds: float = 30) -> str:
    console = root / "dev" / "console"
    deadline = time.monotonic() + seconds
    while until not in console.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = console.read_text()
    assert until in text, text
    return text


def _act(root: Path, member: ClusterConfig, until: str, netns: str | None = None) -> str:
    """Run the role script (:func:`_start`) until its console says ``until``; the console."""
    proc = _start(root, member, netns)
    try:
        return _console_says(root, until)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def init_member(guest_root: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The cluster's first server (10.44.0.2) running in a namespace of this test that also
    holds 10.44.0.3 (for a joiner); the namespace and the guest's root (a copy)."""
    root = tmp_path / "init-root"
    _run("cp", "-a", str(guest_root), str(root))
    netns = f"kgj{uuid.uuid4().hex[:8]}"
    _run("ip", "netns", "add", netns)
    proc = None
    try:
        for argv in (["link", "set", "lo", "up"],
                     ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                     ["addr", "add", "10.44.0.2/24", "dev", "v0"],
                     ["addr", "add", "10.44.0.3/24", "dev", "v0"],
                     ["link", "set", "v0", "up"], ["link", "set", "v1", "up"]):  # fmt: skip
            _run("ip", "-n", netns, *argv)
        proc = _start(root, _member(), netns)
        _console_says(root, "k3s API on")
        yield netns, root
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        _run("ip", "netns", "del", netns, check=False)


def test_a_joining_server_and_an_agent_act_their_roles(
    guest_root: Path, init_member: tuple[str, Path]
) -> None:
    own, init = "10.44.0.3", "10.44.0.2"
    netns, init_root = init_member
    server = _member(ip_prefix=f"{own}/24", join_server_ip=init)
    proc = _start(guest_root, server, netns)
    try:
        text = _console_says(guest_root, "k3s API on")
        # The init server fetches the joiner's Node object from its kubelet port and lists it.
        _console_says(init_root, f"k3s: the node at {own} joined the cluster")
    finally:
        proc.kill()
        proc.wait()
    assert f"eve-test-guest: k3s role server on {own}, joining https://{init}:6443" in text
    assert f"eve-test-guest: k3s server joined https://{init}:6443" in text
    listed = json.loads((init_root / "run/eve-k3s/www/api/v1/nodes").read_text())
    addresses = [n["status"]["addresses"][0]["address"] for n in listed["items"]]
    assert addresses == [init, own]
    state = guest_root / "run" / "eve-k3s"
    nodes = json.loads((state / "www/api/v1/nodes").read_text())
    pods = json.loads((state / "www/api/v1/pods").read_text())
    status = parse(CLUSTER, nodes, pods)
    (member,) = status.nodes
    assert member.name == f"store1-{DEVICE[:8]}" and member.node_uuid == DEVICE
    assert member.ready and member.server and member.internal_ip == own
    labels = nodes["items"][0]["metadata"]["labels"]
    assert labels["eve-cluster-id"] == CLUSTER
    assert "node-role.kubernetes.io/etcd" not in labels  # only the initialising server's
    # The serving certificate names the node's address and comes from the kubeconfig's CA.
    cert = x509.load_pem_x509_certificate((state / "server.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((state / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(own) in sans.get_values_for_type(x509.IPAddress)
    kube = KubeConfig.parse((state / "k3s.yaml").read_bytes())
    assert kube.ca_pem == (state / "ca.crt").read_bytes() and kube.token
    assert base64.b64encode(kube.ca_pem).decode() in (state / "k3s.yaml").read_text()

    # An agent: its Node object for its server to fetch (kubelet port), no API, no kubeconfig;
    # alone here, it keeps asking its server to let it join.
    agent = _member(ip_prefix=f"{own}/24", join_server_ip=init, is_worker=True)
    text = _act(guest_root, agent, "does not answer yet")
    assert f"eve-test-guest: k3s role agent on {own}, joining https://{init}:6443" in text
    assert "k3s API" not in text and "joined" not in text
    node = json.loads((state / "www/eve-node").read_text())
    assert node["metadata"]["labels"]["node-uuid"] == DEVICE
    assert "node-role.kubernetes.io/control-plane" not in node["metadata"]["labels"]
    assert not (state / "www/api").exists() and not (state / "k3s.yaml").exists()
