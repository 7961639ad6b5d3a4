# SPDX-License-Identifier: Apache-2.0
"""A local HTTPS datastore for the download and blob store tests: aiohttp on 127.0.0.1 with a
certificate from a CA made here, serving in-memory blobs with ranges, and misbehaving on demand
(a cut connection, ranges ignored, a stall, a status, basic auth, a wrong body)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import encode_basic_auth, web

from agent.drivers import download as dl
from agent.wire import pki

CHUNK = 256 * 1024


@dataclass
class Blob:
    data: bytes
    #: Close the connection after this many body bytes, this many times.
    cut_after: int | None = None
    cuts: int = 1
    #: Answer 200 with the whole body to a range request.
    ignore_range: bool = False
    #: Never send the body (headers only), until ``release`` is set.
    stall: bool = False
    #: Send no Content-Length (chunked).
    chunked: bool = False
    #: Answer with this status instead.
    status: int | None = None
    #: Require this basic auth.
    auth: tuple[str, str] | None = None
    #: Serve this body instead of ``data`` (a wrong blob), this many times (None: always).
    wrong: bytes | None = None
    wrong_times: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Served:
    path: str
    range: str | None
    status: int


@dataclass
class BlobServer:
    port: int
    ca_pem: bytes
    blobs: dict[str, Blob] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once a response body is being sent.
    sending: asyncio.Event = field(default_factory=asyncio.Event)
    active: int = 0

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/blob/{name}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        return ctx

    def requests(self, name: str) -> list[Served]:
        return [s for s in self.served if s.path == name]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        blob = self.blobs.get(name)
        rng = request.headers.get("Range")
        if blob is None:
            self.served.append(Served(name, rng, 404))
            return web.Response(status=404, text="no such blob")
        if blob.auth is not None:
            header = request.headers.get("Authorization", "")
            expected = encode_basic_auth(*blob.auth)
            if header != expected:
                self.served.append(Served(name, rng, 401))
                return web.Response(status=401, text="who are you")
        if blob.status is not None:
            self.served.append(Served(name, rng, blob.status))
            return web.Response(status=blob.status, headers={"Retry-After": "7"}, text="busy")
        data = blob.data
        if blob.wrong is not None and (blob.wrong_times is None or blob.wrong_times > 0):
            data = blob.wrong
            if blob.wrong_times is not None:
                blob.wrong_times -= 1
        start = 0
        status = 200
        if rng and not blob.ignore_range:
            first = int(rng.split("=", 1)[1].split("-", 1)[0])
            if first >= len(data):
                self.served.append(Served(name, rng, 416))
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            start, status = first, 206
        self.served.append(Served(name, rng, status))
        resp = web.StreamResponse(status=status)
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if blob.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(data) - start
        resp.content_type = "application/octet-stream"
        self.active += 1
        self.sending.set()
        try:
            return await self._send(request, resp, blob, data, start)
        except ConnectionResetError:  # the client went away (a timeout, a cancelled test)
            return resp
        finally:
            self.active -= 1

    async def _send(
        self, request: web.Request, resp: web.StreamResponse, blob: Blob, data: bytes, start: int
    ) -> web.StreamResponse:
        await resp.prepare(request)
        if blob.stall:
            await self.release.wait()
        body = memoryview(data)[start:]
        limit = len(body)
        if blob.cut_after is not None and blob.cuts > 0:
            blob.cuts -= 1
            limit = min(limit, blob.cut_after)
        for offset in range(0, limit, CHUNK):
            await resp.write(body[offset : min(offset + CHUNK, limit)])
        if limit < len(body):
            assert request.transport is not None
            request.transport.abort()
            return resp
        await resp.write_eof()
        return resp


def make_tls(directory: Path) -> tuple[ssl.SSLContext, bytes]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (server context, CA PEM)."""
    ca_key = pki.new_ec_key()
    ca = pki.make_certificate(ca_key, "test datastore CA", is_ca=True)
    key = pki.new_ec_key()
    cert = pki.make_certificate(
        key, "127.0.0.1", issuer_key=ca_key, issuer_cert=ca, ip_addresses=["127.0.0.1"],
        dns_names=["localhost"], server_auth=True,
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "server.pem").write_bytes(pki.cert_pem(cert) + pki.cert_pem(ca))
    (directory / "server.key").write_bytes(pki.key_pem(key))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(directory / "server.pem", directory / "server.key")
    return ctx, pki.cert_pem(ca)


@contextlib.asynccontextmanager
async def blob_server(directory: Path) -> AsyncIterator[BlobServer]:
    server_ctx, ca_pem = make_tls(directory)
    app = web.Application()
    holder: list[BlobServer] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        return await holder[0].handle(request)

    app.router.add_get("/blob/{name}", handle)
    async with serve(app, ssl_context=server_ctx) as port:
        server = BlobServer(port, ca_pem)
        holder.append(server)
        try:
            yield server
        finally:
            server.release.set()


@contextlib.asynccontextmanager
async def serve(app: web.Application, *, ssl_context: ssl.SSLContext | None = None,
                ) -> AsyncIterator[int]:  # fmt: skip
    """Serve ``app`` on 127.0.0.1 (a free port, yielded) until the block ends."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


# Fixtures for the tests that download from it (imported by those test modules).
@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[BlobServer]:
    async with blob_server(tmp_path / "tls") as srv:
        yield srv


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with dl.new_session() as s:
        yield s
