"""The info outbox: device and object info waiting for the controller, durably, latest per key.

Each message is written under its object key (``device``, ``app:<uuid>``, ...) and replaces an
undelivered one for the same key; the reporter (:mod:`agent.link.reporting`) removes it once the
controller took it, or moves it to ``rejected/`` when the controller refuses it for good.  A
message the disk refuses (full, I/O errors) is kept in memory instead and delivered from there;
the problem goes to the shared :class:`agent.util.storagehealth.StorageHealth`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from agent.util.atomicfile import write_atomic
from agent.util.storagehealth import StorageHealth

log = logging.getLogger(__name__)


#: Refused messages kept in ``rejected/`` for a person to look at (the oldest go first).
MAX_REJECTED = 100


class Outbox:
    """Durable latest-per-key queue of info messages, with a memory fallback.

    ``put`` never raises for disk trouble: a message the disk refuses is kept in memory (and
    reported to ``health``) until a later ``put`` of its key writes it or it is delivered.
    ``pending`` lists the memory ones with the files; ``done`` and ``reject`` take either.
    """

    #: What a failing write is called in the storage report.
    WHAT = "outbox"

    def __init__(self, directory: Path, *, health: StorageHealth | None = None) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        self._health = health or StorageHealth()
        #: key -> (payload, pseudo mtime in ns): messages the disk refused.
        self._memory: dict[str, tuple[bytes, int]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, payload: bytes) -> bool:
        """Queue ``payload`` under ``key``, replacing an undelivered one.  True when it is on
        disk, False when it is kept in memory only (the disk refused it)."""
        try:
            write_atomic(self.directory / f"{key}.info", payload)
        except OSError as exc:
            with self._lock:
                self._memory[key] = (payload, time.time_ns())
            self._health.failed(self.WHAT, exc)
            return False
        with self._lock:
            self._memory.pop(key, None)
        self._health.ok(self.WHAT)
        return True

    def pending(self) -> list[tuple[str, bytes, int]]:
        """(key, payload, mtime_ns) oldest first.  An entry that cannot be read is moved
        aside (it would fail for ever); never raises for one entry."""
        entries: dict[str, tuple[bytes, int]] = {}
        if self.directory.is_dir():
            for path in self.directory.glob("*.info"):
                try:
                    entries[path.stem] = (path.read_bytes(), path.stat().st_mtime_ns)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.error("outbox entry %s unreadable (%s): moved aside", path.name, exc)
                    self._move_aside(path)
        with self._lock:
            memory = dict(self._memory)
        for key, (payload, ns) in memory.items():
            on_disk = entries.get(key)
            if on_disk is None or on_disk[1] <= ns:
                entries[key] = (payload, ns)
        return sorted(((k, p, ns) for k, (p, ns) in entries.items()), key=lambda e: e[2])

    def done(self, key: str, mtime_ns: int) -> None:
        """Remove ``key`` unless it was replaced meanwhile (newer mtime)."""
        with self._lock:
            mem = self._memory.get(key)
            if mem is not None and mem[1] == mtime_ns:
                del self._memory[key]
        path = self.directory / f"{key}.info"
        try:
            if path.stat().st_mtime_ns <= mtime_ns:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove delivered outbox entry %s: %s", path.name, exc)

    def reject(self, key: str, mtime_ns: int, payload: bytes) -> None:
        """The controller refused ``key`` for good: move it to ``rejected/`` (the newest
        :data:`MAX_REJECTED` kept) so that it never holds up the queue.  Never raises."""
        with self._lock:
            mem = self._memory.get(key)
            if mem is not None and mem[1] == mtime_ns:
                del self._memory[key]
        path = self.directory / f"{key}.info"
        try:
            current = path.stat().st_mtime_ns
        except OSError:
            current = None
        if current is not None and current <= mtime_ns:
            self._move_aside(path)
        else:  # only in memory, or replaced meanwhile: keep a copy of what was refused
            try:
                write_atomic(self.rejected_dir / f"{key}.{time.time_ns()}.info", payload)
            except OSError as exc:
                log.warning("refused outbox entry %s not kept: %s", key, exc)
        self._trim_rejected()

    def _move_aside(self, path: Path) -> None:
        try:
            self.rejected_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.rejected_dir / f"{path.stem}.{time.time_ns()}.info")
        except OSError as exc:
            log.warning("cannot move %s aside (%s): deleting it", path.name, exc)
            with contextlib.suppress(OSError):
                path.unlink()

    def _trim_rejected(self) -> None:
        try:
            kept = sorted(self.rejected_dir.glob("*.info"), key=lambda p: p.stat().st_mtime_ns)
            for old in kept[: max(0, len(kept) - MAX_REJECTED)]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot trim %s: %s", self.rejected_dir, exc)

    @property
    def in_memory(self) -> int:
        """Messages held in memory because the disk refused them."""
        with self._lock:
            return len(self._memory)
