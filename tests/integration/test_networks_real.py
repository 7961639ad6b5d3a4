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

import ast
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.appdhcp import AppDhcpDriver
from agent.drivers.containers import DockerSettings
from agent.drivers.dnsmasq import DnsmasqDriver
from agent.drivers.docker import DockerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.libvirt_fake import FakeHypervisor
from agent.drivers.metadata import MetadataServer
from agent.drivers.netlink import NetlinkDriver
from agent.drivers.nft import LibNft, NftSettings
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.metadata import MetadataAnswers
from agent.reconcile.networks import Networks
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.records import RecordBook
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from tests.integration.conftest import service_missing
from tests.integration.images import container_image
from tests.integration.nshelpers import wait_listening
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
    await asyncio.to_thread(  # as on a real node, loopback is up
        subprocess.run, ["ip", "-n", netns, "link", "set", "lo", "up"], check=True
    )
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
            nft = LibNft(NftSettings(node, netns=netns))
            netlink = NetlinkDriver(node, netns)
            holder: list[NodeReconciler] = []
            answers = MetadataAnswers(lambda: holder[0].current, lambda: holder[0].layout,
                                      netlink)  # fmt: skip
            md_server = MetadataServer(answers, netns=netns)
            nets = Networks(netlink, containers, RecordBook(base / "net"),
                            dnsmasq=dnsmasq, nft=nft, metadata=md_server,
                            app_dhcp=AppDhcpDriver(base / "appdhcp"))  # fmt: skip
            rec = NodeReconciler(env.runtime, workloads=env.workloads, networks=nets,
                                 settings=EngineSettings(resync_interval=3600))  # fmt: skip
            holder.append(rec)
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
                await nft.close()
                await md_server.stop()
    finally:
        await containers.close()
        await asyncio.to_thread(_netns, "del", netns)
        shutil.rmtree(base, ignore_errors=True)


def _container_doc(env: Env) -> dict[str, Any]:
    """The container app alone, on a local instance (10.77.0.0/24)."""
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
    return doc


