"""The controller's reboot and shutdown commands (``EdgeDevConfig.reboot`` and ``.shutdown``).

Each is a ``DeviceOpsCmd`` whose ``counter`` the controller raises to ask for the operation once.
The node keeps the last counter it handled of each in ``<persist>/status/deviceops.json`` and
reports them (``rebootConfigCounter``, ``shutdown_config_counter``), so the controller knows a
command was taken.  Rules, as EVE's zedagent (``scheduleReboot``):

* nothing recorded yet (the first config this installation ever sees): the counter is only
  recorded, nothing happens;
* a counter higher than the recorded one: recorded first (a restart or the reboot itself never
  repeats it), then the operation runs;
* a lower one (the controller's database was reset or restored): only recorded.  EVE acts on any
  change; a surprise reboot for a counter going backwards helps nobody.  From a saved config (the
  checkpoint run at start, possibly the older ``lastconfig.bak``) a lower counter is ignored, not
  recorded: else the controller's next config would raise it again and repeat the command;
* while one operation runs, later counters are recorded and ignored;
* a reboot asked while a base OS update is being tested (``deferred``) waits until the test is
  over, as EVE's ``rebootCmdDeferred``: it runs at the first config after that.

The operations, as EVE's zedagent (``handleDeviceOperationCmd``):

* **reboot** (:meth:`DeviceOps._go_down`): the boot reason (``REBOOT_CMD``) goes to ``/persist``
  (:mod:`agent.util.bootreason`); the state becomes REBOOTING and the device info with the new
  counter is sent (``announce``: EVE does so before it goes down); the apps are halted
  (``halt_apps``, bounded by ``halt_timeout``: EVE waits for its domains up to 5 minutes); then
  the power driver is asked (:mod:`agent.drivers.power`), and ``stopped`` is called: the daemon
  stops (on a real node systemd stops it anyway while it reboots).
* **shutdown**: every app is halted and stays halted until the node reboots (EVE's
  ``shutdownAppsGlobal``); the state is PREPARING_POWEROFF while they halt, PREPARED_POWEROFF
  once they have: the node stays up and reporting, and its power can be cut safely.  EVE powers
  a node off only through its local profile server, not this command.  The halt lasts this
  agent's run: an agent restarted within the same boot starts its apps again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from agent.drivers.power import Power, PowerError
from agent.link.objectinfo import timestamp
from agent.model.config import NodeConfig
from agent.util.atomicfile import read_optional, write_atomic
from agent.util.bootreason import BootReason, BootRecord, record_boot_reason
from agent.wire.pb.info import info_pb2

log = logging.getLogger(__name__)


class Operation(enum.StrEnum):
    REBOOT = "reboot"
    SHUTDOWN = "shutdown"


#: The config field of each operation (the key in ``deviceops.json``).
_FIELDS = {Operation.REBOOT: "reboot", Operation.SHUTDOWN: "shutdown"}


@dataclass(frozen=True)
class PowerFacts:
    """What the device info says about boots and device operations."""

    boot: BootRecord | None
    reboot_counter: int
    shutdown_counter: int
    #: The operation under way, None when none.
    in_progress: Operation | None = None
    #: A shutdown command has halted every app (they stay halted until the next boot).
    apps_shut_down: bool = False


def add_power_info(dinfo: info_pb2.ZInfoDevice, facts: PowerFacts) -> None:
    """The boot and device-operation fields of the device info (``ZInfoDevice``); ``state``
    says REBOOTING, PREPARING_POWEROFF or PREPARED_POWEROFF unless it already says
    maintenance mode or a base OS update."""
    dinfo.rebootConfigCounter = facts.reboot_counter
    dinfo.shutdown_config_counter = facts.shutdown_counter
    if facts.boot is not None:
        dinfo.last_boot_reason = int(facts.boot.reason)  # type: ignore[assignment]
        dinfo.lastRebootReason = facts.boot.text
        dinfo.lastRebootTime.CopyFrom(timestamp(facts.boot.time))
        dinfo.restartCounter = facts.boot.restart_counter
    dinfo.reboot_inprogress = facts.in_progress is Operation.REBOOT
    if dinfo.state in (info_pb2.ZDEVICE_STATE_MAINTENANCE_MODE,
                       info_pb2.ZDEVICE_STATE_BASEOS_UPDATING):  # fmt: skip
        return  # EVE's precedence (zedagent getState)
    if facts.in_progress is Operation.REBOOT:
        dinfo.state = info_pb2.ZDEVICE_STATE_REBOOTING
    elif facts.in_progress is Operation.SHUTDOWN:
        dinfo.state = info_pb2.ZDEVICE_STATE_PREPARING_POWEROFF
    elif facts.apps_shut_down:
        dinfo.state = info_pb2.ZDEVICE_STATE_PREPARED_POWEROFF


class DeviceOps:
    """Handles the counters of each config (:meth:`offer`) and runs the operations."""

    def __init__(
        self,
        persist: Path,
        power: Power,
        *,
        announce: Callable[[], Awaitable[None]],
        halt_apps: Callable[[float], Awaitable[None]],
        stopped: Callable[[], None],
        deferred: Callable[[], bool] = lambda: False,
        halt_timeout: float = 120.0,
    ) -> None:
        self.persist = persist
        self.power = power
        self._announce = announce
        self._halt_apps = halt_apps
        self._stopped = stopped
        self.halt_timeout = halt_timeout
        self.in_progress: Operation | None = None
        self._deferred = deferred
        #: A reboot asked while ``deferred()`` held, run once it no longer does.
        self.pending: Operation | None = None
        self.apps_shut_down = False
        self.boot: BootRecord | None = None
        self._counters: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def file(self) -> Path:
        return self.persist / "status" / "deviceops.json"

    def load(self) -> None:
        """Read the recorded counters (blocking).  An unreadable file counts as none (the next
        config's counters are then only recorded: never a reboot the node cannot explain)."""
        try:
            data = read_optional(self.file)
            value = json.loads(data) if data is not None else {}
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting
            log.warning("device operation counters unreadable, starting afresh: %s", exc)
            value = {}
        if isinstance(value, dict):
            self._counters = {k: int(v) for k, v in value.items()
                              if k in _FIELDS.values() and isinstance(v, int)}  # fmt: skip

    def facts(self) -> PowerFacts:
        return PowerFacts(
            boot=self.boot,
            reboot_counter=self._counters.get("reboot", 0),
            shutdown_counter=self._counters.get("shutdown", 0),
            in_progress=self.in_progress,
            apps_shut_down=self.apps_shut_down,
        )

    async def offer(self, config: NodeConfig, *, saved: bool = False) -> Operation | None:
        """Look at a config's counters; a changed one is recorded (in a worker thread) before
        anything else.  ``saved``: the config is the checkpoint, not the controller's answer.
        Returns the operation started, if any: it runs in a task of its own.  Raises OSError
        when the record cannot be written: then nothing was started (the next config
        retries).  Not to be called concurrently (the config task calls it in turn)."""
        wanted: Operation | None = None
        changed = dict(self._counters)
        for operation, key in _FIELDS.items():
            counter = (config.reboot if key == "reboot" else config.shutdown).counter
            last = self._counters.get(key)
            if last == counter or (saved and last is not None and counter < last):
                continue
            changed[key] = counter
            if last is None:
                log.info("%s counter %d recorded (first config)", key, counter)
            elif counter < last:
                log.warning("%s counter went back from %d to %d: recorded only", key, last,
                            counter)  # fmt: skip
            elif self.in_progress is not None:
                log.warning("%s counter %d while a %s is under way: recorded only", key,
                            counter, self.in_progress.value)  # fmt: skip
            elif wanted is None or operation is Operation.REBOOT:
                wanted = operation  # both at once: the reboot (it halts the apps as well)
        if changed != self._counters:
            data = json.dumps(changed, sort_keys=True).encode()
            await asyncio.to_thread(write_atomic, self.file, data)
            self._counters = changed
        if wanted is not None:
            log.warning("the controller asks for a %s (counter %d)", wanted.value,
                        changed[_FIELDS[wanted]])  # fmt: skip
        if wanted is Operation.REBOOT and self._deferred():
            log.warning("reboot deferred until the base OS update under test is committed "
                        "or falls back")  # fmt: skip
            self.pending, wanted = Operation.REBOOT, None
        elif (
            wanted is None
            and self.pending is not None
            and self.in_progress is None
            and not self._deferred()
        ):
            log.warning("the deferred %s now", self.pending.value)
            wanted, self.pending = self.pending, None
        if wanted is not None:
            self.in_progress = wanted
            self._task = asyncio.get_running_loop().create_task(self._run(wanted), name=wanted)
        return wanted

    async def wait(self) -> None:
        """Until the operation under way (if any) has done its part."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def reboot_for(self, reason: BootReason, text: str) -> bool:
        """A reboot the agent decides by itself (a base OS update, or its fallback): the steps
        of a controller's reboot with ``reason`` recorded.  False when another operation is
        under way or the reboot could not be started (logged)."""
        if self.in_progress is not None:
            log.warning("reboot for %s refused: a %s is under way", reason.name,
                        self.in_progress.value)  # fmt: skip
            return False
        self.in_progress = Operation.REBOOT
        await self._go_down(Operation.REBOOT, reason, text)
        return self.in_progress is not None

    async def _run(self, operation: Operation) -> None:
        counter = self._counters[_FIELDS[operation]]
        text = f"NORMAL: controller {operation.value} command (counter {counter})"
        if operation is Operation.REBOOT:
            await self._go_down(operation, BootReason.REBOOT_CMD, text)
        else:
            await self._shut_down_apps(text)

    async def _shut_down_apps(self, text: str) -> None:
        """The shutdown command: every app halted for the rest of this run, the node up."""
        log.warning("%s: halting every app; the node stays up", text)
        await self._announce_safely(Operation.SHUTDOWN)
        try:
            await self._halt_apps(self.halt_timeout)
        except TimeoutError:
            log.warning("apps not all halted within %.0f s: they go on halting", self.halt_timeout)
        except Exception as exc:  # noqa: BLE001 - reported; the controller may ask again
            log.error("halting the apps failed: %s", exc)
        self.apps_shut_down = True
        self.in_progress = None
        log.warning("apps halted: ready to be powered off")
        await self._announce_safely(Operation.SHUTDOWN)

    async def _announce_safely(self, operation: Operation) -> None:
        try:
            await self._announce()
        except Exception as exc:  # noqa: BLE001 - the controller learns it at the next report
            log.warning("device info for the %s not sent: %s", operation.value, exc)

    async def _go_down(self, operation: Operation, reason: BootReason, text: str) -> None:
        try:
            await asyncio.to_thread(record_boot_reason, self.persist, reason, text)
        except OSError as exc:
            log.error("cannot record the boot reason, going on: %s", exc)
        await self._announce_safely(operation)
        try:
            await self._halt_apps(self.halt_timeout)
        except TimeoutError:
            log.warning("apps not all halted within %.0f s: going on", self.halt_timeout)
        except Exception as exc:  # noqa: BLE001 - going down anyway: halting was a courtesy
            log.error("halting the apps failed, going on: %s", exc)
        log.warning("%s now: %s", operation.value, text)
        try:
            await self.power.reboot(text)
        except PowerError as exc:
            # The node stays up; the operator can raise the counter again.
            log.error("%s failed: %s", operation.value, exc)
            self.in_progress = None
            return
        self._stopped()
