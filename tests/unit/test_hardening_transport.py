# SPDX-License-Identifier: Apache-2.0
"""Hardening: the controller link reads no answer whole, and trusts only the node's TLS roots.

A real local HTTPS server (TLS from the controller's PKI) sends answers that are endless, lie
about their length, or are compressed; the agent stops at its endpoint's cap with an error naming
both, and its memory stays small.  TLS: a server whose certificate chains only to a CA of the
host's system store (``SSL_CERT_FILE``) is refused; one from a CA in the node's
``v2tlsbaseroot-certificates.pem`` is accepted.  A timeout says what timed out after how long.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.link import transport
from agent.link.transport import ControllerClient, TransportError
from tests.unit.link_harness import ControllerPki, fake_controller, make_pki
from tests.unit.test_link_configsync import Rig, rig  # noqa: F401 - the fixture

MiB = 1024 * 1024


@pytest.fixture
def pki(tmp_path: Path) -> ControllerPki:
    return make_pki(tmp_path / "controller")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def endless_server(pki: ControllerPki, head: bytes) -> tuple[asyncio.Server, int, list[int]]:
    """A TLS server that answers ``head`` then zeros for ever (until the client goes); the
    list counts the bytes it managed to send."""
    from controller.server import tls_context

    sent = [0]
    chunk = b"\0" * (256 * 1024)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head)
            while sent[0] < 4096 * MiB:
                writer.write(chunk)
                await writer.drain()
                sent[0] += len(chunk)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls_context(pki.state))
    return server, int(server.sockets[0].getsockname()[1]), sent


@pytest.fixture
async def endless(pki: ControllerPki) -> AsyncIterator[tuple[int, list[int]]]:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-proto-binary\r\nConnection: close\r\n\r\n"
    )
    server, port, sent = await endless_server(pki, head)
    try:
        yield port, sent
    finally:
        server.close()
        await server.wait_closed()


async def test_an_endless_config_answer_stops_at_its_cap(
    pki: ControllerPki, endless: tuple[int, list[int]]
) -> None:
    """Before: the client read until the server stopped (gigabytes, RSS with them)."""
    port, sent = endless
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem, send_timeout=60)
    before = rss_bytes()
    start = time.monotonic()
    try:
        with pytest.raises(TransportError, match=r"/config answer is larger than its 32 MiB cap"):
            await client.request("config", b"request")
    finally:
        await client.close()
    assert time.monotonic() - start < 20
    assert sent[0] < 64 * MiB  # the server was stopped soon after the cap
    assert rss_bytes() - before < 96 * MiB


@pytest.mark.parametrize(
    ("action", "cap"),
    [("certs", "262144 bytes"), ("uuid", "65536 bytes"), ("attest", "1 MiB"), ("info", "65536")],
)
async def test_small_endpoints_have_small_caps(
    pki: ControllerPki, endless: tuple[int, list[int]], action: str, cap: str
) -> None:
    port, sent = endless
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem)
    client.device_uuid = "6b1f3d2e-0c4a-4e6f-9a51-2d7c8e9f0a1b"
    try:
        with pytest.raises(transport.AnswerTooLarge, match=f"/{action} answer .* {cap}"):
            await client.request(action, b"x", device_path=action not in ("certs", "uuid"))
    finally:
        await client.close()
    assert sent[0] < 16 * MiB


async def test_a_declared_length_past_the_cap_is_refused_before_reading(
    pki: ControllerPki,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n"
    server, port, _sent = await endless_server(pki, head)
    client = ControllerClient(f"127.0.0.1:{port}", pki.root_pem)
    try:
        with pytest.raises(TransportError, match=r"/certs answer .*Content-Length 1073741824"):
            await client.request("certs", device_path=False)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


async def test_a_compressed_answer_is_refused(pki: ControllerPki) -> None:
    """A gzip body could inflate past any cap: the agent asks for identity and refuses others."""
    async with fake_controller(pki) as fake:

        async def gzipped(request: web.Request, body: bytes) -> web.StreamResponse:
            resp = web.Response(body=b"x" * 100_000)
            resp.enable_compression(web.ContentCoding.gzip, strategy=None)
            return resp

        fake.handlers["config"] = gzipped
        client = fake.client()
        try:
            with pytest.raises(TransportError, match="Content-Encoding 'gzip'"):
                await client.request("config", b"x")
        finally:
            await client.close()
        assert fake.seen[0].headers["Accept-Encoding"] == "identity"


async def test_an_answer_within_its_cap_is_read_whole(pki: ControllerPki) -> None:
    async with fake_controller(pki) as fake:
        body = bytes(range(256)) * 4096  # 1 MiB: fine for a config

        async def big(request: web.Request, _body: bytes) -> web.StreamResponse:
            return web.Response(body=body)

        fake.handlers["config"] = big
        client = fake.client()
        try:
            resp = await client.request("config", b"x")
        finally:
            await client.close()
    assert resp.status == 200 and resp.body == body


async def test_config_sync_survives_an_oversized_config(
    rig: Rig,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cap is a link failure like any other: logged with the endpoint, retried later."""
    monkeypatch.setitem(transport.ANSWER_LIMITS, "config", 16)
    node = rig.node
    await node.poll()
    assert node.applied == [] and not node.sync.status.controller_reachable
    assert "/config answer is larger than its 16 bytes cap" in caplog.text


