"""``make bench`` figures of the node image booted under QEMU (issue 10).

1. Boot: from power-on (QEMU spawned) to systemd's multi-user target, to eve-agent's READY and
   to the first config applied, in a node of the node image (``make image``, booted by
   tools/node_vm.py: OVMF, swtpm, TCG here) against a test controller on the host; beside the
   boot of the same image with the agent masked, power-on to the multi-user target.  The
   reference boots a copy of the image whose only change is ``systemd.mask=eve-agent.service``
   on the kernel command line (systemd-boot's loader entry in the ESP, rewritten with mtools),
   so both are first boots of the same system.
2. Idle: the agent's RSS, PSS and CPU (its threads and reaped children) inside the node once it
   has onboarded, attested and reported, after a settling time, over an idle window; beside a
   bare Python started in the same node, by the agent's own interpreter, with the same imports
   (``agent.cli``, ``agent.daemon``, ``pyroute2`` and every extension module mapped into the
   running agent), measured over the same window.

Times since power-on.  Power-on is the host's monotonic clock when QEMU is spawned.  Guest
times are its ``CLOCK_MONOTONIC`` (systemd's ``*TimestampMonotonic`` of a unit, the journal's
``__MONOTONIC_TIMESTAMP``), which starts near zero when the guest kernel starts its clock; the
host time of that zero is found by asking the guest agent for the guest's real-time clock
(``guest-get-time``) between two readings of the host's monotonic clock (the sample with the
shortest round trip is kept; half of it is the uncertainty, a few ms) and subtracting the guest's
real-time minus monotonic difference, read by one process in the guest.  Both clocks of a TCG
guest follow the host's (QEMU's virtual clock), and nothing steps the guest's clock (no network
time).  Two checks of that conversion are printed: when systemd-boot handed over to the kernel
by its own TSC measure (``FirmwareTimestampMonotonic``; before the kernel's decompression, so a
little earlier; systemd-boot reported none under TCG here), and the host time at which
the serial console showed "Reached target multi-user.target", which systemd prints as it
happens (only while it still prints status lines there: once serial-getty@ttyS0 has started
it printed none, so a boot whose target comes later has no such line).

The first config applied: the agent's journal line ``config items changed: ...`` that follows its
``new config ...`` line: the engine published the config's items (the bench's config sets
``timer.config.interval`` to EVE's default, 60 s, so the node idles as deployed).

Booting a node takes the machine-wide QEMU lock (``/tmp/eve-qemu.lock``, one TCG guest at a
time on small hosts), waiting for it; ``EVE_QEMU_LOCK=`` (empty) when the caller holds it
(``flock /tmp/eve-qemu.lock ...``).  Needs root, QEMU, OVMF, swtpm, mtools and the image's
tools; about 6 minutes with a cached image.

Run alone: ``flock /tmp/eve-qemu.lock env EVE_QEMU_LOCK= .venv/bin/python tools/bench_node.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.node_vm import (  # noqa: E402 - after the path
    CONTROLLER_ADDRESS,
    OVMF_CODE,
    OVMF_VARS,
    Node,
    NodeImage,
    NodeVmError,
    Provisioning,
    kvm_works,
)

Row = tuple[str, str, str, str]

#: The lock every process booting a QEMU node on this machine takes.
QEMU_LOCK = Path("/tmp/eve-qemu.lock")
#: The kernel command-line option of the reference boot (systemd-debug-generator masks the unit).
MASK_OPTION = "systemd.mask=eve-agent.service"
#: The config every node gets: one config item, EVE's default value, so the agent idles as
#: deployed and logs the item's change when the engine publishes it (the "applied" mark).
BENCH_CONFIG = {"configItems": [{"key": "timer.config.interval", "value": "60"}]}
#: PCRs the attestation policy checks: the default set without IMA's PCR 10 (docs/node-image.md).
POLICY_PCRS = "0-4,6-9,11-14"
BOOT_TIMEOUT = 300.0
TOOLS = ("qemu-system-x86_64", "qemu-img", "qemu-io", "swtpm", "swtpm_setup", "mkfs.vfat",
         "mcopy", "mtype")  # fmt: skip
#: What systemd prints on the console when the multi-user target is reached (systemd 252 shows
#: the unit's name and description; older ones only the description).
MULTI_USER_SEEN = ("Reached target multi-user.target", "Reached target Multi-User System")
#: Terminal escapes (colours) on the console.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: The reference's program: the imports named in argv[1:], then a ready mark, then sleep.
REFERENCE_PROGRAM = (
    "import importlib, sys, time\n"
    "done = []\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "        done.append(name)\n"
    "    except Exception as exc:\n"
    "        done.append(f'!{name}: {exc}')\n"
    "open('/run/bench-ref.ready', 'w').write('\\n'.join(done) + f'\\n#{len(sys.modules)}\\n')\n"
    "time.sleep(3600)\n"
)
#: Always imported by the reference: the agent's own closure, and pyroute2, which its netlink
#: driver imports on first use (every node observes its ports); pure Python, so it cannot be
#: told from the agent's memory map.
REFERENCE_IMPORTS = ("agent.cli", "agent.daemon", "pyroute2")


class BenchNodeError(RuntimeError):
    """The node bench could not run or a node did not behave; the message says why."""


# --- the QEMU lock --------------------------------------------------------------------------


@contextlib.contextmanager
def qemu_lock() -> Iterator[None]:
    """Hold the machine-wide QEMU lock (``$EVE_QEMU_LOCK``, default :data:`QEMU_LOCK`; empty:
    the caller holds it) for the block, waiting for it."""
    path = os.environ.get("EVE_QEMU_LOCK", str(QEMU_LOCK))
    if not path:
        yield
        return
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"node bench: waiting for {path} (another QEMU node is running)",
                  file=sys.stderr, flush=True)  # fmt: skip
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- host-side observation of a node ------------------------------------------------------


class TimedNode(Node):
    """A node that notes the host's monotonic time when QEMU is spawned (power-on):
    :meth:`Node.qemu_argv` is called right before the spawn, after the disk, the firmware's
    variables and the TPM are ready."""

    powered_on: float | None = None

    def qemu_argv(self, accel: str) -> list[str]:
        self.powered_on = time.monotonic()
        return super().qemu_argv(accel)


class ConsoleWatch:
    """Notes the host's monotonic time at which each of some texts first shows on a node's
    serial console (the file QEMU writes it to), polling the file every ``interval`` s in a
    thread."""

    def __init__(self, path: Path, texts: Mapping[str, Sequence[str]], interval: float = 0.02):
        self.path = path
        self.texts = texts
        self.interval = interval
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-watch", daemon=True)

    def __enter__(self) -> ConsoleWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        offset = 0
        tail = ""
        while not self._stop.wait(self.interval) and len(self.seen) < len(self.texts):
            try:
                with open(self.path, "rb") as console:
                    console.seek(offset)
                    data = console.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            now = time.monotonic()
            offset += len(data)
            # Keep a line's start across reads; a text never spans lines.  systemd colours
            # the unit's name: the escapes go before matching.
            raw = tail + data.decode(errors="replace")
            tail = raw[raw.rfind("\n") + 1 :]
            text = ANSI_ESCAPE.sub("", raw)
            for name, needles in self.texts.items():
                if name not in self.seen and any(n in text for n in needles):
                    self.seen[name] = now


@dataclass(frozen=True)
class ClockSync:
    """Host monotonic time (s) of the guest's CLOCK_MONOTONIC zero, within ``uncertainty``."""

    zero: float
    uncertainty: float

    def host_time(self, guest_monotonic_us: int) -> float:
        return self.zero + guest_monotonic_us / 1e6


