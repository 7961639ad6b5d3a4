"""One contract for the flow log drivers, real and fake: conntrack (NfConntrack, FakeConntrack)
and NFLOG (NflogListener, FakeNflog).

The real half works in a network namespace each test makes (``evetest-flw<random>``) and
removes, also when it fails.  Its traffic is UDP on that namespace's loopback: an ``output``
chain (put with ``nft -f`` in the namespace; the agent never runs ``nft``) marks the
connections to port 5555 as the firewall marks an accepted flow (``ct mark set``), logs the
packets to port 5556 to an NFLOG group with a rule comment as prefix and drops them, and leaves
port 5557 alone.  The fake half gets the same calls, with its hooks standing in for the
kernel: :func:`fake_traffic` puts what the kernel would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from agent.drivers.conntrack import Conntrack, CtEntry, CtTuple, NfConntrack
from agent.drivers.conntrack_fake import FakeConntrack
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.drivers.nflog import LoggedPacket, Nflog, NflogListener
from agent.drivers.nflog_fake import FakeNflog
from tests.integration.prereqs import netns_missing

MARK, MASK = 0x45000007, 0xFF000000
GROUP = 4242
PREFIX = "ace:6d3b3b4e-8a3c-4c47-9d41-0000000000aa:0:3"
RULES = f"""table inet flw {{
 chain out {{
  type filter hook output priority 0;
  udp dport 5555 ct mark set {MARK:#x} accept
  udp dport 5556 limit rate 100/second burst 100 packets log group {GROUP} snaplen 64 \
prefix "{PREFIX}"
  udp dport 5556 drop
 }}
}}
"""
SENDER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    try:\n"
    "        s.sendto(b'x' * int(sys.argv[3]), ('127.0.0.1', int(sys.argv[1])))\n"
    "    except OSError:\n"
    "        pass  # a dropped local packet: EPERM\n"
)


@dataclass
class Env:
    kind: str
    conntrack: Conntrack
    #: Makes a listener of the group (a second one for the binding rule).
    nflog: Callable[..., Nflog]
    #: Send ``count`` UDP datagrams of ``size`` bytes to ``port`` from one socket.
    send: Callable[[int, int, int], Awaitable[None]]
    netns: str | None = None
    #: The fake half's listeners, closed at teardown (their binding is process-wide).
    listeners: list[FakeNflog] = field(default_factory=list)


def _fake_env() -> Env:
    conntrack = FakeConntrack()
    listeners: list[FakeNflog] = []
    netns = f"fake-{uuid.uuid4().hex[:8]}"
    sport = [40000]

    def nflog(max_pending: int = 10_000) -> Nflog:
        made = FakeNflog(GROUP, netns, max_pending=max_pending)
        listeners.append(made)
        return made

    async def send(port: int, count: int, size: int) -> None:
        fake_traffic(conntrack, listeners, port, count, size, sport[0])
        sport[0] += 1

    return Env("fake", conntrack, nflog, send, listeners=listeners)


def fake_traffic(ct: FakeConntrack, listeners: list[FakeNflog], port: int, count: int,
                 size: int, sport: int) -> None:  # fmt: skip
    """What the kernel does with the test's rules for one socket's datagrams."""
    length = 28 + size
    if port == 5556:
        for _ in range(count):
            for nflog in listeners:
                nflog.log(LoggedPacket(PREFIX, time.time(), 17, "127.0.0.1", "127.0.0.1", sport,
                                       port, length))  # fmt: skip
        return
    ct.add(CtEntry(
        id=sport, orig=CtTuple("127.0.0.1", "127.0.0.1", 17, sport, port),
        reply=CtTuple("127.0.0.1", "127.0.0.1", 17, port, sport),
        mark=MARK if port == 5555 else 0, orig_packets=count, orig_bytes=count * length,
        start=time.time(), timeout=30,
    ))  # fmt: skip


@pytest.fixture(params=["fake", "real"])
async def env(
    request: pytest.FixtureRequest, require_service: Callable[[str, str], NoReturn]
) -> AsyncIterator[Env]:
    if request.param == "fake":
        made = _fake_env()
        yield made
        await made.conntrack.close()
        for fake in made.listeners:
            await fake.close()
        return
    missing = netns_missing({"nft": "nftables", "ip": "iproute2"}, ())
    if missing is not None:
        require_service("conntrack and NFLOG in a network namespace", missing)
    ns = f"evetest-flw{uuid.uuid4().hex[:8]}"
    await _run("ip", "netns", "add", ns)
    listeners: list[NflogListener] = []
    conntrack = NfConntrack(ns)
    try:
        await _run("ip", "-n", ns, "link", "set", "lo", "up")
        await _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=RULES)

        def nflog(max_pending: int = 10_000) -> Nflog:
            made = NflogListener(GROUP, ns, max_pending=max_pending)
            listeners.append(made)
            return made

        async def send(port: int, count: int, size: int) -> None:
            await _run("ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(port),
                       str(count), str(size))  # fmt: skip

        yield Env("real", conntrack, nflog, send, ns)
    finally:
        await conntrack.close()
        for listener in listeners:
            await listener.close()
        await _run("ip", "netns", "del", ns)


async def _run(*argv: str, stdin: str | None = None) -> None:
    done = await asyncio.to_thread(
        subprocess.run, argv, input=stdin, capture_output=True, text=True, timeout=20
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


async def _drain(nflog: Nflog, want: int, within: float = 3.0) -> list[LoggedPacket]:
    """What the listener got, waiting up to ``within`` seconds for ``want`` packets (the
    kernel batches NFLOG messages for up to half a second)."""
    got: list[LoggedPacket] = []
    deadline = time.monotonic() + within
    while len(got) < want and time.monotonic() < deadline:
        got += nflog.drain()
        await asyncio.sleep(0.05)
    return got + nflog.drain()


# --- the contract --------------------------------------------------------------------------------


async def test_marked_connections_with_counters(env: Env) -> None:
    await env.send(5555, 1, 10)  # before accounting: counted as zero
    assert [(e.orig_packets, e.orig_bytes) for e in await env.conntrack.dump(MARK, MASK)] == [
        (0, 0)
    ]
    await env.conntrack.enable_accounting()
    await env.conntrack.enable_accounting()  # idempotent
    before = time.time()
    await env.send(5555, 3, 100)
    await env.send(5557, 1, 100)  # not marked
    marked = [e for e in await env.conntrack.dump(MARK, MASK) if e.orig_packets]
    assert len(marked) == 1
    (entry,) = marked
    assert entry.mark == MARK and entry.id > 0
    assert (entry.orig.src, entry.orig.dst, entry.orig.proto, entry.orig.dport) == (
        "127.0.0.1", "127.0.0.1", 17, 5555,
    )  # fmt: skip
    assert (entry.reply.sport, entry.reply.dport) == (5555, entry.orig.sport)
    assert (entry.orig_packets, entry.orig_bytes) == (3, 3 * 128)
    assert (entry.reply_packets, entry.reply_bytes) == (0, 0)  # nobody answered
    assert before - 2 <= entry.start <= time.time() + 1 and 0 < entry.timeout <= 30
    everything = await env.conntrack.dump(0, 0)
    assert {e.orig.dport for e in everything} >= {5555, 5557}
    assert await env.conntrack.dump(0x46000000, MASK) == []


async def test_logged_drops_arrive_once_with_their_prefix(env: Env) -> None:
    nflog = env.nflog()
    await env.send(5556, 1, 50)  # nobody bound: the kernel keeps nothing for later
    await nflog.start()
    await nflog.start()  # idempotent
    assert nflog.running
    await env.send(5556, 2, 100)
    got = await _drain(nflog, 2)
    assert len(got) == 2, got
    for packet in got:
        assert packet.prefix == PREFIX
        assert (packet.proto, packet.src, packet.dst, packet.dport) == (
            17, "127.0.0.1", "127.0.0.1", 5556,
        )  # fmt: skip
        assert packet.length == 128 and packet.sport > 0 and packet.time > 0
    assert nflog.drain() == [] and nflog.lost == 0
    await env.send(5557, 1, 10)  # not logged
    assert await _drain(nflog, 1, within=1.0) == []


async def test_one_listener_per_group_and_rebinding(env: Env) -> None:
    first, second = env.nflog(), env.nflog()
    await first.start()
    with pytest.raises(TemporaryError, match="bound by another listener"):
        await second.start()
    assert not second.running
    await first.stop()
    assert not first.running
    await second.start()
    await env.send(5556, 1, 10)
    assert len(await _drain(second, 1)) == 1
    await second.stop()
    await first.start()  # binds again after a stop
    await env.send(5556, 1, 10)
    assert len(await _drain(first, 1)) == 1


async def test_pending_packets_are_bounded(env: Env) -> None:
    nflog = env.nflog(max_pending=2)
    await nflog.start()
    await env.send(5556, 5, 10)
    deadline = time.monotonic() + 3
    while nflog.lost < 3 and time.monotonic() < deadline:  # noqa: ASYNC110 - the kernel's pace
        await asyncio.sleep(0.05)
    assert len(nflog.drain()) == 2 and nflog.lost == 3


async def test_closed_drivers_refuse(env: Env) -> None:
    nflog = env.nflog()
    await nflog.close()
    with pytest.raises(PermanentError):
        await nflog.start()
    await env.conntrack.close()
    with pytest.raises(PermanentError):
        await env.conntrack.dump(MARK, MASK)


async def test_a_missing_namespace_is_not_found(
    require_service: Callable[[str, str], NoReturn],
) -> None:
    missing = netns_missing({}, ())
    if missing is not None:
        require_service("network namespaces", missing)
    gone = f"evetest-flw-gone{uuid.uuid4().hex[:6]}"
    conntrack, nflog = NfConntrack(gone), NflogListener(GROUP, gone)
    try:
        with pytest.raises(NotFoundError):
            await conntrack.dump(MARK, MASK)
        with pytest.raises(NotFoundError):
            await nflog.start()
    finally:
        await conntrack.close()
        await nflog.close()
