"""How much one device may send: per upload, per second, and in total.

A registered device is trusted to be itself, not to be reasonable.  Without limits, one device
could fill the database or keep the controller busy for everyone else (a 1 KB gzip file inflates
to hundreds of thousands of log entries).  So every report upload is:

* capped on its own (:class:`ReportLimits`: entries per log upload, bytes and elements per
  protobuf report; the inflated-size cap is ``ApiSettings.max_log_bytes``);
* rate limited per device by two token buckets (requests, and log entries), refused with 429
  and a Retry-After when empty;
* counted against a per-device storage quota (:class:`StorageQuota`), refused with 429 when
  full;
* one of at most ``max_inflight`` uploads of that device being worked on at a time.

EVE backs off on 429 and retries later (info messages stay queued, log files stay on the device),
so a refused upload is delayed, not lost.  This module holds the arithmetic only; the HTTP side
is ``controller.api.ingest``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MIB = 1 << 20

ROW_COST = 128
"""Bytes a stored report or log entry costs on top of its content (SQLite row, index entries,
the device UUID kept in each row): what makes many tiny log entries expensive."""


@dataclass(frozen=True)
class ReportLimits:
    """Limits on what one device may upload.  Defaults suit EVE's own behaviour with room to spare.

    EVE's log files are at most 64 KiB compressed, typically one to three thousand entries; it
    sends metrics every minute, device info every ten minutes and one info message per object
    change, so a few hundred messages at boot and well under one a second afterwards.
    """

    max_log_entries: int = 10_000
    """Entries in one log upload; more is refused (400) as soon as the decoder counts them."""
    max_report_bytes: int = MIB
    """Payload of one info, metrics, flow log or hardware health message (400 beyond)."""
    max_report_elements: int = 100_000
    """Fields, sub-messages and repeated elements in one protobuf report (400 beyond): bounds the
    work of rendering it as JSON, whatever its size."""
    requests_per_second: float = 2.0
    """Sustained report and log uploads per device."""
    request_burst: int = 300
    """Uploads a device may make at once (EVE's burst at boot) before the rate applies."""
    log_entries_per_second: float = 500.0
    """Sustained log entries per device."""
    log_entry_burst: int = 50_000
    """Log entries a device may send at once (a backlog after being offline)."""
    quota_bytes: int = 512 * MIB
    """Stored reports and log entries per device, counted with :data:`ROW_COST` per row."""
    quota_retry_after: float = 3600.0
    """Retry-After of a refusal for a full quota: space only comes back when an operator prunes."""
    quota_recheck: float = 60.0
    """Seconds between re-counting a full device's usage in the database (an operator may have
    removed data)."""
    device_requests_per_second: float = 10.0
    """Sustained authenticated requests per device, of every kind (config, attestation, uploads:
    EVE makes well under one a second after boot).  Checked after the signature, so nobody else
    can spend a device's share."""
    device_request_burst: int = 600
    """Authenticated requests a device may make at once (more than the upload burst)."""
    device_pace_per_second: float = 40.0
    """The pace at which a device's burst is worked off: its requests beyond
    :attr:`device_pace_burst` at once wait their turn (they are not refused), so that one
    device's allowed burst is not worked on the event loop and in the upload worker as fast as
    it can send it, ahead of every other device.  An honest device's boot burst of a few
    hundred messages takes seconds; its requests after boot never wait."""
    device_pace_burst: int = 10
    """Requests of a device worked on at once before the pace applies."""
    max_pace_wait: float = 2.0
    """A request that would wait longer than this for its turn is answered 429 instead (a
    device with many connections open cannot park requests without end)."""
    over_rate_delay: float = 1.0
    """Seconds a request over the device's request rate waits before its 429.  A device sending
    as fast as it can over a few connections is slowed to a few requests a second instead of
    taking the event loop from every other device; an honest device never waits."""
    max_inflight: int = 2
    """Uploads of one device being decoded or stored at the same time; more get 429."""
    max_pending: int = 32
    """Uploads of all devices waiting for or in the worker; more get 503 (EVE retries 503)."""
    log_interval: float = 60.0
    """Seconds between two log lines about the same device and condition."""


Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second.

    Spending may take the bucket below zero (a large upload is accepted whole); the device then
    waits until it is back above the amount it next needs.
    """

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, stamp=now)

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def wait(self, need: float, now: float) -> float:
        """Seconds until ``need`` tokens are there (0 when they are now)."""
        self._refill(now)
        if self.tokens >= need:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (need - self.tokens) / self.rate

    def spend(self, amount: float, now: float) -> None:
        self._refill(now)
        self.tokens -= amount

    def turn(self, now: float) -> float:
        """Seconds until a token spent now is covered, the tokens already owed counted
        (0 when one is there): the wait of a request queued behind the ones before it."""
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class Refusal:
    """Why an upload is not taken now, and when to come back."""

    status: int
    reason: str
    retry_after: float
    condition: str
    """Short name of the condition, for throttled log lines ("rate", "log rate", "busy")."""


@dataclass
class _DeviceState:
    requests: TokenBucket
    entries: TokenBucket
    all_requests: TokenBucket
    pace: TokenBucket
    inflight: int = 0


@dataclass
class DeviceLimiter:
    """Per-device token buckets and in-flight counts.  Used from the event loop only.

    One entry per device that uploaded; devices are registered and authenticated before they get
    here, so the table grows with the fleet, not with what strangers send.
    """

    limits: ReportLimits
    clock: Clock = time.monotonic
    _devices: dict[str, _DeviceState] = field(default_factory=dict)
    _pending: int = 0

    def _state(self, device_uuid: str) -> _DeviceState:
        state = self._devices.get(device_uuid)
        if state is None:
            now = self.clock()
            lim = self.limits
            state = _DeviceState(
                requests=TokenBucket.full(lim.requests_per_second, lim.request_burst, now),
                entries=TokenBucket.full(lim.log_entries_per_second, lim.log_entry_burst, now),
                all_requests=TokenBucket.full(
                    lim.device_requests_per_second, lim.device_request_burst, now
                ),
                pace=TokenBucket.full(lim.device_pace_per_second, lim.device_pace_burst, now),
            )
            self._devices[device_uuid] = state
        return state

    def admit_request(self, device_uuid: str) -> Refusal | None:
        """Count one authenticated request of ``device_uuid`` (None), or say why not."""
        lim = self.limits
        now = self.clock()
        bucket = self._state(device_uuid).all_requests
        wait = bucket.wait(1.0, now)
        if wait > 0:
            reason = f"request rate over {lim.device_requests_per_second:g}/s"
            return Refusal(429, reason, wait, "request rate")
        bucket.spend(1.0, now)
        return None

    def pace(self, device_uuid: str) -> float | Refusal:
        """Seconds an admitted request of ``device_uuid`` waits for its turn (its place in
        the device's pace taken), or a Refusal when that would be over ``max_pace_wait``."""
        lim = self.limits
        now = self.clock()
        bucket = self._state(device_uuid).pace
        wait = bucket.turn(now)
        if wait > lim.max_pace_wait:
            reason = f"more requests at once than {lim.device_pace_per_second:g}/s works off"
            return Refusal(429, reason, wait, "request pace")
        bucket.spend(1.0, now)
        return wait

    def admit(self, device_uuid: str, *, logs: bool) -> Refusal | None:
        """Take one upload of ``device_uuid`` in (None), or say why not.

        An admitted upload holds an in-flight slot until :meth:`release`.  A log upload is only
        admitted while the device's entry bucket is not in debt; what it actually contained is
        charged afterwards with :meth:`charge_entries`.
        """
        lim = self.limits
        if self._pending >= lim.max_pending:
            return Refusal(503, "controller busy with other uploads", 1.0, "busy")
        state = self._state(device_uuid)
        if state.inflight >= lim.max_inflight:
            return Refusal(
                429, f"more than {lim.max_inflight} uploads at once", 1.0, "concurrent uploads"
            )
        now = self.clock()
        if logs:
            wait = state.entries.wait(0.0, now)
            if wait > 0:
                reason = f"log entry rate over {lim.log_entries_per_second:g}/s"
                return Refusal(429, reason, wait, "log entry rate")
        wait = state.requests.wait(1.0, now)
        if wait > 0:
            return Refusal(
                429, f"upload rate over {lim.requests_per_second:g}/s", wait, "upload rate"
            )
        state.requests.spend(1.0, now)
        state.inflight += 1
        self._pending += 1
        return None

    def release(self, device_uuid: str) -> None:
        """The admitted upload is finished (stored or refused)."""
        state = self._state(device_uuid)
        state.inflight = max(0, state.inflight - 1)
        self._pending = max(0, self._pending - 1)

    def charge_entries(self, device_uuid: str, entries: int) -> None:
        """Charge the log entries an upload held (or the decoder read before refusing it)."""
        if entries > 0:
            self._state(device_uuid).entries.spend(float(entries), self.clock())


@dataclass
class _Usage:
    bytes: int
    counted_at: float


class StorageQuota:
    """Bytes each device has stored, against ``limits.quota_bytes``.

    Counted from the database the first time a device is seen (and again at most every
    ``quota_recheck`` seconds while it is over), then kept up to date as uploads are stored.
    Used from the ingest worker thread only, like the store it reads.
    """

    def __init__(self, limits: ReportLimits, *, clock: Clock = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def full(self, device_uuid: str, count: Callable[[], int]) -> bool:
        """Whether the device is at or over its quota; ``count`` reads its usage from the
        database (the first time, and while over the quota, at most every ``quota_recheck``)."""
        now = self._clock()
        usage = self._usage.get(device_uuid)
        if usage is None or (
            usage.bytes >= self._limits.quota_bytes
            and now - usage.counted_at >= self._limits.quota_recheck
        ):
            usage = _Usage(bytes=count(), counted_at=now)
            self._usage[device_uuid] = usage
        return usage.bytes >= self._limits.quota_bytes

    def add(self, device_uuid: str, amount: int) -> None:
        usage = self._usage.get(device_uuid)
        if usage is not None:
            usage.bytes += amount
