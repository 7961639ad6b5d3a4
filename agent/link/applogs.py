"""Each app's logs to the controller, as EVE's newlogd and loguploader ship them, without loss.

The app telemetry collector hands each app's new log lines to :meth:`AppLogSpool.add` (on the
event loop; no I/O there).  :meth:`AppLogSpool.roll` (a worker thread, called by the uploader
every few seconds) writes them into gzip files on disk, one directory per app, and
:class:`AppLogUploader` posts the files oldest first to
``/api/v2/edgedevice/id/<device>/apps/instanceid/<app>/newlogs``.  A file is deleted only once
the controller answered 200/201, so logs survive controller outages and agent restarts; a file
the controller refuses for good moves to ``failed/`` at once, logged (at most
:data:`MAX_FAILED_FILES` kept), so that one bad file cannot stop the queue
(:mod:`agent.link.gzlog`).  Lines the disk refuses wait in memory, within the bounds below.

Format, as EVE's (``eve:pkg/newlog/cmd/writelogFile.go``, ``doMoveCompressFile.go``;
``eve:docs/LOGGING.md``): one ``LogEntry`` per line in Go's encoding/json shape, the app's display
name in the gzip header's *file-name* field (the comment field, which holds the device metadata
in device logs, is unused), each file at most ~50 KB.  EVE's entry for a line an app printed has
``severity`` ``info``, ``source`` the app's domain name (``<app uuid>.<version>.<num>``),
``content`` the line, a per-app ``msgid`` counter and the time the line was read.  Ours has
``source`` the app's UUID and a ``stream`` tag (``output`` for a container's stdout and stderr,
``console`` for a VM's serial console), which EVE leaves out; Adam reads each line into a
``LogEntry`` (``adam:pkg/server/commonHandler.go`` ``newAppLogsProcess``), so the tag travels.

Bounds: at most :data:`MAX_BUFFER_BYTES` per app wait in memory between rolls and
:data:`MAX_APP_SPOOL_BYTES` per app (:data:`MAX_SPOOL_BYTES` in all) on disk; past them the oldest
lines or files are dropped, counted in :attr:`AppLogSpool.dropped_lines` and
:attr:`AppLogSpool.dropped_files`, logged, and noted in the app's own log (a ``warning`` entry
from ``eve-agent`` saying how many were lost).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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

MAX_BUFFER_BYTES = 1024 * 1024
MAX_APP_SPOOL_BYTES = 16 * 1024 * 1024
MAX_SPOOL_BYTES = 128 * 1024 * 1024
#: Files kept in ``failed/`` (EVE keeps up to 1000 in ``failedUpload``, all kinds together).
MAX_FAILED_FILES = 200
#: A roll writes an app's lines once they are this old (or big enough for a file).
MAX_AGE = 10.0


class AppLogLine(Protocol):
    """One line an app printed, as the collector hands it over."""

    @property
    def time(self) -> float:
        """Wall-clock time (seconds since the epoch) it was printed, or read."""
        ...

    @property
    def text(self) -> str: ...

    @property
    def stream(self) -> str:
        """``output`` (a container's stdout and stderr, merged by the runtime) or ``console``
        (a VM's serial console)."""
        ...


@dataclass
class _Buffer:
    """One app's lines waiting for the next roll."""

    name: str
    msgid: itertools.count[int]
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    first_at: float = 0.0
    #: Lines and files lost since the last note in the app's log.
    lost_lines: int = 0
    lost_files: int = 0


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _entry(source: str, msgid: int, when: float, content: str, severity: str, **tags: str) -> bytes:
    entry: dict[str, Any] = {
        "severity": severity,
        "source": source,
        "content": content,
        "msgid": msgid,
        "timestamp": go_timestamp(when),
    }
    if tags:
        entry["tags"] = tags
    return json.dumps(entry, separators=(",", ":")).encode()


class AppLogSpool:
    """Per-app lines in memory, then gzip files under ``directory/pending/<app uuid>/``.

    :meth:`add` runs on the event loop and never blocks; :meth:`roll`, :meth:`pending` and
    :meth:`trim` do disk work and belong in a worker thread.  Thread-safe between the two.
    """

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pending_dir = directory / "pending"
        self.failed_dir = directory / "failed"
        self._clock = clock
        self._wall = wall
        self._buffers: dict[str, _Buffer] = {}
        self._lock = threading.Lock()
        self._last_ns = 0
        self.dropped_lines = 0
        self.dropped_files = 0
        self.added_lines = 0

    def add(self, app_uuid: str, lines: Sequence[AppLogLine], *, app_name: str = "") -> None:
        """Queue ``lines`` of the app (its UUID, any case; its display name for the gzip header).

        Past :data:`MAX_BUFFER_BYTES` of unwritten lines of this app, the oldest are dropped.
        """
        if not lines:
            return
        try:
            # It names a directory and a URL path: a UUID in its canonical form, nothing else.
            app_uuid = str(uuid.UUID(app_uuid))
        except ValueError:
            log.error("app log lines of %r dropped: not an app UUID", app_uuid)
            self.dropped_lines += len(lines)
            return
        with self._lock:
            buf = self._buffer(app_uuid)
            if app_name:
                buf.name = app_name
            if not buf.lines:
                buf.first_at = self._clock()
            for line in lines:
                data = _entry(
                    app_uuid, next(buf.msgid), line.time, line.text, "info", stream=line.stream
                )
                buf.lines.append(data)
                buf.size += len(data) + 1
            self.added_lines += len(lines)
            self._bound(app_uuid, buf)

    def _bound(self, app_uuid: str, buf: _Buffer) -> None:
        """Drop the oldest lines past MAX_BUFFER_BYTES (lock held)."""
        cut = 0
        while buf.size > MAX_BUFFER_BYTES and cut < len(buf.lines):
            buf.size -= len(buf.lines[cut]) + 1
            cut += 1
        if cut:
            del buf.lines[:cut]
            buf.lost_lines += cut
            self.dropped_lines += cut
            log.warning("app %s: %d log lines dropped (not written out in time)", app_uuid, cut)

    def roll(self, *, max_age: float = MAX_AGE, force: bool = False) -> int:
        """Write each app's lines into gzip files when big or old enough (or ``force``), then
        bound the spool (:meth:`trim`).  Returns the files written.  Raises OSError after
        trying every app; the lines that could not be written wait for the next roll."""
        now = self._clock()
        due: list[tuple[str, str, list[bytes]]] = []
        with self._lock:
            for app_uuid, buf in list(self._buffers.items()):
                if not buf.lines and not (buf.lost_lines or buf.lost_files):
                    if now - buf.first_at > 10 * max_age:
                        del self._buffers[app_uuid]  # idle: forget it
                    continue
                big = buf.size >= 4 * MAX_FILE_BYTES
                if not force and not big and now - buf.first_at < max_age:
                    continue
                lines = buf.lines + self._note(buf)
                buf.lines, buf.size, buf.first_at = [], 0, now
                due.append((app_uuid, buf.name or app_uuid, lines))
        written = 0
        failure: OSError | None = None
        for app_uuid, name, lines in due:
            try:
                written += self._write(app_uuid, name, lines)
            except OSError as exc:
                failure = failure or exc
                self._requeue(app_uuid, lines)
        if failure is not None:
            raise failure
        self.trim()
        return written

    def _requeue(self, app_uuid: str, lines: list[bytes]) -> None:
        """Put lines that could not be written back in front of the app's newer ones."""
        with self._lock:
            buf = self._buffer(app_uuid)
            buf.lines[:0] = lines
            buf.size += sum(len(line) + 1 for line in lines)
            self._bound(app_uuid, buf)

    def _buffer(self, app_uuid: str) -> _Buffer:
        """The app's buffer, made when missing (lock held)."""
        buf = self._buffers.get(app_uuid)
        if buf is None:
            # msgid is seeded from the clock so that it keeps growing across restarts.
            start = int(self._wall() * 1000)
            buf = self._buffers[app_uuid] = _Buffer("", itertools.count(start))
            buf.first_at = self._clock()
        return buf

    def _note(self, buf: _Buffer) -> list[bytes]:
        """The entry telling the app's reader what was lost, if anything (lock held).  It goes
        after the lines of its batch, so that msgid and time keep growing."""
        if not (buf.lost_lines or buf.lost_files):
            return []
        parts = []
        if buf.lost_lines:
            parts.append(f"{buf.lost_lines} lines")
        if buf.lost_files:
            parts.append(f"{buf.lost_files} files")
        text = f"eve-agent: {' and '.join(parts)} of this app's log dropped (spool bound reached)"
        buf.lost_lines = buf.lost_files = 0
        return [_entry("eve-agent", next(buf.msgid), self._wall(), text, "warning")]

    def _write(self, app_uuid: str, name: str, lines: list[bytes]) -> int:
        mtime = int(self._wall())
        files = compress_lines(lines, lambda data: gzip_member(data, mtime=mtime, name=name))
        directory = self.pending_dir / app_uuid
        for data in files:
            # Names order the upload: never backwards, even when the clock is set back.
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            write_atomic(directory / f"{self._last_ns}.gz", data)
        return len(files)

    def pending(self) -> list[Path]:
        """Every app's files, oldest first (EVE's loguploader takes the oldest of all apps)."""
        if not self.pending_dir.is_dir():
            return []
        files = [
            p
            for p in self.pending_dir.glob("*/*.gz")
            if p.stem.isdigit() and _is_uuid(p.parent.name)
        ]
        return sorted(files, key=lambda p: int(p.stem))

    @staticmethod
    def app_of(path: Path) -> str:
        """The app UUID a pending file belongs to."""
        return path.parent.name

    def trim(self) -> None:
        """Drop the oldest files past :data:`MAX_APP_SPOOL_BYTES` of one app or
        :data:`MAX_SPOOL_BYTES` in all (counted, noted in the app's log); empty app directories
        go, and ``failed/`` keeps its newest :data:`MAX_FAILED_FILES`."""
        files = []
        for path in self.pending():
            try:
                files.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue
        per_app: dict[str, int] = {}
        for path, size in files:
            per_app[self.app_of(path)] = per_app.get(self.app_of(path), 0) + size
        total = sum(size for _, size in files)
        for path, size in files:
            app = self.app_of(path)
            if per_app[app] <= MAX_APP_SPOOL_BYTES and total <= MAX_SPOOL_BYTES:
                continue
            path.unlink(missing_ok=True)
            per_app[app] -= size
            total -= size
            self._lost_file(app)
        for directory in self.pending_dir.glob("*") if self.pending_dir.is_dir() else ():
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        if self.failed_dir.is_dir():
            failed = sorted(self.failed_dir.glob("*/*.gz"), key=lambda p: int(p.stem))
            for path in failed[: max(0, len(failed) - MAX_FAILED_FILES)]:
                path.unlink(missing_ok=True)

    def _lost_file(self, app_uuid: str) -> None:
        self.dropped_files += 1
        log.warning("app %s: oldest log file dropped (spool bound reached)", app_uuid)
        with self._lock:
            self._buffer(app_uuid).lost_files += 1


class AppLogUploader:
    """Uploads the spooled app log files oldest first; waits with backoff on failure."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        spool: AppLogSpool,
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
        pending = await asyncio.to_thread(self._spool.pending)
        for path in pending:
            app_uuid = self._spool.app_of(path)
            sent = await send_file(
                self._client,
                self._device,
                f"apps/instanceid/{app_uuid}/newlogs",
                path,
                failed_dir=self._spool.failed_dir / app_uuid,
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
            what="app log upload",
            roll=self._spool.roll,
            upload=self.upload_pending,
            liveness=self.liveness,
            health=self._health,
        )