def in_guest(node: Node, *argv: str, timeout: float = 60.0) -> str:
    """Stdout of ``argv`` run in the guest; BenchNodeError when it fails."""
    result = node.exec(argv, timeout=timeout)
    if result.exitcode != 0:
        raise BenchNodeError(f"{' '.join(argv)} in {node.dir.name}: exit {result.exitcode}: "
                             f"{result.stderr.strip()[-500:]}")  # fmt: skip
    return result.stdout


def sync_clocks(node: Node, samples: int = 9) -> ClockSync:
    """The host time of the guest's monotonic zero (see the module docstring)."""
    program = ("import time; print(time.clock_gettime_ns(time.CLOCK_REALTIME) - "
               "time.clock_gettime_ns(time.CLOCK_MONOTONIC))")  # fmt: skip
    real_minus_mono = int(in_guest(node, "/opt/eve-agent/bin/python", "-c", program))
    best: tuple[float, float] | None = None  # (round trip, host time - guest monotonic)
    for _ in range(samples):
        before = time.monotonic()
        # guest-get-time reads the guest's CLOCK_REALTIME (ns) in the guest agent itself.
        (real_ns,) = node._qga([{"execute": "guest-get-time"}], timeout=10)
        after = time.monotonic()
        guest_mono = (int(real_ns) - real_minus_mono) / 1e9
        trip = after - before
        if best is None or trip < best[0]:
            best = (trip, (before + after) / 2 - guest_mono)
    assert best is not None
    return ClockSync(zero=best[1], uncertainty=best[0] / 2)


