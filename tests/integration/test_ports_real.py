"""The node's port on the real kernel: DHCP, a bad static config the agent backs out of by
itself, a good static config; and the probe that decides.

Two network namespaces made by the test (``ptt<hex>-node`` and ``ptt<hex>-out``) joined by a
veth: ``eth0`` is the node's port, ``o0`` (10.88.0.1/24) the outside's, where dnsmasq (run by
the test) is the DHCP server (10.88.0.100-150, router 10.88.0.1) and a TCP listener on
10.89.0.1:8443 stands in for the controller, reached through the default route.  The node
reconciler runs with the real netlink, udhcpc and probe drivers in the node's namespace.  An
address someone else put on ``eth0`` (192.0.2.9/32) must survive everything.  Teardown stops
the clients, dnsmasq and the listener and removes the namespaces and files, also when the test
failed; nothing in the root namespace is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agent.drivers.dhcpclient import DhcpClientDriver
from agent.drivers.docker_fake import FakeContainerRuntime
from agent.drivers.netlink import NetlinkDriver
from agent.drivers.netprobe import TcpProber
from agent.model.config import from_proto
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.engine import EngineSettings
from agent.reconcile.networks import Networks
from agent.reconcile.node import NodeReconciler
from agent.reconcile.portconfig import PortConfigurator
from agent.reconcile.portselect import PortManager, fingerprint
from agent.reconcile.records import RecordBook
from controller.configs import config_from_document
from tests.integration.prereqs import netns_missing
from tests.integration.test_dhcpclient_contract import start_dhcp_server

DEVICE = "9e0c9e0c-0000-4000-8000-000000000001"
NET_DHCP = "9e0c9e0c-0000-4000-8000-0000000000a1"
NET_STATIC = "9e0c9e0c-0000-4000-8000-0000000000a2"
POOL = IPv4Network("10.88.0.0/24")
CONTROLLER = ("10.89.0.1", 8443)
FOREIGN = "192.0.2.9/32"


@dataclass
class Site:
    node: str
    out: str
    root: Path


def _ip(*argv: str) -> str:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=20, check=True)
    return done.stdout


def _plumb(node: str, out: str) -> None:
    _ip("-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "o0", "netns", out)
    _ip("-n", node, "link", "set", "lo", "up")
    _ip("-n", node, "addr", "add", FOREIGN, "dev", "eth0")  # someone else's; eth0 stays down
    _ip("-n", out, "link", "set", "lo", "up")
    _ip("-n", out, "addr", "add", "10.89.0.1/32", "dev", "lo")
    _ip("-n", out, "addr", "add", "10.88.0.1/24", "dev", "o0")
    _ip("-n", out, "link", "set", "o0", "up")


def _listen_in(netns: str, address: tuple[str, int], stop: threading.Event) -> threading.Thread:
    """A TCP listener in ``netns`` that accepts and closes every connection (the controller)."""
    ready: list[socket.socket | BaseException] = []

    def serve() -> None:
        try:
            from pyroute2 import netns as pnetns

            pnetns.setns(f"/run/netns/{netns}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(16)
            sock.settimeout(0.1)
        except (OSError, ValueError) as exc:
            ready.append(exc)
            return
        ready.append(sock)
        with sock:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    conn, _ = sock.accept()
                    conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    while not ready:
        time.sleep(0.01)
    if isinstance(ready[0], BaseException):
        raise ready[0]
    return thread


@pytest.fixture
async def site(require_service: Callable[[str, str], NoReturn]) -> AsyncIterator[Site]:
    missing = netns_missing({"ip": "iproute2", "dnsmasq": "dnsmasq-base",
                             "busybox": "busybox-static", "nsenter": "util-linux"})  # fmt: skip
    if missing is not None:
        require_service("ports in network namespaces", missing)
    tag = uuid.uuid4().hex[:8]
    node, out = f"ptt{tag}-node", f"ptt{tag}-out"
    root = Path(tempfile.mkdtemp(prefix=f"evports-{tag}-", dir="/var/tmp"))
    made: list[str] = []
    stop = threading.Event()
    server: subprocess.Popen[bytes] | None = None
    listener: threading.Thread | None = None
    try:
        for name in (node, out):
            await asyncio.to_thread(_ip, "netns", "add", name)
            made.append(name)
        await asyncio.to_thread(_plumb, node, out)
        server = await asyncio.to_thread(start_dhcp_server, out, "o0", root)
        listener = await asyncio.to_thread(_listen_in, out, CONTROLLER, stop)
        yield Site(node, out, root)
    finally:
        stop.set()
        if listener is not None:
            await asyncio.to_thread(listener.join, 5)
        if server is not None:
            server.terminate()
            await asyncio.to_thread(server.wait, 10)
        for name in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                await asyncio.to_thread(_ip, "netns", "del", name)
        shutil.rmtree(root, ignore_errors=True)
        leftover = [n for n in os.listdir("/run/netns") if n.startswith(f"ptt{tag}")]
        assert not leftover, f"namespaces left behind: {leftover}"


def document(version: str, adapter: dict[str, Any], *networks: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": {"uuid": DEVICE, "version": version},
        "configItems": [{"key": "timer.port.testduration", "value": "10"},
                        {"key": "timer.port.timeout", "value": "2"}],
        "deviceIoList": [{"ptype": "PhyIoNetEth", "phylabel": "eth0", "logicallabel": "eth0",
                          "phyaddrs": {"ifname": "eth0"}, "usage": "PhyIoUsageMgmtAndApps"}],
        "networks": [{"id": NET_DHCP, "type": "V4", "ip": {"dhcp": "Client"}}, *networks],
        "systemAdapterList": [adapter],
    }  # fmt: skip


def dhcp(version: str) -> dict[str, Any]:
    return document(version, {"name": "eth0", "networkUUID": NET_DHCP})


def static(version: str, addr: str, subnet: str, gateway: str) -> dict[str, Any]:
    net = {"id": NET_STATIC, "type": "V4",
           "ip": {"dhcp": "Static", "subnet": subnet, "gateway": gateway}}  # fmt: skip
    return document(version, {"name": "eth0", "networkUUID": NET_STATIC, "addr": addr}, net)


async def eventually(check: Callable[[], Any], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, f"not in {within} s: {what}"
        await asyncio.sleep(0.1)


async def eth0(netns: str) -> tuple[set[IPv4Interface], list[str]]:
    """eth0's IPv4 addresses and the default routes of the namespace."""
    shown = await asyncio.to_thread(_ip, "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0")
    addresses = {IPv4Interface(line.split()[3]) for line in shown.splitlines() if " inet " in line}
    routes = await asyncio.to_thread(_ip, "-n", netns, "-4", "route", "show", "default")
    return addresses, [r.strip() for r in routes.splitlines() if r.strip()]


