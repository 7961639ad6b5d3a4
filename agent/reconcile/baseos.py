# SPDX-License-Identifier: Apache-2.0
"""Base OS A/B updates, as EVE's baseosmgr and nodeagent do them.

The controller names a base OS (:class:`~agent.model.baseos.BaseOsConfig`): a content tree
holding a root image, its version, ``activate``.  The content tree is downloaded and verified by
the content kind of the reconciler like any other; this manager takes the verified blob from
there and drives the partitions (:class:`~agent.drivers.bootslots.BootSlots`):

1. ``activate=false``: download only (``DOWNLOADING`` then ``DOWNLOAD_DONE``).
2. ``activate=true``: the image is written to the other slot (``UPDATING``,
   ``UPDATE_INITIALIZING`` with a percentage); its ``/etc/eve-release`` must be the version the
   config names, else the update fails.  The slot becomes ``updating``, the next boot (only that
   one) is set to it, the trial guard is told how long the trial may last, and the node reboots
   (``UPDATE_REBOOTING``, boot reason update).
3. In the new slot (``inprogress``, ``UPDATE_TESTING`` with the seconds left): the slot is
   committed (``loader.conf``'s default, ``active``; the old one ``unused``) once the agent has
   run ``timer.test.baseimage.update`` seconds, healthy, and the controller has answered it
   during this boot (any answer: a controller that refuses the new image's quote was reached,
   and the vault then follows its usual rules).  ``UPDATED``.
4. No controller contact for ``timer.update.fallback.no.network`` seconds of the trial: the
   agent reboots (boot reason fallback); the one-shot entry is spent, so the old slot starts.
   If the agent never gets that far (it does not start, it hangs, the kernel panics), the trial
   guard of the image or the kernel's ``panic=`` reboots, with the same result.
5. Started in the committed slot while the other is still ``updating`` or ``inprogress``: the
   update fell back.  The other slot is marked ``unused``, the failure is reported (``FALLBACK``
   with the reason) and that version is not tried again until ``retry_update.counter`` changes.

Everything it decides is in the state document on the ESP (survives reboots, read by both
slots).  One step at a time (:meth:`BaseOsManager.step`), from a loop; every step is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.drivers import bootslots
from agent.drivers.errors import DriverError, PermanentError
from agent.model.baseos import BaseOsConfig, PartitionStatus
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems

log = logging.getLogger(__name__)

#: How often the manager looks again (downloads, the test window).
STEP = 5.0
#: Added to the trial guard's deadline beyond the agent's own: the agent decides first.
GUARD_MARGIN = 30


class Slots(Protocol):
    """What the manager needs of :class:`~agent.drivers.bootslots.BootSlots` (blocking)."""

    def current(self) -> str | None: ...
    def supported(self) -> bool: ...
    def running_version(self) -> str: ...
    def load_state(self) -> dict[str, Any]: ...
    def save_state(self, state: dict[str, Any]) -> None: ...
    def install(
        self, label: str, image: Path, progress: bootslots.Progress | None = None
    ) -> str: ...
    def boot_once(self, label: str) -> None: ...
    def cancel_once(self) -> None: ...
    def make_default(self, label: str) -> None: ...
    def start_trial(self, label: str, seconds: int) -> None: ...
    def trial(self) -> str | None: ...
    def guard_report(self) -> str: ...
    def end_trial(self) -> None: ...


@dataclass(frozen=True)
class Content:
    """A content tree as the content kind has it: the verified blob once loaded, else the
    percentage downloaded and the error (if any)."""

    path: Path | None
    percent: int = 0
    error: str = ""


class BaseOsManager:
    """See the module docstring.  ``reboot(reason)`` (``"update"``, ``"fallback"``) records the
    boot reason and reboots the node; it may return (an emulated node), the manager then waits."""

    def __init__(
        self,
        slots: Slots,
        *,
        config: Callable[[], NodeConfig | None],
        content: Callable[[str], Content],
        items: Callable[[], ConfigItems],
        contacted: Callable[[], float],
        healthy: Callable[[], bool],
        reboot: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.slots = slots
        self._config = config
        self._content = content
        self._items = items
        self._contacted = contacted
        self._healthy = healthy
        self._reboot = reboot
        self._clock = clock
        self._wall = wall
        self._started = clock()
        self._started_wall = wall()
        self._checked_boot = False
        self._supported: bool | None = None
        self._current: str | None = None
        self._state: dict[str, Any] = {}
        #: The wanted version's progress, as reported (user status, sub status, text, progress).
        self._activity: tuple[str, str, str, int] | None = None
        self._error = ""
        self._error_time = 0.0
        self._rebooting = False
        #: ``retry_update.counter`` last handled (EVE's baseos_update_counter).
        self.update_counter = 0
        #: Set when this boot is the old slot after a trial that did not commit: why (the boot
        #: reason is then EVE's fallback, whatever was recorded before the trial).
        self.fell_back = ""
        self._wake = asyncio.Event()

    # --- reporting -------------------------------------------------------------------------------

    def partitions(self) -> tuple[PartitionStatus, ...]:
        """Both partitions as ``ZInfoDevSW`` reports them (the running one first); on a node
        without slots, the running system alone."""
        current = self._current
        if current is None or not self._checked_boot:
            # Before the first look (or on a node without slots): the running system alone,
            # under the slot it booted from when the kernel's command line names one.
            label = (self.slots.current() if self._supported is not False else None) or "IMGA"
            version = self.slots.running_version()
            return (
                PartitionStatus(
                    label=label, state="active", version=version, activated=True,
                    error=self._error, error_time=self._error_time,
                ),
            )  # fmt: skip
        table = self._slot_table()
        out = []
        for label in (current, bootslots.other(current)):
            entry = table[label]
            status = PartitionStatus(label, entry["state"], entry["version"], label == current)
            out.append(self._decorate(status))
        return tuple(out)

    def _decorate(self, p: PartitionStatus) -> PartitionStatus:
        wanted = self._wanted()
        failed = self._state.get("failed")
        if p.activated and p.state == "inprogress":
            left = max(0, self._window() - int(self._clock() - self._started))
            return _with(p, "UPDATING", "UPDATE_TESTING", f"testing, {left} s left", left)
        if p.activated and wanted is not None and wanted.version == p.version:
            return _with(p, "UPDATED", "NONE_SUBSTATUS", "", 0)
        if not p.activated and self._activity is not None:
            # An update under way says more than an earlier failure.
            user, sub, text, progress = self._activity
            version = wanted.version if wanted is not None else p.version
            return PartitionStatus(
                p.label, p.state, version, False, user, sub, text, progress,
                self._error, self._error_time,
            )  # fmt: skip
        if (
            not p.activated
            and isinstance(failed, dict)
            and failed.get("version")
            and (wanted is None or wanted.version == failed["version"])
        ):
            return PartitionStatus(
                p.label, p.state, str(failed["version"]), False, "FALLBACK"
                if failed.get("fallback") else "FAILED", "NONE_SUBSTATUS", "", 0,
                str(failed.get("error", "")), float(failed.get("time", 0.0)),
            )  # fmt: skip
        if not p.activated and self._error:
            return PartitionStatus(
                p.label, p.state, p.version, False, "FAILED", "NONE_SUBSTATUS", "", 0,
                self._error, self._error_time,
            )  # fmt: skip
        return p

    def testing(self) -> bool:
        """The running slot is on trial (EVE's update in progress: reboots wait for it)."""
        return self._current is not None and self._slot_table()[self._current]["state"] == (
            "inprogress"
        )

    def updating(self) -> bool:
        """An update is being written, rebooted into or tested (device state BASEOS_UPDATING)."""
        if self._activity is not None and self._activity[0] == "UPDATING":
            return True
        return self._current is not None and self._slot_table()[self._current]["state"] in (
            "inprogress", "updating",
        )  # fmt: skip

    # --- the loop --------------------------------------------------------------------------------

    def wake(self) -> None:
        """Look again now (a new config)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop``; a driver error is logged and retried at the next step."""
        while not stop.is_set():
            try:
                await self.step()
            except DriverError as exc:
                self._fail(f"base OS update: {exc}")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, timeout=STEP,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                finally:
                    waiter.cancel()
                    stopper.cancel()

    async def step(self) -> None:
        """One look at the config, the slots and the clock; see the module docstring."""
        if self._supported is None:
            self._supported = await asyncio.to_thread(self.slots.supported)
            self._current = self.slots.current() if self._supported else None
        wanted = self._wanted()
        if not self._supported or self._current is None:
            if wanted is not None and wanted.version != self.slots.running_version():
                self._fail("base OS updates need a node booted from the node image's A/B slots")
            else:
                self._error = ""
            return
        if not self._checked_boot:
            await asyncio.to_thread(self._check_boot)
            self._checked_boot = True
        if self._rebooting:
            return
        current = self._current
        if self._slot_table()[current]["state"] == "inprogress":
            await self._test()
            return
        if wanted is None:
            self._activity = None
            self._error = ""
            return
        await self._pursue(wanted)

    # --- steps -------------------------------------------------------------------------------

    def _check_boot(self) -> None:
        """Once per start: what the last boot did to the slots."""
        assert self._current is not None
        current, other = self._current, bootslots.other(self._current)
        self._state = self.slots.load_state()
        table = self._slot_table()
        running = self.slots.running_version()
        if table[current]["state"] in ("updating", "inprogress"):
            log.info("base OS %s: trial boot of %s, testing", running, current)
            table[current].update(state="inprogress", version=running)
        elif table[other]["state"] in ("updating", "inprogress"):
            update = self._state.get("update") or {}
            reason = (
                str(update.get("fallback_reason") or "")
                or self.slots.guard_report()
                or (
                    "the new image did not commit: it did not boot, or its agent did not start or "
                    "reach the controller in the test window, and the node booted the old slot"
                )
            )
            version = str(update.get("version") or table[other]["version"])
            log.error("base OS update to %s fell back to %s (%s): %s", version, current,
                      running, reason)  # fmt: skip
            self._state["failed"] = {
                "version": version, "error": f"update to {version} failed: {reason}",
                "time": self._wall(), "retry": int(update.get("retry", 0)), "fallback": True,
            }  # fmt: skip
            table[other]["state"] = "unused"
            table[current].update(state="active", version=running)
            self._state.pop("update", None)
            self.fell_back = reason
            self.slots.end_trial()
            self.slots.cancel_once()
        else:
            table[current].update(state="active", version=running)
        self._state["slots"] = table
        self.update_counter = int(self._state.get("handled_retry", 0))
        self.slots.save_state(self._state)

    async def _test(self) -> None:
        """The trial boot: commit when healthy and the controller was reached in the window;
        fall back after too long without the controller."""
        assert self._current is not None
        elapsed = self._clock() - self._started
        contacted = self._contacted() >= self._started_wall
        window = self._window()
        if contacted and elapsed >= window and self._healthy():
            await asyncio.to_thread(self._commit)
            return
        no_network = self._items().int("timer.update.fallback.no.network")
        if not contacted and elapsed >= no_network:
            reason = f"no controller contact within {no_network} s of the new image's start"
            await asyncio.to_thread(self._note_fallback, reason)
            log.error("base OS trial of %s: %s; rebooting into the old slot", self._current,
                      reason)  # fmt: skip
            self._rebooting = True
            await self._reboot("fallback")

    def _commit(self) -> None:
        assert self._current is not None
        current, other = self._current, bootslots.other(self._current)
        self.slots.make_default(current)
        table = self._slot_table()
        table[current].update(state="active", version=self.slots.running_version())
        table[other]["state"] = "unused"
        self._state["slots"] = table
        update = self._state.pop("update", None) or {}
        self._state.pop("failed", None)
        self._state["handled_retry"] = int(update.get("retry", self.update_counter))
        self.update_counter = self._state["handled_retry"]
        self.slots.save_state(self._state)
        self.slots.end_trial()
        log.info("base OS %s committed in %s", table[current]["version"], current)

    def _note_fallback(self, reason: str) -> None:
        update = self._state.setdefault("update", {})
        update["fallback_reason"] = reason
        self.slots.save_state(self._state)

    async def _pursue(self, wanted: BaseOsConfig) -> None:
        """Download, then (activate) write and reboot, toward ``wanted``."""
        assert self._current is not None
        running = self.slots.running_version()
        if wanted.version == running:
            self._activity = None
            self._error = ""
            return
        failed = self._state.get("failed")
        if (
            isinstance(failed, dict)
            and failed.get("version") == wanted.version
            and int(failed.get("retry", 0)) == wanted.retry_counter
        ):
            self._activity = None
            return  # refused until the controller bumps retry_update.counter
        content = self._content(wanted.content_tree_id)
        if content.error:
            self._activity = None
            self._fail(f"base OS {wanted.version}: {content.error}")
            return
        if content.path is None:
            self._activity = ("DOWNLOADING", "DOWNLOAD_INPROGRESS", "downloading",
                              content.percent)  # fmt: skip
            return
        if not wanted.activate:
            self._activity = ("DOWNLOAD_DONE", "NONE_SUBSTATUS", "downloaded, not activated", 100)
            return
        self._error = ""
        other = bootslots.other(self._current)
        table = self._slot_table()
        if not (table[other]["state"] == "updating" and table[other]["version"] == wanted.version):
            await self._install(wanted, content.path, other)
            if self._error:
                return
        await self._reboot_into(wanted, other)

    async def _install(self, wanted: BaseOsConfig, image: Path, other: str) -> None:
        self._activity = ("UPDATING", "UPDATE_INITIALIZING", f"writing {other}", 0)
        table = self._slot_table()
        table[other].update(state="unused", version="")
        self._state["slots"] = table
        await asyncio.to_thread(self.slots.save_state, self._state)

        def progress(done: int, total: int) -> None:
            percent = min(99, done * 100 // total) if total else 0
            self._activity = ("UPDATING", "UPDATE_INITIALIZING", f"writing {other}", percent)

        log.info("base OS %s: writing %s from %s", wanted.version, other, image)
        try:
            version = await asyncio.to_thread(self.slots.install, other, image, progress)
            if version != wanted.version:
                raise PermanentError(
                    f"the image's version is {version!r}, the config names {wanted.version!r}"
                )
        except PermanentError as exc:
            self._activity = None
            self._state["failed"] = {
                "version": wanted.version, "error": str(exc), "time": self._wall(),
                "retry": wanted.retry_counter, "fallback": False,
            }  # fmt: skip
            await asyncio.to_thread(self.slots.save_state, self._state)
            self._fail(f"base OS {wanted.version}: {exc}")
            return
        table[other].update(state="updating", version=version)
        self._state["slots"] = table
        self._state["update"] = {"version": version, "slot": other, "since": self._wall(),
                                 "retry": wanted.retry_counter}  # fmt: skip
        await asyncio.to_thread(self.slots.save_state, self._state)
        log.info("base OS %s written to %s", version, other)

    async def _reboot_into(self, wanted: BaseOsConfig, other: str) -> None:
        items = self._items()
        guard = max(self._window(), items.int("timer.update.fallback.no.network")) + GUARD_MARGIN

        def arm() -> None:
            self.slots.start_trial(other, guard)
            self.slots.boot_once(other)

        await asyncio.to_thread(arm)
        self._activity = ("UPDATING", "UPDATE_REBOOTING", f"rebooting into {other}", 0)
        log.info("base OS %s: rebooting into %s for its trial (%d s guard)", wanted.version,
                 other, guard)  # fmt: skip
        self._rebooting = True
        await self._reboot("update")

    # --- helpers -------------------------------------------------------------------------------

    def _wanted(self) -> BaseOsConfig | None:
        config = self._config()
        return config.baseos if config is not None else None

    def _window(self) -> int:
        return self._items().int("timer.test.baseimage.update")

    def _slot_table(self) -> dict[str, dict[str, str]]:
        raw = self._state.get("slots")
        table: dict[str, dict[str, str]] = {}
        for label in bootslots.SLOTS:
            entry = raw.get(label) if isinstance(raw, dict) else None
            state = entry.get("state") if isinstance(entry, dict) else None
            version = entry.get("version") if isinstance(entry, dict) else None
            table[label] = {
                "state": state if state in ("active", "unused", "updating", "inprogress")
                else "unused",
                "version": version if isinstance(version, str) else "",
            }  # fmt: skip
        self._state["slots"] = table
        return table

    def _fail(self, message: str) -> None:
        if message != self._error:
            log.error("%s", message)
            self._error_time = self._wall()
        self._error = message


def _with(p: PartitionStatus, user: str, sub: str, text: str, progress: int) -> PartitionStatus:
    return PartitionStatus(p.label, p.state, p.version, p.activated, user, sub, text, progress,
                           p.error, p.error_time)  # fmt: skip
