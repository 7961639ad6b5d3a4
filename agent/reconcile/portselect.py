"""Which port config the node uses: the config's, once it has reached the controller, else the
last one that did (EVE's nim DPC manager, cut down to the two configs that matter).

EVE keeps a list of device port configs (DPCs), tests a new one by reaching the controller
through it, and falls back to the last one that worked when the test fails, so a config
mistake never takes away the ports the node reaches its controller through.  Here:

- the config's ports are the *offered* config (a config naming no port offers nothing: the
  node keeps what it has, and with no history the agent manages no port);
- an offered config that differs from the *last working* one is a *candidate*: it is applied
  and tested (:class:`PortManager`): within ``timer.port.testduration`` seconds its port items
  must be in place, a management port must have its address (static, or a DHCP lease), and a
  TCP connection to the controller must open (each try bounded by ``timer.port.timeout``; a
  refused connection counts as reached, as EVE counts a TCP reset as a remote failure);
- success makes it the last working config (persisted atomically, outside the vault:
  ``persist/status/net/portconfig.json``); failure puts the last working config back, reports
  the error (on the device; logged once per test) and keeps the candidate out until the config
  offers another one or ``timer.port.testbetterinterval`` has passed (0: until the config
  changes), as EVE retries its highest-priority DPC;
- with no last working config (first boot) the candidate is used as it is, tested all the
  same, and becomes the last working one once a test passes;
- a candidate without a management port cannot be tested: with a last working config it is
  not used (EVE ignores such a DPC), else it is used as it is.

:class:`Selection` is the pure state machine (times are wall-clock seconds, passed in);
:class:`PortManager` runs the tests and follows DHCP leases beside the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.drivers.netprobe import Prober
from agent.model.configitems import ConfigItems
from agent.model.ports import Port
from agent.reconcile import portconfig
from agent.reconcile.engine import Engine
from agent.reconcile.items import Item, ItemRef
from agent.reconcile.netplan import NetPlan
from agent.reconcile.portconfig import fingerprint, port_from_json, port_json
from agent.reconcile.state import ItemState
from agent.util.atomicfile import write_atomic

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: Failed candidates remembered (a hostile controller must not grow the state file).
MAX_FAILED = 16
MAX_STATE = 256 * 1024


# --- the pure selection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A candidate's failed test: when (wall clock) and why."""

    at: float
    why: str