def systemd_show(node: Node, unit: str | None, *properties: str) -> dict[str, str]:
    """``systemctl show [unit] -pP...`` in the guest, as a dict (the manager's without unit)."""
    argv = ["systemctl", "show", *([unit] if unit else []), *(f"-p{p}" for p in properties)]
    out = in_guest(node, *argv)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(what: str, timeout: float, interval: float, probe: Any) -> Any:
    """Call ``probe`` until it returns something truthy; BenchNodeError after ``timeout``.
    A NodeVmError or BenchNodeError from the probe (the guest agent or systemd not up yet)
    counts as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (NodeVmError, BenchNodeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise BenchNodeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def multi_user_reached(node: Node) -> int:
    """Guest monotonic µs at which multi-user.target became active (0: not yet)."""
    if not node.guest_agent_ready():
        return 0
    shown = systemd_show(node, "multi-user.target", "ActiveEnterTimestampMonotonic")
    return int(shown.get("ActiveEnterTimestampMonotonic") or 0)


@dataclass
class BootTimes:
    """Seconds since power-on of what a boot reached, and the conversion's checks."""

    accel: str
    kernel_zero: float
    sync_uncertainty: float
    loader_handover: float | None
    multi_user: float
    multi_user_console: float | None
    agent_started: float | None = None
    agent_ready: float | None = None
    onboarded: float | None = None
    attested: float | None = None
    refused_quotes: int = 0
    config_received: float | None = None
    config_applied: float | None = None


def boot_times(node: TimedNode, watch: ConsoleWatch, accel: str) -> tuple[BootTimes, ClockSync]:
    """Once the node's multi-user target is reached: the manager's and that target's times,
    converted to seconds since power-on, and the clock conversion used."""
    assert node.powered_on is not None
    reached = wait_until("the multi-user target", BOOT_TIMEOUT, 1.0,
                         lambda: multi_user_reached(node))  # fmt: skip
    sync = sync_clocks(node)
    since = node.powered_on
    manager = systemd_show(node, None, "FirmwareTimestampMonotonic", "LoaderTimestampMonotonic")
    firmware_us = int(manager.get("FirmwareTimestampMonotonic") or 0)
    console = watch.seen.get("multi-user")
    times = BootTimes(
        accel=accel,
        kernel_zero=sync.zero - since,
        sync_uncertainty=sync.uncertainty,
        loader_handover=firmware_us / 1e6 if firmware_us else None,
        multi_user=sync.host_time(reached) - since,
        multi_user_console=console - since if console is not None else None,
    )
    return times, sync


# --- the agent's node -----------------------------------------------------------------------


def journal(node: Node, unit: str) -> list[dict[str, Any]]:
    out = in_guest(node, "journalctl", "-u", unit, "-o", "json", "--no-pager")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@dataclass(frozen=True)
class AgentMarks:
    """Guest monotonic µs of the agent's journal lines that mark its way to the first config."""

    onboarded: int | None
    attested: int | None
    refused_quotes: int
    config_received: int
    config_applied: int


