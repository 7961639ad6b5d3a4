"""A container and a VM on one local network instance, end to end: our controller, the agent
process with its own network namespace (``--netns``), dockerd, libvirtd + QEMU and the local
registry (the ``site`` of test_networks_e2e).

The node's namespace has a port ``up`` (192.0.2.1/24, addressed by the test, for apps only)
to an "outside" namespace (192.0.2.2, a server on 8080 that answers with the caller's
address).  Both apps get their addresses by DHCP from the instance's dnsmasq (the VM by its
own client, the container from the agent), resolve each other by name there, reach the outside
through NAT (the outside sees the node's address), read their own metadata, and the container
fetches a page the VM serves.  The VM reports from inside: the test guest's network probe
(images/vm/net-probe.sh) prints each answer on its console.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import subprocess
from typing import Any

from agent.drivers.containers import container_prefix
from tests.e2e.harness import Controller, Node, wait_for
from tests.e2e.sample_apps import APP_CT, APP_VM, CT_NAME, VM_NAME, apps_config, host_name
from tests.e2e.test_networks_e2e import FAST, NI, site
from tests.integration.nshelpers import ASK, WHO

__all__ = ["site"]

NET = "7a1e5f0c-3b2d-4c8e-9f10-00000000e002"
GET = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read())"
ALLOW_ALL = [{"id": 1, "matches": [{"type": "ip", "value": "0.0.0.0/0"}]}]


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _outside(netns: str, outside: str, up: str) -> subprocess.Popen[bytes]:
    """The outside namespace behind the node's port ``up``; its server (returned)."""
    for argv in (
        ["ip", "netns", "add", outside],
        ["ip", "-n", outside, "link", "set", "lo", "up"],
        ["ip", "-n", netns, "link", "add", up, "type", "veth", "peer", "name", "o0", "netns",
         outside],
        ["ip", "-n", netns, "addr", "add", "192.0.2.1/24", "dev", up],
        ["ip", "-n", netns, "link", "set", up, "up"],
        ["ip", "-n", outside, "addr", "add", "192.0.2.2/24", "dev", "o0"],
        ["ip", "-n", outside, "link", "set", "o0", "up"],
    ):  # fmt: skip
        done = _sh(*argv)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    return subprocess.Popen(["ip", "netns", "exec", outside, "python3", "-c", WHO, "8080"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def config(images: Any, port: int, up: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"configItems": FAST, **apps_config(images, port)}
    doc["networks"] = [{"id": NET, "type": "V4", "ip": {"dhcp": "DHCPNone"}}]
    doc["deviceIoList"] = [
        {
            "ptype": "PhyIoNetEth",
            "phylabel": "up0",
            "logicallabel": "up0",
            "phyaddrs": {"ifname": up},
            "usage": "PhyIoUsageShared",
        }
    ]
    doc["systemAdapterList"] = [{"name": "up0", "lowerLayerName": "up0", "networkUUID": NET,
                                 "sharedLabels": ["out"]}]  # fmt: skip
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "lan",
        "instType": "ZnetInstLocal", "activate": True, "port": {"name": "out"},
        "ip": {"subnet": "10.66.0.0/24", "gateway": "10.66.0.1",
               "dhcpRange": {"start": "10.66.0.10", "end": "10.66.0.90"}},
    }]  # fmt: skip
    probes = (
        "#!/bin/sh\n# the test guest's network probe (images/vm/net-probe.sh)\n"
        "EVE_PROBE_SERVE=8080\n"
        f"EVE_PROBE_LOOKUP={CT_NAME}\n"
        "EVE_PROBE_TCP=192.0.2.2:8080\n"
        "EVE_PROBE_GET=http://169.254.169.254/eve/v1/network.json\n"
    )
    for app in doc["apps"]:
        app["interfaces"] = [{"name": "eth0", "networkId": NI, "acls": ALLOW_ALL}]
        if app["displayname"] == VM_NAME:
            app["userData"] = base64.b64encode(probes.encode()).decode()
    return doc


