"""agent.link.transport: URLs, headers, TLS pinning to the node's root, timeouts, typed errors."""

from __future__ import annotations

import asyncio
import re
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.link.transport import (
    PROTO_TYPE,
    ControllerClient,
    Response,
    TransportError,
    normalise_server,
)
from agent.wire import envelope
from controller.server import tls_context
from tests.unit.link_harness import (
    ControllerPki,
    FakeController,
    fake_controller,
    live_controller,
    make_pki,
    proto,
)

DEVICE = "6b1f3d2e-0c4a-4e6f-9a51-2d7c8e9f0a1b"


@pytest.fixture
def pki(tmp_path: Path) -> ControllerPki:
    return make_pki(tmp_path / "controller")


@pytest.fixture
async def fake(pki: ControllerPki) -> AsyncIterator[FakeController]:
    async with fake_controller(pki) as f:
        yield f


# ---------------------------------------------------------------- addresses and URLs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ctl.example.com", "ctl.example.com"),
        ("ctl.example.com:8443", "ctl.example.com:8443"),
        ("127.0.0.1:443", "127.0.0.1:443"),
        ("https://ctl.example.com:8443", "ctl.example.com:8443"),
        ("http://ctl.example.com", "ctl.example.com"),
        ("https://ctl.example.com:8443/", "ctl.example.com:8443"),
        ("  ctl.example.com:8443 \n", "ctl.example.com:8443"),
        ("[::1]:8443", "[::1]:8443"),
    ],
)
def test_normalise_server_accepts_host_port(text: str, expected: str) -> None:
    assert normalise_server(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "   \n", "https://", "https:///", "ctl/api", "https://ctl:1/api/v2", "ctl :1", "a\tb:1"],
)
def test_normalise_server_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not host"):
        normalise_server(text)


def test_client_refuses_garbage_server(pki: ControllerPki) -> None:
    with pytest.raises(ValueError):
        ControllerClient("https://ctl/api", pki.root_pem)


def test_url_without_uuid(pki: ControllerPki) -> None:
    client = ControllerClient("https://ctl.example.com:8443/", pki.root_pem)
    base = "https://ctl.example.com:8443/api/v2/edgedevice/"
    assert client.url("config") == base + "config"
    assert client.url("certs", device_path=False) == base + "certs"
    assert client.url("uuid", device_path=True) == base + "uuid"


def test_url_with_uuid(pki: ControllerPki) -> None:
    client = ControllerClient("ctl.example.com:8443", pki.root_pem)
    client.device_uuid = DEVICE
    base = "https://ctl.example.com:8443/api/v2/edgedevice/"
    assert client.url("config") == f"{base}id/{DEVICE}/config"
    assert client.url("attest") == f"{base}id/{DEVICE}/attest"
    assert client.url("certs", device_path=False) == base + "certs"
    assert client.url("register", device_path=False) == base + "register"
    assert client.url("uuid", device_path=False) == base + "uuid"


def test_response_ok_statuses() -> None:
    assert [
        s for s in (200, 201, 204, 304, 400, 403, 404, 409, 500, 503) if Response(s, b"", "").ok
    ] == [
        200,
        201,
        204,
        304,
    ]


# ---------------------------------------------------------------- requests and headers


