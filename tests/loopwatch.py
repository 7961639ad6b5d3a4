# SPDX-License-Identifier: Apache-2.0
"""An event-loop stall watchdog: for the test suite (the ``loop_watch`` fixture) and the bench.

A heartbeat task sleeps ``interval`` (5 ms) again and again; each time it wakes, how late it woke
is how long the loop could not run anything: a stall.  :class:`LoopWatch` keeps the longest one.
A monitor thread watches the same heartbeat from outside the loop, and when a beat is overdue by
more than ``limit`` it captures the loop thread's stack, so a failure names the code that held
the loop rather than only the time it held it.

Standalone (tools/bench.py)::

    async with LoopWatch() as watch:
        ...                      # the work under test, in this loop
    print(watch.longest)

In tests: request the ``loop_watch`` fixture in an ``async def`` test (the conftests of
tests/unit and tests/integration import it and its hook).  The stall is measured over the test's
call phase only (not over other fixtures' setup), and the test fails when the loop was blocked
for more than ``LIMIT`` (50 ms); ``loop_watch.longest`` is there for a test's own assertions.

During that phase the objects that already exist are frozen out of the cyclic garbage
collector (:func:`frozen_heap`), as the agent's daemon freezes its own after start-up: a full
collection walks every tracked object while holding the GIL, and a test process holding pytest
and a thousand collected tests would otherwise charge a pause of its own heap's size (60 ms and
more) to the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Generator, Iterator
from types import TracebackType

import pytest

#: Heartbeat period.
INTERVAL = 0.005
#: The longest stall a test tolerates.
LIMIT = 0.050


class LoopWatch:
    """Measures event-loop stalls in the loop it is started in.  See the module docstring."""

    def __init__(
        self, *, interval: float = INTERVAL, limit: float = LIMIT, capture_stacks: bool = True
    ) -> None:
        self.interval = interval
        self.limit = limit
        self.capture_stacks = capture_stacks
        #: Every measured lateness of the current window, in seconds.
        self.samples: list[float] = []
        #: The loop thread's stack while the longest stall over ``limit`` was going on.
        self.worst_stack: str | None = None
        self._active = False
        self._due = 0.0  # perf_counter() at which the pending beat should wake
        self._stack_for_due: tuple[float, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._window_started = 0.0
        self.window = 0.0

    # --- results

    @property
    def longest(self) -> float:
        """The longest stall of the window, seconds (0.0 before any beat)."""
        return max(self.samples, default=0.0)

    @property
    def beats(self) -> int:
        return len(self.samples)

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the window's latenesses."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        return (
            f"longest event-loop stall {self.longest * 1e3:.1f} ms over {self.window:.2f} s "
            f"({self.beats} heartbeats of {self.interval * 1e3:.0f} ms, "
            f"p99 {self.percentile(0.99) * 1e3:.1f} ms, limit {self.limit * 1e3:.0f} ms)"
        )

    def check(self) -> None:
        """AssertionError, with the blocking stack when one was caught, past ``limit``."""
        if self.longest <= self.limit:
            return
        message = f"event loop blocked: {self.summary()}"
        if self.worst_stack:
            message += "\nthe loop thread was here during the stall:\n" + self.worst_stack
        raise AssertionError(message)

    # --- lifecycle

    async def start(self, *, active: bool = True) -> None:
        """Start the heartbeat (and the monitor thread) in the running loop; ``active`` opens
        a measurement window at once."""
        if self._task is not None:
            raise RuntimeError("LoopWatch already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._due = time.perf_counter() + self.interval
        self._task = asyncio.create_task(self._heartbeat(), name="loop-watch")
        if self.capture_stacks:
            self._stopping.clear()
            self._monitor = threading.Thread(target=self._watch, name="loop-watch", daemon=True)
            self._monitor.start()
        if active:
            self.begin()

    async def stop(self) -> None:
        """End the window (counting a beat still overdue) and stop the heartbeat."""
        self.end()
        self._stopping.set()
        if self._monitor is not None:
            await asyncio.to_thread(self._monitor.join)
            self._monitor = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def begin(self) -> None:
        """Open a new measurement window (results reset).  Whatever happened before, including
        time when the loop was not running at all, is not counted."""
        self.samples = []
        self.worst_stack = None
        self._stack_for_due = None
        self._due = time.perf_counter() + self.interval
        self._window_started = time.perf_counter()
        self._active = True

    def end(self) -> None:
        """Close the window.  A beat overdue right now counts: a stall at the very end of the
        window (after the last beat) is not missed."""
        if not self._active:
            return
        self._record(time.perf_counter() - self._due)
        self._active = False
        self.window = time.perf_counter() - self._window_started

    async def __aenter__(self) -> LoopWatch:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- internals

    def _record(self, late: float) -> None:
        if not self._active:
            return
        late = max(0.0, late)
        if late > self.limit and late > self.longest and self._stack_for_due is not None:
            due, stack = self._stack_for_due
            if due == self._due:
                self.worst_stack = stack
        self.samples.append(late)

    async def _heartbeat(self) -> None:
        while True:
            self._due = time.perf_counter() + self.interval
            await asyncio.sleep(self.interval)
            self._record(time.perf_counter() - self._due)

    def _watch(self) -> None:
        """Monitor thread: capture the loop thread's stack once per beat overdue past limit."""
        period = min(self.interval, self.limit / 4)
        while not self._stopping.wait(period):
            if not self._active or self._loop is None or not self._loop.is_running():
                continue
            due = self._due
            if time.perf_counter() - due <= self.limit:
                continue
            if self._stack_for_due is not None and self._stack_for_due[0] == due:
                continue
            frame = sys._current_frames().get(self._loop_thread or 0)
            if frame is None:
                continue
            stack = "".join(traceback.format_stack(frame))
            if self._due == due:  # still the same stall
                self._stack_for_due = (due, stack)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist now out of the cyclic collector's passes while in the block
    (``gc.freeze``), and hand them back after it (``gc.unfreeze``)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --- pytest ---------------------------------------------------------------------------------------


@pytest.fixture
async def loop_watch() -> AsyncIterator[LoopWatch]:
    """A :class:`LoopWatch` over this test's call phase; the test fails past 50 ms.  For
    ``async def`` tests (a sync test leaves the loop idle, which reads as one long stall)."""
    watch = LoopWatch()
    await watch.start(active=False)
    try:
        yield watch
    finally:
        await watch.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Measure the stall over the call phase of tests that use ``loop_watch``, and fail them
    when the loop was blocked past the limit."""
    funcargs = getattr(item, "funcargs", {})
    watch = funcargs.get("loop_watch")
    if not isinstance(watch, LoopWatch):
        return (yield)
    with frozen_heap():
        watch.begin()
        try:
            result = yield
        finally:
            watch.end()
    watch.check()
    return result


__all__ = ["INTERVAL", "LIMIT", "LoopWatch", "frozen_heap", "loop_watch", "pytest_runtest_call"]
