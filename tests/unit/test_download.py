# SPDX-License-Identifier: Apache-2.0
"""agent.drivers.download against a local HTTPS datastore (tests/unit/blob_server.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from agent.drivers import download as dl
from agent.drivers.errors import PermanentError, TemporaryError
from tests.loopwatch import LoopWatch
from tests.unit.blob_server import Blob, BlobServer, server, session

__all__ = ["server", "session"]  # fixtures shared with the other downloading tests

KIB = 1024
MIB = 1024 * KIB


def payload(n: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB pattern
    return (block * (n // len(block) + 1))[:n]


async def fetch(
    session: aiohttp.ClientSession, server: BlobServer, name: str, partial: Path, **kw: object
) -> dl.DownloadResult:
    return await dl.download(
        session,
        server.url(name),
        partial,
        ssl_ctx=dl.ssl_context([server.ca_pem]),
        **kw,  # type: ignore[arg-type]
    )


async def test_full_download_with_progress(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = payload(3 * MIB + 123)
    server.blobs["a"] = Blob(data)
    seen: list[tuple[int, int | None]] = []
    partial = tmp_path / "dl" / "a.partial"
    result = await fetch(session, server, "a", partial, progress=lambda d, t: seen.append((d, t)))
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data) and result.resumed_from == 0 and result.status == 200
    assert partial.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3
    assert all(t == len(data) for _, t in seen)


async def test_resume_after_a_cut_connection(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = payload(2 * MIB, seed=2)
    server.blobs["b"] = Blob(data, cut_after=700 * KIB)
    partial = tmp_path / "b.partial"
    with pytest.raises(TemporaryError):
        await fetch(session, server, "b", partial)
    kept = partial.stat().st_size
    assert 0 < kept <= 700 * KIB
    result = await fetch(session, server, "b", partial)
    assert result.resumed_from == kept and result.status == 206
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert partial.read_bytes() == data
    assert server.requests("b")[-1].range == f"bytes={kept}-"


async def test_server_ignoring_ranges_starts_over(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = payload(MIB, seed=3)
    server.blobs["c"] = Blob(data, ignore_range=True)
    partial = tmp_path / "c.partial"
    partial.write_bytes(b"x" * 5000)  # garbage that a naive resume would keep
    result = await fetch(session, server, "c", partial)
    assert server.requests("c")[0].range == "bytes=5000-"
    assert result.status == 200 and result.resumed_from == 0
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert partial.read_bytes() == data


async def test_416_with_a_complete_partial_and_with_garbage(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = payload(100 * KIB, seed=4)
    server.blobs["d"] = Blob(data)
    partial = tmp_path / "d.partial"
    partial.write_bytes(data)
    result = await fetch(session, server, "d", partial)
    assert result.status == 416 and result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    # A partial longer than the resource: discarded, fetched again whole.
    partial.write_bytes(data + b"extra")
    result = await fetch(session, server, "d", partial)
    assert result.status == 200 and partial.read_bytes() == data
    assert [s.status for s in server.requests("d")] == [416, 416, 200]


async def test_max_size_announced_and_streamed(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = payload(MIB, seed=5)
    server.blobs["big"] = Blob(data)
    server.blobs["chunked"] = Blob(data, chunked=True)
    partial = tmp_path / "big.partial"
    with pytest.raises(dl.ContentTooLarge, match="maximum size of 500000 bytes") as info:
        await fetch(session, server, "big", partial, max_size=500_000)
    assert info.value.limit == 500_000 and not partial.exists()
    # No Content-Length: aborted once it grows past the limit, the partial deleted.
    with pytest.raises(dl.ContentTooLarge, match="500000"):
        await fetch(session, server, "chunked", partial, max_size=500_000)
    assert not partial.exists()
    assert isinstance(info.value, PermanentError)
    ok = await fetch(session, server, "chunked", partial, max_size=len(data))
    assert ok.size == len(data)


async def test_status_codes_are_typed(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.blobs["busy"] = Blob(b"x", status=503)
    server.blobs["secret"] = Blob(b"s3cret", auth=("key", "pw"))
    server.blobs["forbidden"] = Blob(b"x", status=403)
    p = tmp_path / "p"
    with pytest.raises(PermanentError, match=r"HTTP 404.*not found"):
        await fetch(session, server, "missing", p)
    with pytest.raises(PermanentError, match=r"HTTP 401.*credentials"):
        await fetch(session, server, "secret", p)
    with pytest.raises(PermanentError, match=r"HTTP 401.*credentials"):
        await fetch(session, server, "secret", p, credentials=dl.Credentials("key", "wrong"))
    with pytest.raises(PermanentError, match=r"HTTP 403.*credentials"):
        await fetch(session, server, "forbidden", p)
    with pytest.raises(TemporaryError, match="HTTP 503") as busy:
        await fetch(session, server, "busy", p)
    assert busy.value.retry_after == 7.0
    result = await fetch(session, server, "secret", p, credentials=dl.Credentials("key", "pw"))
    assert p.read_bytes() == b"s3cret" and result.size == 6
    assert "pw" not in repr(dl.Credentials("key", "pw"))


async def test_untrusted_certificate_and_dead_server(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.blobs["a"] = Blob(b"abc")
    with pytest.raises(PermanentError, match="certificate"):
        await dl.download(session, server.url("a"), tmp_path / "a", ssl_ctx=dl.ssl_context())
    with pytest.raises(TemporaryError):
        await dl.download(
            session, "https://127.0.0.1:1/blob/a", tmp_path / "a",
            timeouts=dl.Timeouts(connect=2, idle=2),
        )  # fmt: skip


async def test_idle_timeout_is_temporary(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.blobs["stuck"] = Blob(payload(MIB), stall=True)
    with pytest.raises(TemporaryError, match="timed out"):
        await fetch(session, server, "stuck", tmp_path / "s", timeouts=dl.Timeouts(5, 0.3))


async def test_free_space_is_checked_before_starting(
    server: BlobServer,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.blobs["a"] = Blob(payload(MIB))
    monkeypatch.setattr(dl, "_free_space", lambda _d: (100_000, 10 * MIB))
    with pytest.raises(TemporaryError, match="not enough free space"):
        await fetch(session, server, "a", tmp_path / "a")
    monkeypatch.setattr(dl, "_free_space", lambda _d: (100_000, 200_000))
    with pytest.raises(PermanentError, match="do not fit on the file system"):
        await fetch(session, server, "a", tmp_path / "a")
    assert not (tmp_path / "a").exists() or (tmp_path / "a").stat().st_size == 0


async def test_a_large_download_never_stalls_the_loop(
    server: BlobServer, session: aiohttp.ClientSession, tmp_path: Path, loop_watch: LoopWatch
) -> None:
    data = await asyncio.to_thread(os.urandom, 64 * MIB)
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    server.blobs["huge"] = Blob(data)
    result = await fetch(session, server, "huge", tmp_path / "huge", chunk_size=dl.MAX_CHUNK)
    assert result.sha256 == digest and result.size == 64 * MIB
