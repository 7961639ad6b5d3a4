"""App telemetry: each running app's CPU, memory and disks, and its new log lines, every round.

:class:`AppTelemetry` samples the apps ``targets()`` names every ``timer.metric.interval``
(EVE's metrics tick, read from the runtime config items each round):

- container apps through the :class:`~agent.drivers.containers.ContainerRuntime`, which
  addresses the app's container by its node-local name, the app's UUID: ``stats`` (cumulative CPU
  time, memory in use and limit) and ``logs(since=...)`` (stdout and stderr, merged by dockerd);
- VM apps through the :class:`~agent.drivers.hypervisor.Hypervisor`, by ``uuid.UUID(app)``:
  ``stats`` (CPU time, resident memory and memory size, vCPUs, disks) and the serial console log
  file, read from where the last round stopped (:mod:`agent.reconcile.consolelog`).

Outputs: :meth:`AppTelemetry.latest` (one :class:`AppMetric` per current app, for the metrics
report: the link layer's ``AppMetric`` protocol fits it), and the new lines of each app handed to
``sink(app_uuid, lines, app_name=...)`` (the link layer's ``AppLogSpool.add`` fits it).  The CPU
rate is computed between two samples from the cumulative CPU time (percent of one host CPU, as
``top`` shows it); the cumulative figure goes to the controller, as EVE sends it.

Bounded cost: each round reads at most ``max_bytes`` of log per app; the blocking work runs in
worker threads (the drivers' and the console reads); apps are sampled concurrently and the round
waits at most ``app_timeout`` for them.  An app whose sample is still running when the round
ends keeps running in the background and is skipped by the next rounds until it is done, so one
stuck app holds at most one worker thread and never delays the others.  Errors on one app are
logged once (again only when they change, and when it recovers) and never stop the rest; an app
that leaves ``targets()`` is forgotten.

Where the logs were read up to (each container's last line time, each console's inode and offset)
is kept in ``state_file`` when given, written atomically after a round that moved it: after an
agent restart collection resumes there, so lines printed meanwhile are neither lost nor sent
twice.  Lines handed to the sink but not yet written to disk by it when the agent dies are the
only ones that can be lost (the link layer's spool writes them within seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from agent.drivers.containers import ContainerRuntime
from agent.drivers.errors import NotFoundError
from agent.drivers.hypervisor import DiskStats, Hypervisor
from agent.model.configitems import ConfigItems
from agent.reconcile.consolelog import ConsoleCursor, read_new_lines
from agent.util.atomicfile import write_atomic
from agent.util.liveness import Liveness
from agent.util.timing import jittered, wait_or_stop

log = logging.getLogger(__name__)

#: Log bytes read per app per round.
MAX_BYTES = 256 * 1024
#: Lines asked of the container runtime per app per round.
MAX_LINES = 2000
#: How long a round waits for the apps' samples.
APP_TIMEOUT = 20.0
#: How long saved read positions of apps not seen since the start are kept (the reconciler
#: may take a while to find them again); after that they are apps that are gone.
RESTORE_GRACE = 3600.0
_STATE_VERSION = 1


@dataclass(frozen=True)
class AppTarget:
    """An app to sample: its UUID, display name and runtime."""

    app_uuid: str
    name: str
    runtime: Literal["container", "vm"]


class Target(Protocol):
    """What the collector reads of a target (:class:`AppTarget` and look-alikes fit)."""

    @property
    def app_uuid(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def runtime(self) -> str:
        """``container`` or ``vm``; others are ignored."""
        ...


@dataclass(frozen=True)
class AppLogLine:
    """One line an app printed: when (wall clock; for a console, when it was read), what, and
    where (``output`` for a container's stdout and stderr, ``console`` for a VM)."""

    time: float
    text: str
    stream: str


class LogSink(Protocol):
    """Takes an app's new lines, in order; must not block (the event loop calls it)."""

    def __call__(self, app_uuid: str, lines: list[AppLogLine], /, *, app_name: str) -> None: ...


@dataclass(frozen=True)
class AppMetric:
    """One app's latest sample (zeros and None before the first one succeeded).

    ``cpu_ns`` is cumulative since its container or domain started, over ``cpus`` CPUs (the
    vCPUs of a VM, 1 for a container); ``cpu_percent`` the rate between the last two samples in
    percent of one CPU (None until there are two of the same run).  ``memory_max_bytes`` is None
    for a container without a memory limit."""

    app_uuid: str
    name: str
    runtime: str
    cpu_ns: int = 0
    cpus: int = 1
    cpu_percent: float | None = None
    uptime: float | None = None
    memory_bytes: int = 0
    memory_max_bytes: int | None = None
    disks: tuple[DiskStats, ...] = ()
    sampled_at: float = 0.0


@dataclass
class _App:
    """What the collector keeps of one app between rounds."""

    name: str
    runtime: str
    metric: AppMetric | None = None
    #: (monotonic time, cumulative CPU ns) of the previous sample.
    cpu: tuple[float, int] | None = None
    since: datetime | None = None
    console: ConsoleCursor = field(default_factory=ConsoleCursor)
    task: asyncio.Task[None] | None = None
    #: The error last logged for it (logged again only when it changes).
    error: str | None = None
    late: bool = False


class AppTelemetry:
    """See the module docstring.  Use from one event loop; ``run(stop)`` is the task."""

    def __init__(
        self,
        *,
        targets: Callable[[], Sequence[Target]],
        containers: ContainerRuntime | None,
        hypervisor: Hypervisor | None,
        items: Callable[[], ConfigItems],
        sink: LogSink | None = None,
        boot_time: Callable[[str], float] | None = None,
        state_file: Path | None = None,
        liveness: Liveness | None = None,
        max_bytes: int = MAX_BYTES,
        app_timeout: float = APP_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``boot_time(app_uuid)`` is when the app last started (wall clock; 0 unknown): the
        uptime reported.  ``containers`` or ``hypervisor`` None: apps of that runtime get no
        samples (their metrics stay zero)."""
        self._targets = targets
        self._containers = containers
        self._hypervisor = hypervisor
        self._items = items
        self._sink = sink
        self._boot_time = boot_time
        self._state_file = state_file
        self._liveness = liveness
        self.max_bytes = max_bytes
        self.app_timeout = app_timeout
        self._clock = clock
        self._wall = wall
        self._apps: dict[str, _App] = {}
        self._order: list[str] = []
        #: Read positions of an earlier run not yet claimed by an app of this one.
        self._unclaimed: dict[str, Any] = {}
        self._loaded_at: float | None = None
        #: What the state file holds now.
        self._written: dict[str, Any] | None = None
        self.rounds = 0

    # --- outputs ---------------------------------------------------------------------------

    def latest(self) -> list[AppMetric]:
        """The latest sample of every app of the last round, in ``targets()`` order."""
        out = []
        for app_uuid in self._order:
            app = self._apps.get(app_uuid)
            if app is None:
                continue
            metric = app.metric or AppMetric(app_uuid, app.name, app.runtime)
            out.append(metric if metric.name == app.name else replace(metric, name=app.name))
        return out

    # --- the rounds ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """A round every ``timer.metric.interval`` (jittered) until ``stop``; then the samples
        still running are cancelled and the read positions saved."""
        try:
            while not stop.is_set():
                with (
                    self._liveness.activity("app telemetry", self.app_timeout + 60)
                    if self._liveness is not None
                    else contextlib.nullcontext()
                ):
                    await self.sample_once()
                interval = float(self._items().int("timer.metric.interval") or 60)
                if await wait_or_stop(stop, jittered(interval, 0.9, 1.1)):
                    break
        finally:
            await self.close()

    async def sample_once(self) -> None:
        """One round: sample every target (see the module docstring); never raises but for
        cancellation."""
        if self._loaded_at is None:
            await self._load()
        elif self._unclaimed and self._clock() - self._loaded_at > RESTORE_GRACE:
            self._unclaimed.clear()
        try:
            targets = [t for t in self._targets() if t.runtime in ("container", "vm")]
        except Exception:  # a bug there must not end the collector
            log.exception("app telemetry: cannot read the apps")
            return
        current = {t.app_uuid: t for t in targets}
        for gone in [a for a in self._apps if a not in current]:
            self._forget(gone)
        self._order = list(current)
        started: list[asyncio.Task[None]] = []
        for app_uuid, target in current.items():
            app = self._apps.get(app_uuid)
            if app is None or app.runtime != target.runtime:
                if app is not None:
                    self._forget(app_uuid)
                app = self._apps[app_uuid] = self._restored(app_uuid, target)
            app.name = target.name
            if app.task is not None and not app.task.done():
                if not app.late:
                    app.late = True
                    log.warning(
                        "app telemetry: %s still busy with an earlier sample; skipped", app_uuid
                    )
                continue
            app.late = False
            app.task = asyncio.create_task(
                self._sample(app_uuid, app), name=f"app telemetry {app_uuid}"
            )
            started.append(app.task)
        if started:
            _done, late = await asyncio.wait(started, timeout=self.app_timeout)
            if late:
                log.warning(
                    "app telemetry: %d apps not sampled within %g s; they go on in the background",
                    len(late),
                    self.app_timeout,
                )
        self.rounds += 1
        await self._save()

    def _forget(self, app_uuid: str) -> None:
        app = self._apps.pop(app_uuid)
        if app.task is not None and not app.task.done():
            app.task.cancel()
        log.debug("app telemetry: %s is gone; forgotten", app_uuid)

    async def close(self) -> None:
        """Cancel the samples still running and save the read positions."""
        tasks = [a.task for a in self._apps.values() if a.task is not None and not a.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._save()

    # --- one app ---------------------------------------------------------------------------

    async def _sample(self, app_uuid: str, app: _App) -> None:
        """Metrics, then logs, of one app; each failure logged once, none raised."""
        problems: list[str] = []
        try:
            metric = await self._metric(app_uuid, app)
        except Exception as exc:  # noqa: BLE001 - any failure is this app's only
            problems.append(f"metrics: {_describe(exc)}")
        else:
            if self._apps.get(app_uuid) is app:
                app.metric = metric
        if self._sink is not None:
            try:
                await self._logs(app_uuid, app)
            except Exception as exc:  # noqa: BLE001 - as above
                problems.append(f"logs: {_describe(exc)}")
        if self._apps.get(app_uuid) is app:  # not forgotten meanwhile
            self._report(app_uuid, app, "; ".join(problems) or None)

    def _report(self, app_uuid: str, app: _App, error: str | None) -> None:
        if error == app.error:
            return
        if error is None:
            log.info("app telemetry: %s sampled again", app_uuid)
        else:
            log.warning("app telemetry: %s: %s", app_uuid, error)
        app.error = error

    async def _metric(self, app_uuid: str, app: _App) -> AppMetric:
        now, wall = self._clock(), self._wall()
        disks: tuple[DiskStats, ...] = ()
        if app.runtime == "container":
            if self._containers is None:
                raise RuntimeError("no container runtime")
            cstats = await self._containers.stats(app_uuid)
            cpu_ns, cpus = cstats.cpu_ns, 1
            memory, memory_max = cstats.memory_bytes, cstats.memory_limit_bytes
            running = cstats.cpu_ns > 0 or cstats.memory_bytes > 0
        else:
            if self._hypervisor is None:
                raise RuntimeError("no hypervisor")
            dstats = await self._hypervisor.stats(uuid.UUID(app_uuid))
            cpu_ns, cpus = dstats.cpu_ns, max(1, dstats.vcpus)
            memory, memory_max = dstats.memory_bytes, dstats.memory_max_bytes
            running, disks = dstats.running, dstats.disks
        percent = None
        if app.cpu is not None and cpu_ns >= app.cpu[1] and now > app.cpu[0]:
            percent = 100.0 * (cpu_ns - app.cpu[1]) / ((now - app.cpu[0]) * 1e9)
        app.cpu = (now, cpu_ns) if running else None
        uptime = None
        started = self._boot_time(app_uuid) if self._boot_time is not None else 0.0
        if running and started > 0:
            uptime = max(0.0, wall - started)
        return AppMetric(
            app_uuid=app_uuid,
            name=app.name,
            runtime=app.runtime,
            cpu_ns=cpu_ns,
            cpus=cpus,
            cpu_percent=percent if running else None,
            uptime=uptime,
            memory_bytes=memory,
            memory_max_bytes=memory_max,
            disks=disks,
            sampled_at=wall,
        )

    async def _logs(self, app_uuid: str, app: _App) -> None:
        """Hand the app's new lines to the sink; the read position moves only once it took
        them (a sink that fails gets the same lines again next round)."""
        assert self._sink is not None
        if app.runtime == "container":
            if self._containers is None:
                return
            got = await self._containers.logs(
                app_uuid, since=app.since, tail=MAX_LINES, max_bytes=self.max_bytes
            )
            lines = [AppLogLine(g.time.timestamp(), g.text, "output") for g in got]
            if self._apps.get(app_uuid) is not app:
                return
            if lines:
                self._sink(app_uuid, lines, app_name=app.name)
                app.since = got[-1].time
            return
        if self._hypervisor is None:
            return
        path = self._hypervisor.console_log(uuid.UUID(app_uuid))
        texts, cursor = await asyncio.to_thread(read_new_lines, path, app.console, self.max_bytes)
        if self._apps.get(app_uuid) is not app:
            return
        if texts:
            wall = self._wall()
            self._sink(app_uuid, [AppLogLine(wall, t, "console") for t in texts], app_name=app.name)
        app.console = cursor

    # --- read positions across restarts ----------------------------------------------------

    def _positions(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._unclaimed)
        for app_uuid, app in self._apps.items():
            if app.runtime == "container" and app.since is not None:
                out[app_uuid] = {"since": app.since.isoformat()}
            elif app.runtime == "vm" and app.console.inode:
                out[app_uuid] = {
                    "inode": app.console.inode,
                    "offset": app.console.offset,
                    "head": app.console.head.hex(),
                }
        return out

    def _restored(self, app_uuid: str, target: Target) -> _App:
        """A new app's state, resuming where an earlier run of the agent stopped reading."""
        app = _App(name=target.name, runtime=target.runtime)
        saved = self._unclaimed.pop(app_uuid, None)
        if not isinstance(saved, dict):
            return app
        try:
            if target.runtime == "container" and "since" in saved:
                app.since = datetime.fromisoformat(str(saved["since"]))
            elif target.runtime == "vm" and "inode" in saved:
                app.console = ConsoleCursor(
                    int(saved["inode"]), int(saved["offset"]), bytes.fromhex(saved["head"])
                )
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("app telemetry: ignoring the saved position of %s: %s", app_uuid, exc)
        return app

    async def _load(self) -> None:
        self._loaded_at = self._clock()
        if self._state_file is None:
            return
        try:
            text = await asyncio.to_thread(self._state_file.read_text)
            data = json.loads(text)
            apps = data["apps"] if data.get("version") == _STATE_VERSION else {}
            self._unclaimed = dict(apps) if isinstance(apps, dict) else {}
            self._written = dict(self._unclaimed)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            log.warning("app telemetry: cannot read %s (starting over): %s", self._state_file, exc)

    async def _save(self) -> None:
        if self._state_file is None:
            return
        positions = self._positions()
        if positions == self._written:
            return
        data = json.dumps({"version": _STATE_VERSION, "apps": positions}, sort_keys=True)
        try:
            await asyncio.to_thread(write_atomic, self._state_file, data.encode())
        except OSError as exc:
            log.error("app telemetry: cannot save the read positions: %s", exc)
            return
        self._written = positions


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NotFoundError):
        return f"not found ({exc})"
    return str(exc) or type(exc).__name__
