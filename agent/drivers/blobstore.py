"""Verified blobs, cached by SHA-256 and shared: EVE's verifier and its blob refcounts.

Layout under the store's root (inside the vault on a node)::

    blobs/sha256/<hex>        verified blobs, read-only; the name is the content's SHA-256
    partial/<hex>.partial     transfers under way, kept across restarts so that they resume
    refs/<hex>/<owner>        one empty file per reference (owner quoted into a file name)

- **Atomic publish.**  A blob is downloaded into its partial file (hashed as it arrives, see
  :mod:`agent.drivers.download`), fsync'd, compared with the expected digest, renamed into
  ``blobs/`` and the directory fsync'd.  Nothing under ``blobs/`` was ever unverified.
- **Retries on mismatch.**  :meth:`BlobStore.fetch` deletes a partial whose SHA-256 differs and
  downloads it again, up to ``max_retries`` more times (EVE's ``blob.download.max.retries``,
  5), then raises :class:`PermanentError` naming the content.  Transfer errors are not retried
  here: they propagate typed (a temporary one keeps the partial, so the engine's next attempt
  resumes it).
- **One download per digest.**  Concurrent fetches of one digest share one transfer; each
  caller gets the progress, and cancelling one caller cancels the transfer only when it was the
  last one waiting.
- **Bounded concurrency.**  At most ``max_downloads`` transfers run at once, and at most
  ``per_host`` from one host (a datastore), taken in that order (host first): a dead datastore
  holds at most ``per_host`` of the global slots and delays only what comes from it.
- **References and garbage collection.**  ``retain(owner, digest)`` and ``release`` persist one
  file per reference, so references survive a restart.  A blob nobody references is removed by
  :meth:`BlobStore.gc` once it has been unreferenced for the grace period the caller passes
  (EVE's ``timer.gc.download``); the period counts from when the last reference went, from when
  it was published unreferenced, or from when the store was opened (a restart gives every
  unreferenced blob the full period again, as EVE does for what it finds at boot).  Retain a
  digest *before* fetching it so the blob is never collectable between the two.

Everything that touches the disk runs in the store's own small thread pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import aiohttp

from agent.drivers import download as dl
from agent.drivers.errors import PermanentError
from agent.util.atomicfile import fsync_dir

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{64}$")
T = TypeVar("T")

#: ``fetcher(partial, progress)``: transfer the content into ``partial`` (resuming it when it
#: exists) and return what :func:`agent.drivers.download.download` returns.
Fetcher = Callable[[Path, dl.ProgressCallback], Awaitable[dl.DownloadResult]]

#: EVE's default for ``blob.download.max.retries``.
DEFAULT_MAX_RETRIES = 5


def normalize_digest(digest: str) -> str:
    """``sha256:<hex>`` or ``<hex>`` (any case) -> the lower-case hex; PermanentError else."""
    text = digest.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _HEX.match(text):
        raise PermanentError(f"not a SHA-256 digest: {digest!r}")
    return text


class DigestMismatch(PermanentError):
    """The content's SHA-256 was not the expected one on every attempt."""

    def __init__(self, message: str, expected: str, actual: str, attempts: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        self.attempts = attempts


@dataclass
class _Transfer:
    task: asyncio.Task[Path]
    waiters: int = 0
    watchers: list[dl.ProgressCallback] = field(default_factory=list)
    done: int = 0
    total: int | None = None


@dataclass
class _HostSlot:
    sem: asyncio.Semaphore
    users: int = 0


class BlobStore:
    """The verified blob cache under ``root``; see the module docstring.  ``open()`` before
    use, ``close()`` after (cancels transfers, keeps their partials)."""

    def __init__(
        self,
        root: Path,
        *,
        max_downloads: int = 4,
        per_host: int = 2,
        reserve: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_downloads < 1 or per_host < 1:
            raise ValueError("max_downloads and per_host must be at least 1")
        self.root = root
        self.max_downloads = max_downloads
        self.per_host = per_host
        #: Bytes of the file system that downloads leave free.
        self.reserve = reserve
        self._clock = clock
        self._blob_dir = root / "blobs" / "sha256"
        self._partial_dir = root / "partial"
        self._ref_dir = root / "refs"
        #: Hashing, writing, renames, reference files: never on the loop.
        self.executor = ThreadPoolExecutor(
            max_workers=max_downloads + 2, thread_name_prefix="blobstore"
        )
        self._global = asyncio.Semaphore(max_downloads)
        self._hosts: dict[str, _HostSlot] = {}
        self._blobs: dict[str, int] = {}  # verified hex -> size
        self._refs: dict[str, set[str]] = {}
        self._unref_since: dict[str, float] = {}
        self._transfers: dict[str, _Transfer] = {}
        self._deleting: dict[str, asyncio.Future[None]] = {}
        self._ref_lock = asyncio.Lock()
        self._opened = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def open(self) -> None:
        """Create the directories and load what is there (blobs, references)."""
        blobs, refs = await self._run(self._scan)
        now = self._clock()
        self._blobs = blobs
        self._refs = refs
        self._unref_since = {h: now for h in blobs if not refs.get(h)}
        self._opened = True

    def _scan(self) -> tuple[dict[str, int], dict[str, set[str]]]:
        for d in (self._blob_dir, self._partial_dir, self._ref_dir):
            d.mkdir(parents=True, exist_ok=True)
        blobs: dict[str, int] = {}
        for entry in os.scandir(self._blob_dir):
            if _HEX.match(entry.name) and entry.is_file():
                blobs[entry.name] = entry.stat().st_size
            elif entry.name.startswith("."):  # a publish cut short
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        refs: dict[str, set[str]] = {}
        for entry in os.scandir(self._ref_dir):
            if not (_HEX.match(entry.name) and entry.is_dir()):
                continue
            owners = {unquote(e.name) for e in os.scandir(entry.path)}
            if owners:
                refs[entry.name] = owners
            else:
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)
        return blobs, refs

    async def close(self) -> None:
        """Cancel the transfers under way (their partials stay for a later resume)."""
        tasks = [t.task for t in self._transfers.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self.executor.shutdown(wait=True)

    # --- queries --------------------------------------------------------------------------------

    def path(self, digest: str) -> Path:
        """Where the verified blob is (or would be)."""
        return self._blob_dir / normalize_digest(digest)

    def has(self, digest: str) -> bool:
        return normalize_digest(digest) in self._blobs

    def size(self, digest: str) -> int | None:
        return self._blobs.get(normalize_digest(digest))

    def blobs(self) -> dict[str, int]:
        """Every verified blob: hex digest -> size."""
        return dict(self._blobs)

    def progress(self, digest: str) -> tuple[int, int | None] | None:
        """(bytes so far, total if known) of the transfer under way, None when there is none."""
        t = self._transfers.get(normalize_digest(digest))
        return (t.done, t.total) if t else None

    def downloading(self) -> list[str]:
        return list(self._transfers)

    # --- references -----------------------------------------------------------------------------

    def refcount(self, digest: str) -> int:
        return len(self._refs.get(normalize_digest(digest), ()))

    def owners(self, digest: str) -> set[str]:
        return set(self._refs.get(normalize_digest(digest), ()))

    def owned_by(self, owner: str) -> set[str]:
        """The digests ``owner`` references."""
        return {h for h, owners in self._refs.items() if owner in owners}

    async def retain(self, owner: str, digest: str) -> None:
        """Record that ``owner`` (e.g. ``contenttree/<uuid>``) uses ``digest``; durable,
        idempotent.  The blob need not exist yet."""
        hexd = normalize_digest(digest)
        if not owner:
            raise ValueError("empty owner")
        async with self._ref_lock:
            if owner in self._refs.get(hexd, ()):
                return
            await self._run(self._write_ref, hexd, owner)
            self._refs.setdefault(hexd, set()).add(owner)
            self._unref_since.pop(hexd, None)

    async def release(self, owner: str, digest: str) -> None:
        """Drop ``owner``'s reference to ``digest`` (absent is fine).  The grace period of the
        blob starts when its last reference goes."""
        hexd = normalize_digest(digest)
        async with self._ref_lock:
            owners = self._refs.get(hexd)
            if not owners or owner not in owners:
                return
            await self._run(self._remove_ref, hexd, owner)
            owners.discard(owner)
            if not owners:
                del self._refs[hexd]
                self._unref_since[hexd] = self._clock()

    async def release_owner(self, owner: str) -> None:
        """Drop every reference ``owner`` holds."""
        for hexd in sorted(self.owned_by(owner)):
            await self.release(owner, hexd)

    def _write_ref(self, hexd: str, owner: str) -> None:
        d = self._ref_dir / hexd
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / quote(owner, safe=""), os.O_CREAT | os.O_WRONLY, 0o600)
        os.fsync(fd)
        os.close(fd)
        fsync_dir(d)
        fsync_dir(self._ref_dir)

    def _remove_ref(self, hexd: str, owner: str) -> None:
        d = self._ref_dir / hexd
        with contextlib.suppress(FileNotFoundError):
            (d / quote(owner, safe="")).unlink()
        with contextlib.suppress(OSError):  # not empty: other owners
            d.rmdir()
        with contextlib.suppress(FileNotFoundError):
            fsync_dir(d if d.exists() else self._ref_dir)

    # --- garbage collection ---------------------------------------------------------------------

    async def gc(self, grace: float) -> list[str]:
        """Remove the blobs unreferenced for at least ``grace`` seconds (and not being
        fetched), and partials nobody references or fetches; returns the removed digests."""
        now = self._clock()
        doomed = [
            h
            for h, since in self._unref_since.items()
            if h in self._blobs
            and not self._refs.get(h)
            and h not in self._transfers
            and now - since >= grace
        ]
        removed: list[str] = []
        for hexd in doomed:
            del self._blobs[hexd]
            self._unref_since.pop(hexd, None)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._deleting[hexd] = fut
            try:
                await self._run(self._delete_blob, hexd)
                removed.append(hexd)
            finally:
                self._deleting.pop(hexd, None)
                fut.set_result(None)
            log.info("blob store: removed unreferenced blob sha256:%s", hexd)
        if grace >= 0:
            keep = set(self._refs) | set(self._transfers)
            await self._run(self._delete_partials, keep, grace)
        return removed

    def _delete_blob(self, hexd: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._blob_dir / hexd).unlink()
        fsync_dir(self._blob_dir)

    def _delete_partials(self, keep: set[str], grace: float) -> None:
        cutoff = time.time() - grace
        for entry in os.scandir(self._partial_dir):
            hexd = entry.name.split(".", 1)[0]
            if hexd in keep:
                continue
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)

    # --- fetching -------------------------------------------------------------------------------

    def partial_path(self, digest: str) -> Path:
        return self._partial_dir / f"{normalize_digest(digest)}.partial"

    async def fetch(
        self,
        digest: str,
        fetcher: Fetcher,
        *,
        host: str,
        what: str,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_size: int | None = None,
        progress: dl.ProgressCallback | None = None,
    ) -> Path:
        """The verified blob ``digest``, downloaded with ``fetcher`` unless already here.

        ``host`` keys the per-datastore limit; ``what`` names the content in errors (the content
        tree's name); a mismatch is retried ``max_retries`` times, then DigestMismatch (a
        PermanentError).  Transfer errors propagate as they are.  ``max_size`` refuses a cached
        or shared blob larger than this caller allows (the fetcher bounds the transfer itself).
        """
        if not self._opened:
            raise RuntimeError("BlobStore.open() first")
        hexd = normalize_digest(digest)
        transfer = self._transfers.get(hexd)
        if transfer is None and hexd in self._blobs and hexd not in self._deleting:
            return self._checked(hexd, what, max_size)
        if transfer is None:
            task = asyncio.create_task(
                self._transfer(hexd, fetcher, host, what, max(0, max_retries)),
                name=f"blob-{hexd[:12]}",
            )
            transfer = _Transfer(task)
            self._transfers[hexd] = transfer
            task.add_done_callback(functools.partial(self._forget, hexd))
        transfer.waiters += 1
        if progress is not None:
            transfer.watchers.append(progress)
        try:
            await asyncio.shield(transfer.task)
        except asyncio.CancelledError:
            if not transfer.task.done() and transfer.waiters == 1:
                transfer.task.cancel()
            raise
        finally:
            transfer.waiters -= 1
            if progress is not None:
                with contextlib.suppress(ValueError):
                    transfer.watchers.remove(progress)
        return self._checked(hexd, what, max_size)

    def _forget(self, hexd: str, task: asyncio.Task[Path]) -> None:
        transfer = self._transfers.get(hexd)
        if transfer is not None and transfer.task is task:
            del self._transfers[hexd]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters got it already (or none was left)

    def _checked(self, hexd: str, what: str, max_size: int | None) -> Path:
        size = self._blobs.get(hexd, 0)
        if max_size is not None and size > max_size:
            raise dl.ContentTooLarge(
                f"{what}: {size} bytes is more than the maximum size of {max_size} bytes",
                max_size,
            )
        return self._blob_dir / hexd

    @contextlib.asynccontextmanager
    async def _slot(self, host: str) -> AsyncIterator[None]:
        slot = self._hosts.get(host)
        if slot is None:
            slot = self._hosts[host] = _HostSlot(asyncio.Semaphore(self.per_host))
        slot.users += 1
        try:
            async with slot.sem, self._global:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                self._hosts.pop(host, None)

    async def _transfer(
        self, hexd: str, fetcher: Fetcher, host: str, what: str, max_retries: int
    ) -> Path:
        transfer = self._transfers[hexd]

        def report(done: int, total: int | None) -> None:
            transfer.done, transfer.total = done, total
            for watcher in list(transfer.watchers):
                watcher(done, total)

        partial = self._partial_dir / f"{hexd}.partial"
        async with self._slot(host):
            attempts = max_retries + 1
            actual = ""
            for attempt in range(1, attempts + 1):
                result = await fetcher(partial, report)
                actual = result.sha256
                if actual == hexd:
                    pending = self._deleting.get(hexd)
                    if pending is not None:
                        await pending
                    await self._run(self._publish, partial, hexd)
                    self._blobs[hexd] = result.size
                    if not self._refs.get(hexd):
                        self._unref_since[hexd] = self._clock()
                    return self._blob_dir / hexd
                log.warning(
                    "%s: SHA-256 mismatch (attempt %d of %d): expected %s, got %s",
                    what, attempt, attempts, hexd, actual,
                )  # fmt: skip
                await dl.discard(partial, self.executor)
        raise DigestMismatch(
            f"{what}: SHA-256 mismatch after {attempts} attempts: expected {hexd}, got {actual}",
            hexd,
            actual,
            attempts,
        )

    def _publish(self, partial: Path, hexd: str) -> None:
        os.chmod(partial, 0o444)
        os.replace(partial, self._blob_dir / hexd)
        fsync_dir(self._blob_dir)
        fsync_dir(self._partial_dir)

    async def fetch_url(
        self,
        session: aiohttp.ClientSession,
        digest: str,
        url: str,
        *,
        what: str,
        credentials: dl.Credentials | None = None,
        ssl_ctx: Any = None,
        timeouts: dl.Timeouts | None = None,
        max_size: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        progress: dl.ProgressCallback | None = None,
    ) -> Path:
        """:meth:`fetch` from an HTTP or HTTPS datastore URL."""

        async def fetcher(partial: Path, report: dl.ProgressCallback) -> dl.DownloadResult:
            return await dl.download(
                session, url, partial, max_size=max_size, credentials=credentials,
                ssl_ctx=ssl_ctx, timeouts=timeouts, progress=report, reserve=self.reserve,
                executor=self.executor, what=what,
            )  # fmt: skip

        return await self.fetch(
            digest, fetcher, host=dl.host_of(url), what=what, max_retries=max_retries,
            max_size=max_size, progress=progress,
        )  # fmt: skip

    async def put_bytes(self, digest: str, data: bytes, *, what: str) -> Path:
        """Store small content already in memory (a manifest) after checking its digest;
        DigestMismatch (permanent) when it does not match."""
        hexd = normalize_digest(digest)
        actual = hashlib.sha256(data).hexdigest()
        if actual != hexd:
            raise DigestMismatch(
                f"{what}: SHA-256 mismatch: expected {hexd}, got {actual}", hexd, actual, 1
            )
        if hexd in self._blobs and hexd not in self._deleting:
            return self._blob_dir / hexd
        pending = self._deleting.get(hexd)
        if pending is not None:
            await pending
        await self._run(self._write_small, hexd, data)
        self._blobs[hexd] = len(data)
        if not self._refs.get(hexd):
            self._unref_since[hexd] = self._clock()
        return self._blob_dir / hexd

    def _write_small(self, hexd: str, data: bytes) -> None:
        tmp = self._partial_dir / f"{hexd}.small"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._publish(tmp, hexd)

    async def verify(self, digest: str) -> bool:
        """Hash a cached blob again (in a thread); a corrupt one is removed.  False then."""
        hexd = normalize_digest(digest)
        if hexd not in self._blobs:
            return False
        hasher = hashlib.sha256()
        path = self._blob_dir / hexd
        size = self._blobs[hexd]
        await self._run(dl._hash_prefix, path, hasher, size + 1)
        if hasher.hexdigest() == hexd:
            return True
        log.warning("blob store: sha256:%s is corrupt on disk; removed", hexd)
        self._blobs.pop(hexd, None)
        await self._run(self._delete_blob, hexd)
        return False


__all__ = [
    "DEFAULT_MAX_RETRIES",
    "BlobStore",
    "DigestMismatch",
    "Fetcher",
    "normalize_digest",
]