def _addresses(node: Node) -> dict[str, str]:
    """Each app's eth0 address as the node reports it (``eth0 <ip> on lan``)."""
    out = {}
    for owner in node.status().get("owners", []):
        for line in owner.get("interfaces") or ():
            found = re.match(r"eth0 (\d+\.\d+\.\d+\.\d+) on", line)
            if owner.get("kind") == "app" and found:
                out[owner.get("name", "")] = found.group(1)
    return out


def test_a_container_and_a_vm_on_one_instance(site: tuple[Controller, Node, str, Any]) -> None:
    ctl, node, netns, (images, port) = site
    outside, up = f"{netns}o", f"up{netns[-6:]}"
    server = _outside(netns, outside, up)
    try:
        node.start()
        device = node.wait_onboarded()
        ctl.set_config(device, config(images, port, up))

        def running() -> dict[str, str] | None:
            phases = {o.get("name"): o.get("phase") for o in node.status().get("owners", [])
                      if o.get("kind") == "app"}  # fmt: skip
            both = phases.get(VM_NAME) == phases.get(CT_NAME) == "RUNNING"
            found = _addresses(node)
            return found if both and len(found) == 2 else None

        found = wait_for(running, 300, "both apps running with their addresses")
        vm_ip, ct_ip = found[VM_NAME], found[CT_NAME]
        assert vm_ip != ct_ip and vm_ip.startswith("10.66.0.") and ct_ip.startswith("10.66.0.")

        # The VM, from inside: its DHCP lease, the container's name, the outside (NATed) and
        # its own metadata.
        consoles = list((node.root / "run" / "domains").glob("*/console.log"))

        def console() -> str:
            return "".join(p.read_text(errors="replace") for p in consoles if p.exists())

        wait_for(lambda: "probe done" in console() or "probe gave up" in console(), 240,
                 "the VM's network probe")  # fmt: skip
        text = console()
        assert "probe done" in text, text[-3000:]
        assert f"eth0 {vm_ip}/24 via 10.66.0.1 (DHCP)" in text
        assert f"probe lookup {CT_NAME} = {ct_ip}" in text
        assert "probe tcp 192.0.2.2:8080 = 192.0.2.1" in text  # NAT: the node's port
        meta = re.search(r"probe get http://169.254.169.254/eve/v1/network.json = (.*)", text)
        assert meta is not None and APP_VM in meta.group(1) and vm_ip in meta.group(1)

        # The container, from its namespace (the host's tools): the VM's name, the VM's page,
        # the outside through NAT, its own metadata.
        pid = _sh("docker", "inspect", "-f", "{{.State.Pid}}", _container(node)).stdout.strip()
        enter = ["nsenter", f"--net=/proc/{pid}/ns/net"]
        lookup = _sh(*enter, "busybox", "nslookup", VM_NAME, "10.66.0.1")
        assert vm_ip in lookup.stdout, lookup.stdout + lookup.stderr
        page = _sh(*enter, "python3", "-c", GET, f"http://{vm_ip}:8080/")
        assert "answers" in page.stdout, page
        who = _sh(*enter, "python3", "-c", ASK, "192.0.2.2", "8080")
        assert who.returncode == 0 and who.stdout.strip() == "192.0.2.1", who
        md = _sh(*enter, "python3", "-c", GET, "http://169.254.169.254/eve/v1/network.json")
        assert md.returncode == 0, md
        doc = json.loads(ast.literal_eval(md.stdout.strip()).decode())
        assert doc["app-instance-uuid"] == APP_CT and doc["caller-ip"].startswith(ct_ip)

        # The controller has both addresses too (the apps' info: ZInfoApp.network).
        def in_app_info() -> bool:
            infos = [json.dumps(r.get("message", {})) for r in ctl.json_lines("info", device)]
            apps = [i for i in infos if '"ainfo"' in i]
            return any(vm_ip in i for i in apps) and any(ct_ip in i for i in apps)

        wait_for(in_app_info, 60, "both addresses in the apps' info at the controller")
    finally:
        server.kill()
        server.wait()
        _sh("ip", "netns", "del", outside)


def _container(node: Node) -> str:
    return container_prefix(host_name(node.root)) + APP_CT
