"""Which of the agent's persistent writes are failing now, for the device report and the logs.

A full disk must not stop the agent: every writer of persistent state (config checkpoint,
controller certificates, outbox, log spools, status file, identity) catches the typed error of
:func:`agent.util.atomicfile.write_atomic`, keeps what it could not write in memory, retries later
and tells one shared :class:`StorageHealth`.  That tracker

* logs one ERROR line when a writer starts failing and one WARNING when it succeeds again (not
  a line per retry: a full disk retried every few seconds must not flood the log, which is
  itself waiting for the disk);
* lists the current problems for the device info (``ZInfoDevice.storage_info``) and
  ``eve-agent status``.

Thread-safe: writers report from worker threads.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageProblem:
    """One writer that cannot write."""

    #: What failed, for a person: "config checkpoint", "outbox", "log spool"...
    what: str
    #: The error as text ("[Errno 28] No space left on device: '/persist/...'").
    error: str
    errno: int | None
    #: Wall-clock time of the first failure in this run of failures.
    since: float
    #: Failures in a row.
    attempts: int

    @property
    def no_space(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


class StorageHealth:
    """The current storage problems, keyed by writer."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: dict[str, StorageProblem] = {}

    def failed(self, what: str, exc: OSError) -> None:
        """``what`` could not be written.  Logs once per run of failures."""
        with self._lock:
            known = self._problems.get(what)
            if known is None:
                self._problems[what] = StorageProblem(what, str(exc), exc.errno, self._clock(), 1)
            else:
                self._problems[what] = replace(known, error=str(exc), attempts=known.attempts + 1)
        if known is None:
            log.error("cannot write the %s: %s; the agent goes on and retries", what, exc)
        else:
            log.debug("%s still not written (attempt %d): %s", what, known.attempts + 1, exc)

    def ok(self, what: str) -> None:
        """``what`` was written: its problem, if any, is over (logged once)."""
        with self._lock:
            known = self._problems.pop(what, None)
        if known is not None:
            log.warning(
                "the %s is written again after %d failed attempts over %.0f s",
                what,
                known.attempts,
                max(0.0, self._clock() - known.since),
            )

    def problems(self) -> list[StorageProblem]:
        """The writers failing now, oldest problem first."""
        with self._lock:
            return sorted(self._problems.values(), key=lambda p: (p.since, p.what))

    def summary(self) -> str:
        """One line for a report: empty when all is well."""
        problems = self.problems()
        if not problems:
            return ""
        reason = "no space left" if any(p.no_space for p in problems) else "write errors"
        names = ", ".join(p.what for p in problems)
        return f"persistent storage: {reason}; not written: {names} (retrying; {problems[0].error})"
