"""The agent's own logs to the controller, as EVE's newlog does it, without loss.

Records are collected by a logging handler, written to gzip files on disk (at most ~50 KB each,
the hard limit in EVE's loguploader is 64 KiB), and uploaded oldest first to ``/newlogs``.  A
file is deleted only after the controller answered 200/201; a file refused ten times with a 4xx
moves to ``failed/`` so one bad file cannot stop the queue.

Format (``eve:pkg/newlog``): the gzip content is one JSON object per line, a ``LogEntry`` as Go's
``encoding/json`` writes it (``severity, source, iid, content, msgid, tags, timestamp{seconds,
nanos}, filename, function``, empty ones omitted); the gzip header's comment field holds
``{"devID":..,"image":..,"eveVersion":..}``.  Python's gzip module cannot write that comment, so
the header is written here by hand (RFC 1952).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.link.offload import seal_as_device_async
from agent.link.transport import ControllerClient, TransportError
from agent.util.atomicfile import write_atomic
from agent.util.liveness import Liveness
from agent.util.timing import jittered, wait_or_stop
from agent.wire.envelope import Signer

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 50_000
MAX_SPOOL_BYTES = 64 * 1024 * 1024
MAX_4XX = 10
_FCOMMENT = 0x10

_SEVERITY = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def gzip_with_comment(data: bytes, comment: str, mtime: int) -> bytes:
    """A single-member gzip file whose header carries ``comment`` (Latin-1, as EVE requires)."""
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, _FCOMMENT, mtime & 0xFFFFFFFF, 0, 255)
    safe = comment.encode("latin-1", "backslashreplace").replace(b"\0", b"")
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = comp.compress(data) + comp.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + safe + b"\0" + body + trailer


def entry_json(record: logging.LogRecord, msgid: int) -> dict[str, Any]:
    """One LogEntry in Go's encoding/json shape (empty fields omitted)."""
    seconds = int(record.created)
    entry: dict[str, Any] = {
        "severity": _SEVERITY.get(record.levelno, "info"),
        "source": "eve-agent",
        "content": record.getMessage(),
        "msgid": msgid,
        "timestamp": {"seconds": seconds, "nanos": int((record.created - seconds) * 1e9)},
        "filename": f"{record.module}.py:{record.lineno}",
        "function": record.funcName,
    }
    if record.exc_info and record.exc_info[1] is not None:
        entry["content"] += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
    entry["tags"] = {"logger": record.name}
    return entry


class LogSpool(logging.Handler):
    """Collects records in memory and writes them to gzip files in ``directory/pending``.

    ``emit`` never blocks on I/O; ``roll`` (called by the uploader task, in a worker thread:
    it compresses and fsyncs) writes the files.
    """

    def __init__(
        self, directory: Path, meta: Callable[[], dict[str, str]], level: int = logging.INFO
    ):
        super().__init__(level)
        self.pending_dir = directory / "pending"
        self.failed_dir = directory / "failed"
        self._meta = meta
        self._lines: list[bytes] = []
        self._size = 0
        self._first_at = 0.0
        self._lock = threading.Lock()
        self._msgid = itertools.count(int(time.time() * 1000))
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps(entry_json(record, next(self._msgid)), separators=(",", ":")).encode()
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)
            return
        with self._lock:
            if not self._lines:
                self._first_at = time.monotonic()
            self._lines.append(line)
            self._size += len(line) + 1

    def roll(self, *, max_age: float = 10.0, force: bool = False) -> int:
        """Write the collected lines into gzip files when big or old enough; files written."""
        with self._lock:
            if not self._lines:
                return 0
            if (
                not force
                and self._size < MAX_FILE_BYTES
                and time.monotonic() - self._first_at < max_age
            ):
                return 0
            lines, self._lines, self._size = self._lines, [], 0
        written = 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            # Typical logs compress 4x or better; _write splits a chunk that does not.
            if chunk and size + len(line) > MAX_FILE_BYTES * 4:
                written += self._write(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        if chunk:
            written += self._write(chunk)
        self._trim()
        return written

    def _write(self, lines: list[bytes]) -> int:
        """Write ``lines`` as one file, or halve them until each file is under MAX_FILE_BYTES
        compressed (poorly compressible content: hashes, keys, base64).  Returns files written.
        """
        meta = json.dumps(self._meta(), separators=(",", ":"))
        now = time.time()
        data = gzip_with_comment(b"\n".join(lines) + b"\n", meta, int(now))
        if len(data) > MAX_FILE_BYTES and len(lines) > 1:
            half = len(lines) // 2
            return self._write(lines[:half]) + self._write(lines[half:])
        write_atomic(self.pending_dir / f"dev.{time.time_ns()}.gz", data)
        return 1

    def _trim(self) -> None:
        """Bound the spool: drop the oldest files past MAX_SPOOL_BYTES (counted, reported)."""
        files = self.pending()
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if total <= MAX_SPOOL_BYTES:
                break
            total -= f.stat().st_size
            f.unlink(missing_ok=True)
            self.dropped += 1

    def pending(self) -> list[Path]:
        if not self.pending_dir.is_dir():
            return []
        return sorted(self.pending_dir.glob("dev.*.gz"), key=lambda p: int(p.name.split(".")[1]))


class LogUploader:
    """Uploads spooled log files oldest first; waits with backoff on failure."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        spool: LogSpool,
        liveness: Liveness | None = None,
    ) -> None:
        self.liveness = liveness
        self._client = client
        self._device = device
        self._spool = spool
        self._refusals: dict[str, int] = {}
        self.uploaded = 0

    async def upload_pending(self) -> bool:
        """Try every pending file in order; False at the first one that could not be sent."""
        for path in await asyncio.to_thread(self._spool.pending):
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                continue
            body = await seal_as_device_async(data, self._device)
            try:
                resp = await self._client.request("newlogs", body)
            except TransportError:
                return False
            if resp.status in (200, 201):
                path.unlink(missing_ok=True)
                self._refusals.pop(path.name, None)
                self.uploaded += 1
                continue
            if 400 <= resp.status < 500 and resp.status != 429:
                count = self._refusals.get(path.name, 0) + 1
                self._refusals[path.name] = count
                if count >= MAX_4XX:
                    self._spool.failed_dir.mkdir(parents=True, exist_ok=True)
                    os.replace(path, self._spool.failed_dir / path.name)
                    self._refusals.pop(path.name, None)
                    log.warning("log file %s refused %d times; moved aside", path.name, count)
                    continue
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        delay = 5.0
        while not stop.is_set():
            with (
                self.liveness.activity("log upload", 3600)
                if self.liveness is not None
                else contextlib.nullcontext()
            ):
                try:
                    await asyncio.to_thread(self._spool.roll)
                except OSError as exc:
                    log.error("cannot write log spool: %s", exc)
                ok = await self.upload_pending()
            delay = 5.0 if ok else min(delay * 2, 300.0)
            if await wait_or_stop(stop, jittered(delay, 0.8, 1.2)):
                break
        # Keep what is still in memory for the next start.
        try:
            await asyncio.to_thread(self._spool.roll, force=True)
        except OSError as exc:
            log.error("cannot write log spool at shutdown: %s", exc)
