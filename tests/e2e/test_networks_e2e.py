"""Network instances end to end: our controller, the agent process with its own network
namespace (``--netns``), dockerd and the local registry.

A container app on a local instance gets its address; its flows reach the controller as flow
logs (an allowed one with its ACE, a dropped one); the agent is killed (SIGKILL) in the
middle of an ACL change and started again: the bridge, the app's interface, dnsmasq and the
firewall tables are adopted (same names, same dnsmasq process, one of each), the change lands,
and deleting the config leaves nothing in the namespace (no link but loopback, no nft table, no
dnsmasq).  The namespace is the test's own; teardown removes it, the container and dnsmasq, also
when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.containers import container_prefix
from agent.reconcile.acerules import NFLOG_GROUP
from tests.e2e.harness import Controller, Node, sample_images, wait_for
from tests.e2e.sample_apps import APP_CT, CT_NAME, FileServer, apps_config, host_name

FAST = [{"key": "timer.config.interval", "value": "5"}]
NI = "7a1e5f0c-3b2d-4c8e-9f10-00000000e001"


def _ns(netns: str, *argv: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    return done.stdout


def _dnsmasq_pids(root: Path) -> list[int]:
    marker = f"--conf-file={(root / 'run' / 'dnsmasq').absolute()}/"
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if state != "Z" and any(a.startswith(marker) for a in argv):
                pids.append(int(proc.name))
    return pids


@pytest.fixture
def site() -> Iterator[tuple[Controller, Node, str, Any]]:
    images = sample_images("networks end to end")
    base = Path(tempfile.mkdtemp(prefix="eve-e2e-net-", dir="/var/tmp"))
    os.chmod(base, 0o711)
    netns = f"e2enet{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    ctl = Controller(base / "controller")
    ctl.init()
    ctl.set_default_config({"configItems": FAST})
    ctl.start()
    node = Node(base / "node", ctl, serial=f"e2e-net-{netns[-6:]}", netns=netns)
    disks = FileServer(images.disk.parent)
    try:
        yield ctl, node, netns, (images, disks.port)
    finally:
        node.shutdown()  # stops the agent, removes its containers and dnsmasq
        ctl.stop()
        disks.close()
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(base, ignore_errors=True)


def config(images: Any, port: int, fport: str) -> dict[str, Any]:
    doc = {"configItems": FAST, **apps_config(images, port)}
    doc["apps"] = [a for a in doc["apps"] if a["displayname"] == CT_NAME]
    doc["volumes"] = [v for v in doc["volumes"] if v["displayName"] == "hello-root"]
    doc["contentInfo"] = [t for t in doc["contentInfo"] if t["displayName"] == "test-busybox"]
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "lan",
        "instType": "ZnetInstLocal", "activate": True,
        "ip": {"subnet": "10.66.0.0/24", "gateway": "10.66.0.1",
               "dhcpRange": {"start": "10.66.0.10", "end": "10.66.0.90"}},
    }]  # fmt: skip
    doc["apps"][0]["interfaces"] = [{"name": "eth0", "networkId": NI, "acls": [
        {"id": 1, "matches": [{"type": "ip", "value": "0.0.0.0/0"},
                              {"type": "protocol", "value": "tcp"},
                              {"type": "fport", "value": fport}]},
    ]}]  # fmt: skip
    return doc


def links(netns: str) -> list[str]:
    out = _ns(netns, "ip", "-j", "link", "show")
    return sorted(link["ifname"] for link in json.loads(out or "[]") if link["ifname"] != "lo")


def tables(netns: str) -> list[str]:
    out = json.loads(_ns(netns, "nft", "-j", "list", "tables") or '{"nftables": []}')
    return sorted(e["table"]["name"] for e in out["nftables"] if "table" in e)


def test_killed_mid_change_adopts_and_delete_leaves_nothing(
    site: tuple[Controller, Node, str, Any],
) -> None:
    ctl, node, netns, (images, port) = site
    node.start()
    device = node.wait_onboarded()
    ctl.set_config(device, config(images, port, "80"))

    def running() -> bool:
        status = node.status()
        return any(o.get("kind") == "app" and o.get("phase") == "RUNNING"
                   and o.get("interfaces") for o in status.get("owners", []))  # fmt: skip

    wait_for(running, 240, "the app running with its interface")
    before_links, before_tables = links(netns), tables(netns)
    (dnsmasq,) = _dnsmasq_pids(node.root)
    # bridge + vif; nat + filter + the source guard + the node firewall
    assert len(before_links) == 2 and len(before_tables) == 4
    assert "dport 80" in _ns(netns, "nft", "list", "ruleset")

    # An ACL change, and the agent killed while it applies it.
    ctl.set_config(device, config(images, port, "8080"))
    deadline = time.monotonic() + 60
    while "dport 8080" not in _ns(netns, "nft", "list", "ruleset"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert node.agent is not None
    node.agent.kill()
    node.start()
    wait_for(lambda: "dport 8080" in _ns(netns, "nft", "list", "ruleset") and running(), 120,
             "the change to land after the restart")  # fmt: skip
    time.sleep(3)  # a settled agent: nothing more should change
    assert links(netns) == before_links
    assert tables(netns) == before_tables
    assert _dnsmasq_pids(node.root) == [dnsmasq]  # adopted, not restarted

    # Delete: nothing is left in the node's namespace.
    ctl.set_config(device, {"configItems": FAST})
    wait_for(lambda: not links(netns) and not _dnsmasq_pids(node.root), 120,
             "the network instance to go")  # fmt: skip
    wait_for(lambda: not tables(netns), 30, "the firewall tables to go")


TCP_TRY = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()\n"
    "except OSError:\n"
    "    pass\n"
)


def test_flow_logs_reach_the_controller(site: tuple[Controller, Node, str, Any]) -> None:
    ctl, node, netns, (images, port) = site
    node.extra_args = ["--flowlog-interval", "2"]
    node.start()
    device = node.wait_onboarded()
    ctl.set_config(device, config(images, port, "80"))
    wait_for(lambda: any(o.get("kind") == "app" and o.get("phase") == "RUNNING"
                         and o.get("interfaces") for o in node.status().get("owners", [])),
             240, "the app running with its interface")  # fmt: skip
    # Somewhere to route to from the node's namespace: a veth pair whose far end answers
    # nothing, and connections nobody answers leave conntrack after 5 s (this namespace only;
    # longer than a sample: a flow born and gone between two samples is not seen).
    for argv in (
        ["ip", "link", "add", "fl0", "type", "veth", "peer", "name", "fl1"],
        ["ip", "addr", "add", "198.51.100.1/24", "dev", "fl0"],
        ["ip", "link", "set", "fl0", "up"],
        ["ip", "link", "set", "fl1", "up"],
        ["ip", "neigh", "add", "198.51.100.2", "lladdr", "02:00:00:00:00:99", "dev", "fl0"],
        ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_syn_sent=5"],
    ):
        subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, timeout=30)

    # The collector is on once it bound the firewall's NFLOG group in the namespace (its first
    # sample with the app's interface planned): traffic before that is not logged.
    def bound() -> bool:
        listing = _ns(netns, "cat", "/proc/net/netfilter/nfnetlink_log")
        return str(NFLOG_GROUP) in (line.split()[0] for line in listing.splitlines() if line)

    wait_for(bound, 30, "the flow collector to bind its NFLOG group")
    name = container_prefix(host_name(node.root)) + APP_CT
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", name],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    for fport in ("80", "81"):  # ACE 1 allows TCP 80; 81 meets the implicit drop
        subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", TCP_TRY,
                        "198.51.100.2", fport], check=True, timeout=30)  # fmt: skip
    # A name resolved through the instance's dnsmasq (its own): a dnsReqs record.
    subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "busybox", "nslookup", CT_NAME,
                    "10.66.0.1"], check=True, timeout=30, capture_output=True)  # fmt: skip

    def flows(what: str = "flows") -> list[dict[str, Any]]:
        out = []
        for line in ctl.json_lines("flowlog", device):
            message = line.get("message", {})
            scope = message.get("scope", {})
            if message.get("devId") == device and scope.get("uuid") == APP_CT:
                assert scope.get("netInstUUID") == NI and scope.get("intf") == "eth0"
                out += message.get(what, [])
        return out

    def both() -> bool:
        got = {(f["flow"].get("destPort"), f.get("action"), f.get("aclId", 0)) for f in flows()}
        return {(80, "ActionAccept", 1), (81, "ActionDrop", 0)} <= got

    wait_for(both, 90, "an allowed and a dropped flow in the controller's flow logs")
    wait_for(lambda: any(d.get("hostName") == CT_NAME and any(a.startswith("10.66.0.")
                                                              for a in d.get("addrs", []))
                         for d in flows("dnsReqs")),
             60, "the app's DNS request in the controller's flow logs")  # fmt: skip
    allowed = next(f for f in flows() if f["flow"].get("destPort") == 80)
    assert allowed["flow"]["dest"] == "198.51.100.2" and allowed["flow"]["protocol"] == 6
    assert allowed["flow"]["src"].startswith("10.66.0.") and int(allowed.get("txPkts", 0)) >= 1, (
        allowed
    )
    assert allowed["startTime"] and allowed["endTime"]