def leased(addresses: set[IPv4Interface]) -> bool:
    return any(a.network == POOL and 100 <= int(a.ip.packed[3]) <= 150 for a in addresses)


async def test_dhcp_bad_static_fallback_good_static(site: Site) -> None:
    node = "ports-real"
    netlink = NetlinkDriver(node, site.node)
    dhcp_driver = DhcpClientDriver(node, site.root / "dhcp", netns=site.node)
    prober = TcpProber(site.node)
    records = RecordBook(site.root / "net")
    runtime = RuntimeItems()
    manager = PortManager(
        PortConfigurator(netlink, dhcp_driver, records), prober,
        site.root / "net" / "portconfig.json", lambda: runtime.current, lambda: CONTROLLER,
    )  # fmt: skip
    nets = Networks(netlink, FakeContainerRuntime(node), records)
    rec = NodeReconciler(runtime, networks=nets, ports=manager,
                         settings=EngineSettings(resync_interval=3600))  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(rec.run(stop))

    def committed(doc: dict[str, Any]) -> Callable[[], bool]:
        fp = fingerprint(from_proto(config_from_document(doc)).ports)
        last = manager.selection

        return lambda: last.last_working is not None and fingerprint(last.last_working) == fp

    def device_errors() -> list[str]:
        return [m for o in rec.owners() if o.kind == "device" for m, _ in o.errors]

    try:
        # DHCP: the leased address and the default route (the agent's protocol), committed.
        first = dhcp("1")
        await rec.accept(from_proto(config_from_document(first)))
        await eventually(committed(first), 30, "the DHCP config committed")
        addresses, routes = await eth0(site.node)
        assert leased(addresses) and IPv4Interface(FOREIGN) in addresses, addresses
        assert any("via 10.88.0.1 dev eth0 proto 207" in r for r in routes), routes
        first_lease = {a for a in addresses if a.network == POOL}

        # A static address on a network the controller is not on: the test fails, the agent
        # goes back to DHCP by itself and reports why.
        bad = static("2", "10.66.0.5", "10.66.0.0/24", "10.66.0.1")
        await rec.accept(from_proto(config_from_document(bad)))
        await eventually(lambda: device_errors(), 30, "the failed test reported")
        (error,) = device_errors()
        assert "config 2 failed its test" in error and "10.89.0.1:8443 not reached" in error

        async def dhcp_again() -> bool:
            addresses, routes = await eth0(site.node)
            return (leased(addresses) and IPv4Interface("10.66.0.5/24") not in addresses
                    and any("via 10.88.0.1 dev eth0" in r for r in routes))  # fmt: skip

        await eventually(dhcp_again, 20, "the DHCP address back")
        addresses, routes = await eth0(site.node)
        assert IPv4Interface(FOREIGN) in addresses and not any("10.66.0.1" in r for r in routes)
        assert {a for a in addresses if a.network == POOL} == first_lease  # dnsmasq remembers
        assert manager.selection.last_working is not None
        assert fingerprint(manager.selection.last_working) == fingerprint(
            from_proto(config_from_document(first)).ports
        )

        # A static address that works: committed, the DHCP client gone with its lease.
        good = static("3", "10.88.0.20", "10.88.0.0/24", "10.88.0.1")
        await rec.accept(from_proto(config_from_document(good)))
        await eventually(committed(good), 30, "the good static config committed")
        await rec.engine.settle(10)
        addresses, routes = await eth0(site.node)
        assert addresses == {IPv4Interface("10.88.0.20/24"), IPv4Interface(FOREIGN)}, addresses
        assert any("via 10.88.0.1 dev eth0 proto 207" in r for r in routes), routes
        assert await dhcp_driver.list_owned() == [] and device_errors() == []
    finally:
        stop.set()
        await task
        for state in await dhcp_driver.list_owned():
            await dhcp_driver.stop(state.ifname)
        await prober.close()
        await netlink.close()


async def test_the_probe(site: Site) -> None:
    """A connection, a refusal (the host is there: reached), and silence (not reached)."""
    await asyncio.to_thread(_ip, "-n", site.node, "addr", "add", "10.88.0.7/24", "dev", "eth0")
    await asyncio.to_thread(_ip, "-n", site.node, "link", "set", "eth0", "up")
    await asyncio.to_thread(_ip, "-n", site.node, "route", "add", "default", "via", "10.88.0.1")
    prober = TcpProber(site.node)
    try:
        ok = await prober.reach(*CONTROLLER, within=3)
        assert ok.ok and "connected" in ok.detail
        refused = await prober.reach(CONTROLLER[0], 8444, within=3)
        assert refused.ok and "refused" in refused.detail
        started = time.monotonic()
        silent = await prober.reach("10.88.0.77", 8443, within=1)
        assert not silent.ok and time.monotonic() - started < 3.5, silent
    finally:
        await prober.close()
