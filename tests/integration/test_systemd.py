# SPDX-License-Identifier: Apache-2.0
"""The agent under a real systemd: READY before the controller answers, and the watchdog
restarting a hung agent.

systemd is not PID 1 on this machine (nor in CI), so each test boots its own: a
``/lib/systemd/systemd --system`` that is PID 1 of fresh PID, mount, UTS, IPC and cgroup
namespaces (``unshare``), in a cgroup2 subtree of its own, with ``container=`` set so it
behaves as in a container.  The network namespace is the host's, so the agent inside reaches
the test's silent "controller" on 127.0.0.1.  Inside the private mount namespace the test gives
it its own ``/run`` (where the unit and its drop-in are installed: ``/run/systemd/system``),
its own ``/dev`` (device nodes bound from the host; ``/dev/console`` is a pty the test reads,
so systemd's own log lands in ``systemd.log``), its own cgroup2 mount, and read-only ``/sys``
and ``/proc/sys``.  Nothing is written on the host outside the test's temporary directory and
the cgroup, and everything ends with the namespace: ``systemctl poweroff``, then
``cgroup.kill`` on the subtree, then the cgroups are removed.

The unit under test is ``systemd/eve-agent.service`` byte for byte, with a drop-in that points
``ExecStart=`` at this venv's ``eve-agent`` in software mode on a node root in the temporary
directory, shortens ``WatchdogSec=`` and ``RestartSec=``, sends the agent's output to a file
(no journald) and drops the default dependencies (they would pull the host's
``sysinit.target`` - udev, tmpfiles, sysctl - into this systemd).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.e2e.harness import Controller, wait_for

RequireService = Callable[[str, str], NoReturn]

REPO = Path(__file__).resolve().parents[2]
UNIT = "eve-agent.service"
SYSTEMD = Path("/lib/systemd/systemd")
BIN = Path(sys.executable).parent
#: Short enough for a quick test, long enough for a loaded 2-core CI machine: the agent pings
#: every WatchdogSec/2 (from WATCHDOG_USEC).
WATCHDOG_SEC = 6
#: From ``systemctl start`` to READY=1 with a controller that never answers.
READY_TIMEOUT = 15.0

# Runs as PID 1 of the new namespaces (before exec'ing systemd), with $1 the work directory
# and $2 the pty to use as /dev/console.  unshare has already made every mount private.
INNER = r"""
set -eu
work=$1 console=$2
mount -n --make-rprivate /
# /dev: a tmpfs with the host's harmless device nodes bound in; the console is the test's pty.
dev=$work/dev
mkdir -p "$dev"
mount -n -t tmpfs -o mode=0755,size=1m,nosuid evetest-dev "$dev"
for node in null zero full random urandom tty; do
    touch "$dev/$node"
    mount -n --bind "/dev/$node" "$dev/$node"
