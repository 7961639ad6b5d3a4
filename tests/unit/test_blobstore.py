# SPDX-License-Identifier: Apache-2.0
"""agent.drivers.blobstore: verify, publish, retry, share, limit, reference and collect."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.drivers import download as dl
from agent.drivers.blobstore import BlobStore, DigestMismatch
from agent.drivers.errors import PermanentError
from tests.unit.blob_server import Blob, BlobServer, blob_server, server, session

__all__ = ["server", "session"]  # fixtures shared with the other downloading tests
from tests.unit.test_download import MIB, payload


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[BlobStore]:
    s = BlobStore(tmp_path / "store", max_downloads=2, per_host=1, clock=clock)
    await s.open()
    yield s
    await s.close()


async def fetch(
    store: BlobStore,
    session: aiohttp.ClientSession,
    server: BlobServer,
    name: str,
    digest: str,
    **kw: object,
) -> Path:
    return await store.fetch_url(
        session, digest, server.url(name), what=f"content tree {name}",
        ssl_ctx=dl.ssl_context([server.ca_pem]), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_fetch_verifies_and_publishes_once(
    store: BlobStore, session: aiohttp.ClientSession, server: BlobServer
) -> None:
    blob = server.blobs["a"] = Blob(payload(MIB))
    path = await fetch(store, session, server, "a", blob.sha256.upper())
    assert path == store.path(blob.sha256) and path.read_bytes() == blob.data
    assert not stat.S_IMODE(path.stat().st_mode) & 0o222  # read-only
    assert os.listdir(store.root / "partial") == []
    assert store.size(blob.sha256) == MIB
    again = await fetch(store, session, server, "a", f"sha256:{blob.sha256}")
    assert again == path and len(server.requests("a")) == 1


async def test_wrong_sha_is_retried_then_permanent_naming_the_content(
    store: BlobStore, session: aiohttp.ClientSession, server: BlobServer
) -> None:
    good = payload(200_000, seed=7)
    server.blobs["bad"] = Blob(payload(200_000, seed=8))
    with pytest.raises(DigestMismatch, match="content tree bad: SHA-256 mismatch after 3") as info:
        await fetch(store, session, server, "bad", hashlib.sha256(good).hexdigest(), max_retries=2)
    assert isinstance(info.value, PermanentError) and info.value.attempts == 3
    assert len(server.requests("bad")) == 3
    assert os.listdir(store.root / "partial") == [] and store.blobs() == {}
    # Wrong twice, then right: the third attempt publishes it.
    server.blobs["flaky"] = Blob(good, wrong=b"nope" * 10, wrong_times=2)
    path = await fetch(store, session, server, "flaky", hashlib.sha256(good).hexdigest())
    assert path.read_bytes() == good and len(server.requests("flaky")) == 3


async def test_resume_through_the_store(
    store: BlobStore, session: aiohttp.ClientSession, server: BlobServer
) -> None:
    blob = server.blobs["r"] = Blob(payload(2 * MIB, seed=9), cut_after=MIB)
    with pytest.raises(dl.TemporaryError):
        await fetch(store, session, server, "r", blob.sha256)
    assert store.partial_path(blob.sha256).stat().st_size > 0
    path = await fetch(store, session, server, "r", blob.sha256)
    assert path.read_bytes() == blob.data
    assert server.requests("r")[-1].range is not None


async def test_concurrent_fetches_of_one_digest_share_one_download(
    store: BlobStore, session: aiohttp.ClientSession, server: BlobServer
) -> None:
    blob = server.blobs["s"] = Blob(payload(4 * MIB, seed=10))
    seen: dict[int, list[int]] = {i: [] for i in range(5)}
    paths = await asyncio.gather(
        *(
            fetch(
                store,
                session,
                server,
                "s",
                blob.sha256,
                progress=lambda d, _t, i=i: seen[i].append(d),
            )
            for i in range(5)
        )
    )
    assert len(set(paths)) == 1 and len(server.requests("s")) == 1
    assert all(s and s[-1] == 4 * MIB for s in seen.values())


async def test_one_cancelled_waiter_does_not_cancel_the_shared_download(
    store: BlobStore, session: aiohttp.ClientSession, server: BlobServer
) -> None:
    blob = server.blobs["w"] = Blob(payload(MIB, seed=11), stall=True)
    first = asyncio.create_task(fetch(store, session, server, "w", blob.sha256))
    second = asyncio.create_task(fetch(store, session, server, "w", blob.sha256))
    async with asyncio.timeout(5):
        await server.sending.wait()
    assert store.downloading() == [blob.sha256]
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    server.release.set()
    assert (await second).read_bytes() == blob.data
    assert len(server.requests("w")) == 1


async def test_a_stalled_datastore_delays_only_its_own_downloads(
    store: BlobStore, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # store: max_downloads=2, per_host=1.  Datastore A stalls; B's blobs all arrive meanwhile.
    async with blob_server(tmp_path / "a") as dead, blob_server(tmp_path / "b") as alive:
        stuck = [Blob(payload(MIB, seed=20 + i), stall=True) for i in range(3)]
        fine = [Blob(payload(MIB, seed=30 + i)) for i in range(4)]
        for i, b in enumerate(stuck):
            dead.blobs[f"x{i}"] = b
        for i, b in enumerate(fine):
            alive.blobs[f"y{i}"] = b
        hanging = [
            asyncio.create_task(fetch(store, session, dead, f"x{i}", b.sha256))
            for i, b in enumerate(stuck)
        ]
        await asyncio.sleep(0.1)
        async with asyncio.timeout(10):
            done = await asyncio.gather(
                *(fetch(store, session, alive, f"y{i}", b.sha256) for i, b in enumerate(fine))
            )
        assert [p.read_bytes() for p in done] == [b.data for b in fine]
        assert not any(t.done() for t in hanging)
        assert dead.active == 1  # per_host=1: only one of A's transfers holds a slot
        for t in hanging:
            t.cancel()
        await asyncio.gather(*hanging, return_exceptions=True)


async def test_references_persist_and_gc_waits_for_the_grace_period(
    store: BlobStore,
    session: aiohttp.ClientSession,
    server: BlobServer,
    clock: Clock,
    tmp_path: Path,
) -> None:
    a = server.blobs["a"] = Blob(payload(100_000, seed=40))
    b = server.blobs["b"] = Blob(payload(100_000, seed=41))
    await store.retain("contenttree/1", a.sha256)
    await store.retain("contenttree/2", a.sha256)
    await store.retain("contenttree/2", a.sha256)  # idempotent
    await fetch(store, session, server, "a", a.sha256)
    await fetch(store, session, server, "b", b.sha256)  # nobody references b
    assert store.refcount(a.sha256) == 2 and store.refcount(b.sha256) == 0
    clock.now += 50
    assert await store.gc(grace=60) == []
    clock.now += 10
    assert await store.gc(grace=60) == [b.sha256]
    assert not store.path(b.sha256).exists() and store.has(a.sha256)
    await store.release("contenttree/1", a.sha256)
    assert store.owners(a.sha256) == {"contenttree/2"}
    clock.now += 3600
    assert await store.gc(grace=60) == []  # still referenced

    # References survive a restart; an unreferenced blob gets the full grace period again.
    await store.release_owner("contenttree/2")
    reopened = BlobStore(store.root, clock=clock)
    await store.close()
    await reopened.open()
    try:
        assert reopened.refcount(a.sha256) == 0 and reopened.has(a.sha256)
        await reopened.retain("app/x", a.sha256)
        again = BlobStore(store.root, clock=clock)
        await again.open()
        assert again.owners(a.sha256) == {"app/x"}
        await again.close()
        await reopened.release("app/x", a.sha256)
        clock.now += 59
        assert await reopened.gc(grace=60) == []
        clock.now += 1
        assert await reopened.gc(grace=60) == [a.sha256]
        assert os.listdir(store.root / "blobs" / "sha256") == []
        assert os.listdir(store.root / "refs") == []
    finally:
        await reopened.close()


async def test_put_bytes_checks_the_digest(store: BlobStore) -> None:
    data = b'{"schemaVersion": 2}'
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = await store.put_bytes(digest, data, what="manifest")
    assert path.read_bytes() == data and await store.verify(digest)
    with pytest.raises(DigestMismatch, match="manifest: SHA-256 mismatch"):
        await store.put_bytes(hashlib.sha256(b"other").hexdigest(), data, what="manifest")
    with pytest.raises(PermanentError, match="not a SHA-256"):
        store.path("md5:abc")
