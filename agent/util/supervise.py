# SPDX-License-Identifier: Apache-2.0
"""The daemon's task supervision: named tasks run until a stop event, stopped within a grace
period, the first failure raised; and the signals that set the stop event."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("agent.daemon")


async def supervise(
    stop: asyncio.Event, coros: dict[str, Coroutine[Any, Any, None]], *, grace: float
) -> None:
    """Run named tasks until ``stop``.  A task that ends or fails early stops them all.

    On stop, tasks get ``grace`` seconds to return on their own, then are cancelled.
    Raises the first task's exception, if one failed.
    """
    tasks: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(c, name=n): n for n, c in coros.items()
    }
    stop_wait = asyncio.create_task(stop.wait(), name="stop")
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stop_wait:
                continue
            exc = task.exception()
            if exc is not None:
                log.error("task %s failed: %s", tasks[task], exc, exc_info=exc)
                failure = failure or exc
            elif not stop.is_set():
                log.error("task %s ended unexpectedly", tasks[task])
        stop.set()
        finished, pending = await asyncio.wait(tasks, timeout=grace)
        for task in finished:
            if task in done or task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                # Failing while stopping still matters: it may have left work half done.
                log.error("task %s failed while stopping: %s", tasks[task], exc, exc_info=exc)
                failure = failure or exc
        for task in pending:
            log.warning("task %s did not stop within %.0f s; cancelling", tasks[task], grace)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        stop_wait.cancel()
        for task in tasks:
            task.cancel()
    if failure is not None:
        raise failure


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