def agent_marks(entries: list[dict[str, Any]]) -> AgentMarks | None:
    """The marks in the agent's journal; None until the first config is applied: the first
    ``new config`` line (received and verified), then the first ``config items changed`` line
    naming timer.config.interval (the engine published the config's items).  Also the first
    ``onboarded:`` and ``attestation complete`` lines and how many quotes were refused before
    the config (``attestation failed``: the controller's policy checks PCR 10 until the bench
    sets it, docs/node-image.md)."""
    first: dict[str, int] = {}
    refused = 0
    for entry in entries:
        message = entry.get("MESSAGE")
        if not isinstance(message, str):
            continue
        stamp = int(entry["__MONOTONIC_TIMESTAMP"])
        received = first.get("received")
        for key, text in (
            ("onboarded", "onboarded: device UUID"),
            ("attested", "attestation complete"),
            ("received", "new config "),
        ):
            if key not in first and text in message:
                first[key] = stamp
        if received is None and ": attestation failed: " in message:
            refused += 1
        if (received is not None and "config items changed:" in message
                and "timer.config.interval" in message):  # fmt: skip
            return AgentMarks(first.get("onboarded"), first.get("attested"), refused,
                              received, stamp)  # fmt: skip
    return None


def measure_agent_boot(node: TimedNode, watch: ConsoleWatch, ctl: Any, accel: str) -> BootTimes:
    """Boot the agent's node and wait for its first config; its times since power-on."""
    node.start()

    def registered() -> str | None:
        devices = ctl.devices()
        return str(devices[0]["uuid"]) if devices else None

    uuid = wait_until("the node to register", BOOT_TIMEOUT, 2.0, registered)
    ctl.cli("attest", "policy", uuid, "--pcrs", POLICY_PCRS)
    times, sync = boot_times(node, watch, accel)
    assert node.powered_on is not None
    since = node.powered_on
    unit = systemd_show(node, "eve-agent", "ExecMainStartTimestampMonotonic",
                        "ActiveEnterTimestampMonotonic", "ActiveState", "NRestarts")  # fmt: skip
    if unit["ActiveState"] != "active" or unit["NRestarts"] != "0":
        raise BenchNodeError(f"eve-agent is not simply active: {unit}")
    times.agent_started = sync.host_time(int(unit["ExecMainStartTimestampMonotonic"])) - since
    times.agent_ready = sync.host_time(int(unit["ActiveEnterTimestampMonotonic"])) - since
    marks = wait_until("the first config applied (the agent's journal)", 180, 2.0,
                       lambda: agent_marks(journal(node, "eve-agent")))  # fmt: skip
    status = json.loads(in_guest(node, "eve-agent", "status", "--json"))
    if not (status.get("config_hash") and status.get("config_applied_ok")):
        raise BenchNodeError(f"the agent's status shows no applied config: {status}")

    def since_power_on(stamp: int | None) -> float | None:
        return None if stamp is None else sync.host_time(stamp) - since

    times.onboarded = since_power_on(marks.onboarded)
    times.attested = since_power_on(marks.attested)
    times.refused_quotes = marks.refused_quotes
    times.config_received = since_power_on(marks.config_received)
    times.config_applied = since_power_on(marks.config_applied)
    wait_until("the node to attest", 180, 2.0, lambda: attested(ctl, uuid))
    wait_until("device info and metrics", 120, 2.0,
               lambda: ctl.json_lines("info", uuid, "--last", "1")
               and ctl.json_lines("metrics", uuid, "--last", "1"))  # fmt: skip
    return times


def attested(ctl: Any, uuid: str) -> bool:
    shown = json.loads(ctl.cli("device", "show", uuid, "--json").stdout)
    return bool(shown.get("attest_state") == "attested")


# --- idle figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One process's memory (KiB) and CPU ticks (its own and its reaped children's)."""

    rss_kib: int
    pss_kib: int
    ticks: int


def sample_processes(node: Node, pids: Sequence[int]) -> tuple[float, dict[int, ProcSample]]:
    """The guest's uptime (s) and each process's figures, read by one shell in the guest."""
    script = (
        "cat /proc/uptime; for p in " + " ".join(str(p) for p in pids) + "; do "
        'echo "== $p"; cat /proc/$p/stat; grep "^VmRSS:" /proc/$p/status; '
        'grep "^Pss:" /proc/$p/smaps_rollup; done'
    )
    out = in_guest(node, "sh", "-c", script)
    lines = out.splitlines()
    uptime = float(lines[0].split()[0])
    found: dict[int, ProcSample] = {}
    for block in out.split("== ")[1:]:
        head, stat, *rest = block.splitlines()
        fields = stat[stat.rfind(")") + 2 :].split()  # fields[0] is stat's field 3 (state)
        if fields[0] == "Z":
            raise BenchNodeError(f"process {head} is a zombie")
        ticks = sum(int(fields[n - 3]) for n in (14, 15, 16, 17))  # utime stime cutime cstime
        values = {line.split(":")[0]: int(line.split()[1]) for line in rest if ":" in line}
        found[int(head)] = ProcSample(values["VmRSS"], values["Pss"], ticks)
    if sorted(found) != sorted(pids):
        raise BenchNodeError(f"processes {sorted(set(pids) - set(found))} are gone")
    return uptime, found


