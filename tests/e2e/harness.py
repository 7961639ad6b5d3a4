"""Whole-process test harness: a real ``eve-controller`` and real ``eve-agent`` nodes over HTTPS
on loopback, each in its own temporary directory.  Everything started here is stopped by the
fixtures, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tests.e2e.sample_apps import (
    SampleImages,
    build_images,
    purge_host_objects,
    stop_dnsmasqs,
)

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def require(what: str, reason: str) -> NoReturn:
    """A missing service, tool or image: fails under EVE_AGENT_REQUIRE_SERVICES or CI (as
    ``make test`` and CI run), skips with the reason otherwise."""
    message = f"{what}: {reason}"
    if os.environ.get("EVE_AGENT_REQUIRE_SERVICES") or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def sample_images(what: str) -> SampleImages:
    """The test images of images/ for a test that runs apps (root needed), or ``require``."""
    if os.geteuid() != 0:
        require(what, "needs root (dockerd, libvirtd, the image cache)")
    try:
        return build_images()
    except (RuntimeError, StopIteration, subprocess.TimeoutExpired) as exc:
        require("test images", str(exc))


class Process:
    """A child process with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power loss would end it (no cleanup runs)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)


class Controller:
    """An ``eve-controller`` state directory, and its server process when running."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.port = free_port()
        self.server: Process | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "eve-controller"), "--state", str(self.state), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def init(self) -> None:
        self.cli("init")
        self.cli("onboard", "add", "--cert", str(self.certs / "onboard.cert.pem"), "--any-serial")

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.server is None or not self.server.alive()
        self.server = Process(
            [
                str(BIN / "eve-controller"),
                "--state",
                str(self.state),
                "serve",
                "--listen",
                self.address,
            ],
            self.state.parent / f"{self.state.name}.log",
        )
        wait_for(lambda: "listening on" in self.server.output() if self.server else False, 30,
                 "the controller to listen")  # fmt: skip

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def devices(self) -> list[dict[str, Any]]:
        out = json.loads(self.cli("device", "list", "--json").stdout)
        assert isinstance(out, list)
        return out

    def set_config(self, device_uuid: str, config: dict[str, Any], *extra: str) -> None:
        path = self.state.parent / f"config-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.cli("config", "set", device_uuid, str(path), *extra)

    def set_default_config(self, config: dict[str, Any]) -> None:
        """The config every newly registered device starts with (a project default)."""
        path = self.state.parent / "default-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self.cli("config", "default", str(path))

    def json_lines(self, *args: str) -> list[dict[str, Any]]:
        out = self.cli(*args, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@contextlib.contextmanager
def running_controller(state: Path, default_config: dict[str, Any]) -> Iterator[Controller]:
    """A controller initialised in ``state`` with ``default_config``, serving until the block
    ends (stopped also when it fails)."""
    ctl = Controller(state)
    ctl.init()
    ctl.set_default_config(default_config)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


class Node:
    """An emulated node: a root dir provisioned like EVE's /config, and its agent process."""

    def __init__(
        self,
        root: Path,
        controller: Controller,
        serial: str,
        *,
        swtpm: bool = False,
        netns: str | None = None,
    ) -> None:
        self.root = root
        self.swtpm = swtpm
        #: The node's own network namespace (its network instances run there), or None.
        self.netns = netns
        self.controller = controller
        self.agent: Process | None = None
        #: More ``eve-agent run`` options (``--flowlog-interval 2``...).
        self.extra_args: list[str] = []
        config = root / "config"
        config.mkdir(parents=True)
        (config / "server").write_text(controller.address + "\n")
        shutil.copy(controller.certs / "root-certificate.pem", config / "root-certificate.pem")
        shutil.copy(controller.certs / "onboard.cert.pem", config / "onboard.cert.pem")
        shutil.copy(controller.certs / "onboard.key.pem", config / "onboard.key.pem")
        (config / "soft_serial").write_text(serial + "\n")

    def start(self) -> None:
        assert self.agent is None or not self.agent.alive()
        self.agent = Process(
            [
                str(BIN / "eve-agent"),
                "--root",
                str(self.root),
                "run",
                "--swtpm" if self.swtpm else "--no-tpm",
                "--log-level",
                "debug",
                *(["--netns", self.netns] if self.netns else []),
                *self.extra_args,
            ],
            self.root / "agent.log",
        )

    def stop(self) -> int:
        return self.agent.stop() if self.agent is not None else 0

    def poweroff(self) -> None:
        """Emulated power off: unmount the vault image and stop the node's swtpm."""
        subprocess.run(
            [str(BIN / "eve-agent"), "--root", str(self.root), "poweroff"],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def shutdown(self) -> None:
        """Stop the agent and, for a TPM node, power it off; remove the apps it left running
        (apps outlive their agent by design).  For fixtures' teardown."""
        self.stop()
        if self.swtpm:
            self.poweroff()
        purge_host_objects(self.root)
        stop_dnsmasqs(self.root)

    def status(self) -> dict[str, Any]:
        proc = subprocess.run(
            [str(BIN / "eve-agent"), "--root", str(self.root), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            return {}
        data = json.loads(proc.stdout)
        assert isinstance(data, dict)
        return data

    @property
    def uuid(self) -> str | None:
        path = self.root / "persist" / "status" / "uuid"
        return path.read_text().strip() if path.exists() else None

    @property
    def checkpoint(self) -> Path:
        return self.root / "persist" / "checkpoint"

    def log(self) -> str:
        return self.agent.output() if self.agent else ""

    def wait_onboarded(self, timeout: float = 60) -> str:
        uuid = wait_for(lambda: self.uuid, timeout, "the node to onboard")
        assert isinstance(uuid, str)
        return uuid

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Wait for a status of the *running* agent (a stale file from the last run never
        counts) that satisfies ``predicate``."""

        def current() -> dict[str, Any] | None:
            status = self.status()
            if not status or self.agent is None or status.get("pid") != self.agent.proc.pid:
                return None
            return status if predicate(status) else None

        result = wait_for(current, timeout, what)
        assert isinstance(result, dict)
        return result
