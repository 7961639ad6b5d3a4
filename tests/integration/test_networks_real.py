"""A container app on a local network instance, on the real kernel, dockerd and dnsmasq.

The node's networking runs in a network namespace this test makes (``nwt<random>``): the
instance's bridge and dnsmasq live there; the container's interface is a veth pair whose host
side is on that bridge and whose peer the agent moves into the container's own namespace.
The test checks, from inside the container's namespace, that the app has its address, reaches
its gateway, and that dnsmasq answers its name and hands out the address the agent reserved.
Nothing in the root namespace is touched; teardown removes the namespace, the container and
the files, also when the test fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.drivers.containers import DockerSettings
from agent.drivers.dnsmasq import DnsmasqDriver
from agent.drivers.docker import DockerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.libvirt_fake import FakeHypervisor
from agent.drivers.netlink import NetlinkDriver
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.networks import Networks
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.records import RecordBook
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from tests.integration.conftest import service_missing
from tests.integration.images import container_image
from tests.unit.blob_server import blob_server
from tests.unit.workload_env import APP_CT, Env, Registry

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000000e1"


def _netns(*args: str) -> None:
    subprocess.run(["ip", "netns", *args], check=True, capture_output=True, timeout=30)


def _in_ns(pid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", *argv], capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Env, NodeReconciler, str]]:
    image = container_image()
    if image.startswith("!"):
        service_missing("dockerd + registry + test image", image[1:])
    for tool in ("ip", "nsenter", "dnsmasq"):
        if shutil.which(tool) is None:
            service_missing(tool, "not installed")
    repo, _, digest = image.partition("@")
    node = f"nw{uuid.uuid4().hex[:8]}"
    netns = f"nwt{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="eve-nw-", dir="/var/tmp"))
    os.chmod(base, 0o711)  # dnsmasq (its own user) re-reads its hosts files below it
    await asyncio.to_thread(_netns, "add", netns)
    containers = DockerRuntime(node, DockerSettings())
    hv = FakeHypervisor(HypervisorSettings(node, tmp_path / "domains"))
    try:
        async with blob_server(tmp_path / "tls") as server:
            env = Env(
                base,
                server,
                Registry(port=5000, repository=repo.split("/", 1)[1]),
                digest.removeprefix("sha256:"),
                b"",
                RuntimeItems(),
                containers,
                hv,
            )
            ws = Workspace(
                root=lambda: env.vault,
                items=lambda: env.runtime.current,
                settings=WorkloadSettings(container_halt_grace=0.5, reserve=0),
            )
            env.workloads = Workloads(WorkloadDrivers(containers, hv), ws)
            env.made.append(env.workloads)
            dnsmasq = DnsmasqDriver(node, base / "dnsmasq", netns=netns)
            nets = Networks(NetlinkDriver(node, netns), containers, RecordBook(base / "net"),
                            dnsmasq=dnsmasq)  # fmt: skip
            rec = NodeReconciler(env.runtime, workloads=env.workloads, networks=nets,
                                 settings=EngineSettings(resync_interval=3600))  # fmt: skip
            rec.set_condition(VAULT_READY, None)
            env.reconciler = rec
            try:
                yield env, rec, netns
            finally:
                for state in await containers.list_owned():
                    await containers.remove(state.name.removeprefix(containers.prefix))
                for inst in await dnsmasq.list_owned():
                    await dnsmasq.stop(inst.instance_id)
                for made in env.made:
                    await made.close()
    finally:
        await containers.close()
        await asyncio.to_thread(_netns, "del", netns)
        shutil.rmtree(base, ignore_errors=True)


async def test_a_container_on_a_local_instance(site: tuple[Env, NodeReconciler, str]) -> None:
    env, rec, _netns_name = site
    doc = env.document()
    doc["apps"] = [a for a in doc["apps"] if a["uuidandversion"]["uuid"] == APP_CT]
    doc["volumes"] = [v for v in doc["volumes"] if v["displayName"] != "vm-disk"]
    doc["contentInfo"] = [t for t in doc["contentInfo"] if t["displayName"] != "disk"]
    doc["datastores"] = [d for d in doc["datastores"] if d["dType"] != "DsHttps"]
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "lan",
        "instType": "ZnetInstLocal", "activate": True,
        "ip": {"subnet": "10.77.0.0/24", "gateway": "10.77.0.1",
               "dhcpRange": {"start": "10.77.0.10", "end": "10.77.0.50"}},
    }]  # fmt: skip
    doc["apps"][0]["interfaces"] = [{"name": "eth0", "networkId": NI}]
    assert await rec.apply(env.config(doc), 120), rec.report

    state = await env.containers.inspect(APP_CT)
    assert state.running and state.pid is not None
    shown = _in_ns(state.pid, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    address = shown.split("inet ", 1)[1].split("/", 1)[0]
    assert address.startswith("10.77.0.")
    route = _in_ns(state.pid, "ip", "route", "show", "default").stdout
    assert "via 10.77.0.1 dev eth0" in route
    ping = _in_ns(state.pid, "ping", "-c", "1", "-W", "3", "10.77.0.1")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # dnsmasq answers the app's name with its address (busybox nslookup, from its namespace).
    lookup = _in_ns(state.pid, "busybox", "nslookup", "ct-app", "10.77.0.1")
    assert address in lookup.stdout, lookup.stdout + lookup.stderr

    # Delete: no bridge, veth or dnsmasq is left in the node's namespace.
    empty = env.document(networkInstances=[], apps=[], volumes=[], contentInfo=[], datastores=[])
    assert await rec.apply(env.config(empty), 60)
    assert rec.networks is not None
    assert await rec.networks.netlink.list_owned() == []
    assert rec.networks.dnsmasq is not None
    assert await rec.networks.dnsmasq.driver.list_owned() == []
