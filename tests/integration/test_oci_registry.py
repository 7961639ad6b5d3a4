# SPDX-License-Identifier: Apache-2.0
"""agent.drivers.oci against the local registry (tools/services.sh, 127.0.0.1:5000).

Each test pushes a small image of its own through the registry's HTTP API (a config blob, a
layer blob, a Docker schema 2 manifest and an OCI index with a linux/amd64 and a linux/arm64
entry) into a repository named for this run, pulls it by digest into a blob store, and deletes
its manifests and blobs afterwards (the registry runs with deletes enabled; the empty repository
directory stays until the registry's own garbage collection).  Tampering is done by a small
proxy in the test that alters one answer of the real registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest
from aiohttp import web

from agent.drivers import download as dl
from agent.drivers import oci
from agent.drivers.blobstore import BlobStore, DigestMismatch
from agent.drivers.errors import PermanentError

REGISTRY = os.environ.get("EVE_REGISTRY_ADDR", "127.0.0.1:5000")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Pushed:
    repo: str
    config: bytes
    layer: bytes
    manifest: bytes
    index: bytes
    blobs: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)

    @property
    def index_digest(self) -> str:
        return sha(self.index)


async def push_blob(s: aiohttp.ClientSession, repo: str, data: bytes) -> str:
    digest = sha(data)
    async with s.post(f"http://{REGISTRY}/v2/{repo}/blobs/uploads/") as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = f"http://{REGISTRY}{location}"
    sep = "&" if "?" in location else "?"
    async with s.put(
        f"{location}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 201, await resp.text()
    return digest


async def push_manifest(s: aiohttp.ClientSession, repo: str, body: bytes, media: str) -> str:
    digest = sha(body)
    async with s.put(
        f"http://{REGISTRY}/v2/{repo}/manifests/{digest}",
        data=body,
        headers={"Content-Type": media},
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers.get("Docker-Content-Digest") == digest
    return digest


def image_manifest(config: bytes, layer: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": sha(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": sha(layer),
                }
            ],
        },
        indent=3,
    ).encode()


async def push_image(s: aiohttp.ClientSession, repo: str) -> Pushed:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    layer = os.urandom(300_000)  # stands in for a gzip'd tar: the registry does not look inside
    arm_config = json.dumps({"architecture": "arm64", "os": "linux"}).encode()
    manifest = image_manifest(config, layer)
    arm_manifest = image_manifest(arm_config, layer)
    pushed = Pushed(repo, config, layer, manifest, b"")
    for blob in (config, layer, arm_config):
        pushed.blobs.append(await push_blob(s, repo, blob))
    pushed.manifests.append(await push_manifest(s, repo, manifest, oci.DOCKER_MANIFEST))
    pushed.manifests.append(await push_manifest(s, repo, arm_manifest, oci.DOCKER_MANIFEST))
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": oci.DOCKER_MANIFEST,
                    "size": len(arm_manifest),
                    "digest": sha(arm_manifest),
                    "platform": {"architecture": "arm64", "os": "linux"},
                },
                {
                    "mediaType": oci.DOCKER_MANIFEST,
                    "size": len(manifest),
                    "digest": sha(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
            ],
        }
    ).encode()
    pushed.index = index
    pushed.manifests.append(await push_manifest(s, repo, index, oci.OCI_INDEX))
    return pushed


async def delete_image(s: aiohttp.ClientSession, pushed: Pushed) -> None:
    for digest in reversed(pushed.manifests):
        async with s.delete(f"http://{REGISTRY}/v2/{pushed.repo}/manifests/{digest}") as resp:
            assert resp.status in (202, 404), await resp.text()
    for digest in pushed.blobs:
        async with s.delete(f"http://{REGISTRY}/v2/{pushed.repo}/blobs/{digest}") as resp:
            assert resp.status in (202, 404), await resp.text()


@pytest.fixture
async def session(
    require_service: Callable[[str, str], NoReturn],
) -> AsyncIterator[aiohttp.ClientSession]:
    async with dl.new_session() as s:
        try:
            async with s.get(
                f"http://{REGISTRY}/v2/", timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                if resp.status != 200:
                    require_service("registry", f"http://{REGISTRY}/v2/ answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            require_service("registry", f"http://{REGISTRY}/v2/: {exc}")
        yield s


@pytest.fixture
async def image(session: aiohttp.ClientSession) -> AsyncIterator[Pushed]:
    repo = f"eve-agent-test/oci-{uuid.uuid4().hex[:12]}"
    pushed = await push_image(session, repo)
    try:
        yield pushed
    finally:
        await delete_image(session, pushed)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[BlobStore]:
    s = BlobStore(tmp_path / "blobs")
    await s.open()
    yield s
    await s.close()


async def test_pull_by_digest_through_an_index(
    session: aiohttp.ClientSession, image: Pushed, store: BlobStore
) -> None:
    client = oci.RegistryClient(session, REGISTRY)
    ref = oci.ImageRef.parse(f"{REGISTRY}/{image.repo}@{image.index_digest}")
    seen: list[tuple[int, int | None]] = []
    pulled = await client.pull(
        ref, store, max_size=10 * 1024 * 1024, progress=lambda d, t: seen.append((d, t))
    )
    assert pulled.digest == image.index_digest
    assert pulled.manifest_digest == image.manifest_digest  # linux/amd64 chosen
    assert pulled.media_type == oci.DOCKER_MANIFEST
    assert store.path(pulled.config.digest).read_bytes() == image.config
    assert store.path(pulled.layers[0].digest).read_bytes() == image.layer
    assert store.path(image.manifest_digest).read_bytes() == image.manifest
    assert store.path(image.index_digest).read_bytes() == image.index
    assert set(pulled.digests) == {
        image.index_digest,
        image.manifest_digest,
        sha(image.config),
        sha(image.layer),
    }
    assert all([await store.verify(d) for d in pulled.digests])
    total = len(image.config) + len(image.layer)
    assert seen[-1] == (total, total)
    # The manifest itself, and a tag only when asked explicitly.
    again = await client.pull(ref.with_digest(image.manifest_digest), store)
    assert again.layers == pulled.layers


async def test_tags_are_refused_for_pulls_and_resolved_on_request(
    session: aiohttp.ClientSession, image: Pushed, store: BlobStore
) -> None:
    async with session.put(
        f"http://{REGISTRY}/v2/{image.repo}/manifests/v1",
        data=image.manifest,
        headers={"Content-Type": oci.DOCKER_MANIFEST},
    ) as resp:
        assert resp.status == 201
    client = oci.RegistryClient(session, REGISTRY)
    ref = oci.ImageRef.parse(f"{REGISTRY}/{image.repo}:v1")
    with pytest.raises(PermanentError, match="by digest only"):
        await client.pull(ref, store)
    assert await client.resolve(ref) == image.manifest_digest


async def test_too_large_and_missing_images_are_permanent(
    session: aiohttp.ClientSession, image: Pushed, store: BlobStore
) -> None:
    client = oci.RegistryClient(session, REGISTRY)
    ref = oci.ImageRef.parse(f"{REGISTRY}/{image.repo}@{image.manifest_digest}")
    with pytest.raises(dl.ContentTooLarge, match="maximum size of 1000 bytes"):
        await client.pull(ref, store, max_size=1000)
    assert not store.has(sha(image.layer))
    missing = ref.with_digest(sha(b"no such manifest"))
    with pytest.raises(PermanentError, match="HTTP 404"):
        await client.pull(missing, store)


@dataclass
class Tamper:
    """A proxy in front of the registry that alters the answer for one path."""

    path_suffix: str
    hits: int = 0


async def tampering_proxy(tamper: Tamper) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.StreamResponse:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.request(
                request.method,
                f"http://{REGISTRY}{request.path_qs}",
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                allow_redirects=False,
            ) as up,
        ):
            body = await up.read()
            if request.path.endswith(tamper.path_suffix) and up.status == 200 and body:
                tamper.hits += 1
                body = body[:-1] + bytes([body[-1] ^ 0x01])
            headers = {
                k: v
                for k, v in up.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=up.status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


async def test_manifest_and_blob_digest_mismatches_are_refused(
    session: aiohttp.ClientSession, image: Pushed, store: BlobStore
) -> None:
    tamper = Tamper(f"/manifests/{image.index_digest}")
    runner, proxy = await tampering_proxy(tamper)
    try:
        client = oci.RegistryClient(session, proxy)
        ref = oci.ImageRef.parse(f"{proxy}/{image.repo}@{image.index_digest}")
        with pytest.raises(DigestMismatch, match="manifest digest mismatch"):
            await client.pull(ref, store)
        assert tamper.hits == 1 and not store.has(image.index_digest)

        tamper.path_suffix, tamper.hits = f"/blobs/{sha(image.layer)}", 0
        with pytest.raises(DigestMismatch, match="SHA-256 mismatch after 2 attempts") as info:
            await client.pull(ref, store, max_retries=1, what="content tree busybox")
        assert "content tree busybox" in str(info.value)
        assert tamper.hits == 2 and not store.has(sha(image.layer))
        assert store.has(sha(image.config))  # verified blobs stay, the bad one never lands
        assert os.listdir(store.root / "partial") == []
    finally:
        await runner.cleanup()


def test_references_parse() -> None:
    r = oci.ImageRef.parse("127.0.0.1:5000/a/b:v1@sha256:" + "a" * 64)
    assert (r.registry, r.repository, r.tag, r.digest) == (
        "127.0.0.1:5000",
        "a/b",
        "v1",
        "sha256:" + "a" * 64,
    )
    hub = oci.ImageRef.parse("busybox")
    assert (hub.registry, hub.repository, hub.tag) == (oci.DOCKER_HUB, "library/busybox", None)
    ds = oci.ImageRef.from_datastore("docker://127.0.0.1:5000", "", "lfedge/app:1", "B" * 64)
    assert str(ds) == "127.0.0.1:5000/lfedge/app:1@sha256:" + "b" * 64
    assert oci.parse_challenge(
        'Bearer realm="https://a/token",service="reg",scope="repository:x:pull"'
    ) == (
        "bearer",
        {"realm": "https://a/token", "service": "reg", "scope": "repository:x:pull"},
    )
    with pytest.raises(PermanentError):
        oci.ImageRef.parse("127.0.0.1:5000/Bad Repo")
