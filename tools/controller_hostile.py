"""Hostile clients of an ``eve-controller``, as a program: one registered device misbehaving.

Started by :func:`tools.controller_load.hostile_process` (a separate process, so that its CPU
use does not skew the well-behaved clients' measurements); writes a JSON report.  Kinds:

* ``flood`` - the device sends valid requests as fast as it can over ``--flood-connections``
  keep-alive connections, each going round ``GET /ping``, ``POST /info``, ``POST /config`` and
  a ``newlogs`` upload of 2,000 entries, ignoring every Retry-After;
* ``idle`` - ``--idle-connections`` connections that never finish a request: a third plain TCP
  (no TLS handshake), a third TLS and silent, a third slowloris (request headers one byte a
  second).  A connection the server closes is opened again a second later.  They are opened
  50 at a time, half a second apart (holding connections is the point, not a handshake flood);
* ``bomb`` - four concurrent loops posting a ~1 KB gzip log file that inflates to 340,000 tiny
  entries (``{}`` lines), as fast as the answers come.

Report, per kind: ``requests`` and ``seconds`` (and ``rate`` per second), ``status_<code>``
counters, ``errors`` (exceptions); for ``idle``: ``opened``, ``closed_by_server``, ``open_at_end``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.controller_load import PREFIX, Device  # noqa: E402

LOG_ENTRY = (
    b'{"severity":"info","source":"zedagent","content":"flood","msgid":7,'
    b'"timestamp":{"seconds":1800000000,"nanos":5}}\n'
)
BOMB_ENTRIES = 340_000


def log_upload(entries: int) -> bytes:
    """A valid device log file of ``entries`` identical entries."""
    return gzip.compress(LOG_ENTRY * entries, 6)


def log_bomb() -> bytes:
    """About a kilobyte of gzip that inflates to ``BOMB_ENTRIES`` ``{}`` lines (just under
    1 MiB: past the entry cap, not the byte cap)."""
    return gzip.compress(b"{}\n" * BOMB_ENTRIES, 9)


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def status(self, status: int) -> None:
        self.counts["requests"] += 1
        self.counts[f"status_{status}"] += 1

    def error(self) -> None:
        self.counts["requests"] += 1
        self.counts["errors"] += 1

    def report(self, seconds: float) -> dict[str, float]:
        out: dict[str, float] = dict(self.counts)
        out["seconds"] = seconds
        out["rate"] = self.counts["requests"] / seconds if seconds > 0 else 0.0
        return out


async def _flood_loop(
    url: str, tls: ssl.SSLContext, device: Device, until: float, tally: Tally, logs: bytes
) -> None:
    connector = aiohttp.TCPConnector(ssl=tls, limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    base = f"{url}{PREFIX}"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        turn = 0
        while time.monotonic() < until:
            kind = turn % 4
            turn += 1
            if kind == 0:
                method, path, body = "GET", "/ping", b""
            elif kind == 1:
                method, path, body = "POST", f"/id/{device.uuid}/info", device.info_request()
            elif kind == 2:
                method, path, body = "POST", f"/id/{device.uuid}/config", device.config_request()
            else:
                method, path, body = "POST", f"/id/{device.uuid}/newlogs", device.seal(logs)
            try:
                async with session.request(method, base + path, data=body) as resp:
                    await resp.read()
                    tally.status(resp.status)
            except (aiohttp.ClientError, TimeoutError, OSError):
                tally.error()


async def flood(
    url: str, tls: ssl.SSLContext, device: Device, duration: float, connections: int
) -> dict[str, float]:
    tally = Tally()
    logs = log_upload(2000)
    started = time.monotonic()
    until = started + duration
    await asyncio.gather(
        *(_flood_loop(url, tls, device, until, tally, logs) for _ in range(connections))
    )
    return tally.report(time.monotonic() - started)


async def _bomb_loop(
    url: str, tls: ssl.SSLContext, device: Device, until: float, tally: Tally, bomb: bytes
) -> None:
    connector = aiohttp.TCPConnector(ssl=tls, limit=1)
    timeout = aiohttp.ClientTimeout(total=30)
    target = f"{url}{PREFIX}/id/{device.uuid}/newlogs"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while time.monotonic() < until:
            try:
                async with session.post(target, data=device.seal(bomb)) as resp:
                    await resp.read()
                    tally.status(resp.status)
            except (aiohttp.ClientError, TimeoutError, OSError):
                tally.error()


async def bombs(
    url: str, tls: ssl.SSLContext, device: Device, duration: float, parallel: int = 4
) -> dict[str, float]:
    tally = Tally()
    bomb = log_bomb()
    started = time.monotonic()
    until = started + duration
    await asyncio.gather(
        *(_bomb_loop(url, tls, device, until, tally, bomb) for _ in range(parallel))
    )
    report = tally.report(time.monotonic() - started)
    report["body_bytes"] = len(bomb)
    return report


async def _closed(reader: asyncio.StreamReader, wait: float) -> bool:
    """Whether the server closed the connection within ``wait`` seconds (data is drained)."""
    try:
        while await asyncio.wait_for(reader.read(4096), wait):
            pass
    except TimeoutError:
        return False
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    return True


async def _idle_slot(
    host: str, port: int, tls: ssl.SSLContext | None, slow: bool, until: float, tally: Counter[str]
) -> None:
    """Hold one connection that never completes a request; reopen it a second after the
    server closes it."""
    while time.monotonic() < until:
        opened: list[asyncio.StreamWriter] = []
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=tls, server_hostname="localhost" if tls else None
                ),
                15,
            )
            opened.append(writer)
            tally["opened"] += 1
            if slow:
                writer.write(f"GET {PREFIX}/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
            closed = False
            while not closed and time.monotonic() < until:
                if slow:
                    writer.write(b"a")
                    await writer.drain()
                closed = await _closed(reader, min(1.0, max(0.01, until - time.monotonic())))
            if closed:
                tally["closed_by_server"] += 1
            else:
                tally["open_at_end"] += 1
                return
        except (OSError, TimeoutError, ssl.SSLError):
            tally["errors"] += 1
        finally:
            for each in opened:
                each.transport.abort()
        await asyncio.sleep(1.0)


async def idle(url: str, tls: ssl.SSLContext, duration: float, count: int) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    tally: Counter[str] = Counter()
    started = time.monotonic()
    until = started + duration
    tasks = []
    for n in range(count):
        kind = n % 3
        tasks.append(
            asyncio.create_task(
                _idle_slot(host, port, None if kind == 0 else tls, kind == 2, until, tally)
            )
        )
        if n % 50 == 49:
            await asyncio.sleep(0.5)
    await asyncio.gather(*tasks)
    out: dict[str, float] = dict(tally)
    out["seconds"] = time.monotonic() - started
    return out


async def run(args: argparse.Namespace, device: Device) -> dict[str, dict[str, float]]:
    tls = ssl.create_default_context(cafile=args.ca)
    jobs: dict[str, asyncio.Task[dict[str, float]]] = {}
    kinds = [k for k in args.kinds.split(",") if k]
    for kind in kinds:
        if kind == "flood":
            job = flood(args.url, tls, device, args.duration, args.flood_connections)
        elif kind == "idle":
            job = idle(args.url, tls, args.duration, args.idle_connections)
        elif kind == "bomb":
            job = bombs(args.url, tls, device, args.duration)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
        jobs[kind] = asyncio.create_task(job)
    return {kind: await task for kind, task in jobs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="https://HOST:PORT of the controller")
    parser.add_argument("--ca", required=True, help="the controller's root certificate")
    parser.add_argument("--device", required=True, help="JSON credentials (Device.to_json)")
    parser.add_argument("--kinds", required=True, help="comma-separated: flood,idle,bomb")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--report", required=True, help="where to write the JSON report")
    parser.add_argument("--idle-connections", type=int, default=300)
    parser.add_argument("--flood-connections", type=int, default=8)
    args = parser.parse_args()
    device = Device.from_json(json.loads(Path(args.device).read_text()))
    report = asyncio.run(run(args, device))
    with contextlib.suppress(FileNotFoundError):
        Path(args.report).unlink()
    Path(args.report).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
