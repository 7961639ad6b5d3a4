"""Agent RSS and CPU with container apps running, for ``make bench`` (tools/bench_workloads.py).

The agent measured is a child process (``python -m tools.bench_appload``), never the bench
itself: a :class:`~agent.reconcile.node.NodeReconciler` with the real ``DockerRuntime`` and
``LibvirtHypervisor``, the daemon's default settings (the app watch every 10 s), its engine
task and ``Workloads.maintain`` running, and, when ``agent/reconcile/apptelemetry.py`` exists,
app telemetry (each app's stats and new log lines) with ``timer.metric.interval`` 10 s.  It
is the workload half of the agent (no controller link, vault or TPM): the figures are what apps
add to it, beside the same process with no apps.

The parent drives it over stdin/stdout, one JSON object a line:

- child: ``{"ready": true, "telemetry": "<included: ...|not included: why>"}``;
- parent ``{"apps": n}``: the config now has apps 0..n-1 (one content tree, one volume and one
  container each); child ``{"running": n, "seconds": s}`` once all n are RUNNING;
- parent ``{"status": true}``: child ``{"rounds": r, "apps_sampled": a, "log_lines": l}``;
- parent ``{"quit": true}``: the child stops its tasks and exits (the parent removes the
  containers).

The parent reads the child's VmRSS from ``/proc/<pid>/status`` and its CPU time (user + system,
all threads) from ``/proc/<pid>/stat`` over a window: idle (no apps) first, then with 20 apps,
the same length; then RSS with 50 apps.  Each measurement starts ``SETTLE`` seconds after the
apps all run (their start-up is not counted); the 50-app RSS is read after at least one watch
and one telemetry round with all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.drivers.docker import DockerRuntime
from agent.drivers.hypervisor import HypervisorSettings
from agent.drivers.libvirt import LibvirtHypervisor
from agent.reconcile.configitems import RuntimeItems
from agent.reconcile.node import VAULT_READY, NodeReconciler
from agent.reconcile.workloads import Workloads
from agent.reconcile.workspace import WorkloadDrivers, WorkloadSettings, Workspace
from tools.bench_workload_env import ROOT, BenchImage, Documents, Row, Scene, oid

#: How long the child may take to start, and to get n apps running.
READY_WITHIN = 120.0
APPS_WITHIN = 300.0
#: Seconds after the apps run before a measurement starts (their start-up is not counted).
SETTLE = 5.0


# --- the parent ------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of ``pid`` (and its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class _Child:
    """The agent child process and its line protocol."""

    def __init__(self, scene: Scene, image: BenchImage) -> None:
        self.log = scene.base / "agent-load.log"
        argv = [sys.executable, "-m", "tools.bench_appload", "--node", scene.node,
                "--root", str(scene.base), "--image", json.dumps(asdict(image))]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                bufsize=0,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    def receive(self, within: float) -> dict[str, Any]:
        """The child's next line; RuntimeError (with its log's tail) when it dies or is late."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], within)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            tail = self.log.read_text(errors="replace")[-1500:]
            why = "exited" if self.proc.poll() is not None else f"did not answer in {within:.0f} s"
            raise RuntimeError(f"agent child {why}; its log ends:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"agent child: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"quit": True})
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _cpu_window(pid: int, seconds: float) -> float:
    """Percent of one core ``pid`` used over the next ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0)


def measure_load(
    scene: Scene, image: BenchImage, *, window: float, counts: tuple[int, int] = (20, 50)
) -> list[Row]:
    """RSS and CPU of the agent child idle, with ``counts[0]`` apps (RSS and CPU over
    ``window`` seconds) and with ``counts[1]`` apps (RSS).  The child's containers are removed
    here; the rest by the caller's purge."""
    few, many = counts
    child = _Child(scene, image)
    try:
        telemetry = str(child.receive(READY_WITHIN)["telemetry"])
        time.sleep(SETTLE)
        idle_cpu = _cpu_window(child.pid, window)
        idle_rss = rss_kib(child.pid)
        child.send({"apps": few})
        start_few = float(child.receive(APPS_WITHIN)["seconds"])
        time.sleep(SETTLE)
        busy_cpu = _cpu_window(child.pid, window)
        few_rss = rss_kib(child.pid)
        child.send({"status": True})
        status = child.receive(30)
        child.send({"apps": many})
        start_many = float(child.receive(APPS_WITHIN)["seconds"])
        time.sleep(SETTLE + 10.0)  # at least one watch and one telemetry round with them all
        many_rss = rss_kib(child.pid)
    finally:
        child.close()
        scene.remove_containers()
    mib = "{:.1f} MiB".format
    per_app = (many_rss - idle_rss) / many
    metrics = (
        f"metrics collection {telemetry} ({status['rounds']} rounds, {status['apps_sampled']} "
        f"apps in the last)"
        if telemetry.startswith("included")
        else f"metrics collection {telemetry}"
    )
    return [
        (f"agent RSS, {few} container apps running (all started in {start_few:.1f} s)",
         mib(few_rss / 1024), f"{mib(idle_rss / 1024)} (same agent, no apps)",
         f"+{mib((few_rss - idle_rss) / 1024)}"),
        (f"agent RSS, {many} container apps (goal: 50 apps within 100 MB; all {many} started "
         f"in {start_many:.1f} s)", mib(many_rss / 1024),
         f"{mib(idle_rss / 1024)} (same agent, no apps)",
         f"+{mib((many_rss - idle_rss) / 1024)} ({per_app:.0f} KiB/app)"),
        (f"agent CPU, {few} container apps, app watch every 10 s, {window:.0f} s window "
         "(goal < 1 % of a core)", f"{busy_cpu:.2f} %",
         f"{idle_cpu:.2f} % (same agent, no apps, same window)",
         f"{busy_cpu - idle_cpu:+.2f} %"),
        (f"  {metrics}", "", "", ""),
    ]  # fmt: skip


