# SPDX-License-Identifier: Apache-2.0
"""The event-loop stall watchdog itself (tests/loopwatch.py): it sees a blocked loop, names the
code that blocked it, ignores work done in threads, and its fixture fails only the tests whose
own call phase blocked the loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.loopwatch import LoopWatch

pytest_plugins = ["pytester"]


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)


async def test_an_idle_loop_barely_stalls() -> None:
    async with LoopWatch() as watch:
        await asyncio.sleep(0.2)
    assert watch.beats >= 20
    assert watch.longest < 0.02
    assert watch.worst_stack is None
    watch.check()


async def test_a_blocked_loop_is_measured_and_named() -> None:
    async with LoopWatch() as watch:
        await asyncio.sleep(0.02)
        _hold_the_loop(0.12)
        await asyncio.sleep(0.02)
    assert 0.10 <= watch.longest < 0.5
    assert watch.worst_stack is not None and "_hold_the_loop" in watch.worst_stack
    with pytest.raises(AssertionError, match=r"event loop blocked: longest event-loop stall"):
        watch.check()


async def test_work_in_a_thread_is_not_a_stall() -> None:
    async with LoopWatch() as watch:
        await asyncio.gather(*(asyncio.to_thread(_hold_the_loop, 0.12) for _ in range(3)))
    assert watch.longest < 0.03


async def test_a_stall_at_the_very_end_counts() -> None:
    watch = LoopWatch()
    await watch.start()
    await asyncio.sleep(0.02)
    _hold_the_loop(0.08)  # nothing runs the heartbeat before the window closes
    await watch.stop()
    assert watch.longest >= 0.07


async def test_a_new_window_forgets_the_previous_one() -> None:
    watch = LoopWatch()
    await watch.start()
    _hold_the_loop(0.08)
    watch.end()
    watch.begin()
    await asyncio.sleep(0.05)
    await watch.stop()
    assert watch.longest < 0.03


_INNER_CONFTEST = """
from tests.loopwatch import loop_watch, pytest_runtest_call
__all__ = ["loop_watch", "pytest_runtest_call"]
"""

_INNER_TESTS = """
import asyncio, time
import pytest

@pytest.fixture
def slow_setup():
    time.sleep(0.15)  # outside the test's call phase: not the test's stall

async def test_blocks(loop_watch):
    await asyncio.sleep(0.02)
    time.sleep(0.12)
    await asyncio.sleep(0.02)

async def test_blocks_at_the_end(loop_watch):
    await asyncio.sleep(0.02)
    time.sleep(0.12)

async def test_threads(loop_watch):
    await asyncio.to_thread(time.sleep, 0.12)
    assert loop_watch.longest < 0.05

async def test_slow_fixture(slow_setup, loop_watch):
    await asyncio.sleep(0.05)

async def test_without_the_fixture():
    time.sleep(0.12)
"""


def test_the_fixture_fails_only_tests_that_block_the_loop(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makeconftest(_INNER_CONFTEST)
    pytester.makepyfile(test_inner=_INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    outcomes = {
        r.nodeid.rsplit("::", 1)[-1]: r.outcome
        for r in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
        if r.when == "call"
    }
    assert outcomes == {
        "test_blocks": "failed",
        "test_blocks_at_the_end": "failed",
        "test_threads": "passed",
        "test_slow_fixture": "passed",
        "test_without_the_fixture": "passed",
    }
    result.stdout.fnmatch_lines(["*event loop blocked: longest event-loop stall*"])
    result.stdout.fnmatch_lines(["*the loop thread was here during the stall:*"])
