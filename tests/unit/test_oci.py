# SPDX-License-Identifier: Apache-2.0
"""agent.drivers.oci's token auth against a fake registry (the real one is in
tests/integration/test_oci_registry.py, without auth)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.drivers import download as dl
from agent.drivers import oci
from agent.drivers.blobstore import BlobStore
from agent.drivers.errors import PermanentError
from tests.unit.blob_server import serve


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    port: int = 0
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    token_requests: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests.append(request.query_string)
        if request.headers.get("Authorization") != aiohttp.encode_basic_auth("user", "pw"):
            return web.Response(status=401)
        assert request.query["scope"] == "repository:team/app:pull"
        return web.json_response({"token": "tok"})

    async def serve(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer tok":
            realm = f"http://{self.address}/token"
            challenge = f'Bearer realm="{realm}",service="fake",scope="repository:team/app:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        found = self.objects.get(request.match_info["digest"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])


@pytest.fixture
async def registry() -> AsyncIterator[FakeRegistry]:
    reg = FakeRegistry()
    app = web.Application()
    app.router.add_get("/token", reg.token)
    app.router.add_get("/v2/team/app/{kind}/{digest}", reg.serve)
    async with serve(app) as reg.port:
        yield reg


async def test_bearer_token_pull(registry: FakeRegistry, tmp_path: Path) -> None:
    config, layer = b'{"os": "linux"}', b"layer bytes" * 1000
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": "x", "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "y", "digest": sha(layer), "size": len(layer)}],
        }
    ).encode()
    registry.objects = {
        sha(config): (config, "application/octet-stream"),
        sha(layer): (layer, "application/octet-stream"),
        sha(manifest): (manifest, oci.OCI_MANIFEST),
    }
    store = BlobStore(tmp_path / "store")
    await store.open()
    ref = oci.ImageRef.parse(f"{registry.address}/team/app@{sha(manifest)}")
    async with dl.new_session() as session:
        try:
            anonymous = oci.RegistryClient(session, registry.address)
            with pytest.raises(PermanentError, match="401"):
                await anonymous.pull(ref, store)
            client = oci.RegistryClient(
                session, registry.address, credentials=dl.Credentials("user", "pw")
            )
            pulled = await client.pull(ref, store)
        finally:
            await store.close()
    assert pulled.media_type == oci.OCI_MANIFEST
    assert store.path(sha(layer)).read_bytes() == layer
    assert len(registry.token_requests) == 2  # the anonymous attempt, then one token reused
