"""One contract for both dnsmasq drivers: FakeDnsmasq and DnsmasqDriver running dnsmasq.

Every contract test runs twice.  The real half runs as root in network namespaces the test
makes with pyroute2, named ``evd<hex>-...``:

- ``node``: bridges ``br0`` (10.77.0.1/24), ``br1`` (10.78.0.1/24) and ``br2`` (no address),
  an nft set ``inet evetest allow4``, and ``up0`` (10.99.0.1/24) towards ``up``;
- ``cli``: two veths on ``br0``: ``eth0`` (CLIENT_MAC, 10.77.0.250/24, the DNS client's) and
  ``eth1`` (OTHER_MAC, no address); DHCP is busybox ``udhcpc`` in this namespace;
- ``up``: ``eth0`` (10.99.0.2/24) where the test's own DNS server answers :data:`UPSTREAM`.

DNS queries are UDP sockets the test opens inside a namespace (a thread that ``setns``-es
first).  Teardown kills every dnsmasq whose command line names the test's directory, removes
the namespaces and the directory, also when the test failed; nothing in the root namespace is
touched.  The fake half emulates clients with :meth:`FakeDnsmasq.serve_dhcp` and
:meth:`FakeDnsmasq.resolve`.  Without root, namespaces, dnsmasq, nsenter, busybox, nft or
pyroute2 the real half fails when services are required (CI, ``make test``) and skips
otherwise; the fake half always runs.  A few tests are real only (addresses, files, pids).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import grp
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from agent.drivers.dnsmasq import (
    Change,
    Dnsmasq,
    DnsmasqConfig,
    DnsmasqDriver,
    DnsmasqState,
    HostRecord,
    NftSet,
    NftsetRule,
    Route,
    StaticHost,
)
from agent.drivers.dnsmasq_fake import FakeDnsmasq, FakeDnsmasqHost
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from tests.integration.conftest import service_missing
from tests.integration.prereqs import netns_missing

A = IPv4Address
NODE = "dnsmasq-contract"
GATEWAY, SUBNET = A("10.77.0.1"), IPv4Network("10.77.0.0/24")
RANGE = (A("10.77.0.10"), A("10.77.0.20"))
CLIENT_MAC, OTHER_MAC = "02:00:00:00:00:42", "02:00:00:00:00:43"
CLIENT_IP = "10.77.0.250"  # eth0's own, for DNS queries; outside the range
UPSTREAM_IP = A("10.99.0.2")
#: What the upstream server answers (the fake's upstream "internet" too).
UPSTREAM: dict[str, list[IPv4Address]] = {
    "www.example.com": [A("192.0.2.77")],
    "other.example.org": [A("198.51.100.9")],
}
NFT_RULESET = "table inet evetest { set allow4 { type ipv4_addr; }; }\n"
ALLOW4 = NftSet("evetest", "allow4")
REFUSAL = "dnsmasq: bad option at line 1"


def config(bridge: str = "br0", **changes: Any) -> DnsmasqConfig:
    base: dict[str, Any] = {
        "instance_id": uuid.uuid5(uuid.NAMESPACE_DNS, bridge),
        "bridge": bridge,
        "gateway": GATEWAY,
        "subnet": SUBNET,
        "dhcp_range": RANGE,
        "lease_time": 300,
    }
    if bridge == "br1":
        base |= {
            "gateway": A("10.78.0.1"),
            "subnet": IPv4Network("10.78.0.0/24"),
            "dhcp_range": (A("10.78.0.10"), A("10.78.0.20")),
        }
    return DnsmasqConfig(**(base | changes))


@dataclass(frozen=True)
class Offer:
    """What a DHCP client got: its address and (real half) the options, as udhcpc names them."""

    ip: IPv4Address
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Env:
    kind: str
    driver: Dnsmasq
    #: The same node's driver after an agent restart.
    new_driver: Callable[[], Dnsmasq]
    #: A driver whose dnsmasq refuses every configuration.
    refusing_driver: Callable[[], Dnsmasq]
    #: A DHCP exchange on br0 by the client with that MAC (and host name); None: no lease.
    dhcp: Callable[[uuid.UUID, str, str | None], Awaitable[Offer | None]]
    #: The IPv4 answers of the instance's DNS to a query from the client.
    query: Callable[[uuid.UUID, str], Awaitable[list[IPv4Address]]]
    #: The elements of ``inet evetest allow4`` in the node's namespace.
    nft_elements: Callable[[], Awaitable[set[IPv4Address]]]
    #: Kill the instance's process (its files stay).
    crash: Callable[[uuid.UUID], Awaitable[None]]
    alive: Callable[[int], bool]
    run_dir: Path
    fake: FakeDnsmasq | None = None


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- the fake half -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_env(tmp_path: Path) -> AsyncIterator[Env]:
    host = FakeDnsmasqHost(bridges={"br0", "br1", "br2"})
    host.upstream = {name: list(addrs) for name, addrs in UPSTREAM.items()}
    run_dir = tmp_path / "dnsmasq"
    fake = FakeDnsmasq(host, NODE, run_dir)

    async def dhcp(instance: uuid.UUID, mac: str, hostname: str | None) -> Offer | None:
        lease = fake.serve_dhcp(instance, mac, hostname)
        return None if lease is None else Offer(lease.ip)

    async def query(instance: uuid.UUID, name: str) -> list[IPv4Address]:
        return [a for a in fake.resolve(instance, name) if isinstance(a, IPv4Address)]

    async def nft_elements() -> set[IPv4Address]:
        found = host.nft_sets.get(("inet", "evetest", "allow4"), set())
        return {a for a in found if isinstance(a, IPv4Address)}

    async def crash(instance: uuid.UUID) -> None:
        fake.crash(instance)

    def alive(pid: int) -> bool:
        return any(inst.pid == pid for inst in host.instances.values())

    yield Env(
        kind="fake",
        driver=fake,
        new_driver=lambda: FakeDnsmasq(host, NODE, run_dir),
        refusing_driver=lambda: FakeDnsmasq(host, NODE, run_dir, refuse=REFUSAL),
        dhcp=dhcp,
        query=query,
        nft_elements=nft_elements,
        crash=crash,
        alive=alive,
        run_dir=run_dir,
        fake=fake,
    )


# --- the real half: namespaces, a DHCP client, DNS over sockets ---------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _real_missing() -> str | None:
    return netns_missing({"dnsmasq": "dnsmasq-base", "nsenter": "util-linux",
                          "busybox": "busybox-static", "nft": "nftables"})  # fmt: skip


def socket_in(netns: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket of the namespace ``netns``: made by a thread that entered it (setns changes
    only the calling thread's namespace; a socket keeps the one it was made in)."""
    made: list[socket.socket | Exception] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, kind))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            made.append(exc)

    thread = threading.Thread(target=enter_and_make)
    thread.start()
    thread.join()
    if isinstance(made[0], Exception):
        raise made[0]
    return made[0]


