"""EVE's newlog files and their upload rule, shared by the device's logs (:mod:`agent.link.logship`)
and the apps' logs (:mod:`agent.link.applogs`).

A newlog file (``eve:pkg/newlog/cmd/doMoveCompressFile.go``) is one gzip member of at most about
50 KB (EVE's loguploader refuses to read more than 64 KiB) whose content is one ``LogEntry`` per
line as Go's ``encoding/json`` writes it: keys ``severity, source, iid, content, msgid, tags,
timestamp, filename, function``, empty ones omitted, ``timestamp`` an object ``{"seconds":..,
"nanos":..}``.  Its header carries the metadata: the comment field for device logs, the file-name
field (the app's display name) for app logs; both are Latin-1 without NUL (RFC 1952), which
Python's gzip module cannot write, so the header is written here by hand.

Upload (``eve:pkg/pillar/cmd/loguploader/loguploader.go``): files go oldest first, one request
each; 200/201 means delivered.  A file the controller refuses for good (a 4xx other than 401,
403, 407, 408 and 429, the statuses EVE's ``retriableHTTPStatus`` retries: 400, 413, 422...) is
moved aside at once, with an error line naming it and the status, so that one bad file never
holds up the queue (EVE's loguploader counts ten refusals first, which with its backoff is about
20 minutes, and forgets the count on restart).  A file that cannot be read is moved aside too.
The directory of files moved aside keeps the newest :data:`MAX_FAILED_FILES`.  Anything else (no
answer, a retriable status) stops the pass, to be retried.

A spool the disk refuses to take (full, I/O errors) keeps its lines in memory, bounded by its
module, and says so once through :class:`agent.util.storagehealth.StorageHealth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from agent.link.offload import seal_as_device_async
from agent.link.transport import ControllerClient, TransportError
from agent.util.liveness import Liveness
from agent.util.storagehealth import StorageHealth
from agent.util.timing import jittered, wait_or_stop
from agent.wire.envelope import Signer

log = logging.getLogger(__name__)

#: Largest file written (EVE's ``maxGzipFileSize``); a single huge line may still exceed it.
MAX_FILE_BYTES = 50_000
#: Answers worth retrying (EVE's ``retriableHTTPStatus``, with 5xx); other 4xx refuse for good.
RETRIABLE = frozenset({401, 403, 407, 408, 429})
#: Files kept in a directory of files moved aside (EVE keeps up to 1000 in ``failedUpload``).
MAX_FAILED_FILES = 200

_FNAME = 0x08
_FCOMMENT = 0x10


def _latin1(text: str) -> bytes:
    """A header string as RFC 1952 wants it: Latin-1 (others escaped, as EVE does), no NUL."""
    return text.encode("latin-1", "backslashreplace").replace(b"\0", b"")


def gzip_member(
    data: bytes, *, mtime: int, name: str | None = None, comment: str | None = None
) -> bytes:
    """A single-member gzip file of ``data`` whose header carries ``name`` and/or ``comment``."""
    flags = (_FNAME if name is not None else 0) | (_FCOMMENT if comment is not None else 0)
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flags, mtime & 0xFFFFFFFF, 0, 255)
    if name is not None:
        header += _latin1(name) + b"\0"
    if comment is not None:
        header += _latin1(comment) + b"\0"
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = comp.compress(data) + comp.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def go_timestamp(when: float) -> dict[str, int]:
    """A protobuf Timestamp as Go's encoding/json writes the struct (not protobuf JSON)."""
    seconds = int(when // 1)
    nanos = min(999_999_999, max(0, round((when - seconds) * 1e9)))
    return {"seconds": seconds, "nanos": nanos}


def compress_lines(
    lines: Sequence[bytes], build: Callable[[bytes], bytes], limit: int = MAX_FILE_BYTES
) -> list[bytes]:
    """``lines`` (JSON, no newline) as gzip files, in order, each at most ``limit`` bytes unless a
    single line alone is bigger.  ``build(content)`` makes one file of the newline-terminated
    content (its header is the caller's)."""
    files: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        # Typical logs compress 4x or better; _halves splits a chunk that does not.
        if chunk and size + len(line) > limit * 4:
            files += _halves(chunk, build, limit)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        files += _halves(chunk, build, limit)
    return files


def _halves(lines: Sequence[bytes], build: Callable[[bytes], bytes], limit: int) -> list[bytes]:
    """One file, or halves of ``lines`` until each is under ``limit`` compressed (poorly
    compressible content: hashes, keys, base64)."""
    data = build(b"\n".join(lines) + b"\n")
    if len(data) > limit and len(lines) > 1:
        half = len(lines) // 2
        return _halves(lines[:half], build, limit) + _halves(lines[half:], build, limit)
    return [data]


class Sent(enum.Enum):
    """What became of one file."""

    #: Delivered (200/201) and deleted.
    DELIVERED = "delivered"
    #: Refused for good, or unreadable: moved to the failed directory (logged).
    MOVED_ASIDE = "moved aside"
    #: Gone before it could be read (trimmed meanwhile): nothing sent.
    VANISHED = "vanished"
    #: Not delivered (no answer, a retriable status): kept, stop the pass.
    KEPT = "kept"


def refused_for_good(status: int) -> bool:
    """The controller would refuse the same bytes again (EVE's rule)."""
    return 400 <= status < 500 and status not in RETRIABLE


async def send_file(
    client: ControllerClient,
    device: Signer,
    action: str,
    path: Path,
    *,
    failed_dir: Path,
) -> Sent:
    """Post the file at ``path`` to ``action`` sealed by ``device``; apply the rule above.

    Disk work runs in worker threads.  Never raises for disk trouble: a file that cannot be
    moved aside is deleted (it would block the queue for ever otherwise).
    """
    try:
        data = await _read(path)
    except FileNotFoundError:
        return Sent.VANISHED
    except OSError as exc:
        log.error("%s: file %s unreadable (%s): moved to %s", action, path.name, exc, failed_dir)
        await _move(path, failed_dir)
        return Sent.MOVED_ASIDE
    body = await seal_as_device_async(data, device)
    try:
        resp = await client.request(action, body)
    except TransportError:
        return Sent.KEPT
    if resp.status in (200, 201):
        await _unlink(path)
        return Sent.DELIVERED
    if refused_for_good(resp.status):
        log.error(
            "%s: file %s refused for good (HTTP %d): moved to %s",
            action, path.name, resp.status, failed_dir,
        )  # fmt: skip
        await _move(path, failed_dir)
        return Sent.MOVED_ASIDE
    log.warning("%s: file %s answered HTTP %d; retrying later", action, path.name, resp.status)
    return Sent.KEPT


async def _read(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


async def _unlink(path: Path) -> None:
    def unlink() -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove delivered %s: %s", path, exc)

    await asyncio.to_thread(unlink)


async def _move(path: Path, directory: Path) -> None:
    """Move ``path`` into ``directory`` (keeping its newest MAX_FAILED_FILES); delete it when
    that fails.  Never raises."""

    def move() -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.replace(path, directory / path.name)
        except OSError as exc:
            log.warning("cannot move %s aside (%s): deleting it", path.name, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return
        try:
            kept = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime_ns)
            for old in kept[: max(0, len(kept) - MAX_FAILED_FILES)]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot trim %s: %s", directory, exc)

    await asyncio.to_thread(move)


async def upload_loop(
    stop: asyncio.Event,
    *,
    what: str,
    roll: Callable[..., int],
    upload: Callable[[], Awaitable[bool]],
    liveness: Liveness | None,
    health: StorageHealth | None = None,
) -> None:
    """Until ``stop``: write what was collected (``roll()`` in a worker thread), then
    ``upload()``; every 5 s while that delivers everything, backing off to 300 s while it
    does not.  At the end ``roll(force=True)`` keeps what is still in memory for the next start.
    Each round is a liveness activity named ``what`` (a hang past an hour is a problem).  A
    spool the disk refuses is reported to ``health`` (one line, not one per round); the lines
    wait in memory (the spool bounds them) and the roll is tried again next round."""
    health = health or StorageHealth()
    spool = f"{what} spool"
    delay = 5.0
    while not stop.is_set():
        with liveness.activity(what, 3600) if liveness is not None else contextlib.nullcontext():
            try:
                await asyncio.to_thread(roll)
            except OSError as exc:
                health.failed(spool, exc)
            else:
                health.ok(spool)
            ok = await upload()
        delay = 5.0 if ok else min(delay * 2, 300.0)
        if await wait_or_stop(stop, jittered(delay, 0.8, 1.2)):
            break
    try:
        await asyncio.to_thread(roll, force=True)
    except OSError as exc:
        log.error("%s: cannot write the spool at shutdown: %s", what, exc)