done
touch "$dev/console"
mount -n --bind "$console" "$dev/console"
mkdir -p "$dev/shm" "$dev/pts"
mount -n -t tmpfs -o mode=1777,size=16m,nosuid,nodev evetest-shm "$dev/shm"
ln -s /proc/self/fd "$dev/fd"
ln -s /proc/self/fd/0 "$dev/stdin"
ln -s /proc/self/fd/1 "$dev/stdout"
ln -s /proc/self/fd/2 "$dev/stderr"
mount -n --move "$dev" /dev
# /run: the units of this test only; systemd's runtime state stays in the namespace.
mount -n -t tmpfs -o mode=0755,size=64m,nosuid,nodev evetest-run /run
mkdir -p /run/systemd/system
cp -R "$work/units/." /run/systemd/system/
# The kernel's knobs stay the host's: read-only, as in any container.
mount -n --bind /proc/sys /proc/sys
mount -n -o remount,bind,ro /proc/sys
mount -n -o remount,bind,ro /sys
# This namespace's root of the cgroup2 hierarchy (the subtree the test made) for systemd.
mount -n -t cgroup2 cgroup2 /sys/fs/cgroup
export container=evetest SYSTEMD_COLORS=0
exec "$3" --system --unit=evetest.target --log-level=info --show-status=no
"""

TARGET = """\
[Unit]
Description=evetest: the only thing this systemd starts by itself
"""

DROP_IN = """\
# Test drop-in (tests/integration/test_systemd.py)
[Unit]
# The default dependencies pull in the host's sysinit.target (udev, tmpfiles, sysctl...).
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStart=
ExecStart={agent} --root {root} run --no-tpm --log-level debug
WatchdogSec={watchdog}
RestartSec=1
WorkingDirectory={root}
# The agent of this checkout, whatever the venv's editable install points at.
Environment=PYTHONPATH={repo}
StandardOutput=append:{root}/agent.log
StandardError=inherit
# SIGABRT from the watchdog must not leave a core file (core_pattern is the host's).
LimitCORE=0
"""


def _need(require_service: RequireService) -> None:
    """Everything this test needs, or fail (services required) / skip with the reason."""
    if os.geteuid() != 0:
        require_service("systemd in namespaces", "needs root")
    for tool in ("unshare", "nsenter", "setpriv", "mount"):
        if shutil.which(tool) is None:
            require_service("systemd in namespaces", f"{tool} not on PATH (util-linux)")
    if not os.access(SYSTEMD, os.X_OK):
        require_service("systemd", f"{SYSTEMD} missing (Debian package systemd)")
    if _cgroup2_parent() is None:
        require_service("systemd in namespaces", "no writable cgroup2 hierarchy")


def _cgroup2_parent() -> Path | None:
    """The directory of this process's own cgroup in the cgroup2 hierarchy, if writable."""
    mount = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            mount = Path(left.split()[4])
            break
    if mount is None:
        return None
    own = next(
        (line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines()
         if line.startswith("0::")),
        "/",
    )  # fmt: skip
    parent = mount / own.lstrip("/")
    return parent if os.access(parent, os.W_OK) else None


