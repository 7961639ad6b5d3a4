"""Jitter, backoff and stop-aware waiting: every timer in the agent goes through here."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field


def jittered(
    interval: float, low: float = 0.3, high: float = 1.0, rng: random.Random | None = None
) -> float:
    """A delay drawn uniformly from ``[low * interval, high * interval]``.

    EVE draws its config and metrics ticks from [0.3, 1.0] x interval (flextimer.NewRangeTicker),
    which spreads a fleet's requests over the interval.
    """
    r = rng or random
    return r.uniform(low * interval, high * interval)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, bounded by ``maximum``.

    ``next()`` returns the delay to wait before the next attempt; ``reset()`` after a success.
    """

    initial: float = 1.0
    maximum: float = 600.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next(self) -> float:
        try:
            grown = self.initial * self.factor**self._attempt
        except OverflowError:  # after ~1000 attempts (days offline) the float overflows
            grown = self.maximum
        ceiling = min(self.maximum, grown)
        self._attempt += 1
        # Never below `initial`: a zero wait would turn a broken controller into a busy loop.
        return max(self.initial, self.rng.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


async def wait_or_stop(
    stop: asyncio.Event, delay: float, wake: asyncio.Event | None = None
) -> bool:
    """Sleep up to ``delay`` seconds; return True at once when ``stop`` is set.

    When ``wake`` is given, setting it ends the wait early (and it is cleared); returns False then.
    """
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(0.0, delay), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
    if wake is not None and wake.is_set():
        wake.clear()
    return stop.is_set()