async def test_a_container_on_a_local_instance(site: tuple[Env, NodeReconciler, str]) -> None:
    env, rec, _netns_name = site
    doc = _container_doc(env)
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

    # The app resolves through its instance's dnsmasq.
    resolv = await asyncio.to_thread(
        subprocess.run, ["docker", "exec", f"{env.containers.prefix}{APP_CT}", "cat",
                         "/etc/resolv.conf"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert resolv.stdout.strip() == "nameserver 10.77.0.1", resolv

    # The metadata server knows the app by its address and tells it its own data only.
    # (in threads: the server answers on this test's event loop)
    md = "http://169.254.169.254"
    got = await asyncio.to_thread(
        _in_ns, state.pid, "python3", "-c", _GET, f"{md}/eve/v1/network.json"
    )
    assert got.returncode == 0, got.stderr
    doc_md = json.loads(ast.literal_eval(got.stdout.strip()).decode())
    assert doc_md["app-instance-uuid"] == APP_CT and doc_md["caller-ip"].startswith(address)
    got = await asyncio.to_thread(_in_ns, state.pid, "python3", "-c", _GET, f"{md}/user-data")
    assert "GREETING=hello world" in got.stdout
    stranger = await asyncio.to_thread(
        subprocess.run,
        ["ip", "netns", "exec", _netns_name, "python3", "-c", _GET, f"{md}/eve/v1/network.json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert stranger.returncode != 0 and "404" in stranger.stderr  # the node is no app

    # Delete: no bridge, veth or dnsmasq is left in the node's namespace.
    empty = env.document(networkInstances=[], apps=[], volumes=[], contentInfo=[], datastores=[])
    assert await rec.apply(env.config(empty), 60)
    assert rec.networks is not None
    assert await rec.networks.netlink.list_owned() == []
    assert rec.networks.dnsmasq is not None
    assert await rec.networks.dnsmasq.driver.list_owned() == []


def _outside(node_ns: str, outside: str, up: str) -> None:
    """An "outside" namespace joined to the node's by a veth pair (``up`` is the node's port),
    192.0.2.1 (node) - 192.0.2.2 (outside), with web servers on 8080 and 9090 outside."""
    _netns("add", outside)
    run = ["ip", "-n", node_ns]
    subprocess.run([*run, "link", "add", up, "type", "veth", "peer", "name", "o0", "netns",
                    outside], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*run, "addr", "add", "192.0.2.1/24", "dev", up], check=True)
    subprocess.run([*run, "link", "set", up, "up"], check=True)
    out = ["ip", "-n", outside]
    subprocess.run([*out, "addr", "add", "192.0.2.2/24", "dev", "o0"], check=True)
    subprocess.run([*out, "link", "set", "o0", "up"], check=True)
    subprocess.run([*out, "link", "set", "lo", "up"], check=True)


_BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def _sysctl(netns: str, path: str, value: str | None = None) -> str:
    """Read (or write) a sysctl file in ``netns``."""
    argv = ["cat", path] if value is None else ["sh", "-c", f"echo {value} > {path}"]
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def _neighbour(node_ns: str, neighbour: str, bridge: str) -> None:
    """A namespace on the instance's bridge at 10.77.0.60/24 that is not an app of the node."""
    _netns("add", neighbour)
    run = ["ip", "-n", node_ns]
    subprocess.run([*run, "link", "add", "nb0", "type", "veth", "peer", "name", "n0", "netns",
                    neighbour], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*run, "link", "set", "nb0", "master", bridge, "up"], check=True)
    out = ["ip", "-n", neighbour]
    subprocess.run([*out, "addr", "add", "10.77.0.60/24", "dev", "n0"], check=True)
    subprocess.run([*out, "link", "set", "n0", "up"], check=True)
    subprocess.run([*out, "link", "set", "lo", "up"], check=True)


def _outside_get(outside: str, url: str) -> int:
    """An HTTP GET from the outside namespace: its exit status (0 answered)."""
    return subprocess.run(
        ["ip", "netns", "exec", outside, "python3", "-c", _GET, url],
        capture_output=True, check=False, timeout=30,
    ).returncode  # fmt: skip


def _diagnose(node_ns: str, pid: int) -> str:
    """What a failed packet test shows of the node's namespace and the app's."""
    out = []
    for argv in (
        ["ip", "netns", "exec", node_ns, "nft", "list", "ruleset"],
        ["ip", "-n", node_ns, "-br", "addr"],
        ["ip", "netns", "exec", node_ns, "sh", "-c",
         "grep -H . /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/ip_forward"],
        ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "route"],
        ["ip", "-n", node_ns, "neigh"],
    ):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        out.append(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)


_GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read())"


def _wget(pid: int, url: str) -> bool:
    """An HTTP GET from the app's namespace (Python's client: busybox's wget crashes here)."""
    done = _in_ns(pid, "python3", "-c", _GET, url)
    return done.returncode == 0


