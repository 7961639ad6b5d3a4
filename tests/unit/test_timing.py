# SPDX-License-Identifier: Apache-2.0
"""agent.util.timing: jitter, backoff and stop-aware waiting."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from agent.util.timing import Backoff, jittered, wait_or_stop


def test_jittered_default_bounds() -> None:
    rng = random.Random(1)
    draws = [jittered(60.0, rng=rng) for _ in range(2000)]
    assert all(18.0 <= d <= 60.0 for d in draws)
    # Spread over the whole range, not a constant.
    assert min(draws) < 20.0 and max(draws) > 58.0


def test_jittered_custom_bounds() -> None:
    rng = random.Random(2)
    draws = [jittered(600.0, 0.8, 1.2, rng) for _ in range(1000)]
    assert all(480.0 <= d <= 720.0 for d in draws)
    assert min(draws) < 500.0 and max(draws) > 700.0


def test_jittered_without_rng_and_zero() -> None:
    assert 3.0 <= jittered(10.0) <= 10.0
    assert jittered(0.0) == 0.0


def test_backoff_first_is_initial() -> None:
    b = Backoff(initial=2.0, maximum=100.0, rng=random.Random(3))
    assert b.next() == 2.0
    assert b.attempts == 1


def test_backoff_grows_within_ceiling() -> None:
    b = Backoff(initial=1.0, maximum=1000.0, factor=2.0, rng=random.Random(4))
    for attempt in range(10):
        ceiling = 2.0**attempt
        delay = b.next()
        assert max(1.0, ceiling / 2) <= delay <= ceiling, (attempt, delay)
    assert b.attempts == 10


def test_backoff_capped_and_never_below_initial() -> None:
    b = Backoff(initial=15.0, maximum=300.0, rng=random.Random(5))
    delays = [b.next() for _ in range(60)]
    assert all(15.0 <= d <= 300.0 for d in delays)
    assert all(150.0 <= d <= 300.0 for d in delays[10:])  # at the cap: full jitter in [max/2, max]
    assert max(delays) > 290.0


def test_backoff_survives_very_long_outages() -> None:
    """A node offline for days keeps calling next(): about 1000 attempts at the 10-minute cap
    is under a week.  The delay must stay capped instead of overflowing."""
    b = Backoff(initial=1.0, maximum=600.0, rng=random.Random(6))
    delays = [b.next() for _ in range(5000)]
    assert all(1.0 <= d <= 600.0 for d in delays[-100:])
    assert b.attempts == 5000


def test_backoff_large_factor_survives() -> None:
    b = Backoff(initial=1.0, maximum=60.0, factor=10.0, rng=random.Random(7))
    for _ in range(500):
        assert 1.0 <= b.next() <= 60.0


def test_backoff_reset() -> None:
    b = Backoff(initial=1.0, maximum=600.0, rng=random.Random(8))
    for _ in range(12):
        b.next()
    assert b.next() >= 300.0
    b.reset()
    assert b.attempts == 0
    assert b.next() == 1.0
    assert b.next() <= 2.0


async def test_wait_returns_true_at_once_when_stop_already_set() -> None:
    stop = asyncio.Event()
    stop.set()
    start = time.monotonic()
    assert await wait_or_stop(stop, 30.0) is True
    assert time.monotonic() - start < 0.5


async def test_wait_returns_true_promptly_when_stop_set_later() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    start = time.monotonic()
    assert await wait_or_stop(stop, 30.0) is True
    elapsed = time.monotonic() - start
    assert 0.04 <= elapsed < 1.0


async def test_wait_wake_returns_false_and_clears() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, wake.set)
    start = time.monotonic()
    assert await wait_or_stop(stop, 30.0, wake) is False
    assert time.monotonic() - start < 1.0
    assert not wake.is_set()
    assert not stop.is_set()


async def test_wait_stop_wins_over_wake() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    stop.set()
    wake.set()
    assert await wait_or_stop(stop, 30.0, wake) is True


async def test_wait_timeout_returns_false() -> None:
    stop = asyncio.Event()
    start = time.monotonic()
    assert await wait_or_stop(stop, 0.05) is False
    assert time.monotonic() - start >= 0.04


@pytest.mark.parametrize("delay", [0.0, -5.0])
async def test_wait_non_positive_delay(delay: float) -> None:
    start = time.monotonic()
    assert await wait_or_stop(asyncio.Event(), delay) is False
    assert time.monotonic() - start < 0.5


async def test_wait_leaves_no_tasks_behind() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    before = len(asyncio.all_tasks())
    await wait_or_stop(stop, 0.01, wake)
    assert len(asyncio.all_tasks()) == before


async def test_wait_cancelled_propagates() -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(wait_or_stop(stop, 30.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
