"""HTTP and HTTPS downloads into a partial file: resumable, bounded, hashed as they go.

EVE's downloader fetches a content tree's blob from the datastore the config names
(``fqdn`` + ``dpath`` + the content tree's ``URL``) with the datastore's credentials and
certificates.  :func:`download` is that transfer for one URL; :mod:`agent.drivers.blobstore`
verifies the result and publishes it, and :mod:`agent.drivers.oci` uses it for registry blobs.

- **Partial file, resumable.**  The body goes to ``partial``.  When it already holds ``n`` bytes
  (a cut connection, an agent restart) the request asks for ``Range: bytes=n-``; a ``206`` whose
  ``Content-Range`` starts at ``n`` continues the file, a ``200`` (the server ignores ranges) or a
  206 for another range starts it over, a ``416`` means the partial already holds the whole
  resource (when its size matches) or is garbage (deleted, and the request made again without a
  range).
- **Streaming SHA-256.**  The digest covers the whole file: on resume the existing prefix is
  hashed first (in a thread), then every new byte.  The caller compares it with what the config
  says; this module never decides that a blob is good.
- **Bounded.**  A ``max_size`` refuses a resource whose announced length is larger before a byte
  is written, and aborts a transfer that grows past it (the partial is deleted):
  :class:`ContentTooLarge` (permanent), naming the limit.
- **Free space** is checked before the transfer when its length is known: a file larger than the
  whole file system is a permanent error, one larger than the free space now a temporary one
  (the space may come back, e.g. after blob garbage collection).
- **The event loop never stalls.**  Network reads are aiohttp's; the hashing and the writes run
  in a worker thread, in batches of ``chunk_size`` (256 KiB by default, between 64 KiB and
  1 MiB), one batch in the thread while the next is read; the final fsync runs in a thread too.
- **Timeouts**: connect (TCP + TLS) and idle read (no byte for ``idle_timeout`` seconds).

Errors (``agent.drivers.errors``): 404/410 and other 4xx, 401/403 (credentials), an untrusted
TLS certificate, a size above the limit: :class:`PermanentError`; 5xx, 408, 429, connection
errors and resets, timeouts, a short body: :class:`TemporaryError` (the partial is kept, so the
next attempt resumes).  Local file errors (ENOSPC on write included) are temporary too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp

from agent.drivers.errors import PermanentError, TemporaryError

#: Smallest and largest write batch; the default sits between.
MIN_CHUNK = 64 * 1024
MAX_CHUNK = 1024 * 1024
DEFAULT_CHUNK = 256 * 1024
#: Read this much of an error response's body for the message.
_ERROR_BODY = 512

#: ``progress(bytes_done, total_or_None)``: called after each batch is written.
ProgressCallback = Callable[[int, int | None], None]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class ContentTooLarge(PermanentError):
    """The content is (or grew) larger than the limit it is allowed."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Credentials:
    """What a datastore gives to authenticate: sent as HTTP basic auth.

    EVE sends a datastore's ``apiKey`` as the user name and its ``password`` as the password
    (zedUpload's HTTP driver); ``bearer`` is a token for ``Authorization: Bearer`` instead (an
    OCI registry's token, see :mod:`agent.drivers.oci`).  ``repr`` never shows the secrets.
    """

    username: str = ""
    password: str = ""
    bearer: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<redacted>, bearer=<redacted>)"

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.bearer)

    def header(self) -> str | None:
        """The ``Authorization`` header value, or None without credentials."""
        if self.bearer:
            return f"Bearer {self.bearer}"
        if self.username or self.password:
            return aiohttp.encode_basic_auth(self.username, self.password)
        return None


@dataclass(frozen=True)
class Timeouts:
    """``connect``: TCP connect plus TLS handshake; ``idle``: the longest wait for the next
    bytes of a response (EVE cancels a stalled download after ``timer.download.stalled``)."""

    connect: float = 30.0
    idle: float = 60.0

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self.connect, sock_connect=self.connect, sock_read=self.idle
        )