@dataclass
class Selection:
    """What the node knows of port configs; see the module docstring.  Pure: every time is
    given by the caller."""

    last_working: dict[str, Port] | None = None
    #: When (wall clock) the last working config last passed a test.
    succeeded_at: float = 0.0
    failed: dict[str, Failure] = field(default_factory=dict)
    offered: dict[str, Port] | None = None
    #: The config version that offered the current ports (for messages).
    version: str = ""
    #: The fingerprint of the candidate under test, None when none is.
    testing: str | None = None
    _working_fp: str | None = None
    _offered_fp: str | None = None

    def __post_init__(self) -> None:
        if self.last_working is not None:
            self._working_fp = fingerprint(self.last_working)

    @property
    def offered_fp(self) -> str | None:
        return self._offered_fp

    @property
    def committed(self) -> bool:
        """Whether the offered config is the last working one."""
        return self._offered_fp is not None and self._offered_fp == self._working_fp

    def offer(self, ports: Mapping[str, Port], version: str) -> bool:
        """The config's ports (empty: it names none, nothing changes).  True when they differ
        from the ports offered before (a test of the old candidate is then void)."""
        if not ports:
            return False
        fp = fingerprint(ports)
        if fp == self._offered_fp:
            return False
        self.offered, self._offered_fp, self.version = dict(ports), fp, version
        self.testing = None
        return True

    def effective(self) -> dict[str, Port] | None:
        """The port config to apply now: the candidate under test, the offered one when it is
        the last working one or there is none, else the last working one; None: no port config
        at all (the agent manages no port)."""
        if self.offered is None:
            return self.last_working
        if self.last_working is None or self.testing is not None or self.committed:
            return self.offered
        return self.last_working

    def testable(self) -> bool:
        return self.offered is not None and any(p.management for p in self.offered.values())

    def start(self, now: float, better: int) -> str | None:
        """The fingerprint of the candidate to test now (it becomes effective), None when no
        test is due: nothing offered, already working or under test, untestable, or failed
        less than ``better`` seconds ago (``better`` 0: failed at all)."""
        fp = self._offered_fp
        if fp is None or self.testing is not None or self.committed or not self.testable():
            return None
        failure = self.failed.get(fp)
        if failure is not None and (better <= 0 or failure.at <= now < failure.at + better):
            return None  # (a failure "in the future" means the clock moved back: test)
        self.testing = fp
        return fp

    def retry_at(self, better: int) -> float | None:
        """When (wall clock) the offered candidate's retry falls due, None when none waits."""
        fp = self._offered_fp
        failure = self.failed.get(fp) if fp is not None else None
        if failure is None or better <= 0 or self.testing is not None or self.committed:
            return None
        return failure.at + better

    @property
    def working_fp(self) -> str | None:
        return self._working_fp

    def passed(self, fp: str, now: float) -> bool:
        """The test of ``fp`` passed at ``now``: it is the last working config.  False for a
        stale test."""
        if fp != self.testing or self.offered is None:
            return False
        self.last_working, self._working_fp, self.succeeded_at = dict(self.offered), fp, now
        self.failed.pop(fp, None)
        self.testing = None
        return True

    def fail(self, fp: str, why: str, now: float) -> bool:
        """The test of ``fp`` failed at ``now``.  False for a stale test."""
        if fp != self.testing:
            return False
        self.failed.pop(fp, None)
        self.failed[fp] = Failure(now, why[:1024])
        while len(self.failed) > MAX_FAILED:
            del self.failed[next(iter(self.failed))]
        self.testing = None
        return True

    def error(self, better: int) -> tuple[str, float] | None:
        """What to report about the offered config and since when, None when nothing."""
        fp = self._offered_fp
        if fp is None or self.committed or self.testing is not None:
            return None
        if not self.testable():
            if self.last_working is None:
                return None
            return ("the config's ports have no management port: the last working port "
                    "config stays in use", 0.0)  # fmt: skip
        failure = self.failed.get(fp)
        if failure is None:
            return None
        where = ("the last working port config is in use" if self.last_working is not None
                 else "no earlier port config worked: it stays in use")  # fmt: skip
        again = (f"tried again {better} s after the failure" if better > 0
                 else "not tried again until the config changes")  # fmt: skip
        version = f" of config {self.version}" if self.version else ""
        return f"port config{version} failed its test: {failure.why}; {where}; {again}", failure.at

    # persistence

    def to_bytes(self) -> bytes:
        doc = {
            "version": STATE_VERSION,
            "last_working": None if self.last_working is None
            else [port_json(p) for _, p in sorted(self.last_working.items())],
            "succeeded_at": self.succeeded_at,
            "failed": {fp: {"at": f.at, "why": f.why} for fp, f in self.failed.items()},
        }  # fmt: skip
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Selection:
        """Raises ValueError for a state file that makes no sense."""
        if len(data) > MAX_STATE:
            raise ValueError("too large")
        try:
            doc = json.loads(data)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            raise ValueError("unknown format")
        working = doc.get("last_working")
        last = None
        if working is not None:
            if not isinstance(working, list) or not working:
                raise ValueError("last_working is not a list of ports")
            ports = [port_from_json(p) for p in working]
            last = {p.name: p for p in ports}
        failed: dict[str, Failure] = {}
        raw = doc.get("failed", {})
        if not isinstance(raw, dict):
            raise ValueError("failed is not an object")
        for fp, entry in list(raw.items())[-MAX_FAILED:]:
            if isinstance(entry, dict) and isinstance(entry.get("at"), int | float):
                failed[str(fp)[:64]] = Failure(float(entry["at"]), str(entry.get("why", ""))[:1024])
        succeeded = doc.get("succeeded_at", 0.0)
        if not isinstance(succeeded, int | float) or isinstance(succeeded, bool):
            raise ValueError("succeeded_at is not a time")
        return cls(last_working=last, succeeded_at=float(succeeded), failed=failed)


