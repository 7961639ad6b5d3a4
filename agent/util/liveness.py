"""Is the agent making progress?  What the systemd watchdog ping is tied to.

Long-lived tasks bracket each bounded piece of work (one config poll, one report upload) with
:meth:`Liveness.activity`, giving the most it may take; components with their own notion of a hang
(the reconcile engine's overdue operations) register a check.  The daemon pings the watchdog only
while :meth:`Liveness.problems` is empty, so a hung operation, a deadlocked thread the loop waits
for, or a blocked event loop (nothing runs, so nothing pings) all end in a restart by systemd, as
EVE's ``StillRunning`` touch files do for its watchdog.

Waiting idle (for the next poll, for a stop) is not an activity and never counts as a hang.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class _Activity:
    name: str
    started: float
    limit: float


class Liveness:
    """Activities in progress and registered checks.  Use from the event loop thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = itertools.count()
        self._active: dict[int, _Activity] = {}
        self._checks: dict[str, Callable[[], list[str]]] = {}

    @contextlib.contextmanager
    def activity(self, name: str, limit: float) -> Iterator[None]:
        """Mark the enclosed work; it is a hang once it has run for more than ``limit`` s."""
        key = next(self._ids)
        self._active[key] = _Activity(name, self._clock(), limit)
        try:
            yield
        finally:
            del self._active[key]

    def add_check(self, name: str, check: Callable[[], list[str]]) -> None:
        """``check()`` returns descriptions of hung work (empty: fine).  It must not block."""
        self._checks[name] = check

    def problems(self) -> list[str]:
        """What is hung now; empty when everything is making progress."""
        now = self._clock()
        out = [
            f"{a.name} running for {now - a.started:.0f} s (limit {a.limit:.0f} s)"
            for a in self._active.values()
            if now - a.started > a.limit
        ]
        for name, check in self._checks.items():
            try:
                out += [f"{name}: {p}" for p in check()]
            except Exception as exc:  # noqa: BLE001 - a failing check is itself a problem
                out.append(f"{name}: check failed: {exc}")
        return out