async def test_a_timeout_says_what_timed_out(pki: ControllerPki) -> None:
    """Before: ``POST https://...: `` and nothing (asyncio.TimeoutError has no text)."""
    async with fake_controller(pki) as fake:

        async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
            await asyncio.sleep(10)
            return web.Response()

        fake.handlers["config"] = slow
        client = fake.client(send_timeout=0.2)
        try:
            with pytest.raises(TransportError) as info:
                await client.request("config", b"x")
        finally:
            await client.close()
    assert "/config: timed out after 0.2 s" in str(info.value)


# ---------------------------------------------------------------- TLS trust


async def test_the_system_store_is_not_trusted(
    tmp_path: Path, pki: ControllerPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a server with a certificate from any CA of the host's store was accepted."""
    public = make_pki(tmp_path / "public-ca")  # a controller whose TLS comes from another CA
    monkeypatch.setenv("SSL_CERT_FILE", str(public.state.root_cert))  # the "system" store
    async with fake_controller(public) as server:
        client = ControllerClient(server.address, pki.root_pem)  # the node's own root only
        try:
            with pytest.raises(TransportError, match="certificate"):
                await client.request("certs", device_path=False)
        finally:
            await client.close()
        assert server.seen == []
        # The node's TLS root bundle (EVE's v2tlsbaseroot-certificates.pem) is trusted.
        client = ControllerClient(
            server.address, pki.root_pem, tls_roots_pem=public.state.root_cert.read_bytes()
        )
        try:
            assert (await client.request("certs", device_path=False)).status == 200
        finally:
            await client.close()


async def test_the_daemon_takes_the_tls_root_bundle_from_the_config_partition(
    tmp_path: Path,
) -> None:
    from agent.link.identity import IdentityError, load_identity, tls_roots_path
    from agent.settings import NodePaths
    from tests.unit.link_harness import live_controller
    from tests.unit.test_daemon import provision

    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "tls-node")
    assert load_identity(paths).tls_roots_pem == b""
    bundle = make_pki(tmp_path / "public-ca").state.root_cert.read_bytes()
    tls_roots_path(paths).write_bytes(b"# public roots\n" + bundle)
    assert bundle in load_identity(paths).tls_roots_pem
    tls_roots_path(paths).write_bytes(b"not a certificate")
    with pytest.raises(IdentityError, match="v2tlsbaseroot"):
        load_identity(NodePaths.from_root(tmp_path / "node"))