async def test_get_and_post_against_the_real_controller(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        try:
            resp = await client.request("certs", device_path=False)
            assert resp.status == 200
            assert resp.ok
            assert resp.content_type == PROTO_TYPE
            # The body is the controller's signed ZControllerCert.
            trusted = {ctl.pki.identity.sender_cert_hash: ctl.pki.identity.signer.certificate}
            assert envelope.open_signed(resp.body, trusted).payload
            # POST of garbage to /uuid: an HTTP answer (400), not a TransportError.
            bad = await client.request("uuid", b"not an envelope", device_path=False)
            assert bad.status == 400
            assert not bad.ok
            assert bad.content_type.startswith("text/plain")
            assert b"malformed envelope" in bad.body
        finally:
            await client.close()
        assert [(s.method, s.action, s.status) for s in ctl.served] == [
            ("GET", "certs", 200),
            ("POST", "uuid", 400),
        ]


async def test_serial_headers_only_before_uuid_and_fresh_request_ids(
    fake: FakeController,
) -> None:
    async def ok(request: web.Request, body: bytes) -> web.StreamResponse:
        return proto(b"answer")

    fake.handlers.update(register=ok, config=ok)
    client = fake.client(serial="HW-123", soft_serial="SOFT-456")
    try:
        await client.request("certs", device_path=False)
        await client.request("register", b"reg", device_path=False)
        client.device_uuid = DEVICE
        resp = await client.request("config", b"cfg")
        await client.request("certs", device_path=False)
    finally:
        await client.close()
    assert resp == Response(200, b"answer", PROTO_TYPE)

    certs1, register, config, certs2 = fake.seen
    assert (certs1.method, certs1.path, certs1.body) == ("GET", "/api/v2/edgedevice/certs", b"")
    assert (register.method, register.body) == ("POST", b"reg")
    assert config.path == f"/api/v2/edgedevice/id/{DEVICE}/config"
    assert config.body == b"cfg"
    for before in (certs1, register):
        assert before.headers["X-Serial-Number"] == "HW-123"
        assert before.headers["X-Soft-Serial"] == "SOFT-456"
    for after in (config, certs2):
        assert "X-Serial-Number" not in after.headers
        assert "X-Soft-Serial" not in after.headers
    assert register.headers["Content-Type"] == PROTO_TYPE
    assert config.headers["Content-Type"] == PROTO_TYPE
    assert certs1.headers.get("Content-Type") != PROTO_TYPE
    ids = [s.headers["X-Request-Id"] for s in fake.seen]
    assert len(set(ids)) == 4
    assert all(str(uuidlib.UUID(i)) == i for i in ids)


async def test_empty_serials_send_no_serial_headers(fake: FakeController) -> None:
    client = fake.client()
    try:
        await client.request("certs", device_path=False)
    finally:
        await client.close()
    (seen,) = fake.seen
    assert "X-Serial-Number" not in seen.headers
    assert "X-Soft-Serial" not in seen.headers


async def test_every_status_is_a_response(fake: FakeController) -> None:
    async def busy(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(status=503, text="try later")

    async def conflict(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(status=409, text="conflict")

    fake.handlers.update(config=busy, register=conflict)
    client = fake.client()
    try:
        busy_resp = await client.request("config", b"x")
        conflict_resp = await client.request("register", b"x", device_path=False)
        missing = await client.request("nothing-here")
    finally:
        await client.close()
    assert (busy_resp.status, busy_resp.body, busy_resp.ok) == (503, b"try later", False)
    assert busy_resp.content_type.startswith("text/plain")
    assert (conflict_resp.status, conflict_resp.body) == (409, b"conflict")
    assert missing.status == 404


async def test_session_is_recreated_after_close(fake: FakeController) -> None:
    client = fake.client()
    try:
        assert (await client.request("certs", device_path=False)).status == 200
        await client.close()
        assert (await client.request("certs", device_path=False)).status == 200
    finally:
        await client.close()
    assert fake.count("certs") == 2


# ---------------------------------------------------------------- raw servers


async def _raw_tls_server(
    pki: ControllerPki, answer: bytes | None
) -> tuple[asyncio.Server, int, list[bytes]]:
    """A TLS server that sends ``answer`` verbatim after the request head (None: never answers)."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            if answer is None:
                await asyncio.sleep(30)
            else:
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls_context(pki.state))
    port = int(server.sockets[0].getsockname()[1])
    return server, port, heads


async def test_response_without_content_type(pki: ControllerPki) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    server, port, heads = await _raw_tls_server(pki, raw)
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem)
    try:
        resp = await client.request("certs", device_path=False)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert resp == Response(200, b"hello", "")
    assert heads[0].startswith(b"GET /api/v2/edgedevice/certs HTTP/1.1\r\n")


# ---------------------------------------------------------------- TLS and failures


async def test_tls_refuses_a_server_not_chaining_to_the_root(tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    async with live_controller(tmp_path) as ctl:
        client = ControllerClient(ctl.address, other.root_pem)
        try:
            with pytest.raises(TransportError, match="certificate") as info:
                await client.request("certs", device_path=False)
        finally:
            await client.close()
        assert isinstance(info.value.__cause__, aiohttp.ClientConnectorCertificateError)
        assert ctl.served == []  # no request got through


async def test_tls_accepts_a_root_bundle_holding_the_right_root(tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    async with live_controller(tmp_path) as ctl:
        client = ControllerClient(ctl.address, other.root_pem + ctl.pki.root_pem)
        try:
            assert (await client.request("ping", device_path=False)).status == 200
        finally:
            await client.close()


async def test_slow_answer_times_out(fake: FakeController) -> None:
    async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(10)
        return proto()

    fake.handlers["config"] = slow
    client = fake.client(send_timeout=0.3)
    start = time.monotonic()
    try:
        with pytest.raises(TransportError, match=r"POST https://127\.0\.0\.1"):
            await client.request("config", b"x")
    finally:
        await client.close()
    assert time.monotonic() - start < 3


async def test_server_that_never_answers_times_out(pki: ControllerPki) -> None:
    server, port, heads = await _raw_tls_server(pki, None)
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem, send_timeout=0.3)
    start = time.monotonic()
    try:
        with pytest.raises(TransportError, match=r"GET https://127\.0\.0\.1"):
            await client.request("certs", device_path=False)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - start < 3
    assert len(heads) == 1  # the request was sent, the answer never came


async def test_connection_refused_is_a_transport_error(pki: ControllerPki) -> None:
    # Bind a port and close it again: nothing listens there any more.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem)
    try:
        with pytest.raises(TransportError, match=re.escape(f"127.0.0.1:{port}")):
            await client.request("certs", device_path=False)
    finally:
        await client.close()


async def test_dropped_connection_is_a_transport_error(pki: ControllerPki) -> None:
    server, port, _ = await _raw_tls_server(pki, b"HTTP/1.1 200 OK\r\nContent-Le")
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem, send_timeout=5)
    try:
        with pytest.raises(TransportError):
            await client.request("certs", device_path=False)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
