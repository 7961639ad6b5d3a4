"""Issue 9, controller side: idle and slow connections cannot exhaust the controller.

Real sockets against the real server (``controller.server.serve``) on 127.0.0.1, with short
timeouts so that the tests run in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from controller.api import PREFIX, ApiSettings
from controller.identity import init_certs
from controller.listener import ServerSettings
from controller.server import ListenAddress, serve
from controller.state import StateDir

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class Running:
    port: int
    tls: ssl.SSLContext

    async def ping(self) -> int:
        url = f"https://{HOST}:{self.port}{PREFIX}/ping"
        async with aiohttp.ClientSession() as session, session.get(url, ssl=self.tls) as resp:
            return resp.status

    async def tcp(self) -> Stream:
        """A connection that never starts TLS."""
        return await asyncio.open_connection(HOST, self.port)

    async def tls_conn(self) -> Stream:
        """A connection that completes TLS and sends nothing."""
        return await asyncio.open_connection(
            HOST, self.port, ssl=self.tls, server_hostname="localhost"
        )

    async def half_header(self) -> Stream:
        reader, writer = await self.tls_conn()
        writer.write(f"GET {PREFIX}/ping HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        await writer.drain()
        return reader, writer


@asynccontextmanager
async def running(
    tmp_path: Path, server: ServerSettings, api: ApiSettings | None = None
) -> AsyncIterator[Running]:
    state = StateDir(tmp_path / "state")
    init_certs(state)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            state,
            ListenAddress(HOST, 0),
            settings=api,
            server_settings=server,
            ready=ready.set_result,
            stop=stop,
        )
    )
    url = await asyncio.wait_for(ready, 10)
    tls = ssl.create_default_context(cafile=str(state.root_cert))
    try:
        yield Running(int(url.rsplit(":", 1)[1]), tls)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def closed_by_server(stream: Stream, within: float) -> bool:
    """Whether the server ends the connection within ``within`` seconds."""
    reader, _ = stream
    try:
        while await asyncio.wait_for(reader.read(4096), within):
            pass  # a response (408, 400) before the close is fine
    except TimeoutError:
        return False
    except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
        pass  # aborted: a reset
    return True


def close_all(streams: Sequence[Stream]) -> None:
    for _, writer in streams:
        with suppress(Exception):
            writer.transport.abort()


def controller_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("controller")]


async def open_many(
    count: int, opener: Callable[[], Awaitable[Stream]], *, tolerate: bool = False
) -> list[Stream]:
    """``count`` connections, opened 50 at a time.  With ``tolerate``, connections the server
    refused or reset while they were being opened are left out."""
    streams: list[Stream] = []
    for start in range(0, count, 50):
        batch = [opener() for _ in range(min(50, count - start))]
        for result in await asyncio.gather(*batch, return_exceptions=tolerate):
            if isinstance(result, BaseException):
                assert isinstance(result, OSError), result
            else:
                streams.append(result)
    return streams


async def test_idle_connections_leave_pings_answered_and_are_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = ServerSettings(handshake_timeout=4.0, header_timeout=4.0, log_interval=60.0)
    async with running(tmp_path, settings) as srv:
        started = time.monotonic()
        tcp_only = await open_many(150, srv.tcp)
        tls_idle = await open_many(150, srv.tls_conn)
        half = await open_many(20, srv.half_header)
        opened = time.monotonic() - started
        assert opened < 3.0, f"opening took {opened:.1f} s: the test cannot show anything"

        ping_started = time.monotonic()
        assert await srv.ping() == 200
        assert time.monotonic() - ping_started < 1.0

        everyone = [*tcp_only, *tls_idle, *half]
        closed = await asyncio.gather(*(closed_by_server(s, 8.0) for s in everyone))
        assert all(closed), f"{closed.count(False)} idle connections still open"
        assert await srv.ping() == 200
        close_all(everyone)

    lines = controller_lines(caplog)
    assert not [r for r in lines if r.exc_info], "no tracebacks for idle peers"
    assert len([r for r in lines if r.levelno >= logging.INFO]) < 10, [
        r.getMessage() for r in lines
    ]
    messages = " | ".join(r.getMessage() for r in lines)
    assert "no complete request within 4 s" in messages
    assert "TLS handshakes failing or timing out" in messages


async def test_connection_limit_closes_the_longest_idle_to_let_a_ping_in(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = ServerSettings(handshake_timeout=30.0, header_timeout=30.0, max_connections=40)
    async with running(tmp_path, settings) as srv:
        idle = await open_many(40, srv.tls_conn)
        assert await asyncio.wait_for(srv.ping(), 3.0) == 200
        assert await closed_by_server(idle[0], 1.0), "the oldest idle connection makes room"
        assert not await closed_by_server(idle[-1], 0.2)
        # Far over the limit: some are reset during their handshake; the server stays up.
        more = await open_many(100, srv.tls_conn, tolerate=True)
        assert await asyncio.wait_for(srv.ping(), 3.0) == 200
        everyone = idle + more
        still_open = [
            not c for c in await asyncio.gather(*(closed_by_server(s, 0.5) for s in everyone))
        ]
        assert sum(still_open) <= 40
        close_all(everyone)
    warnings = [r.getMessage() for r in controller_lines(caplog) if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "connection limit of 40 reached" in warnings[0]


async def test_when_every_connection_is_busy_newcomers_wait_in_the_backlog(
    tmp_path: Path,
) -> None:
    # A slot is free once the 408 is sent and the TLS close is done (or given up: this client
    # does not read, so it never answers the close_notify).
    settings = ServerSettings(max_connections=2, tls_shutdown_timeout=0.5)
    api = ApiSettings(body_timeout=1.5)
    async with running(tmp_path, settings, api) as srv:
        slow = []
        for _ in range(2):  # requests in progress: complete headers, a body that never comes
            reader, writer = await srv.tls_conn()
            head = f"POST {PREFIX}/register HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            writer.write(head.encode() + b"ab")
            await writer.drain()
            slow.append((reader, writer))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert await asyncio.wait_for(srv.ping(), 5.0) == 200
        waited = time.monotonic() - started
        assert 1.0 < waited < 4.0, f"the ping waited {waited:.2f} s"
        for stream in slow:
            answer = await asyncio.wait_for(stream[0].read(4096), 1.0)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert await closed_by_server(stream, 1.0)
        close_all(slow)


async def test_keepalive_closes_an_idle_or_half_sent_connection_after_a_request(
    tmp_path: Path,
) -> None:
    settings = ServerSettings(keepalive_timeout=1.0)
    async with running(tmp_path, settings) as srv:
        conns = [await srv.tls_conn() for _ in range(2)]
        for index, (reader, writer) in enumerate(conns):
            writer.write(f"GET {PREFIX}/ping HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
            assert head.startswith(b"HTTP/1.1 200 ")
            if index == 1:  # then half of a second request
                writer.write(f"GET {PREFIX}/ping HTTP/1.1\r\nHost".encode())
                await writer.drain()
        started = time.monotonic()
        assert all(await asyncio.gather(*(closed_by_server(c, 3.0) for c in conns)))
        assert time.monotonic() - started < 2.5
        close_all(conns)


async def test_malformed_requests_are_one_log_line_not_a_traceback_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="controller")
    caplog.set_level(logging.INFO, logger="aiohttp")
    async with running(tmp_path, ServerSettings(max_field_size=100)) as srv:
        for _ in range(30):
            reader, writer = await srv.tls_conn()
            writer.write(
                f"GET {PREFIX}/ping HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 500}\r\n\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.read(4096), 2.0)
            assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request"), head
            close_all([(reader, writer)])
        assert await srv.ping() == 200
    noisy = [
        r for r in caplog.records if r.levelno >= logging.INFO and "ping" not in r.getMessage()
    ]
    assert not [r for r in noisy if r.exc_info], "no tracebacks for malformed requests"
    assert len(noisy) <= 2, [r.getMessage() for r in noisy]
    assert any("Error handling request" in r.getMessage() for r in noisy)


def test_the_systemd_unit_gives_room_for_the_connection_limit() -> None:
    unit = (REPO / "systemd" / "eve-controller.service").read_text()
    limit = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert limit is not None, "the unit must set LimitNOFILE="
    assert int(limit.group(1)) >= 2 * ServerSettings().max_connections