# --- the child ---------------------------------------------------------------------------------


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _telemetry(workloads: Workloads, runtime: RuntimeItems, sink: Any) -> tuple[Any, str]:
    """App telemetry when the module exists (it is being built beside this bench): the object
    (or None) and what to say about it."""
    try:
        module = importlib.import_module("agent.reconcile.apptelemetry")
    except ImportError as exc:
        return None, f"not included (agent.reconcile.apptelemetry: {exc})"
    try:
        telemetry = module.AppTelemetry(
            targets=workloads.targets,
            containers=workloads.drivers.containers,
            hypervisor=workloads.drivers.hypervisor,
            items=lambda: runtime.current,
            sink=sink,
            boot_time=workloads.boot_time,
        )
    except (AttributeError, TypeError) as exc:
        return None, f"not included (AppTelemetry does not take this bench's arguments: {exc})"
    return telemetry, "included: apptelemetry, stats + new log lines of every app every 10 s"


async def _until_running(rec: NodeReconciler, apps: Iterable[str], within: float) -> None:
    want = set(apps)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        owners = [o for o in rec.owners() if o.kind == "app" and o.id in want]
        failed = [f"{o.name}: {o.errors[0][0]}" for o in owners if o.errors]
        if failed:
            raise RuntimeError("; ".join(failed[:3]))
        if sum(o.phase == "RUNNING" for o in owners) == len(want):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"not all {len(want)} apps RUNNING within {within:.0f} s")


async def serve(node: str, root: Path, image: BenchImage) -> None:
    """The child: an agent's workload half under ``node``, driven by lines on stdin."""
    runtime = RuntimeItems()
    vault = root / "vault-load"
    vault.mkdir(mode=0o711)
    drivers = WorkloadDrivers(
        DockerRuntime(node),
        LibvirtHypervisor(HypervisorSettings(node, state_dir=root / "domains-load")),
    )
    settings = WorkloadSettings(container_halt_grace=0.5)
    workloads = Workloads(
        drivers, Workspace(root=lambda: vault, items=lambda: runtime.current, settings=settings)
    )
    rec = NodeReconciler(runtime, workloads=workloads)
    rec.set_condition(VAULT_READY, None)
    docs = Documents(image=image, items={"timer.metric.interval": "10"})
    await rec.accept(docs.config())
    stop = asyncio.Event()
    tasks = [asyncio.create_task(rec.run(stop), name="engine")]
    lines = [0]

    def sink(app_uuid: str, new: list[Any], /, *, app_name: str) -> None:
        lines[0] += len(new)

    telemetry, said = _telemetry(workloads, runtime, sink)
    applied = asyncio.Event()
    runtime.subscribe(lambda changed: applied.set() if "timer.metric.interval" in changed else None)
    try:
        # The telemetry's first round reads the interval: start it once the item applies.
        if runtime.current.int("timer.metric.interval") != 10:
            await asyncio.wait_for(applied.wait(), 30)
        if telemetry is not None:
            tasks.append(asyncio.create_task(telemetry.run(stop), name="telemetry"))
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _say({"ready": True, "telemetry": said})
        while line := await reader.readline():
            message = json.loads(line)
            if message.get("quit"):
                break
            if "apps" in message:
                n = int(message["apps"])
                t0 = time.monotonic()
                await rec.accept(docs.config(containers=range(n)))
                await _until_running(rec, (oid("ct", i) for i in range(n)), APPS_WITHIN)
                _say({"running": n, "seconds": time.monotonic() - t0})
            elif message.get("status"):
                latest = telemetry.latest() if telemetry is not None else []
                rounds = telemetry.rounds if telemetry is not None else 0
                sampled = sum(1 for m in latest if getattr(m, "sampled_at", 0.0) > 0)
                _say({"rounds": rounds, "apps_sampled": sampled, "log_lines": lines[0]})
    except Exception as exc:  # told to the parent, which fails the bench
        _say({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await workloads.close()
        await drivers.containers.close()
        await drivers.hypervisor.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="the agent child of the workload bench")
    parser.add_argument("--node", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--image", required=True, help="the BenchImage as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.node, args.root, BenchImage(**json.loads(args.image))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