def extension_modules(maps: str) -> list[str]:
    """Module names of the Python extension modules in a process's ``/proc/<pid>/maps``
    (site-packages, Debian's dist-packages, the standard library's lib-dynload), and
    ``nftables`` when libnftables is mapped (Debian's binding loads it with ctypes)."""
    names: set[str] = set()
    for line in maps.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "libnftables.so" in path:
            names.add("nftables")
        if not path.endswith(".so"):
            continue
        base = Path(path).name
        if "/lib-dynload/" in path:
            names.add(base.split(".")[0])
            continue
        for root in ("/site-packages/", "/dist-packages/"):
            if root in path and (".cpython-" in base or base.endswith(".abi3.so")):
                relative = Path(path.split(root, 1)[1])
                names.add(".".join([*relative.parent.parts, base.split(".")[0]]))
    return sorted(names)


@dataclass
class IdleFigures:
    agent: tuple[ProcSample, ProcSample]
    reference: tuple[ProcSample, ProcSample]
    seconds: float
    clock_ticks: int
    imports: list[str]
    modules: int


def measure_idle(node: Node, settle: float, window: float) -> IdleFigures:
    """Start the reference in the guest, let both settle, then sample both over ``window``."""
    agent_pid = int(systemd_show(node, "eve-agent", "MainPID")["MainPID"])
    maps = in_guest(node, "cat", f"/proc/{agent_pid}/maps")
    imports = [*REFERENCE_IMPORTS, *extension_modules(maps)]
    # A session of its own (setsid), output to a file: the guest agent's exec returns at once.
    script = ('setsid /opt/eve-agent/bin/python -c "$0" "$@" </dev/null '
              '>/run/bench-ref.log 2>&1 & echo $!')  # fmt: skip
    in_guest(node, "rm", "-f", "/run/bench-ref.ready")
    ref_pid = int(in_guest(node, "sh", "-c", script, REFERENCE_PROGRAM, *imports))
    ready = wait_until("the reference's imports", 120, 1.0,
                       lambda: node.exec(["cat", "/run/bench-ref.ready"]).stdout)  # fmt: skip
    imported = ready.splitlines()
    failed = [line for line in imported if line.startswith("!")]
    if failed:
        print("node bench: the reference could not import " + "; ".join(failed), file=sys.stderr)
    modules = int(imported[-1].lstrip("#"))
    time.sleep(settle)
    clock_ticks = int(in_guest(node, "getconf", "CLK_TCK"))
    t0, first = sample_processes(node, [agent_pid, ref_pid])
    time.sleep(window)
    t1, last = sample_processes(node, [agent_pid, ref_pid])
    if int(systemd_show(node, "eve-agent", "MainPID")["MainPID"]) != agent_pid:
        raise BenchNodeError("the agent restarted during the idle window")
    with contextlib.suppress(BenchNodeError):
        in_guest(node, "kill", str(ref_pid))
    return IdleFigures(
        agent=(first[agent_pid], last[agent_pid]),
        reference=(first[ref_pid], last[ref_pid]),
        seconds=t1 - t0,
        clock_ticks=clock_ticks,
        imports=[line for line in imported[:-1] if not line.startswith("!")],
        modules=modules,
    )


# --- the reference boot ---------------------------------------------------------------------


