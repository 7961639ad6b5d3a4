"""The reconcile engine: keeps the desired and actual item graphs and drives one toward the other.

Shape (EVE's depgraph reconciler, run as an asyncio task):

- ``set_desired`` (a new config), ``set_external`` (the vault unlocked, an uplink went down),
  ``notify`` (a driver saw an object change) and ``resync`` (observation of the system on a
  timer) only update the graphs and mark the affected items *dirty*; they never run operations.
- ``step`` decides every dirty item with the pure :mod:`agent.reconcile.planner` and starts
  the operations that are possible now, each in its own task.  An operation starts as soon as
  its own dependencies are done; one operation at a time per item, many items in parallel under
  a global limit, each with a timeout.  A long operation (an image pull, a VM boot) holds only its
  own item and those that depend on it.
- A finished operation updates the actual graph and per-item state (last error with time,
  attempts, next retry), marks its neighbours dirty and wakes the loop.  Failed operations are
  retried by type: temporary ones after a backoff with jitter, permanent ones only once the
  desired item changes; "not found" on delete is success.
- ``run`` is the supervised loop: it observes and adopts what exists at start, then steps on
  every wake-up, retry coming due and resync.

Nothing here knows resource kinds; configurators do.  Nothing here touches the system directly;
configurators call drivers.

What the engine hands out is bounded whatever the config: an item's error text is clipped to
:data:`MAX_ERROR_CHARS`, and each owner's roll-up lists at most :data:`MAX_OWNER_ERRORS` failed
and waiting items, the rest counted in one more entry.  A config of tens of thousands of broken
items keeps one state per item, not megabytes of reports rebuilt every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.reconcile.items import Action, Configurator, Item, ItemRef, Op, OwnerRef
from agent.reconcile.planner import View, decide, find_cycle, fmt
from agent.reconcile.state import (
    Backoff,
    ItemError,
    ItemState,
    ItemStatus,
    OwnerStatus,
    roll_up,
)

log = logging.getLogger(__name__)

#: An item's error text kept, at most (a driver may quote a lot of output).
MAX_ERROR_CHARS = 4096
#: Failed, and waiting, items listed per owner in :meth:`Engine.owners`; the rest are counted.
MAX_OWNER_ERRORS = 50


@dataclass(frozen=True)
class EngineSettings:
    """How hard the engine works.  Static: not a runtime config item."""

    #: Operations running at once, over all items.
    limit: int = 8
    #: Long operations (``Configurator.long_running``) running at once, beside ``limit``.
    long_limit: int = 4
    #: Seconds an operation may take unless its configurator says otherwise.
    op_timeout: float = 300.0
    #: An operation still running this long after its timeout (it ignored cancellation) counts
    #: as hung: the daemon stops pinging the systemd watchdog.
    hang_grace: float = 30.0
    #: Seconds between observations of the system (each jittered to [0.75, 1.0] of it).
    resync_interval: float = 300.0
    #: Seconds one ``step`` may decide items before it yields the event loop (the rest of the
    #: dirty items are decided on the next step).
    step_budget: float = 0.008
    backoff: Backoff = field(default_factory=Backoff)


class Engine:
    """Owns the item graphs of one node.  Not thread-safe: use from the event loop only."""

    def __init__(
        self,
        configurators: Mapping[str, Configurator],
        *,
        settings: EngineSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._configurators = dict(configurators)
        self.settings = settings or EngineSettings()
        self._clock = clock
        self._wallclock = wallclock
        self._rng = rng or random.Random()
        self.desired: dict[ItemRef, Item] = {}
        self.actual: dict[ItemRef, Item] = {}
        self.status: dict[ItemRef, ItemStatus] = {}
        self.external: dict[ItemRef, str | None] = {}
        self._busy: dict[ItemRef, asyncio.Task[None]] = {}
        self._busy_ops: dict[ItemRef, tuple[Op, float]] = {}  # op, its timeout
        self._actual_dependents: dict[ItemRef, set[ItemRef]] = {}
        self._desired_dependents: dict[ItemRef, set[ItemRef]] = {}
        self._cycles: dict[ItemRef, str] = {}
        self._dirty: set[ItemRef] = set()
        self._retries: list[tuple[float, ItemRef]] = []
        self._generation: dict[ItemRef, int] = {}
        self._finished_kinds: set[str] = set()
        #: Items a driver event named while an operation was in flight, and the kinds to observe
        #: again once such an operation is over.
        self._stale: set[ItemRef] = set()
        self._resync_kinds: set[str] = set()
        self._limit = asyncio.Semaphore(self.settings.limit)
        self._long_limit = asyncio.Semaphore(self.settings.long_limit)
        self._long_busy: set[ItemRef] = set()
        self._wake = asyncio.Event()
        self._have_desired = False
        self._running = False
        #: Counters for status and benchmarks.
        self.started_ops = 0
        self.failed_ops = 0

    # ---- inputs ---------------------------------------------------------------------------

    def set_desired(self, desired: Mapping[ItemRef, Item]) -> int:
        """Replace the desired graph; returns how many items changed.  Starts nothing.

        Items on a dependency cycle fail permanently with the cycle in their error; the rest of
        the graph still applies.
        """
        old = self.desired
        changed = [
            ref
            for ref, item in desired.items()
            if (prev := old.get(ref)) is None or (prev is not item and prev != item)
        ]
        changed += [ref for ref in old if ref not in desired]
        new = dict(desired)
        for ref in changed:
            self._reindex(self._desired_dependents, ref, old.get(ref), new.get(ref))
        self.desired = new
        self._have_desired = True
        self._check_cycles(changed)
        for ref in changed:
            self._mark_around(ref, old.get(ref), new.get(ref))
        if changed:
            self._wake.set()
        return len(changed)

    def set_external(self, ref: ItemRef, not_ready: str | None) -> None:
        """Declare an external condition: ``None`` when it is met, else why it is not."""
        if ref in self.external and self.external[ref] == not_ready:
            return
        self.external[ref] = not_ready
        self._dirty.update(self._desired_dependents.get(ref, ()))
        self._dirty.update(self._actual_dependents.get(ref, ()))
        self._wake.set()

    def notify(self, ref: ItemRef, observed: Item | None) -> None:
        """A driver saw ``ref`` change on the system (a container died): ``observed`` is what is
        there now, None when it is gone.  While an operation on it is in flight, its kind is
        observed again once the operation is over (the event may predate the result)."""
        if ref in self._busy:
            self._stale.add(ref)
            return
        self._merge_one(ref, observed, why="event")
        self._wake.set()

    def request_resync(self, kinds: Iterable[str]) -> None:
        """Ask the running engine to observe ``kinds`` again soon (a watcher's poll)."""
        self._resync_kinds.update(kinds)
        self._wake.set()

    async def resync(self, kinds: Iterable[str] | None = None) -> None:
        """Observe the system through every configurator and merge what it reports.

        Objects with our mark that the engine did not know are adopted (and deleted by the next
        step if nothing desires them); known objects that changed or vanished are corrected in
        the actual graph, so the next step repairs them.  Items with an operation in flight, or
        one that finished while observing, are left as they are.
        """
        names = sorted(self._configurators if kinds is None else kinds)
        before = dict(self._generation)
        results = await asyncio.gather(
            *(self._configurators[k].observe() for k in names), return_exceptions=True
        )
        for kind, observed in zip(names, results, strict=True):
            if isinstance(observed, BaseException):
                if isinstance(observed, asyncio.CancelledError):
                    raise observed
                log.warning("observing %s failed: %s", kind, observed)
                continue
            if observed is None:
                continue
            stable = [
                r
                for r in self.actual
                if r[0] == kind and r not in self._busy and self._generation.get(r) == before.get(r)
            ]
            for ref, item in observed.items():
                if ref[0] != kind:
                    log.warning("%s observer reported a %s item; ignored", kind, fmt(ref))
                    continue
                if ref in self._busy or self._generation.get(ref) != before.get(ref):
                    continue
                self._merge_one(ref, item, why="resync")
            for ref in stable:
                if ref not in observed:
                    self._merge_one(ref, None, why="resync")
        self._wake.set()

    # ---- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Observe, then reconcile until ``stop``.  In-flight operations are cancelled on exit."""
        self._running = True
        try:
            await self.resync()
            next_resync = self._clock() + self._resync_delay()
            while not stop.is_set():
                self._wake.clear()
                if self._resync_kinds:
                    kinds, self._resync_kinds = self._resync_kinds, set()
                    await self.resync(kinds)
                self.step()
                now = self._clock()
                if now >= next_resync:
                    await self.resync()
                    next_resync = self._clock() + self._resync_delay()
                    continue
                wait = next_resync - now
                if self._retries:
                    wait = min(wait, max(0.0, self._retries[0][0] - now))
                await _wait_any(self._wake, stop, wait)
        finally:
            self._running = False
            await self.cancel_all()

    def _resync_delay(self) -> float:
        return self.settings.resync_interval * self._rng.uniform(0.75, 1.0)

    async def settle(self, within: float | None = None) -> None:
        """Wait until no operation is in flight and nothing can start now (items may still wait
        for a retry or a dependency).  Steps the engine itself when ``run`` is not running.

        Raises TimeoutError after ``within`` seconds.
        """
        async with asyncio.timeout(within):
            while True:
                if self._running:  # run() steps; only watch
                    if self._idle():
                        return
                    await asyncio.sleep(0.01)
                    continue
                self._wake.clear()
                self.step()
                if self._idle():
                    return
                if self._dirty or self._due():
                    await asyncio.sleep(0)  # let the started operations run, then go on
                    continue
                await self._wake.wait()

    def _idle(self) -> bool:
        return not self._busy and not self._dirty and not self._due()

    def _due(self) -> bool:
        return bool(self._retries) and self._retries[0][0] <= self._clock()

    def step(self) -> int:
        """Decide every dirty item and start what can start.  Returns the operations started.

        Synchronous and quick: it does no I/O.  Nothing happens before the first desired state
        (after a restart, observed objects wait for the saved config instead of being deleted).
        """
        if not self._have_desired:
            return 0
        now = self._clock()
        while self._retries and self._retries[0][0] <= now:
            _, ref = heapq.heappop(self._retries)
            self._dirty.add(ref)
        if not self._dirty:
            self._flush()
            return 0
        view = View(
            self.desired,
            self.actual,
            self.status,
            self.external,
            busy=self._busy,
            actual_dependents=self._actual_dependents,
            now=now,
        )
        # Sorted when small, for an order a person can follow in logs and tests.
        queue = deque(sorted(self._dirty) if len(self._dirty) < 512 else self._dirty)
        self._dirty = set()
        # Operations waiting for the global limit cost a task each and wake in bursts; past
        # this many in flight, the rest of the dirty items wait for a completion.
        max_in_flight = 4 * self.settings.limit
        seen: set[ItemRef] = set()
        started = 0
        deadline = time.perf_counter() + self.settings.step_budget
        while queue:
            if len(seen) % 64 == 63 and time.perf_counter() > deadline:
                # A big change must not stall the loop: the rest waits for the next step.
                self._dirty.update(r for r in queue if r not in seen)
                self._wake.set()
                break
            if len(self._busy) - len(self._long_busy) >= max_in_flight:
                self._dirty.update(r for r in queue if r not in seen)
                break
            ref = queue.popleft()
            if ref in seen:
                continue
            seen.add(ref)
            if ref in self._cycles and ref not in self.actual:
                self._fail_permanently(ref, self._cycles[ref])
                continue
            decision = decide(view, ref)
            if decision.leaving:
                queue.extend(r for r in self._actual_dependents.get(ref, ()) if r not in seen)
            if decision.op is not None:
                self._start(decision.op)
                started += 1
                # Items already decided this pass waiting on it say so (next step).
                self._dirty.update(r for r in self._desired_dependents.get(ref, ()) if r in seen)
                continue
            if decision.state is ItemState.PENDING and ref not in self.desired:
                self.status.pop(ref, None)  # neither wanted nor there: forget it
                self._generation.pop(ref, None)
                continue
            st = self.status.get(ref)
            if st is None:
                st = self.status[ref] = ItemStatus()
            if decision.held:
                st.reason = decision.reason
                continue
            st.state = decision.state
            st.reason = decision.reason
            if decision.state is ItemState.CREATED:
                _clear_error(st)
        self._flush()
        return started

    # ---- operations -----------------------------------------------------------------------

    def _start(self, op: Op) -> None:
        st = self.status.setdefault(op.ref, ItemStatus())
        st.state = ItemState.IN_PROGRESS
        st.action = op.action
        st.reason = str(op)
        st.started = 0.0
        configurator = self._configurators.get(op.ref[0])
        timeout = self.settings.op_timeout
        long = False
        if configurator is not None:
            timeout = configurator.timeout(op) or timeout
            long = configurator.long_running(op)
        if long:
            self._long_busy.add(op.ref)
        self._busy_ops[op.ref] = (op, timeout)
        self._busy[op.ref] = asyncio.create_task(self._execute(op, timeout, long), name=str(op))
        self.started_ops += 1

    async def _execute(self, op: Op, seconds: float, long: bool) -> None:
        error: BaseException | None = None
        configurator = self._configurators.get(op.ref[0])
        try:
            if configurator is None:
                raise PermanentError(f"no configurator for kind {op.ref[0]!r}")
            async with self._long_limit if long else self._limit:
                self.status[op.ref].started = self._clock()
                try:
                    async with asyncio.timeout(seconds):
                        if op.action is Action.CREATE:
                            await configurator.create(op.new)
                        elif op.action is Action.MODIFY:
                            await configurator.modify(op.old, op.new)
                        else:
                            await configurator.delete(op.old)
                except TimeoutError:
                    error = TemporaryError(f"{op} timed out after {seconds:g} s")
        except asyncio.CancelledError:
            self._forget_busy(op.ref)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on its item
            error = exc
        try:
            self._finish(op, error)
        except Exception:  # a bookkeeping bug must not leave the item busy for ever
            log.exception("recording the result of %s failed", op)
            self._forget_busy(op.ref)
            self._wake.set()

    def _forget_busy(self, ref: ItemRef) -> None:
        self._busy.pop(ref, None)
        self._busy_ops.pop(ref, None)
        self._long_busy.discard(ref)

    def _finish(self, op: Op, error: BaseException | None) -> None:
        ref = op.ref
        self._forget_busy(ref)
        self._generation[ref] = self._generation.get(ref, 0) + 1
        self._finished_kinds.add(ref[0])
        st = self.status.setdefault(ref, ItemStatus())
        st.action = None
        if ref in self._stale:
            self._stale.discard(ref)
            self._resync_kinds.add(ref[0])
        if isinstance(error, NotFoundError) and op.action is not Action.CREATE:
            if op.action is Action.MODIFY:
                log.warning("%s: gone from the system; creating it again", op)
            error = None
            op = Op(Action.DELETE, ref, old=op.old)
        if error is None:
            self._set_actual(ref, op.new if op.action is not Action.DELETE else None)
            st.state = ItemState.CREATED if op.action is not Action.DELETE else ItemState.PENDING
            st.reason = ""
            _clear_error(st)
            log.debug("%s done", op)
        else:
            self.failed_ops += 1
            st.state = ItemState.FAILED
            st.last_error = _clip(
                f"{type(error).__name__}: {error}" if not _typed(error) else str(error)
            )
            st.reason = st.last_error
            st.error_time = self._wallclock()
            st.error_action = op.action
            st.attempts += 1
            st.permanent = isinstance(error, PermanentError)
            st.failed_for = op.new if op.action is not Action.DELETE else op.old
            if st.permanent:
                st.next_retry = float("inf")
                log.error("%s failed permanently: %s", op, _clip(str(error)))
            else:
                hint = error.retry_after if isinstance(error, TemporaryError) else None
                delay = hint if hint is not None else self.settings.backoff.delay(
                    st.attempts, self._rng
                )  # fmt: skip
                st.next_retry = self._clock() + delay
                heapq.heappush(self._retries, (st.next_retry, ref))
                log.warning(
                    "%s failed (attempt %d, retry in %.1f s): %s",
                    op,
                    st.attempts,
                    delay,
                    _clip(str(error)),
                )
        self._mark_around(ref, op.old, op.new)
        self._wake.set()

    def _fail_permanently(self, ref: ItemRef, message: str) -> None:
        st = self.status.setdefault(ref, ItemStatus())
        if st.state is ItemState.FAILED and st.last_error == message:
            return
        log.error("%s: %s", fmt(ref), message)
        st.state = ItemState.FAILED
        st.reason = st.last_error = message
        st.error_time = self._wallclock()
        st.error_action = Action.CREATE
        st.permanent = True
        st.failed_for = self.desired.get(ref)

    async def cancel_all(self) -> None:
        """Cancel the operations in flight and wait for them (idempotent)."""
        tasks = list(self._busy.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _flush(self) -> None:
        """Let kinds that stage changes publish them once none of their operations runs."""
        if not self._finished_kinds:
            return
        busy_kinds = {r[0] for r in self._busy}
        for kind in sorted(self._finished_kinds - busy_kinds):
            self._finished_kinds.discard(kind)
            configurator = self._configurators.get(kind)
            if configurator is not None:
                try:
                    configurator.flush()
                except Exception:  # a publisher's bug must not stop the engine
                    log.exception("flushing %s failed", kind)

    # ---- graph bookkeeping --------------------------------------------------------------

    def _merge_one(self, ref: ItemRef, observed: Item | None, *, why: str) -> None:
        current = self.actual.get(ref)
        if observed is None:
            if current is None:
                return
            log.warning("%s: %s vanished from the system", why, fmt(ref))
        elif current is None:
            log.info("%s: adopting %s", why, fmt(ref))
        elif current is observed or current == observed:
            return
        else:
            log.warning("%s: %s changed on the system (drift)", why, fmt(ref))
        self._set_actual(ref, observed)
        self._generation[ref] = self._generation.get(ref, 0) + 1
        st = self.status.get(ref)
        if st is not None and st.state is ItemState.FAILED and not st.permanent:
            st.next_retry = 0.0  # the system changed under it: try again now
        self._mark_around(ref, current, observed)

    def _set_actual(self, ref: ItemRef, item: Item | None) -> None:
        old = self.actual.get(ref)
        self._reindex(self._actual_dependents, ref, old, item)
        if item is None:
            self.actual.pop(ref, None)
        else:
            self.actual[ref] = item

    @staticmethod
    def _reindex(
        index: dict[ItemRef, set[ItemRef]], ref: ItemRef, old: Item | None, new: Item | None
    ) -> None:
        old_deps = set(old.deps()) if old is not None else set()
        new_deps = set(new.deps()) if new is not None else set()
        for dep in old_deps - new_deps:
            users = index.get(dep)
            if users is not None:
                users.discard(ref)
                if not users:
                    del index[dep]
        for dep in new_deps - old_deps:
            index.setdefault(dep, set()).add(ref)

    def _mark_around(self, ref: ItemRef, old: Item | None, new: Item | None) -> None:
        """Mark ``ref`` and every item whose decision may depend on it."""
        dirty = self._dirty
        dirty.add(ref)
        for item in (old, new, self.actual.get(ref), self.desired.get(ref)):
            if item is not None:
                dirty.update(item.deps())
        dirty.update(self._actual_dependents.get(ref, ()))
        dirty.update(self._desired_dependents.get(ref, ()))

    def _check_cycles(self, changed: list[ItemRef]) -> None:
        if self._cycles:
            # Re-check the items of earlier cycles too: an edit elsewhere may have broken them.
            changed = [*changed, *self._cycles]
            for ref, message in list(self._cycles.items()):
                del self._cycles[ref]
                self._dirty.add(ref)
                st = self.status.get(ref)
                if st is not None and st.last_error == message:
                    _clear_error(st)
                    st.state = ItemState.PENDING
        cycle = find_cycle(self.desired, changed)
        while cycle is not None:
            message = _clip("dependency cycle: " + " -> ".join(fmt(r) for r in cycle))
            for ref in cycle[:-1]:
                self._cycles[ref] = message
                self._dirty.add(ref)
            rest = {r: i for r, i in self.desired.items() if r not in self._cycles}
            cycle = find_cycle(rest, [r for r in changed if r in rest])

    # ---- outputs --------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        return len(self._busy)

    def owners(self) -> dict[OwnerRef, OwnerStatus]:
        """Item states rolled up by owner (desired items, and actual ones still leaving); per
        owner at most MAX_OWNER_ERRORS errors and as many waiting items, then one entry saying
        how many more there are."""
        entries = []
        for ref, st in self.status.items():
            item = self.desired.get(ref) or self.actual.get(ref)
            if item is not None:
                entries.append((ref, item.owner, st))
        rolled = roll_up(entries)
        for o in rolled.values():
            if len(o.errors) > MAX_OWNER_ERRORS:
                rest = o.errors[MAX_OWNER_ERRORS - 1 :]
                o.errors[MAX_OWNER_ERRORS - 1 :] = [
                    ItemError(
                        rest[0].ref,
                        "",
                        f"... and {len(rest)} more failed items",
                        max(e.time for e in rest),
                        all(e.permanent for e in rest),
                    )
                ]
            if len(o.pending) > MAX_OWNER_ERRORS:
                more = len(o.pending) - MAX_OWNER_ERRORS + 1
                o.pending[MAX_OWNER_ERRORS - 1 :] = [
                    (o.pending[MAX_OWNER_ERRORS - 1][0], f"... and {more} more waiting items")
                ]
        return rolled

    def overdue(self) -> list[str]:
        """Operations running past their timeout plus the hang grace (they ignore cancellation).
        Non-empty means the engine is hung."""
        now = self._clock()
        out = []
        for ref, (op, timeout) in self._busy_ops.items():
            started = self.status[ref].started if ref in self.status else 0.0
            if started and now - started > timeout + self.settings.hang_grace:
                out.append(f"{op} running for {now - started:.0f} s")
        return out


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"


def _typed(error: BaseException) -> bool:
    return isinstance(error, TemporaryError | PermanentError | NotFoundError)


def _clear_error(st: ItemStatus) -> None:
    st.last_error = ""
    st.error_time = 0.0
    st.error_action = None
    st.permanent = False
    st.attempts = 0
    st.next_retry = 0.0
    st.failed_for = None


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Return when ``event`` or ``stop`` is set, or after ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)
