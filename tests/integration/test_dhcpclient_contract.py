"""One contract for both DHCP client drivers: FakeDhcpClient and DhcpClientDriver running
busybox udhcpc.

The real half runs as root in two network namespaces the test makes, named ``dht<hex>-...``:
``node`` holds ``port0`` (the port, as the agent's driver sees it), joined by a veth to
``srv0`` in ``srv`` (10.88.0.1/24), where dnsmasq (run by the test, in the foreground) hands out
10.88.0.100-150 with router 10.88.0.1 and DNS server 10.88.0.53.  Teardown stops the clients
and dnsmasq and removes the namespaces and files, also when the test failed; nothing in the
root namespace is touched.  Without root, namespaces, dnsmasq, busybox or nsenter the real
half fails when services are required (CI, ``make test``) and skips otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agent.drivers.dhcpclient import DhcpClient, DhcpClientDriver, Lease
from agent.drivers.dhcpclient_fake import FakeDhcpClient, FakeDhcpNetwork
from agent.drivers.errors import PermanentError, TemporaryError
from agent.drivers.netlink_fake import FakeNetworkHost
from tests.integration.prereqs import netns_missing

NODE = "dhcp-contract"
POOL = IPv4Network("10.88.0.0/24")
ROUTER, DNS = IPv4Address("10.88.0.1"), IPv4Address("10.88.0.53")


@dataclass
class Env:
    kind: str
    driver: DhcpClient
    #: The same node's driver after an agent restart.
    new_driver: Callable[[], DhcpClient]
    #: The port's client dies (SIGKILL).
    kill: Callable[[int], Awaitable[None]]
    alive: Callable[[int], bool]
    #: Real only: the node's namespace.
    netns: str | None = None


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _plumb(node: str, srv: str) -> None:
    from pyroute2 import NetNS

    with NetNS(node) as ipr:
        ipr.link("add", ifname="port0", kind="veth", peer={"ifname": "srv0", "net_ns_fd": srv})
        for name in ("lo", "port0"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
    with NetNS(srv) as ipr:
        for name in ("lo", "srv0"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        ipr.addr("add", index=ipr.link_lookup(ifname="srv0")[0], address="10.88.0.1", prefixlen=24)


def dhcp_server_argv(netns: str, ifname: str, root: Path) -> list[str]:
    """dnsmasq as the DHCP server on ``ifname`` (10.88.0.1/24) of ``netns`` (no DNS), in the
    foreground, as root, its files in ``root``, without its ping check of new addresses (it
    holds every first offer for 3 s)."""
    return ["nsenter", f"--net=/run/netns/{netns}", "dnsmasq", "--keep-in-foreground",
            "--conf-file=/dev/null", "--port=0", f"--interface={ifname}", "--bind-interfaces",
            "--dhcp-range=10.88.0.100,10.88.0.150,255.255.255.0,120",
            f"--dhcp-option=3,{ROUTER}", f"--dhcp-option=6,{DNS}", "--user=root",
            f"--dhcp-leasefile={root / 'leases'}", f"--pid-file={root / 'dnsmasq.pid'}",
            f"--log-facility={root / 'dnsmasq.log'}", "--log-dhcp",
            "--no-ping"]  # fmt: skip


def start_dhcp_server(netns: str, ifname: str, root: Path) -> subprocess.Popen[bytes]:
    """:func:`dhcp_server_argv` started (the caller terminates it)."""
    return subprocess.Popen(dhcp_server_argv(netns, ifname, root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(params=["fake", "real"])
async def env(
    request: pytest.FixtureRequest, require_service: Callable[[str, str], NoReturn]
) -> AsyncIterator[Env]:
    if request.param == "fake":
        host = FakeNetworkHost()
        host.add_link(None, "port0", None)
        net = FakeDhcpNetwork(host)
        net.serve("port0", Lease(IPv4Interface("10.88.0.120/24"), (ROUTER,), (DNS,), 120))

        async def fake_kill(pid: int) -> None:
            for ifname, running in list(net.clients.items()):
                if running == pid:
                    net.crash(ifname)

        def fake_alive(pid: int) -> bool:
            return pid in net.clients.values()

        yield Env("fake", FakeDhcpClient(net, NODE), lambda: FakeDhcpClient(net, NODE),
                  fake_kill, fake_alive)  # fmt: skip
        return

    missing = netns_missing({"dnsmasq": "dnsmasq-base", "busybox": "busybox-static",
                             "nsenter": "util-linux"})  # fmt: skip
    if missing is not None:
        require_service("udhcpc in network namespaces", missing)
    from pyroute2 import netns

    tag = uuid.uuid4().hex[:8]
    node, srv = f"dht{tag}-node", f"dht{tag}-srv"
    root = Path(tempfile.mkdtemp(prefix=f"evdhcp-{tag}-", dir="/var/tmp"))
    made: list[str] = []
    server: subprocess.Popen[bytes] | None = None
    drivers: list[DhcpClientDriver] = []

    def driver() -> DhcpClientDriver:
        d = DhcpClientDriver(NODE, root / "run", netns=node)
        drivers.append(d)
        return d

    async def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        for d in drivers:
            await d.list_owned()  # reaps its children

        async def gone() -> bool:
            return not _alive(pid)

        await eventually(gone, 5)

    try:
        for name in (node, srv):
            await asyncio.to_thread(netns.create, name)
            made.append(name)
        await asyncio.to_thread(_plumb, node, srv)
        server = await asyncio.to_thread(start_dhcp_server, srv, "srv0", root)
        yield Env("real", driver(), driver, kill, _alive, node)
    finally:
        for d in drivers:
            for state in await d.list_owned():
                with contextlib.suppress(Exception):
                    await d.stop(state.ifname)
        if server is not None:
            server.terminate()
            await asyncio.to_thread(server.wait, 10)
        for name in made:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(netns.remove, name)
        shutil.rmtree(root, ignore_errors=True)
        leftover = [n for n in os.listdir("/run/netns") if n.startswith(f"dht{tag}")]
        assert not leftover, f"namespaces left behind: {leftover}"


async def lease_of(drv: DhcpClient) -> Lease:
    """The port's lease, once it has one."""
    found = await eventually(lambda: drv.lease("port0"))
    assert isinstance(found, Lease)
    return found


