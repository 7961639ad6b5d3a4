"""Rebooting and powering off the node: one small interface, a real and an emulated one.

:class:`Power` is what the agent calls once it has done its part (recorded the boot reason with
:func:`agent.util.bootreason.record_boot_reason`, told the controller, stopped the apps):

* :class:`SystemdPower` (a real node) asks systemd: ``systemctl reboot`` / ``systemctl
  poweroff``.  systemd then stops every service in order, the agent included (SIGTERM: its normal
  stop path), syncs the disks and restarts or powers off the machine.  Not ``reboot(2)``: that
  would skip the services' clean stop.  The call returns once systemd has queued the job; the
  caller then waits to be stopped.
* :class:`EmulatedPower` (an emulated node, ``--root``: the host is not the node) must never
  reboot the host.  It records the request in ``<run>/power-requests.jsonl`` and forgets the
  node's boot id, so that the agent's next start is the node's next boot; the caller then stops
  the agent (whoever runs the emulated node starts it again, or not: a power-off).
* :class:`FakePower` records the calls in memory, for unit tests.

Errors: :class:`PowerError` (temporary: the caller may try again later) when systemd refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.drivers import runner
from agent.drivers.errors import TemporaryError
from agent.util.atomicfile import fsync_dir
from agent.util.bootreason import forget_boot_id

#: How long systemctl may take to queue the job.
SYSTEMCTL_TIMEOUT = 30.0


class PowerError(TemporaryError):
    """The reboot or power-off could not be started; the message says why."""


class Power(Protocol):
    """Takes the node down.  ``reason`` is for the logs (the boot reason is recorded apart).

    Both return once the request is under way (a real node's services are being stopped, the
    agent with them); they raise PowerError when it could not be made."""

    async def reboot(self, reason: str) -> None: ...

    async def poweroff(self, reason: str) -> None: ...


class SystemdPower:
    """``systemctl reboot|poweroff`` (through the runner, with a timeout)."""

    def __init__(self, systemctl: str = "systemctl") -> None:
        self.systemctl = systemctl

    async def reboot(self, reason: str) -> None:
        await self._ask("reboot")

    async def poweroff(self, reason: str) -> None:
        await self._ask("poweroff")

    async def _ask(self, verb: str) -> None:
        try:
            # --no-wall: nobody is logged in to a node; --no-block: do not wait for the job
            # (the agent itself is among the services it stops).
            await runner.run([self.systemctl, verb, "--no-block", "--no-wall"],
                             timeout=SYSTEMCTL_TIMEOUT)  # fmt: skip
        except runner.CommandError as exc:
            raise PowerError(f"systemctl {verb}: {exc}") from exc


@dataclass(frozen=True)
class PowerRequest:
    action: str
    reason: str
    time: float


class EmulatedPower:
    """An emulated node's power: the request recorded in ``run/power-requests.jsonl`` (one
    JSON object a line: action, reason, time), the node's boot id forgotten; never the host."""

    def __init__(self, run: Path) -> None:
        self.run = run

    @property
    def requests_file(self) -> Path:
        return self.run / "power-requests.jsonl"

    async def reboot(self, reason: str) -> None:
        self._record("reboot", reason)

    async def poweroff(self, reason: str) -> None:
        self._record("poweroff", reason)

    def _record(self, action: str, reason: str) -> None:
        try:
            self.run.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"action": action, "reason": reason, "time": time.time()})
            with open(self.requests_file, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
            fsync_dir(self.run)
            forget_boot_id(self.run)
        except OSError as exc:
            raise PowerError(f"cannot record the {action}: {exc}") from exc

    def requests(self) -> list[PowerRequest]:
        """The requests recorded so far (oldest first)."""
        try:
            lines = self.requests_file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            entry = json.loads(line)
            out.append(PowerRequest(str(entry["action"]), str(entry["reason"]),
                                    float(entry["time"])))  # fmt: skip
        return out


@dataclass
class FakePower:
    """In memory: every call recorded; ``fail`` makes the next calls raise PowerError."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: str | None = None

    async def reboot(self, reason: str) -> None:
        self._call("reboot", reason)

    async def poweroff(self, reason: str) -> None:
        self._call("poweroff", reason)

    def _call(self, action: str, reason: str) -> None:
        if self.fail is not None:
            raise PowerError(self.fail)
        self.calls.append((action, reason))