def _remove_cgroup(path: Path, timeout: float = 10.0) -> None:
    """rmdir a cgroup subtree, deepest first; processes killed a moment ago may linger."""
    deadline = time.monotonic() + timeout
    while path.exists():
        dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        try:
            for d in [*dirs, path]:
                d.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _sweep_stale_cgroups(parent: Path, age: float = 600.0) -> None:
    """Remove the empty cgroups of test runs that were killed before their teardown."""
    for stale in parent.glob("evetest-systemd-*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > age:
                _remove_cgroup(stale, timeout=0)


class _PtyLog:
    """A pty whose output (systemd's console) is copied to a file by a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._copy, name="systemd-console", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        with open(self.path, "ab", buffering=0) as out:
            while True:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO once the slave is closed everywhere
                    return
                if not data:
                    return
                out.write(data.replace(b"\r\n", b"\n"))

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def close(self) -> None:
        os.close(self.slave)
        self._thread.join(5)
        os.close(self.master)


class Systemd:
    """systemd as PID 1 of its own namespaces; see the module docstring."""

    def __init__(self, work: Path, cgroup_parent: Path) -> None:
        self.work = work
        self.units = work / "units"
        self.units.mkdir(parents=True)
        (self.units / "evetest.target").write_text(TARGET)
        self.cgroup = cgroup_parent / f"evetest-systemd-{secrets.token_hex(4)}"
        self.console = _PtyLog(work / "systemd.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0  # the host's PID of the namespace's PID 1

    def start(self, timeout: float = 30.0) -> None:
        _sweep_stale_cgroups(self.cgroup.parent)
        self.cgroup.mkdir()
        with open(self.work / "unshare.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"', "sh",
                    str(self.cgroup),
                    # If pytest dies, unshare dies, and with it (--kill-child) the namespace.
                    "setpriv", "--pdeathsig", "KILL",
                    "unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--mount",
                    "--uts", "--ipc", "--cgroup",
                    "sh", "-c", INNER, "evetest-init",
                    str(self.work), self.console.name, str(SYSTEMD),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self._find_pid1, 10, "unshare to fork the namespace's PID 1")
        try:
            wait_for(self._booted, timeout, "systemd to boot")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nits log:\n{self.log()}") from None

    def _booted(self) -> bool:
        state = self.run("systemctl", "is-system-running").stdout.strip()
        return state in ("running", "degraded")

    def _find_pid1(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"unshare exited {self.proc.returncode}: {self.log()}")
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                self.pid1 = int(pids[0])
                # Still our shell until it has exec'ed systemd.
                return Path(f"/proc/{self.pid1}/exe").resolve() == SYSTEMD.resolve()
        return False

    def log(self) -> str:
        unshare = self.work / "unshare.log"
        own = unshare.read_text(errors="replace") if unshare.exists() else ""
        return own + self.console.text()

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespaces of this systemd (its PIDs, its /run)."""
        assert self.pid1
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "--mount", "--pid", "--uts", "--ipc", "--cgroup",
             "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def systemctl(self, *args: str) -> str:
        proc = self.run("systemctl", *args)
        assert proc.returncode == 0, f"systemctl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "--property=" + ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        """Power off; what is left is killed through the cgroup; the cgroups are removed."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                if self.pid1:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.run("systemctl", "poweroff", "--no-block", timeout=10)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    if self.cgroup.exists():
                        (self.cgroup / "cgroup.kill").write_text("1")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            if self.cgroup.exists():
                with contextlib.suppress(OSError):
                    (self.cgroup / "cgroup.kill").write_text("1")
                _remove_cgroup(self.cgroup)
            self.console.close()


class SilentController:
    """A TCP listener on loopback that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in [*self.accepted, self.sock]:
            conn.close()


@pytest.fixture
def systemd(tmp_path: Path, require_service: RequireService) -> Iterator[Systemd]:
    _need(require_service)
    parent = _cgroup2_parent()
    assert parent is not None
    instance = Systemd(tmp_path / "systemd", parent)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
    assert not instance.cgroup.exists()


@pytest.fixture
def silent_controller() -> Iterator[SilentController]:
    ctl = SilentController()
    try:
        yield ctl
    finally:
        ctl.close()


@pytest.fixture
def agent_unit(tmp_path: Path, systemd: Systemd, silent_controller: SilentController) -> str:
    """The repo's unit plus the test drop-in, installed in ``systemd``; a node root whose
    controller is the silent one.  Returns the node root."""
    ctl = Controller(tmp_path / "controller")
    ctl.cli("init")
    root = tmp_path / "node"
    config = root / "config"
    config.mkdir(parents=True)
    (config / "server").write_text(silent_controller.address + "\n")
    for name in ("root-certificate.pem", "onboard.cert.pem", "onboard.key.pem"):
        shutil.copy(ctl.certs / name, config / name)
    (config / "soft_serial").write_text("systemd-test-1\n")

    shutil.copy(REPO / "systemd" / UNIT, systemd.units / UNIT)
    drop_in = systemd.units / f"{UNIT}.d"
    drop_in.mkdir()
    (drop_in / "evetest.conf").write_text(
        DROP_IN.format(agent=BIN / "eve-agent", root=root, repo=REPO, watchdog=WATCHDOG_SEC)
    )
    # network-online.target would pull in whatever the host has for it; ordering stays.
    (systemd.units / "network-online.target").symlink_to("/dev/null")
    # The units were copied into /run/systemd/system at boot; copy again and reload.
    proc = systemd.run("cp", "-R", f"{systemd.units}/.", "/run/systemd/system/")
    assert proc.returncode == 0, proc.stderr
    systemd.systemctl("daemon-reload")
    return str(root)


def _agent_log(root: str) -> str:
    path = Path(root) / "agent.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def test_ready_before_the_controller_answers(
    systemd: Systemd, agent_unit: str, silent_controller: SilentController
) -> None:
    """READY=1 once identity is loaded and the link runs, with the controller silent; and
    the watchdog keeps being fed while the link waits for it."""
    systemd.systemctl("start", "--no-block", UNIT)
    props = systemd.show(UNIT, "Type", "NotifyAccess", "WatchdogUSec", "FragmentPath")
    assert props["Type"] == "notify", props
    assert props["NotifyAccess"] == "main", props
    assert props["WatchdogUSec"] == f"{WATCHDOG_SEC}s", props
    assert props["FragmentPath"] == f"/run/systemd/system/{UNIT}", props

    def diagnosis() -> str:
        unit = systemd.show(UNIT, "ActiveState", "SubState", "Result", "NRestarts")
        return (
            f"unit: {unit}\nagent log:\n{_agent_log(agent_unit)}\n"
            f"systemd log:\n{systemd.console.text()}"
        )

    def state() -> str:
        return systemd.show(UNIT, "ActiveState")["ActiveState"]

    try:
        wait_for(lambda: state() == "active", READY_TIMEOUT, "READY=1 (ActiveState=active)")
        # It is the controller that does not answer, not the agent that does not ask.
        wait_for(lambda: silent_controller.accepted, 15, "the agent to connect to its controller")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis()}") from None
    assert not (Path(agent_unit) / "persist" / "status" / "uuid").exists()
    # Waiting for a controller is progress: no watchdog restart over a whole WatchdogSec.
    time.sleep(WATCHDOG_SEC + 1)
    props = systemd.show(UNIT, "ActiveState", "SubState", "NRestarts")
    assert props == {"ActiveState": "active", "SubState": "running", "NRestarts": "0"}, diagnosis()
    assert "Watchdog timeout" not in systemd.console.text(), diagnosis()
    # The real systemd parsed the unit and the drop-in without a complaint.
    complaints = [
        line for line in systemd.console.text().splitlines() if f"/{UNIT}" in line.split(" ")[0]
    ]
    assert not complaints, "\n".join(complaints)


def test_watchdog_restarts_a_hung_agent(systemd: Systemd, agent_unit: str) -> None:
    """SIGSTOP the agent: its pings stop, systemd's watchdog kills it and starts a new one."""
    systemd.systemctl("start", "--no-block", UNIT)

    def pinged() -> int:
        # MainPID of the namespace; the watchdog timestamp moves with every WATCHDOG=1.
        props = systemd.show(UNIT, "MainPID", "WatchdogTimestampMonotonic")
        if props["WatchdogTimestampMonotonic"] in ("", "0"):
            return 0
        return int(props["MainPID"])

    first = wait_for(pinged, 30, f"a first WATCHDOG=1\n{_agent_log(agent_unit)}")
    assert isinstance(first, int) and first > 0
    assert systemd.show(UNIT, "NRestarts")["NRestarts"] == "0"

    stopped = time.monotonic()
    proc = systemd.run("kill", "-STOP", str(first))
    assert proc.returncode == 0, proc.stderr

    def restarted() -> int:
        props = systemd.show(UNIT, "MainPID", "NRestarts")
        pid = int(props["MainPID"])
        return pid if int(props["NRestarts"]) >= 1 and pid not in (0, first) else 0

    second = wait_for(
        restarted,
        WATCHDOG_SEC + 20,
        "the watchdog to kill and restart the agent",
    )
    elapsed = time.monotonic() - stopped
    # Not before the watchdog was due: the last ping came at most WatchdogSec/2 before SIGSTOP.
    assert elapsed >= WATCHDOG_SEC / 2, f"restarted {elapsed:.1f} s after SIGSTOP"
    log = systemd.console.text()
    assert re.search(rf"{re.escape(UNIT)}: Watchdog timeout \(limit {WATCHDOG_SEC}s\)", log), log
    # The hung process itself is gone (SIGABRT, then SIGCONT from systemd).
    assert systemd.run("kill", "-0", str(first)).returncode != 0
    assert second != first
    # It counts as a failure of the watchdog kind, and the new agent is being watched again.
    assert re.search(rf"{re.escape(UNIT)}: Failed with result 'watchdog'", log), log
    last = systemd.show(UNIT, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]

    def pinged_again() -> bool:
        props = systemd.show(UNIT, "MainPID", "WatchdogTimestampMonotonic")
        assert int(props["MainPID"]) == second, f"restarted again: {props}\n{log}"
        return props["WatchdogTimestampMonotonic"] not in ("", "0", last)

    wait_for(pinged_again, 30, "the new agent to ping the watchdog")