async def test_a_client_learns_its_lease_and_configures_nothing(env: Env) -> None:
    drv = env.driver
    assert await drv.lease("port0") is None and await drv.list_owned() == []
    state = await drv.ensure("port0")
    assert state.started and env.alive(state.pid)
    lease = await lease_of(drv)
    assert lease.address.network == POOL and lease.address.ip in POOL
    assert lease.routers == (ROUTER,) and lease.dns == (DNS,) and lease.lease_time == 120
    assert abs(lease.obtained - time.time()) < 30 and not lease.expired(time.time())
    again = await drv.ensure("port0")
    assert (again.pid, again.started) == (state.pid, False)
    assert [(s.ifname, s.pid) for s in await drv.list_owned()] == [("port0", state.pid)]
    if env.netns is not None:  # the script only wrote the lease down: the port has no address
        argv = ["ip", "-n", env.netns, "-4", "-o", "addr", "show", "dev", "port0"]
        shown = (await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                         check=True)).stdout  # fmt: skip
        assert "inet " not in shown


async def test_a_restarted_agent_adopts_the_client(env: Env) -> None:
    state = await env.driver.ensure("port0")
    first = await lease_of(env.driver)
    other = env.new_driver()
    assert [(s.ifname, s.pid) for s in await other.list_owned()] == [("port0", state.pid)]
    assert await other.lease("port0") == first
    again = await other.ensure("port0")
    assert (again.pid, again.started) == (state.pid, False)


async def test_a_dead_client_is_started_again(env: Env) -> None:
    state = await env.driver.ensure("port0")
    await lease_of(env.driver)
    await env.kill(state.pid)
    assert await env.driver.lease("port0") is None  # a dead client renews nothing
    assert await env.driver.list_owned() == []
    again = await env.driver.ensure("port0")
    assert again.started and again.pid != state.pid
    assert (await lease_of(env.driver)).routers == (ROUTER,)


async def test_stop_is_idempotent(env: Env) -> None:
    state = await env.driver.ensure("port0")
    await lease_of(env.driver)
    await env.driver.stop("port0")
    assert not env.alive(state.pid)
    assert await env.driver.list_owned() == [] and await env.driver.lease("port0") is None
    await env.driver.stop("port0")
    await env.driver.stop("nothere0")


async def test_a_missing_port_or_a_bad_name(env: Env) -> None:
    with pytest.raises(TemporaryError, match="exited at once"):
        await env.driver.ensure("nothere0")
    assert await env.driver.list_owned() == []
    for bad in ("../etc", "a/b", "", "x" * 16, "-x"):
        with pytest.raises(PermanentError):
            await env.driver.ensure(bad)