def load_selection(path: Path) -> Selection:
    """The saved selection at ``path``; a fresh one when there is none or it is unusable
    (logged: the node then behaves as on its first boot)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Selection()
    except OSError as exc:
        log.warning("port config state %s unreadable (%s): starting without one", path, exc)
        return Selection()
    try:
        return Selection.from_bytes(data)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("port config state %s unusable (%s): starting without one", path, exc)
        return Selection()


def controller_target(server: str | None) -> tuple[str, int] | None:
    """(host, port) of ``/config/server``'s ``host[:port]`` (443 by default), None when there
    is none or it does not parse."""
    if not server:
        return None
    try:
        parts = urllib.parse.urlsplit("//" + server.strip().removeprefix("https://"))
        host, port = parts.hostname, parts.port or 443
    except ValueError:
        return None
    return (host, port) if host else None


@dataclass(frozen=True)
class PortReport:
    """One port of a port config, with the addressing it has now (the config in use) or is
    configured with (another)."""

    port: Port
    addresses: tuple[str, ...] = ()
    routers: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortConfigReport:
    """A port config the node keeps, as EVE reports its DPCs (``SystemAdapterInfo``): the
    config's first, then the last working one when it differs."""

    ports: tuple[PortReport, ...]
    in_use: bool
    #: Wall-clock times; 0: never.
    last_failed: float = 0.0
    last_succeeded: float = 0.0
    last_error: str = ""


# --- the async part -------------------------------------------------------------------------------