def masked_copy(image: NodeImage, workdir: Path) -> NodeImage:
    """A copy of the image (sparse) whose loader entry adds :data:`MASK_OPTION` to the kernel
    command line; nothing else differs."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(image.disk.resolve()), str(disk)], check=True)
    start, _size = image.partition("EFI System")
    esp = f"{disk}@@{start}"

    def mtools(*argv: str) -> str:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchNodeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    loader = mtools("mtype", "-i", esp, "::loader/loader.conf")
    entry_name = next(line.split()[1] for line in loader.splitlines()
                      if line.startswith("default"))  # fmt: skip
    entry = mtools("mtype", "-i", esp, f"::loader/entries/{entry_name}")
    lines = entry.splitlines()
    options = [i for i, line in enumerate(lines) if line.startswith("options")]
    if len(options) != 1:
        raise BenchNodeError(f"the loader entry {entry_name} has no single options line")
    lines[options[0]] += f" {MASK_OPTION}"
    patched = workdir / entry_name
    patched.write_text("\n".join(lines) + "\n")
    mtools("mcopy", "-o", "-i", esp, str(patched), f"::loader/entries/{entry_name}")
    if MASK_OPTION not in mtools("mtype", "-i", esp, f"::loader/entries/{entry_name}"):
        raise BenchNodeError("the patched loader entry did not stick")
    return NodeImage(disk, image.layout)


def measure_reference_boot(node: TimedNode, watch: ConsoleWatch, accel: str) -> BootTimes:
    node.start()
    times, _sync = boot_times(node, watch, accel)
    unit = systemd_show(node, "eve-agent", "LoadState", "ActiveState")
    if unit != {"LoadState": "masked", "ActiveState": "inactive"}:
        raise BenchNodeError(f"the reference's agent is not masked and inactive: {unit}")
    cmdline = in_guest(node, "cat", "/proc/cmdline")
    if MASK_OPTION not in cmdline:
        raise BenchNodeError(f"the reference booted without {MASK_OPTION}: {cmdline}")
    return times


# --- the bench ------------------------------------------------------------------------------


def check_host() -> None:
    """BenchNodeError naming what this host lacks to boot nodes."""
    if os.geteuid() != 0:
        raise BenchNodeError("needs root (the image build, swtpm, QEMU)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [str(f) for f in (OVMF_CODE, OVMF_VARS) if not f.exists()]
    if missing:
        raise BenchNodeError(f"missing {', '.join(missing)} (tools/deps.sh)")


def run_nodes(workdir: Path, accel: str, settle: float, window: float
              ) -> tuple[BootTimes, BootTimes, IdleFigures]:  # fmt: skip
    """The agent's node (boot, first config, idle) then the reference boot, one at a time."""
    from tests.e2e.harness import Controller

    image = NodeImage.build()
    if accel == "auto":
        accel = "kvm" if kvm_works() else "tcg"
    print(f"node bench: {image.disk} (eve-agent {image.layout.get('eve_agent')}, kernel "
          f"{image.layout.get('kernel')}), {accel}", file=sys.stderr, flush=True)  # fmt: skip
    ctl = Controller(workdir / "controller")
    ctl.cli("init", "--ip", CONTROLLER_ADDRESS)
    ctl.cli("onboard", "add", "--cert", str(ctl.certs / "onboard.cert.pem"), "--any-serial")
    ctl.set_default_config(BENCH_CONFIG)
    ctl.start()
    try:
        with qemu_lock():
            provisioning = Provisioning.from_certs(ctl.certs, ctl.port, "bench-node-agent")
            node = TimedNode(image, workdir / "node-agent", provisioning,
                             controller_port=ctl.port, accel=accel)  # fmt: skip
            try:
                with ConsoleWatch(node.console_log, {"multi-user": MULTI_USER_SEEN}) as watch:
                    agent_times = measure_agent_boot(node, watch, ctl, accel)
                idle = measure_idle(node, settle, window)
            except (BenchNodeError, NodeVmError) as exc:
                tail = "\n".join(node.console().splitlines()[-30:])
                raise BenchNodeError(f"{exc}\n--- console (tail)\n{tail}") from exc
            finally:
                node.stop()
            reference_image = masked_copy(image, workdir / "masked-image")
            provisioning = Provisioning.from_certs(ctl.certs, ctl.port, "bench-node-masked")
            ref = TimedNode(reference_image, workdir / "node-masked", provisioning,
                            controller_port=ctl.port, accel=accel)  # fmt: skip
            try:
                with ConsoleWatch(ref.console_log, {"multi-user": MULTI_USER_SEEN}) as watch:
                    ref_times = measure_reference_boot(ref, watch, accel)
            finally:
                ref.stop()
    finally:
        ctl.stop()
    return agent_times, ref_times, idle


