"""A container app on a switch network instance, on the real kernel, dockerd and an outside
DHCP server (root; every namespace made here).

The node's namespace (the ``site`` fixture of test_networks_real) bridges its port to an
"outside" namespace whose dnsmasq hands out 192.0.2.100-150 with 192.0.2.1 as router and DNS
server (it answers ``outside.test``) and whose servers listen on 8080, 9090.  The agent asks
for the container's lease in its namespace (busybox udhcpc run once there) and applies it, and
its DNS server becomes the container's; the switch instance's ACL chains (reached by
the app's MAC: bridged packets, bridge netfilter) let through what the ACEs allow, both ways,
and drop the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from agent.reconcile.node import NodeReconciler
from tests.integration.nshelpers import ASK, WHO, ask, serve_who
from tests.integration.test_networks_real import NI, _container_doc, _in_ns, _netns, site
from tests.unit.workload_env import APP_CT, Env

__all__ = ["site"]


def _outside(node_ns: str, outside: str, up: str, leases: Path) -> subprocess.Popen[bytes]:
    """The outside namespace behind the node's port ``up``, its DHCP server (returned)."""
    _netns("add", outside)
    run = ["ip", "-n", node_ns]
    subprocess.run([*run, "link", "add", up, "type", "veth", "peer", "name", "o0", "netns",
                    outside], check=True, capture_output=True)  # fmt: skip
    subprocess.run([*run, "link", "set", up, "up"], check=True)
    out = ["ip", "-n", outside]
    subprocess.run([*out, "addr", "add", "192.0.2.1/24", "dev", "o0"], check=True)
    subprocess.run([*out, "link", "set", "o0", "up"], check=True)
    subprocess.run([*out, "link", "set", "lo", "up"], check=True)
    return subprocess.Popen([
        "ip", "netns", "exec", outside, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
        "--port=53", "--interface=o0", "--bind-interfaces", "--no-ping", "--pid-file=",
        f"--dhcp-leasefile={leases}", "--dhcp-range=192.0.2.100,192.0.2.150,1h",
        "--dhcp-option=option:dns-server,192.0.2.1", "--address=/outside.test/192.0.2.7",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _switch_doc(env: Env, up: str) -> dict[str, Any]:
    doc = _container_doc(env)
    doc["deviceIoList"] = [{
        "ptype": "PhyIoNetEth", "phylabel": "sw0", "logicallabel": "sw0",
        "phyaddrs": {"ifname": up}, "usage": "PhyIoUsageShared",
    }]  # fmt: skip
    doc["systemAdapterList"] = [{"name": "sw0"}]
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "sw",
        "instType": "ZnetInstSwitch", "activate": True, "port": {"name": "sw0"},
    }]  # fmt: skip
    # Outbound to 8080 outside; inbound to the app's 8000 (EVE's ACEs work both ways there).
    acls = [
        {"id": 1, "matches": [{"type": "ip", "value": "192.0.2.0/24"},
                              {"type": "protocol", "value": "tcp"},
                              {"type": "fport", "value": "8080"}]},
        {"id": 2, "matches": [{"type": "protocol", "value": "tcp"},
                              {"type": "lport", "value": "8000"}]},
    ]  # fmt: skip
    doc["apps"][0]["interfaces"] = [{"name": "eth0", "networkId": NI, "acls": acls}]
    return doc


async def _wait(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await predicate()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_container_on_a_switch_instance(
    site: tuple[Env, NodeReconciler, str], tmp_path: Path
) -> None:
    env, rec, node_ns = site
    outside, up = f"{node_ns}s", f"sw{node_ns[-6:]}"
    procs: list[subprocess.Popen[bytes]] = []
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        procs.append(await asyncio.to_thread(_outside, node_ns, outside, up, tmp_path / "leases"))
        for port in (8080, 9090):
            procs.append(await asyncio.to_thread(serve_who, outside, port))
        assert await rec.apply(env.config(_switch_doc(env, up)), 120), rec.report
        nets = rec.networks
        assert nets is not None and nets.leases is not None and rec.layout is not None
        leases = nets.leases
        task = asyncio.create_task(leases.run(lambda: nets.dhcp_vifs(rec.engine.actual), stop))

        async def leased() -> str:
            return leases.address(APP_CT, 0)[0]

        address = await _wait(leased, 60, "the container's lease")
        assert address.startswith("192.0.2.1")
        state = await env.containers.inspect(APP_CT)
        assert state.pid is not None
        pid = state.pid
        shown = _in_ns(pid, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert f"inet {address}/24" in shown, shown
        assert "via 192.0.2.1 dev eth0" in _in_ns(pid, "ip", "route", "show", "default").stdout
        # The lease's DNS server is the container's: it resolves an outside name through it.
        resolv = Path(f"/proc/{pid}/root/etc/resolv.conf")

        def told() -> bool:
            return "nameserver 192.0.2.1" in resolv.read_text()

        await _wait(lambda: asyncio.to_thread(told), 30, "the lease's DNS server")
        looked = await asyncio.to_thread(subprocess.run, [
            "nsenter", "-t", str(pid), "-m", "-n", "/bin/busybox", "nslookup", "outside.test",
        ], capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert "192.0.2.7" in looked.stdout, looked.stdout + looked.stderr
        # Out: 8080 as ACE 1 allows, with the app's own address (bridged, no NAT); 9090 not.
        who = await asyncio.to_thread(_in_ns, pid, "python3", "-c", ASK, "192.0.2.1", "8080")
        assert who.returncode == 0 and who.stdout.strip() == address, who
        denied = await asyncio.to_thread(_in_ns, pid, "python3", "-c", ASK, "192.0.2.1", "9090")
        assert denied.returncode != 0
        # In: the outside reaches the app's 8000 (ACE 2), not its 8001.
        for port in (8000, 8001):
            procs.append(await asyncio.to_thread(
                subprocess.Popen, ["nsenter", f"--net=/proc/{pid}/ns/net", "python3", "-c", WHO,
                                   str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        await asyncio.sleep(0.5)
        inbound = await asyncio.to_thread(ask, outside, address, 8000)
        assert inbound.returncode == 0 and inbound.stdout.strip() == "192.0.2.1", inbound
        assert (await asyncio.to_thread(ask, outside, address, 8001)).returncode != 0
        # Counters count both ways; the report carries the address.
        (drops,) = (await nets.acl_drops(rec.layout))[APP_CT]
        assert drops.tx > 0 and drops.rx > 0
        (vif,) = {(o.kind, o.id): o for o in rec.owners()}[("app", APP_CT)].vifs
        assert (vif.ip, vif.gateway) == (address, "192.0.2.1")
        # The outside's server knows the lease under the app's MAC and name.
        known = (tmp_path / "leases").read_text()
        assert address in known and rec.layout.vifs[(APP_CT, 0)].mac in known
        assert "ct-app" in known

        # Delete: no link left; the lease's record goes.
        empty = env.document(networkInstances=[], apps=[], volumes=[], contentInfo=[],
                             datastores=[])  # fmt: skip
        assert await rec.apply(env.config(empty), 60)
        assert await nets.netlink.list_owned() == []
        await leases.sync(nets.dhcp_vifs(rec.engine.actual))
        assert leases.address(APP_CT, 0) == ("", "")
    finally:
        stop.set()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        for proc in procs:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", outside], check=False,
                                capture_output=True)  # fmt: skip