class PortManager:
    """The port kind of one node: its configurator, the selection, the tests and the lease
    follower.  The node reconciler calls :meth:`offer` with each config's ports before it
    renders, renders :meth:`effective`, and runs :meth:`run` beside its engine; ``on_change``
    (set by it) renders again when the effective ports change outside a config."""

    def __init__(
        self,
        configurator: portconfig.PortConfigurator,
        prober: Prober,
        state_file: Path,
        items: Callable[[], ConfigItems],
        target: Callable[[], tuple[str, int] | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll: float = 1.0,
    ) -> None:
        """``clock`` and ``sleep`` time the tests (monotonic), ``wallclock`` the failures;
        ``poll`` is how often leases are followed.  Reads the saved state (small, once)."""
        self.configurator = configurator
        self.prober = prober
        self.state_file = state_file
        self._items = items
        self._target = target
        self._clock = clock
        self._wallclock = wallclock
        self._sleep = sleep
        self._poll = poll
        self.selection = load_selection(state_file)
        self.on_change: Callable[[], None] | None = None
        self._lease_dns_seen: dict[str, tuple[str, ...]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._task_fp: str | None = None
        self._saving: asyncio.Future[None] | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="portconfig-state")

    def _better(self) -> int:
        return self._items().int("timer.port.testbetterinterval")

    # --- what the node reconciler asks (synchronous)

    def offer(self, ports: Mapping[str, Port], version: str) -> None:
        """A config's ports (see :meth:`Selection.offer`); a test starts when one is due."""
        if self.selection.offer(ports, version):
            log.info("config %s names new ports: %s", version, ", ".join(sorted(ports)))
        self._start_due()
        self._wake.set()

    def effective(self) -> dict[str, Port] | None:
        """The ports in use (see :meth:`Selection.effective`); a DHCP port the config gives no
        DNS servers carries its lease's (local instances forward their apps' queries there,
        as EVE's do)."""
        ports = self.selection.effective()
        if ports is None:
            return None
        return {name: self._lease_dns(port) for name, port in ports.items()}

    def _lease_dns(self, port: Port) -> Port:
        if port.dhcp != "client" or port.dns:
            return port
        lease = self.configurator.lease(port.ifname)
        if lease is None or not lease.dns:
            return port
        return replace(port, dns=tuple(str(d) for d in lease.dns))

    def _dns_changed(self) -> bool:
        """Whether the DNS servers the DHCP ports' leases name changed since the last call."""
        now = {
            name: port.dns for name, port in (self.effective() or {}).items()
            if port.dhcp == "client"
        }  # fmt: skip
        changed, self._lease_dns_seen = now != self._lease_dns_seen, now
        return changed

    def render(self, layout: NetPlan) -> dict[ItemRef, Item]:
        """The port items of ``layout`` (planned with :meth:`effective`)."""
        return portconfig.render(layout)

    def report(self) -> list[PortConfigReport]:
        """The port configs the node keeps, the config's first; empty when it has none."""
        sel = self.selection
        configs = [(sel.offered, sel.offered_fp)] if sel.offered is not None else []
        if sel.last_working is not None and not sel.committed:
            configs.append((sel.last_working, sel.working_fp))
        effective = sel.effective()
        in_use_fp = fingerprint(effective) if effective is not None else None
        error = self.errors()
        out = []
        for ports, fp in configs:
            assert ports is not None
            in_use = fp == in_use_fp
            failure = sel.failed.get(fp or "")
            out.append(PortConfigReport(
                tuple(self._port_report(p, in_use) for _, p in sorted(ports.items())), in_use,
                failure.at if failure is not None else 0.0,
                sel.succeeded_at if fp == sel.working_fp else 0.0,
                error[0][0] if error and fp == sel.offered_fp else "",
            ))  # fmt: skip
        return out

    def _port_report(self, port: Port, in_use: bool) -> PortReport:
        addresses: tuple[str, ...] = (port.address,) if port.address else ()
        routers: tuple[str, ...] = (port.gateway,) if port.gateway else ()
        dns = port.dns
        lease = self.configurator.lease(port.ifname) if in_use else None
        if lease is not None and port.dhcp == "client":
            addresses, routers = (str(lease.address),), tuple(str(r) for r in lease.routers)
            dns = dns or tuple(str(d) for d in lease.dns)
        return PortReport(port, addresses, routers, dns)

    def errors(self) -> list[tuple[str, float]]:
        """The device's port error (message, wall-clock time) while there is one."""
        found = self.selection.error(self._better())
        return [found] if found is not None else []

    # --- the task

    async def run(self, engine: Engine, stop: asyncio.Event) -> None:
        """Follow leases and run tests until ``stop``."""
        try:
            while not stop.is_set():
                self._wake.clear()
                await self.configurator.sync_leases()
                if self._start_due() or self._dns_changed():
                    self._changed()
                testing = self.selection.testing
                if testing is not None and (testing != self._task_fp or self._idle()):
                    await self._cancel()
                    self._task_fp = testing
                    self._task = asyncio.create_task(self._guarded(engine, testing),
                                                     name="port test")  # fmt: skip
                    # Its end wakes the loop: a retry of the same candidate may wait for it.
                    self._task.add_done_callback(lambda _: self._wake.set())
                wait = self._poll if self._dhcp_wanted(engine) else 30.0
                retry = self.selection.retry_at(self._better())
                if retry is not None:
                    wait = min(wait, max(0.0, retry - self._wallclock()))
                await _wait_any(self._wake, stop, wait)
        finally:
            await self._cancel()
            await self._saved()

    async def _saved(self) -> None:
        """Wait (10 s at most) for the last save to land, also when cancelled meanwhile (the
        reconciler cancels this task as it stops): a test's outcome must reach the disk."""
        saving = self._saving
        if saving is None:
            return
        try:
            await asyncio.wait([saving], timeout=10)
        except asyncio.CancelledError:
            await asyncio.wait([saving], timeout=10)
            raise

    def _dhcp_wanted(self, engine: Engine) -> bool:
        """Whether a DHCP port is desired or applied: leases to follow every poll (else the
        loop idles; offers and test results wake it anyway)."""
        return self.configurator.following() or any(
            isinstance(item, portconfig.PortItem) and item.dhcp == "client"
            for ref, item in engine.desired.items()
            if ref[0] == portconfig.KIND
        )

    def _idle(self) -> bool:
        return self._task is None or self._task.done()

    async def _cancel(self) -> None:
        task, self._task, self._task_fp = self._task, None, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start_due(self) -> bool:
        fp = self.selection.start(self._wallclock(), self._better())
        if fp is not None:
            log.info("testing the port config of config %s (%s)", self.selection.version, fp[:12])
        return fp is not None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
        self._wake.set()

    async def _guarded(self, engine: Engine, fp: str) -> None:
        try:
            await self._test(engine, fp)
        except Exception as exc:  # a bug fails the candidate, it must not retest in a loop
            log.exception("testing the port config failed")
            await self._failed(fp, f"the test failed: {exc}")

    async def _test(self, engine: Engine, fp: str) -> None:
        items = self._items()
        duration = float(items.int("timer.port.testduration"))
        per_try = float(items.int("timer.port.timeout"))
        deadline = self._clock() + duration
        why = "not tested"
        while self.selection.testing == fp:
            not_ready = self._not_ready(engine)
            if not_ready is None:
                target = self._target()
                if target is None:
                    await self._passed(fp, "no controller address known: taken untested")
                    return
                left = max(0.5, deadline - self._clock())
                result = await self.prober.reach(*target, within=min(per_try or left, left))
                if result.ok:
                    await self._passed(fp, result.detail)
                    return
                why = f"controller {target[0]}:{target[1]} not reached: {result.detail}"
            else:
                why = not_ready
            if self._clock() >= deadline:
                await self._failed(fp, why)
                return
            await self._sleep(min(1.0, max(0.05, deadline - self._clock())))

    def _not_ready(self, engine: Engine) -> str | None:
        """Why the candidate cannot be probed yet: its port items not in place, or no
        management port with its address."""
        for ref, item in engine.desired.items():
            if ref[0] != portconfig.KIND:
                continue
            st = engine.status.get(ref)
            if st is not None and st.state is ItemState.FAILED:
                return f"port {ref[1]}: {st.last_error}"
            if st is None or st.state is not ItemState.CREATED or engine.actual.get(ref) != item:
                return f"port {ref[1]} not configured yet"
        ports = self.selection.offered or {}
        waiting = []
        for port in sorted(ports.values(), key=lambda p: p.name):
            if not port.management:
                continue
            if (portconfig.KIND, port.ifname) not in engine.desired:
                return None  # no addressing of ours (none, or bridged): the probe decides
            why = self.configurator.not_ready(port.ifname)
            if why is None:
                return None
            waiting.append(why)
        return "; ".join(waiting) or "no management port"

    async def _passed(self, fp: str, detail: str) -> None:
        if self.selection.passed(fp, self._wallclock()):
            log.info("port config of config %s works (%s): now the last working one",
                     self.selection.version, detail)  # fmt: skip
            self._changed()
            await self._save()

    async def _failed(self, fp: str, why: str) -> None:
        if self.selection.fail(fp, why, self._wallclock()):
            found = self.selection.error(self._better())
            log.error("%s", found[0] if found else f"port config failed its test: {why}")
            self._changed()  # the last working ports back at once; saved just after
            await self._save()

    async def _save(self) -> None:
        # One writer thread: saves land in the order they were made (the last is the latest
        # state).  Shielded, and awaited by run() on its way out: a stop while it is written
        # must not lose a test's outcome.
        loop = asyncio.get_running_loop()
        data = self.selection.to_bytes()
        self._saving = loop.run_in_executor(self._writer, write_atomic, self.state_file, data)
        try:
            await asyncio.shield(self._saving)
        except OSError as exc:  # kept in memory; the next change writes it again
            log.warning("cannot save the port config state: %s", exc)


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)


__all__ = [
    "Failure",
    "PortConfigReport",
    "PortManager",
    "PortReport",
    "Selection",
    "controller_target",
    "fingerprint",
    "load_selection",
    "port_from_json",
    "port_json",
]