async def test_nat_acls_and_a_portmap_with_real_packets(
    site: tuple[Env, NodeReconciler, str], tmp_path: Path
) -> None:
    env, rec, node_ns = site
    outside = f"{node_ns}o"
    up = f"up{node_ns[-6:]}"
    servers: list[subprocess.Popen[bytes]] = []
    await asyncio.to_thread(_outside, node_ns, outside, up)
    try:
        for port in (8080, 9090):
            root = tmp_path / str(port)
            root.mkdir()
            (root / "index.html").write_text(f"outside {port}\n")
            servers.append(await asyncio.to_thread(
                subprocess.Popen,
                ["ip", "netns", "exec", outside, "python3", "-m", "http.server", str(port),
                 "--bind", "192.0.2.2", "--directory", str(root)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        dns = await asyncio.to_thread(
            subprocess.Popen,
            ["ip", "netns", "exec", outside, "dnsmasq", "--no-daemon", "--no-resolv",
             "--no-hosts", "--listen-address=192.0.2.2", "--bind-interfaces",
             "--address=/allowed.example/192.0.2.2", "--pid-file="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        servers.append(dns)
        acls: list[dict[str, object]] = [
            {"id": 1, "matches": [{"type": "ip", "value": "192.0.2.0/24"},
                                  {"type": "protocol", "value": "tcp"},
                                  {"type": "fport", "value": "8080"}]},
            {"id": 2, "matches": [{"type": "protocol", "value": "tcp"},
                                  {"type": "lport", "value": "8022"}],
             "actions": [{"portmap": True, "appPort": 8000}]},
        ]  # fmt: skip
        doc = _container_doc(env)
        doc["deviceIoList"] = [
            {
                "ptype": "PhyIoNetEth",
                "phylabel": "up0",
                "logicallabel": "up0",
                "phyaddrs": {"ifname": up},
                "usage": "PhyIoUsageMgmtAndApps",
            }
        ]
        doc["systemAdapterList"] = [{"name": "up0"}]
        doc["networkInstances"][0]["port"] = {"name": "uplink"}
        doc["networkInstances"][0]["ip"]["dns"] = ["192.0.2.2"]
        doc["apps"][0]["interfaces"][0]["acls"] = acls  # fmt: skip
        # The agent turns bridge netfilter on (app-to-app packets must meet the ACLs).
        await asyncio.to_thread(_sysctl, node_ns, _BRIDGE_NF, "0")
        assert await rec.apply(env.config(doc), 120), rec.report
        assert await asyncio.to_thread(_sysctl, node_ns, _BRIDGE_NF) == "1"
        state = await env.containers.inspect(APP_CT)
        assert state.pid is not None
        # Listeners on the node itself: 7070 (nobody may reach it) and 22 (SSH: only with a key).
        for port in (7070, 22):
            servers.append(await asyncio.to_thread(
                subprocess.Popen,
                ["ip", "netns", "exec", node_ns, "python3", "-m", "http.server", str(port),
                 "--directory", str(tmp_path / "8080")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        # A neighbour on the instance's bridge that is no app of ours (10.77.0.60, web on 8080).
        assert rec.layout is not None
        bridge = rec.layout.instances[NI].bridge
        neighbour = f"{node_ns}n"
        await asyncio.to_thread(_neighbour, node_ns, neighbour, bridge)
        servers.append(await asyncio.to_thread(
            subprocess.Popen,
            ["ip", "netns", "exec", neighbour, "python3", "-m", "http.server", "8080",
             "--directory", str(tmp_path / "8080")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
        # The servers listening (a loaded machine may take seconds to start them).
        for where, host, port in (
            (["ip", "netns", "exec", outside], "192.0.2.2", 8080),
            (["ip", "netns", "exec", outside], "192.0.2.2", 9090),
            (["ip", "netns", "exec", node_ns], "127.0.0.1", 7070),
            (["ip", "netns", "exec", node_ns], "127.0.0.1", 22),
            (["ip", "netns", "exec", neighbour], "127.0.0.1", 8080),
        ):
            await asyncio.to_thread(wait_listening, where, host, port)
        ok = await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:8080/")  # via NAT
        assert ok, await asyncio.to_thread(_diagnose, node_ns, state.pid)
        assert not await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:9090/")  # ACL

        # The node firewall: from outside, the node answers pings but lets nothing in on its
        # port; the app reaches the instance's services only, not the node's.
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:7070/") == 1
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:22/") == 1
        ping = await asyncio.to_thread(
            subprocess.run, ["ip", "netns", "exec", outside, "ping", "-c", "1", "-W", "2",
                             "192.0.2.1"], capture_output=True, check=False)  # fmt: skip
        assert ping.returncode == 0
        assert not await asyncio.to_thread(_wget, state.pid, "http://192.0.2.1:7070/")
        # App to app on one bridge: the ACL decides (bridge netfilter), here nothing allows it.
        assert not await asyncio.to_thread(_wget, state.pid, "http://10.77.0.60:8080/")
        acls.append({"id": 4, "matches": [{"type": "ip", "value": "10.77.0.60"},
                                          {"type": "protocol", "value": "tcp"},
                                          {"type": "fport", "value": "8080"}]})  # fmt: skip
        # An SSH key opens port 22 (EVE's debug.enable.ssh), nothing else.
        doc["configItems"] = [{"key": "debug.enable.ssh", "value": "ssh-ed25519 AAAA test"}]
        assert await rec.apply(env.config(doc), 60), rec.report
        assert await asyncio.to_thread(_wget, state.pid, "http://10.77.0.60:8080/")
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:22/") == 0
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:7070/") == 1
        acls.pop()
        del doc["configItems"]
        assert await rec.apply(env.config(doc), 60), rec.report
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:22/") == 1

        # A portmap: the outside reaches the app's port 8000 through the node's port 8022.
        app_httpd = await asyncio.to_thread(
            subprocess.Popen,
            ["nsenter", f"--net=/proc/{state.pid}/ns/net", "python3", "-m", "http.server",
             "8000", "--directory", str(tmp_path / "8080")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        servers.append(app_httpd)
        await asyncio.to_thread(
            wait_listening, ["nsenter", f"--net=/proc/{state.pid}/ns/net"], "127.0.0.1", 8000
        )
        got = await asyncio.to_thread(
            subprocess.run,
            ["ip", "netns", "exec", outside, "python3", "-c", _GET, "http://192.0.2.1:8022/"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert got.returncode == 0 and "outside 8080" in got.stdout, got.stderr
        # The portmap's ip match restricts who may use it (EVE's ingress match on the source):
        # first a network the outside is not in, then its own.
        portmap = acls[1]["matches"]
        assert isinstance(portmap, list)
        portmap.append({"type": "ip", "value": "203.0.113.0/24"})
        assert await rec.apply(env.config(doc), 60), rec.report
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:8022/") == 1
        portmap[-1]["value"] = "192.0.2.0/24"
        assert await rec.apply(env.config(doc), 60), rec.report
        assert await asyncio.to_thread(_outside_get, outside, "http://192.0.2.1:8022/") == 0
        portmap.pop()
        # An ACE for an IPv6 remote opens nothing to IPv4 (it once rendered without its address
        # match, as "tcp dport 9090 accept": to anywhere).
        acls.append({"id": 5, "matches": [{"type": "ip", "value": "2001:db8::1"},
                                          {"type": "protocol", "value": "tcp"},
                                          {"type": "fport", "value": "9090"}]})  # fmt: skip
        assert await rec.apply(env.config(doc), 60), rec.report
        assert not await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:9090/")
        acls.pop()

        # A host match: 9090 is allowed to allowed.example once the app resolved it (the
        # instance's dnsmasq puts the answer into the rule's set).
        acls.append({"id": 3, "matches": [{"type": "host", "value": "allowed.example"},
                                          {"type": "protocol", "value": "tcp"},
                                          {"type": "fport", "value": "9090"}]})  # fmt: skip
        assert await rec.apply(env.config(doc), 60), rec.report
        assert not await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:9090/")
        lookup = await asyncio.to_thread(
            _in_ns, state.pid, "busybox", "nslookup", "allowed.example", "10.77.0.1"
        )
        assert "192.0.2.2" in lookup.stdout, lookup.stdout + lookup.stderr
        assert await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:9090/")
        acls.pop()

        # Editing the ACL changes what passes, without touching the app.
        acls[0]["matches"][2]["value"] = "9090"  # type: ignore[index]
        assert await rec.apply(env.config(doc), 60), rec.report
        assert (await env.containers.inspect(APP_CT)).id == state.id
        assert await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:9090/")
        assert not await asyncio.to_thread(_wget, state.pid, "http://192.0.2.2:8080/")
        assert rec.networks is not None and rec.networks.firewall is not None
        counters = await rec.networks.firewall.counters()
        assert counters[f"ace:{APP_CT}:0:1"][0] > 0  # the allow counted the packets
        assert counters[f"ace:{APP_CT}:0:0"][0] > 0  # and the implicit drop its own
        (iface,) = (await rec.networks.acl_drops(rec.layout))[APP_CT]
        assert iface.ifname == "eth0" and iface.tx > 0  # what metrics report as txAclDrops
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        await asyncio.to_thread(_netns, "del", outside)
        with contextlib.suppress(subprocess.CalledProcessError):
            await asyncio.to_thread(_netns, "del", f"{node_ns}n")