def _question(qid: int, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)
    )


def _skip_name(data: bytes, pos: int) -> int:
    while data[pos] and data[pos] & 0xC0 != 0xC0:
        pos += 1 + data[pos]
    return pos + (2 if data[pos] else 1)


def _dns_query(netns: str, server: IPv4Address, name: str) -> list[IPv4Address]:
    """The A answers for ``name`` (empty for an error code), asked from inside ``netns``."""
    with socket_in(netns) as sock:
        sock.settimeout(0.5)
        qid = int.from_bytes(os.urandom(2), "big")
        for _ in range(6):
            sock.sendto(_question(qid, name), (str(server), 53))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            rid, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
            if rid != qid:
                continue
            if flags & 0xF:
                return []
            pos = 12
            for _ in range(qdcount):
                pos = _skip_name(data, pos) + 4
            found = []
            for _ in range(ancount):
                pos = _skip_name(data, pos)
                rtype, _, _, length = struct.unpack("!HHIH", data[pos : pos + 10])
                pos += 10
                if rtype == 1:
                    found.append(A(data[pos : pos + length]))
                pos += length
            return found
    raise AssertionError(f"no DNS answer from {server} for {name}")


def _serve_dns(sock: socket.socket, answers: dict[str, list[IPv4Address]], stop: Any) -> None:
    """The upstream DNS server: A records from ``answers``, NXDOMAIN for other names."""
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        end = _skip_name(data, 12)
        labels, pos = [], 12
        while data[pos]:
            labels.append(data[pos + 1 : pos + 1 + data[pos]].decode())
            pos += 1 + data[pos]
        name = ".".join(labels).lower()
        qtype = struct.unpack("!H", data[end : end + 2])[0]
        found = answers.get(name)
        records = found if found is not None and qtype == 1 else []
        header = struct.pack(
            "!HHHHHH",
            data[0] << 8 | data[1],
            0x8180 | (3 if found is None else 0),
            1,
            len(records),
            0,
            0,
        )
        body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + a.packed for a in records)
        sock.sendto(header + data[12 : end + 4] + body, peer)