@dataclass(frozen=True)
class DownloadResult:
    """A finished transfer: ``partial`` holds ``size`` bytes whose SHA-256 is ``sha256`` (hex),
    fsync'd.  ``resumed_from`` is the size the partial had when this transfer continued it."""

    partial: Path
    size: int
    sha256: str
    resumed_from: int
    status: int


def ssl_context(ca_pems: Sequence[bytes] = (), *, system: bool = True) -> ssl.SSLContext:
    """A TLS client context trusting the system's CAs (unless ``system`` is False) and the
    given PEM certificates (a datastore's ``dsCertPEM``).  Raises PermanentError for a PEM
    that does not load."""
    ctx = ssl.create_default_context() if system else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not system:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    for pem in ca_pems:
        try:
            ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise PermanentError(f"datastore CA certificate does not load: {exc}") from exc
    return ctx


def new_session(*, limit: int = 100) -> aiohttp.ClientSession:
    """A client session for downloads: no cookies, no transparent decompression (the digest is
    over the bytes as served), no proxy settings from the environment.  The caller closes it."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        trust_env=False,
    )


def redact_url(url: str) -> str:
    """The URL for messages: without user info and query string (presigned URLs carry keys)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def host_of(url: str) -> str:
    """``host[:port]`` of a URL: the key of the per-datastore download limit."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


# --- status and exception mapping ----------------------------------------------------------------


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


async def status_error(resp: aiohttp.ClientResponse, what: str) -> Exception:
    """The typed error for an unsuccessful HTTP status (reads a little of the body)."""
    detail = ""
    with contextlib.suppress(Exception):
        body = await resp.content.read(_ERROR_BODY)
        detail = body.decode("utf-8", "replace").strip().replace("\n", " ")
    reason = f"HTTP {resp.status}{' ' + resp.reason if resp.reason else ''}"
    tail = f": {detail}" if detail else ""
    if resp.status in (401, 403):
        return PermanentError(f"{what}: {reason} (credentials refused or missing){tail}")
    if resp.status in (404, 410):
        return PermanentError(f"{what}: {reason} (not found){tail}")
    if resp.status in (408, 429) or resp.status >= 500:
        return TemporaryError(f"{what}: {reason}{tail}", retry_after=_retry_after(resp.headers))
    return PermanentError(f"{what}: {reason}{tail}")


def transport_error(exc: BaseException, what: str) -> Exception:
    """The typed error for an aiohttp or socket exception."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return PermanentError(f"{what}: TLS certificate not trusted: {exc}")
    if isinstance(exc, TimeoutError):
        return TemporaryError(f"{what}: timed out ({type(exc).__name__})")
    if isinstance(exc, aiohttp.InvalidURL):
        return PermanentError(f"{what}: invalid URL: {exc}")
    return TemporaryError(f"{what}: {type(exc).__name__}: {exc}")


# --- blocking helpers (run in a worker thread) ---------------------------------------------------


def _hash_prefix(path: Path, hasher: Any, size: int) -> int:
    """Feed the first ``size`` bytes of ``path`` to ``hasher``; returns how many there were."""
    done = 0
    with open(path, "rb") as f:
        while done < size:
            block = f.read(min(MAX_CHUNK, size - done))
            if not block:
                break
            hasher.update(block)
            done += len(block)
    return done


def _partial_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _free_space(directory: Path) -> tuple[int, int]:
    """(free bytes for unprivileged users, file system size) of the file system."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _fsync_close(f: IO[bytes]) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class _Sink:
    """Hash and write batches in a worker thread, one batch in flight at a time (so the next
    batch is read from the network while the previous one is written)."""

    def __init__(self, f: IO[bytes], hasher: Any, executor: Executor | None) -> None:
        self._f = f
        self._hasher = hasher
        self._executor = executor
        self._pending: asyncio.Future[None] | None = None

    def _write(self, data: bytes) -> None:
        self._hasher.update(data)
        self._f.write(data)

    async def write(self, data: bytes) -> None:
        await self.drain()
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._executor, self._write, data)

    async def drain(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def settle(self) -> None:
        """Wait for the batch in flight whatever happens (never leave a thread writing)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)


# --- the transfer --------------------------------------------------------------------------------


