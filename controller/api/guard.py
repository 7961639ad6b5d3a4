"""Uploads from devices: who may send now, and where the heavy work runs.

Report and log uploads are the device API's expensive requests: inflating, protobuf and JSON
decoding, and thousands of database rows.  :class:`Guard` makes sure that

* none of that runs on the event loop: jobs run in one worker thread with its own SQLite
  connection (:meth:`Store.reopen`), one at a time, so pings, config and attestation keep being
  answered while a device uploads, and the worker's bulk inserts are serialised against each
  other by construction and against the event loop's short writes by SQLite's locking;
* one device cannot take more than its share (:class:`controller.limits.DeviceLimiter`: upload
  and log-entry rates, uploads in flight; :class:`controller.limits.StorageQuota`), refused with
  429 and a Retry-After, and with one warning per device and condition per interval rather than
  a line per request;
* all devices together cannot queue unbounded work: past ``max_pending`` uploads the answer is
  503, which EVE retries.

The guard lives on the aiohttp application under :data:`GUARD`; ``make_app`` makes it and closes
it when the application is cleaned up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from aiohttp import web

from controller.api.context import ApiSettings
from controller.api.errors import ApiError
from controller.limits import ROW_COST, Clock, DeviceLimiter, Refusal, StorageQuota
from controller.logsafe import LogThrottle
from controller.store import Store

logger = logging.getLogger("controller.api")

T = TypeVar("T")


class QuotaFull(Exception):
    """Raised by a job when the device's storage quota is used up."""


@dataclass(frozen=True)
class Worker:
    """What a job gets in the worker thread: that thread's store, and the device's accounts."""

    store: Store
    device_uuid: str
    quota: StorageQuota
    _charge: Callable[[int], None]

    def check_quota(self) -> None:
        """Raise QuotaFull when the device has used up its storage quota."""
        device = self.device_uuid
        if self.quota.full(device, lambda: self.store.device_usage(device, row_cost=ROW_COST)):
            raise QuotaFull(device)

    def stored(self, content_bytes: int, rows: int) -> None:
        """Count what was just stored against the quota."""
        self.quota.add(self.device_uuid, content_bytes + rows * ROW_COST)

    def charge_entries(self, entries: int) -> None:
        """Charge decoded log entries to the device's entry rate (also for refused uploads)."""
        self._charge(entries)


class Guard:
    """Admission and the worker thread for report and log uploads (see the module docstring)."""

    def __init__(self, store: Store, settings: ApiSettings, *, clock: Clock = time.monotonic):
        self.settings = settings
        self.log = LogThrottle(logger, interval=settings.limits.log_interval, clock=clock)
        self._limiter = DeviceLimiter(settings.limits, clock)
        self._quota = StorageQuota(settings.limits, clock=clock)
        self._shared = store
        # A store that was not opened from a file cannot be reopened in another thread; then the
        # jobs run inline (only tests build stores that way).
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="controller-ingest")
            if store.path is not None
            else None
        )
        self._worker_store: Store | None = None  # opened, used and closed in the worker thread

    async def run(self, device_uuid: str, job: Callable[[Worker], T], *, logs: bool) -> T:
        """Admit one upload of ``device_uuid`` and run ``job`` for it off the event loop.

        Raises ApiError 429 or 503, with a Retry-After, when the device is over a limit (nothing
        was done) or its quota is full; whatever ``job`` raises otherwise.  The upload's
        in-flight slot is held until the job has finished, even if the request is cancelled
        (the client went away) meanwhile.
        """
        refusal = self._limiter.admit(device_uuid, logs=logs)
        if refusal is not None:
            self._refuse(device_uuid, refusal)
        loop = asyncio.get_running_loop()

        def charge(entries: int) -> None:
            loop.call_soon_threadsafe(self._limiter.charge_entries, device_uuid, entries)

        try:
            if self._executor is None:
                try:
                    return job(Worker(self._shared, device_uuid, self._quota, charge))
                finally:
                    self._limiter.release(device_uuid)
            future = self._executor.submit(self._in_worker, device_uuid, job, charge)
            future.add_done_callback(
                lambda _: loop.call_soon_threadsafe(self._limiter.release, device_uuid)
            )
            return await asyncio.wrap_future(future)
        except QuotaFull:
            limits = self.settings.limits
            self._refuse(
                device_uuid,
                Refusal(
                    429,
                    f"storage quota of {limits.quota_bytes} bytes used up",
                    limits.quota_retry_after,
                    "quota",
                ),
            )

    async def check_rate(self, device_uuid: str) -> None:
        """Count one authenticated request of ``device_uuid`` and wait for its turn in the
        device's pace (``ReportLimits.device_pace_per_second``); over its request rate, or
        with too many requests waiting, wait ``over_rate_delay`` seconds, then raise ApiError
        429 with a Retry-After."""
        refusal = self._limiter.admit_request(device_uuid)
        turn = self._limiter.pace(device_uuid) if refusal is None else refusal
        if isinstance(turn, Refusal):
            await asyncio.sleep(self.settings.limits.over_rate_delay)
            self._refuse(device_uuid, turn)
        if turn > 0:
            # Asleep, the request costs the loop nothing; the device's connection is held up
            # until its answer, which is what slows a client that sends as fast as it can.
            await asyncio.sleep(turn)

    def _in_worker(
        self, device_uuid: str, job: Callable[[Worker], T], charge: Callable[[int], None]
    ) -> T:
        if self._worker_store is None:
            self._worker_store = self._shared.reopen()
        return job(Worker(self._worker_store, device_uuid, self._quota, charge))

    def _refuse(self, device_uuid: str, refusal: Refusal) -> NoReturn:
        retry = max(1, math.ceil(min(refusal.retry_after, 86_400.0)))
        self.log.warning_for(
            f"{refusal.condition} {device_uuid}",
            "device %s: %s; answered %d with Retry-After %d s",
            device_uuid,
            refusal.reason,
            refusal.status,
            retry,
        )
        raise ApiError(
            refusal.status,
            f"{refusal.reason}; retry after {retry} s",
            headers={"Retry-After": str(retry)},
            quiet=True,
        )

    async def close(self) -> None:
        """Wait for the worker's jobs, close its store and stop the thread."""
        if self._executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_worker_store)
        self._executor.shutdown(wait=True)

    def _close_worker_store(self) -> None:
        if self._worker_store is not None:
            self._worker_store.close()
            self._worker_store = None


GUARD = web.AppKey("guard", Guard)


def guard_of(request: web.Request) -> Guard:
    return request.app[GUARD]