def _plumb(ns: dict[str, str]) -> None:
    from pyroute2 import NetNS

    def up(ipr: Any, name: str, ip: str | None = None, **kw: Any) -> None:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, state="up", **kw)
        if ip is not None:
            ipr.addr("add", index=index, address=ip, prefixlen=24)

    with NetNS(ns["node"]) as ipr:
        up(ipr, "lo")
        for bridge, address in (("br0", "10.77.0.1"), ("br1", "10.78.0.1"), ("br2", None)):
            ipr.link("add", ifname=bridge, kind="bridge")
            up(ipr, bridge, address)
        br0 = ipr.link_lookup(ifname="br0")[0]
        for port, peer in (("vc0", "eth0"), ("vc1", "eth1")):
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": peer, "net_ns_fd": ns["cli"]})
            up(ipr, port, master=br0)
        ipr.link("add", ifname="up0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns["up"]})
        up(ipr, "up0", "10.99.0.1")
    with NetNS(ns["cli"]) as ipr:
        up(ipr, "lo")
        up(ipr, "eth0", CLIENT_IP, address=CLIENT_MAC)
        up(ipr, "eth1", address=OTHER_MAC)
    with NetNS(ns["up"]) as ipr:
        up(ipr, "lo")
        up(ipr, "eth0", str(UPSTREAM_IP))


def _run(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, **kw)


def _udhcpc(netns: str, ifname: str, hostname: str | None, out: Path) -> Offer | None:
    script = out.parent / "udhcpc.sh"
    script.write_text('#!/bin/sh\n[ "$1" = bound ] && env > "$OUT"\nexit 0\n')
    script.chmod(0o755)
    out.unlink(missing_ok=True)
    argv = ["nsenter", f"--net=/run/netns/{netns}", "busybox", "udhcpc", "-i", ifname]
    argv += ["-n", "-q", "-f", "-t", "3", "-T", "1", "-A", "1", "-s", str(script)]
    argv += ["-O", "mtu", "-O", "staticroutes", "-O", "ntpsrv", "-O", "domain"]
    if hostname is not None:
        argv += ["-x", f"hostname:{hostname}"]
    done = _run(*argv, env={"OUT": str(out), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if done.returncode != 0 or not out.exists():
        return None
    options = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    return Offer(A(options["ip"]), options)


def _ours(root: Path) -> list[int]:
    """Every dnsmasq whose command line names ``root``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if os.path.basename(argv[0]) == b"dnsmasq" and str(root).encode() in b" ".join(
                    argv
                ):
                    pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.asynccontextmanager
async def real_env() -> AsyncIterator[Env]:
    reason = _real_missing()
    if reason is not None:
        service_missing("dnsmasq in network namespaces", reason)
    from pyroute2 import netns

    tag = uuid.uuid4().hex[:8]
    ns = {role: f"evd{tag}-{role}" for role in ("node", "cli", "up")}
    root = Path(tempfile.mkdtemp(prefix=f"evdns-{tag}-", dir="/var/tmp"))
    os.chmod(root, 0o711)  # dnsmasq's user re-reads its hosts files through it
    run_dir = root / "run"
    made: list[str] = []
    stop = threading.Event()
    server: threading.Thread | None = None
    try:
        for name in ns.values():
            await asyncio.to_thread(netns.create, name)
            made.append(name)
        await asyncio.to_thread(_plumb, ns)
        nft = ["nsenter", f"--net=/run/netns/{ns['node']}", "nft"]
        done = await asyncio.to_thread(_run, *nft, "-f", "-", input=NFT_RULESET)
        assert done.returncode == 0, done.stderr
        sock = socket_in(ns["up"])
        sock.bind((str(UPSTREAM_IP), 53))
        server = threading.Thread(target=_serve_dns, args=(sock, UPSTREAM, stop), daemon=True)
        server.start()
        broken = root / "bin" / "dnsmasq"
        broken.parent.mkdir()
        broken.write_text(f"#!/bin/sh\necho '{REFUSAL}' >&2\nexit 1\n")
        broken.chmod(0o755)

        def driver(**kw: Any) -> DnsmasqDriver:
            return DnsmasqDriver(NODE, run_dir, netns=ns["node"], **kw)

        async def dhcp(instance: uuid.UUID, mac: str, hostname: str | None) -> Offer | None:
            ifname = {CLIENT_MAC: "eth0", OTHER_MAC: "eth1"}[mac]
            out = root / f"udhcpc-{ifname}.env"
            return await asyncio.to_thread(_udhcpc, ns["cli"], ifname, hostname, out)

        async def query(instance: uuid.UUID, name: str) -> list[IPv4Address]:
            return await asyncio.to_thread(_dns_query, ns["cli"], GATEWAY, name)

        async def nft_elements() -> set[IPv4Address]:
            done = await asyncio.to_thread(
                _run, *nft, "-j", "list", "set", "inet", "evetest", "allow4"
            )
            assert done.returncode == 0, done.stderr
            sets = [item["set"] for item in json.loads(done.stdout)["nftables"] if "set" in item]
            return {A(e) for e in sets[0].get("elem", []) if isinstance(e, str)}

        async def crash(instance: uuid.UUID) -> None:
            pid = int((run_dir / str(instance) / "dnsmasq.pid").read_text())
            os.kill(pid, signal.SIGKILL)

            async def gone() -> bool:
                return not _alive(pid)

            await eventually(gone)

        yield Env(
            kind="real",
            driver=driver(),
            new_driver=driver,
            refusing_driver=lambda: driver(dnsmasq=str(broken)),
            dhcp=dhcp,
            query=query,
            nft_elements=nft_elements,
            crash=crash,
            alive=_alive,
            run_dir=run_dir,
        )
    finally:
        for pid in _ours(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop.set()
        if server is not None:
            server.join(2)
        for name in made:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(netns.remove, name)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["fake", "real"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    maker = fake_env(tmp_path) if request.param == "fake" else real_env()
    async with maker as made:
        yield made


@pytest.fixture
async def real() -> AsyncIterator[Env]:
    async with real_env() as made:
        yield made


# --- the contract ------------------------------------------------------------------------------


async def test_start_gives_addresses_and_answers_names(env: Env, loop_watch: Any) -> None:
    cfg = config(
        dns_records=(
            HostRecord("app1", (A("10.77.0.5"),)),
            HostRecord("db.static", (A("10.77.0.6"),)),
        ),
        domain="nets.local",
        mtu=1400,
        ntp_servers=(A("192.0.2.123"),),
        routes=(Route(IPv4Network("192.168.50.0/24"), A("10.77.0.5")),),
    )
    state = await env.driver.ensure(cfg)
    assert (state.instance_id, state.bridge, state.change) == (
        cfg.instance_id,
        "br0",
        Change.STARTED,
    )
    assert env.alive(state.pid)
    assert await env.driver.list_owned() == [DnsmasqState(cfg.instance_id, "br0", state.pid)]

    offer = await env.dhcp(cfg.instance_id, CLIENT_MAC, "client1")
    assert offer is not None and RANGE[0] <= offer.ip <= RANGE[1]
    if env.kind == "real":
        got = {
            k: offer.options.get(k) for k in ("router", "dns", "subnet", "mtu", "ntpsrv", "domain")
        }
        assert got == {
            "router": "10.77.0.1",
            "dns": "10.77.0.1",
            "subnet": "255.255.255.0",
            "mtu": "1400",
            "ntpsrv": "192.0.2.123",
            "domain": "nets.local",
        }
        assert offer.options["staticroutes"].split() == [
            "10.77.0.0/24", "0.0.0.0", "192.168.50.0/24", "10.77.0.5", "0.0.0.0/0", "10.77.0.1"
        ]  # fmt: skip
    leases = await env.driver.leases(cfg.instance_id)
    assert [(x.mac, x.ip, x.hostname) for x in leases] == [(CLIENT_MAC, offer.ip, "client1")]
    assert leases[0].expiry is not None

    assert await env.query(cfg.instance_id, "app1") == [A("10.77.0.5")]
    assert await env.query(cfg.instance_id, "app1.nets.local") == [A("10.77.0.5")]
    assert await env.query(cfg.instance_id, "db.static") == [A("10.77.0.6")]
    assert await env.query(cfg.instance_id, "client1") == [offer.ip]
    # no upstream: an air-gapped instance resolves only its own names
    assert await env.query(cfg.instance_id, "www.example.com") == []


async def test_a_static_host_gets_its_fixed_address(env: Env) -> None:
    cfg = config(static_hosts=(StaticHost(CLIENT_MAC, A("10.77.0.7"), "fixed"),))
    await env.driver.ensure(cfg)
    offer = await env.dhcp(cfg.instance_id, CLIENT_MAC, "whatever")
    assert offer is not None and offer.ip == A("10.77.0.7")
    leases = await env.driver.leases(cfg.instance_id)
    assert [(x.mac, x.ip, x.hostname) for x in leases] == [(CLIENT_MAC, A("10.77.0.7"), "fixed")]
    assert await env.query(cfg.instance_id, "fixed") == [A("10.77.0.7")]
    other = await env.dhcp(cfg.instance_id, OTHER_MAC, None)
    assert other is not None and other.ip != A("10.77.0.7") and RANGE[0] <= other.ip <= RANGE[1]


async def test_a_hosts_change_is_a_sighup_not_a_restart(env: Env) -> None:
    cfg = config(dns_records=(HostRecord("app1", (A("10.77.0.5"),)),))
    pid = (await env.driver.ensure(cfg)).pid
    first = await env.dhcp(cfg.instance_id, CLIENT_MAC, None)
    assert first is not None and first.ip != A("10.77.0.7")

    same = await env.driver.ensure(cfg)
    assert (same.pid, same.change) == (pid, Change.NONE)

    cfg = dataclasses.replace(cfg, dns_records=(HostRecord("app2", (A("10.77.0.8"),)),))
    state = await env.driver.ensure(cfg)
    assert (state.pid, state.change) == (pid, Change.RELOADED)

    async def app2_answers() -> bool:
        return await env.query(cfg.instance_id, "app2") == [A("10.77.0.8")]

    await eventually(app2_answers)
    assert await env.query(cfg.instance_id, "app1") == []

    cfg = dataclasses.replace(cfg, static_hosts=(StaticHost(CLIENT_MAC, A("10.77.0.7")),))
    state = await env.driver.ensure(cfg)
    assert (state.pid, state.change) == (pid, Change.RELOADED)
    offer = await env.dhcp(cfg.instance_id, CLIENT_MAC, None)
    assert offer is not None and offer.ip == A("10.77.0.7")
    assert env.alive(pid)
    if env.fake is not None:
        assert (
            env.fake.instance(cfg.instance_id).reloads,
            env.fake.instance(cfg.instance_id).restarts,
        ) == (2, 0)
        assert ("sighup", cfg.instance_id) in env.fake.host.events


async def test_a_main_change_restarts_and_keeps_the_leases(env: Env) -> None:
    cfg = config()
    old = (await env.driver.ensure(cfg)).pid
    offer = await env.dhcp(cfg.instance_id, CLIENT_MAC, "client1")
    assert offer is not None
    state = await env.driver.ensure(dataclasses.replace(cfg, lease_time=600))
    assert state.change == Change.RESTARTED and state.pid != old
    assert not env.alive(old) and env.alive(state.pid)
    assert await env.driver.list_owned() == [DnsmasqState(cfg.instance_id, "br0", state.pid)]
    leases = await env.driver.leases(cfg.instance_id)
    assert [(x.mac, x.ip) for x in leases] == [(CLIENT_MAC, offer.ip)]
    again = await env.dhcp(cfg.instance_id, CLIENT_MAC, "client1")
    assert again is not None and again.ip == offer.ip  # the lease survived the restart
    if env.kind == "real":
        assert again.options["lease"] == "600"


async def test_a_static_address_leased_to_another_mac_restarts(env: Env) -> None:
    cfg = config()
    pid = (await env.driver.ensure(cfg)).pid
    taken = await env.dhcp(cfg.instance_id, OTHER_MAC, None)
    assert taken is not None
    # the controller now gives that address to CLIENT_MAC: SIGHUP would keep OTHER_MAC's lease
    cfg = dataclasses.replace(cfg, static_hosts=(StaticHost(CLIENT_MAC, taken.ip),))
    state = await env.driver.ensure(cfg)
    assert state.change == Change.RESTARTED and state.pid != pid
    assert [x.mac for x in await env.driver.leases(cfg.instance_id)] == []
    offer = await env.dhcp(cfg.instance_id, CLIENT_MAC, None)
    assert offer is not None and offer.ip == taken.ip


async def test_upstream_forwarding_fills_the_nft_sets(env: Env) -> None:
    cfg = config(
        upstreams=(UPSTREAM_IP,),
        nftsets=(NftsetRule("example.com", (ALLOW4,)),),
        dns_records=(HostRecord("app1", (A("10.77.0.5"),)),),
    )
    await env.driver.ensure(cfg)
    assert await env.nft_elements() == set()
    assert await env.query(cfg.instance_id, "www.example.com") == [A("192.0.2.77")]
    assert await env.query(cfg.instance_id, "other.example.org") == [A("198.51.100.9")]
    assert await env.query(cfg.instance_id, "app1") == [A("10.77.0.5")]
    assert await env.query(cfg.instance_id, "missing.example.org") == []
    assert await env.nft_elements() == {A("192.0.2.77")}  # example.com's only


async def test_an_agent_restart_adopts_the_running_instances(env: Env) -> None:
    first, second = config("br0"), config("br1")
    pids = [(await env.driver.ensure(c)).pid for c in (first, second)]
    offer = await env.dhcp(first.instance_id, CLIENT_MAC, "client1")
    assert offer is not None

    restarted = env.new_driver()
    expected = sorted(
        [
            DnsmasqState(first.instance_id, "br0", pids[0]),
            DnsmasqState(second.instance_id, "br1", pids[1]),
        ],
        key=lambda s: str(s.instance_id),
    )
    assert await restarted.list_owned() == expected
    assert [x.ip for x in await restarted.leases(first.instance_id)] == [offer.ip]
    state = await restarted.ensure(first)
    assert (state.pid, state.change) == (pids[0], Change.NONE)
    await restarted.stop(second.instance_id)
    assert await restarted.list_owned() == [DnsmasqState(first.instance_id, "br0", pids[0])]


async def test_a_dead_instance_is_not_listed_and_starts_again(env: Env) -> None:
    cfg = config()
    old = (await env.driver.ensure(cfg)).pid
    await env.crash(cfg.instance_id)
    assert await env.driver.list_owned() == []
    if env.kind == "real":
        assert not (env.run_dir / str(cfg.instance_id) / "dnsmasq.pid").exists()  # stale: removed
    state = await env.driver.ensure(cfg)
    assert state.change == Change.STARTED and state.pid != old and env.alive(state.pid)


async def test_stop_removes_everything(env: Env) -> None:
    cfg = config()
    pid = (await env.driver.ensure(cfg)).pid
    assert await env.dhcp(cfg.instance_id, CLIENT_MAC, None) is not None
    await env.driver.stop(cfg.instance_id)
    assert not env.alive(pid)
    assert await env.driver.list_owned() == []
    with pytest.raises(NotFoundError):
        await env.driver.leases(cfg.instance_id)
    if env.kind == "real":
        assert not (env.run_dir / str(cfg.instance_id)).exists()
    await env.driver.stop(cfg.instance_id)  # gone already: success
    await env.driver.stop(uuid.uuid4())


async def test_a_missing_bridge_or_a_busy_port_is_temporary(env: Env) -> None:
    with pytest.raises(TemporaryError, match="unknown interface"):
        await env.driver.ensure(config(bridge="nope0"))
    first = await env.driver.ensure(config())
    rival = config(instance_id=uuid.uuid4())  # another instance on the same bridge
    with pytest.raises(TemporaryError, match="Address already in use"):
        await env.driver.ensure(rival)
    assert env.alive(first.pid)
    assert [s.pid for s in await env.driver.list_owned()] == [first.pid]
    assert await env.driver.leases(rival.instance_id) == []
    await env.driver.stop(rival.instance_id)


async def test_a_refused_configuration_is_permanent_and_keeps_the_running_one(env: Env) -> None:
    cfg = config(dns_records=(HostRecord("app1", (A("10.77.0.5"),)),))
    pid = (await env.driver.ensure(cfg)).pid
    broken = env.refusing_driver()
    with pytest.raises(PermanentError, match="bad option at line 1"):
        await broken.ensure(dataclasses.replace(cfg, lease_time=900))
    assert env.alive(pid)
    assert await env.driver.list_owned() == [DnsmasqState(cfg.instance_id, "br0", pid)]
    assert await env.query(cfg.instance_id, "app1") == [A("10.77.0.5")]
    with pytest.raises(PermanentError):
        await broken.ensure(config("br1"))


# --- the real driver only: addresses, files, pids ------------------------------------------------


async def test_a_bridge_without_its_address_or_a_missing_namespace_is_temporary(real: Env) -> None:
    with pytest.raises(TemporaryError, match="does not listen"):
        await real.driver.ensure(config(bridge="br2"))
    assert await real.driver.list_owned() == []
    assert _ours(real.run_dir) == []  # it was stopped, not left half-working
    elsewhere = DnsmasqDriver(NODE, real.run_dir, netns=f"evd-gone-{uuid.uuid4().hex[:8]}")
    with pytest.raises(TemporaryError, match="does not exist"):
        await elsewhere.ensure(config())


async def test_a_pid_file_is_never_trusted_alone(real: Env) -> None:
    cfg = config()
    await real.driver.ensure(cfg)
    await real.driver.stop(cfg.instance_id)
    # a pid file naming a live process that is not our dnsmasq (this test's own process)
    pid_file = real.run_dir / str(cfg.instance_id) / "dnsmasq.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(f"{os.getpid()}\n")
    assert await real.driver.list_owned() == []
    assert not pid_file.exists()
    pid_file.write_text(f"{os.getpid()}\n")
    await real.driver.stop(cfg.instance_id)  # and we are still here
    assert not pid_file.parent.exists()


async def test_files_are_private_to_dnsmasq_and_an_unreachable_run_dir_is_permanent(
    real: Env, tmp_path: Path
) -> None:
    cfg = config()
    await real.driver.ensure(cfg)
    directory = real.run_dir / str(cfg.instance_id)
    assert directory.stat().st_mode & 0o777 == 0o750
    assert isinstance(real.driver, DnsmasqDriver)
    assert directory.stat().st_gid == grp.getgrnam(real.driver.group).gr_gid
    for name in ("dnsmasq.conf", "dhcp-hosts", "hosts"):
        assert (directory / name).stat().st_uid == 0
    private = tmp_path / "private"  # pytest's tmp_path is 0700: dnsmasq's user cannot pass
    driver = DnsmasqDriver(NODE, private, netns=None)
    with pytest.raises(PermanentError, match="not searchable"):
        await driver.ensure(config("br1"))