def rows_of(agent: BootTimes, ref: BootTimes, idle: IdleFigures) -> list[Row]:
    """The table's rows (see :func:`bench_node`)."""
    s = "{:.1f} s".format
    assert agent.agent_ready is not None and agent.config_applied is not None
    assert agent.config_received is not None and agent.agent_started is not None
    base = ref.multi_user
    masked = f"{s(base)} (multi-user, same image, agent masked)"

    def console(t: BootTimes) -> str:
        if t.multi_user_console is None:
            return "not printed"
        return s(t.multi_user_console)

    def opt(t: float | None) -> str:
        return s(t) if t is not None else "-"

    def loader(t: BootTimes) -> str:
        return s(t.loader_handover) if t.loader_handover is not None else "none reported"

    a_rss, a_pss = idle.agent[1].rss_kib, idle.agent[1].pss_kib
    r_rss, r_pss = idle.reference[1].rss_kib, idle.reference[1].pss_kib

    def cpu(pair: tuple[ProcSample, ProcSample]) -> float:
        return (pair[1].ticks - pair[0].ticks) / idle.clock_ticks / idle.seconds * 100

    a_cpu, r_cpu = cpu(idle.agent), cpu(idle.reference)
    mib = "{:.1f} MiB".format
    return [
        (f"node boot ({agent.accel.upper()}, 2 vCPUs): power-on -> multi-user target",
         s(agent.multi_user), masked, f"+{agent.multi_user - base:.1f} s"),
        ("  power-on -> eve-agent READY (unit active; started at "
         f"{s(agent.agent_started)})", s(agent.agent_ready), masked,
         f"+{agent.agent_ready - base:.1f} s"),
        (f"  power-on -> first config applied (onboarded at {opt(agent.onboarded)}, attested "
         f"at {opt(agent.attested)} after {agent.refused_quotes} refused quote(s), config "
         f"received at {s(agent.config_received)})",
         s(agent.config_applied), masked, f"+{agent.config_applied - base:.1f} s"),
        ("  check: multi-user seen on the serial console (host clock)", console(agent),
         console(ref), ""),
        ("  check: kernel clock zero (host sync) / loader handover (systemd-boot TSC)",
         f"{s(agent.kernel_zero)} / {loader(agent)} (+-{agent.sync_uncertainty * 1e3:.0f} ms)",
         f"{s(ref.kernel_zero)} / {loader(ref)} (+-{ref.sync_uncertainty * 1e3:.0f} ms)", ""),
        (f"agent RSS in the node, idle (onboarded, attested, reporting; {len(idle.imports)} "
         f"imports, {idle.modules} modules in the reference)", mib(a_rss / 1024),
         f"{mib(r_rss / 1024)} (bare python, same imports, same node)",
         f"+{(a_rss - r_rss) / 1024:.1f} MiB"),
        ("  PSS (shared pages split among the processes)", mib(a_pss / 1024),
         f"{mib(r_pss / 1024)} (bare python)", f"+{(a_pss - r_pss) / 1024:.1f} MiB"),
        (f"  CPU over {idle.seconds:.0f} s idle (own + reaped children)",
         f"{a_cpu:.2f} % of a core", f"{r_cpu:.2f} % (bare python)",
         f"+{a_cpu - r_cpu:.2f} %"),
    ]  # fmt: skip


def bench_node(accel: str = "auto", settle: float = 60.0, window: float = 60.0) -> list[Row]:
    """The figures of the module docstring, as rows (figure, eve-agent, reference, ratio).
    Raises BenchNodeError when they cannot be measured (a missing tool, a node that fails)."""
    check_host()
    with tempfile.TemporaryDirectory(prefix="eve-bench-node-") as tmp:
        agent, ref, idle = run_nodes(Path(tmp), accel, settle, window)
    print("node bench: the reference imported " + ", ".join(idle.imports), file=sys.stderr)
    return rows_of(agent, ref, idle)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    parser.add_argument("--settle", type=float, default=60.0, help="idle settling time, s")
    parser.add_argument("--window", type=float, default=60.0, help="idle CPU window, s")
    args = parser.parse_args(argv)
    try:
        rows = bench_node(args.accel, args.settle, args.window)
    except BenchNodeError as exc:
        print(f"node bench: {exc}", file=sys.stderr)
        return 1
    for row in rows:
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
