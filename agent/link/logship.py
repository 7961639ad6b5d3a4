"""The agent's own logs to the controller, as EVE's newlog does it, without loss.

Records are collected by a logging handler, written to gzip files on disk (at most ~50 KB each,
the hard limit in EVE's loguploader is 64 KiB), and uploaded oldest first to ``/newlogs``
(the file format and the upload rule are :mod:`agent.link.gzlog`'s, shared with app logs).  A
file is deleted only after the controller answered 200/201; a file the controller refuses for
good moves to ``failed/`` at once (logged), so one bad file cannot stop the queue.

Records wait in memory between rolls, at most :data:`MAX_MEMORY_BYTES` of them: when the disk
refuses the spool (full, I/O errors) they stay there, the oldest dropped past the bound (counted
in :attr:`LogSpool.dropped_lines`), until the disk takes them again.

Format (``eve:pkg/newlog``): the gzip content is one JSON object per line, a ``LogEntry`` as Go's
``encoding/json`` writes it (``severity, source, iid, content, msgid, tags, timestamp{seconds,
nanos}, filename, function``, empty ones omitted); the gzip header's comment field holds
``{"devID":..,"image":..,"eveVersion":..}``.  Python's gzip module cannot write that comment, so
the header is written by hand (RFC 1952).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.link.gzlog import (
    MAX_FILE_BYTES,
    Sent,
    compress_lines,
    go_timestamp,
    gzip_member,
    send_file,
    upload_loop,
)
from agent.link.transport import ControllerClient
from agent.util.atomicfile import write_atomic
from agent.util.liveness import Liveness
from agent.util.storagehealth import StorageHealth
from agent.wire.envelope import Signer

log = logging.getLogger(__name__)

MAX_SPOOL_BYTES = 64 * 1024 * 1024
#: Records waiting in memory for the disk, at most (JSON bytes).
MAX_MEMORY_BYTES = 4 * 1024 * 1024

_SEVERITY = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def gzip_with_comment(data: bytes, comment: str, mtime: int) -> bytes:
    """A single-member gzip file whose header carries ``comment`` (Latin-1, as EVE requires)."""
    return gzip_member(data, mtime=mtime, comment=comment)


def entry_json(record: logging.LogRecord, msgid: int) -> dict[str, Any]:
    """One LogEntry in Go's encoding/json shape (empty fields omitted)."""
    entry: dict[str, Any] = {
        "severity": _SEVERITY.get(record.levelno, "info"),
        "source": "eve-agent",
        "content": record.getMessage(),
        "msgid": msgid,
        "timestamp": go_timestamp(record.created),
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
        #: Spool files dropped past MAX_SPOOL_BYTES, and records dropped past MAX_MEMORY_BYTES.
        self.dropped = 0
        self.dropped_lines = 0

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
            self._bound()

    def _bound(self) -> None:
        """Drop the oldest records past MAX_MEMORY_BYTES (lock held)."""
        cut = 0
        while self._size > MAX_MEMORY_BYTES and cut < len(self._lines):
            self._size -= len(self._lines[cut]) + 1
            cut += 1
        if cut:
            del self._lines[:cut]
            self.dropped_lines += cut

    def roll(self, *, max_age: float = 10.0, force: bool = False) -> int:
        """Write the collected lines into gzip files when big or old enough; files written.

        Raises OSError when the disk refuses them; the lines not written go back in front of
        the newer ones (bounded), for the next roll."""
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
        meta = json.dumps(self._meta(), separators=(",", ":"))
        mtime = int(time.time())
        files = compress_lines(lines, lambda data: gzip_with_comment(data, meta, mtime))
        written = 0
        try:
            for data in files:
                write_atomic(self.pending_dir / f"dev.{time.time_ns()}.gz", data)
                written += 1
        except OSError:
            if written == 0:  # else split files: what was written stays, the rest is lost
                self._requeue(lines)
            raise
        self._trim()
        return len(files)

    def _requeue(self, lines: list[bytes]) -> None:
        with self._lock:
            self._lines[:0] = lines
            self._size += sum(len(line) + 1 for line in lines)
            self._bound()

    def _trim(self) -> None:
        """Bound the spool: drop the oldest files past MAX_SPOOL_BYTES (counted, reported)."""
        sized = []
        for f in self.pending():
            try:
                sized.append((f, f.stat().st_size))
            except FileNotFoundError:
                continue
        total = sum(size for _, size in sized)
        for f, size in sized:
            if total <= MAX_SPOOL_BYTES:
                break
            total -= size
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
        health: StorageHealth | None = None,
    ) -> None:
        self.liveness = liveness
        self._client = client
        self._device = device
        self._spool = spool
        self._health = health
        self.uploaded = 0
        self.moved_aside = 0

    async def upload_pending(self) -> bool:
        """Try every pending file in order; False at the first one that could not be sent."""
        for path in await asyncio.to_thread(self._spool.pending):
            sent = await send_file(
                self._client, self._device, "newlogs", path, failed_dir=self._spool.failed_dir
            )
            if sent is Sent.DELIVERED:
                self.uploaded += 1
            elif sent is Sent.MOVED_ASIDE:
                self.moved_aside += 1
            elif sent is Sent.KEPT:
                return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Roll and upload until ``stop``; see :func:`agent.link.gzlog.upload_loop`."""
        await upload_loop(
            stop,
            what="log upload",
            roll=self._spool.roll,
            upload=self.upload_pending,
            liveness=self.liveness,
            health=self._health,
        )