async def download(
    session: aiohttp.ClientSession,
    url: str,
    partial: Path,
    *,
    max_size: int | None = None,
    credentials: Credentials | None = None,
    headers: Mapping[str, str] | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    timeouts: Timeouts | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    reserve: int = 0,
    executor: Executor | None = None,
    what: str | None = None,
) -> DownloadResult:
    """Download ``url`` into ``partial`` (continuing it when ``resume`` and it exists).

    ``what`` names the content in error messages (the URL without query string by default);
    ``reserve`` bytes of the file system are kept free by the space check; ``executor`` runs the
    hashing and writes (the loop's default executor otherwise).  Returns the size and SHA-256 of
    the whole file; raises the typed errors of the module docstring.  On cancellation the partial
    is kept as far as it was written.
    """
    name = what or redact_url(url)
    timeouts = timeouts or Timeouts()
    chunk = min(MAX_CHUNK, max(MIN_CHUNK, chunk_size))
    loop = asyncio.get_running_loop()
    partial.parent.mkdir(parents=True, exist_ok=True)
    offset = await loop.run_in_executor(executor, _partial_size, partial) if resume else 0
    if not resume:
        await loop.run_in_executor(executor, _unlink, partial)
    if max_size is not None and offset > max_size:
        await loop.run_in_executor(executor, _unlink, partial)
        offset = 0
    for _ in range(3):  # a 200-for-a-range or a 416 restarts once or twice, no more
        try:
            outcome = await _attempt(
                session, url, partial, offset, name=name, max_size=max_size,
                credentials=credentials, headers=headers, ssl_ctx=ssl_ctx, timeouts=timeouts,
                progress=progress, chunk=chunk, reserve=reserve, executor=executor,
            )  # fmt: skip
        except ContentTooLarge:
            await asyncio.shield(loop.run_in_executor(executor, _unlink, partial))
            raise
        if isinstance(outcome, DownloadResult):
            return outcome
        offset = 0  # the partial was discarded: start over from the beginning
    raise TemporaryError(f"{name}: the server keeps refusing the range requests")


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    partial: Path,
    offset: int,
    *,
    name: str,
    max_size: int | None,
    credentials: Credentials | None,
    headers: Mapping[str, str] | None,
    ssl_ctx: ssl.SSLContext | None,
    timeouts: Timeouts,
    progress: ProgressCallback | None,
    chunk: int,
    reserve: int,
    executor: Executor | None,
) -> DownloadResult | None:
    """One request; None when the partial was discarded and the caller should start over."""
    loop = asyncio.get_running_loop()
    request_headers = {"Accept-Encoding": "identity"}
    request_headers.update(headers or {})
    auth = credentials.header() if credentials else None
    if auth:
        request_headers["Authorization"] = auth
    if offset > 0:
        request_headers["Range"] = f"bytes={offset}-"
    try:
        async with session.get(
            url,
            headers=request_headers,
            ssl=ssl_ctx if ssl_ctx is not None else True,
            timeout=timeouts.client_timeout(),
            allow_redirects=True,
        ) as resp:
            if resp.status == 416 and offset > 0:
                total = _unsatisfied_total(resp.headers.get("Content-Range", ""))
                if total == offset:  # the partial already holds all of it
                    return await _finish_existing(partial, offset, resp.status, executor)
                await loop.run_in_executor(executor, _unlink, partial)
                return None
            if resp.status not in (200, 206):
                raise await status_error(resp, name)
            start, total = _response_span(resp, offset)
            if start is None:  # a 206 for a range we did not ask for
                await loop.run_in_executor(executor, _unlink, partial)
                return None
            if max_size is not None and total is not None and total > max_size:
                raise ContentTooLarge(
                    f"{name}: {total} bytes is more than the maximum size of {max_size} bytes",
                    max_size,
                )
            if total is not None:
                await _check_space(partial.parent, total - start, reserve, name, executor)
            return await _receive(
                resp, partial, start, total, name=name, max_size=max_size,
                progress=progress, chunk=chunk, executor=executor,
            )  # fmt: skip
    except (PermanentError, TemporaryError):
        raise
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise transport_error(exc, name) from exc


def _unsatisfied_total(value: str) -> int | None:
    m = _UNSATISFIED_RANGE.match(value)
    return int(m.group(1)) if m else None


def _response_span(resp: aiohttp.ClientResponse, offset: int) -> tuple[int | None, int | None]:
    """(where the body starts in the file, total size if known); start None for a 206 whose
    range is not the one we asked for."""
    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            return None, None
        total = None if m.group(3) == "*" else int(m.group(3))
        return offset, total
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


async def _check_space(
    directory: Path, needed: int, reserve: int, name: str, executor: Executor | None
) -> None:
    loop = asyncio.get_running_loop()
    free, capacity = await loop.run_in_executor(executor, _free_space, directory)
    if needed + reserve > capacity:
        raise PermanentError(
            f"{name}: {needed} bytes do not fit on the file system ({capacity} bytes in all)"
        )
    if needed + reserve > free:
        raise TemporaryError(
            f"{name}: not enough free space: {needed} bytes needed, {free} free"
            + (f" ({reserve} kept in reserve)" if reserve else "")
        )


async def _finish_existing(
    partial: Path, size: int, status: int, executor: Executor | None
) -> DownloadResult:
    loop = asyncio.get_running_loop()
    hasher = hashlib.sha256()
    await loop.run_in_executor(executor, _hash_prefix, partial, hasher, size)
    return DownloadResult(partial, size, hasher.hexdigest(), size, status)


async def _receive(
    resp: aiohttp.ClientResponse,
    partial: Path,
    start: int,
    total: int | None,
    *,
    name: str,
    max_size: int | None,
    progress: ProgressCallback | None,
    chunk: int,
    executor: Executor | None,
) -> DownloadResult:
    loop = asyncio.get_running_loop()
    hasher = hashlib.sha256()
    if start > 0:
        hashed = await loop.run_in_executor(executor, _hash_prefix, partial, hasher, start)
        if hashed != start:  # the partial shrank under us: start over
            raise TemporaryError(f"{name}: partial file changed while resuming")
    mode = "r+b" if start > 0 else "wb"
    f: IO[bytes] = await loop.run_in_executor(executor, open, partial, mode)
    sink = _Sink(f, hasher, executor)
    done = start
    buf = bytearray()
    ok = False
    try:
        if start > 0:
            await loop.run_in_executor(executor, _seek_truncate, f, start)
        async for piece in resp.content.iter_chunked(chunk):
            buf += piece
            if max_size is not None and done + len(buf) > max_size:
                raise ContentTooLarge(
                    f"{name}: more than the maximum size of {max_size} bytes", max_size
                )
            if len(buf) >= chunk:
                done += len(buf)
                await sink.write(bytes(buf))
                buf.clear()
                if progress is not None:
                    progress(done, total)
        if buf:
            done += len(buf)
            await sink.write(bytes(buf))
            buf.clear()
        await sink.drain()
        if total is not None and done != total:
            raise TemporaryError(f"{name}: connection ended after {done} of {total} bytes")
        if progress is not None:
            progress(done, total)
        ok = True
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise transport_error(exc, name) from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise TemporaryError(f"{name}: no space left writing {partial}") from exc
        raise TemporaryError(f"{name}: writing {partial}: {exc}") from exc
    finally:
        await sink.settle()
        if ok:
            await loop.run_in_executor(executor, _fsync_close, f)
        else:
            await asyncio.shield(loop.run_in_executor(executor, f.close))
    return DownloadResult(partial, done, hasher.hexdigest(), start, resp.status)


def _seek_truncate(f: IO[bytes], start: int) -> None:
    f.seek(start)
    f.truncate(start)


async def discard(partial: Path, executor: Executor | None = None) -> None:
    """Delete a partial file (absent is fine)."""
    await asyncio.get_running_loop().run_in_executor(executor, _unlink, partial)


__all__ = [
    "DEFAULT_CHUNK",
    "ContentTooLarge",
    "Credentials",
    "DownloadResult",
    "ProgressCallback",
    "Timeouts",
    "discard",
    "download",
    "host_of",
    "new_session",
    "redact_url",
    "ssl_context",
    "status_error",
    "transport_error",
]
