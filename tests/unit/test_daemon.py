"""agent.daemon: supervise(), sd_notify(), and a whole Node against the in-process controller."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import Node, supervise
from agent.drivers.systemd import sd_notify
from agent.settings import AgentSettings, NodePaths
from tests.unit.link_harness import LiveController, live_controller, until

# ---------------------------------------------------------------- supervise()


async def test_a_task_failing_early_stops_the_others_and_is_reraised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    async def polite() -> None:
        await stop.wait()
        seen.append("polite saw stop")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(supervise(stop, {"bad": failing(), "good": polite()}, grace=5), 3)
    assert time.monotonic() - start < 1  # the polite task returned: no waiting for the grace
    assert stop.is_set()
    assert seen == ["polite saw stop"]
    assert "task bad failed: boom" in caplog.text


async def test_a_task_ending_early_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def quitter() -> None:
        await asyncio.sleep(0.01)

    async def polite() -> None:
        await stop.wait()
        seen.append("stopped")

    await asyncio.wait_for(supervise(stop, {"quitter": quitter(), "polite": polite()}, grace=5), 3)
    assert stop.is_set()
    assert seen == ["stopped"]
    assert "task quitter ended unexpectedly" in caplog.text


async def test_stop_gives_the_grace_period_then_cancels(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def polite() -> None:
        await stop.wait()
        seen.append("polite returned")

    async def slow_but_in_time() -> None:
        await stop.wait()
        await asyncio.sleep(0.05)
        seen.append("slow returned")

    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("stubborn cancelled")
            raise

    grace = 0.3
    task = asyncio.create_task(
        supervise(
            stop,
            {"polite": polite(), "slow": slow_but_in_time(), "stubborn": stubborn()},
            grace=grace,
        )
    )
    await asyncio.sleep(0.02)
    assert not task.done()
    start = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 3)  # no exception: cancelling on stop is not a failure
    elapsed = time.monotonic() - start
    assert grace <= elapsed < grace + 0.5
    assert sorted(seen) == ["polite returned", "slow returned", "stubborn cancelled"]
    assert "task stubborn did not stop within" in caplog.text
    assert "polite did not stop" not in caplog.text
    assert "slow did not stop" not in caplog.text


async def test_all_returning_in_time_ends_without_waiting_for_grace() -> None:
    stop = asyncio.Event()

    async def polite() -> None:
        await stop.wait()

    task = asyncio.create_task(supervise(stop, {"a": polite(), "b": polite()}, grace=10))
    await asyncio.sleep(0.01)
    start = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - start < 0.5


async def test_failure_with_a_stubborn_task_cancels_it_after_grace() -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def failing() -> None:
        raise ValueError("bad input")

    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    start = time.monotonic()
    with pytest.raises(ValueError, match="bad input"):
        await asyncio.wait_for(supervise(stop, {"f": failing(), "s": stubborn()}, grace=0.1), 3)
    assert 0.1 <= time.monotonic() - start < 1
    assert seen == ["cancelled"]


async def test_a_failure_during_shutdown_is_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()

    async def fails_while_stopping() -> None:
        await stop.wait()
        await asyncio.sleep(0.02)
        raise RuntimeError("flush failed")

    task = asyncio.create_task(supervise(stop, {"flusher": fails_while_stopping()}, grace=1))
    await asyncio.sleep(0.01)
    stop.set()
    with contextlib.suppress(RuntimeError):
        await asyncio.wait_for(task, 2)
    assert "flush failed" in caplog.text


async def test_stop_already_set_stops_everything() -> None:
    stop = asyncio.Event()
    stop.set()
    seen: list[str] = []

    async def worker() -> None:
        await stop.wait()
        seen.append("returned")

    await asyncio.wait_for(supervise(stop, {"w": worker()}, grace=1), 2)
    assert seen == ["returned"]


async def test_cancelling_supervise_cancels_its_tasks() -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = asyncio.create_task(supervise(stop, {"w": worker()}, grace=10))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # let the child run its cancellation
    assert seen == ["cancelled"]


# ---------------------------------------------------------------- sd_notify()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound unix datagram socket, named by NOTIFY_SOCKET, as systemd provides it."""
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "unix socket path too long for this tmp_path"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def test_sd_notify_sends_to_the_socket(notify_socket: socket.socket) -> None:
    sd_notify("READY=1")
    sd_notify("WATCHDOG=1")
    assert received(notify_socket) == [b"READY=1", b"WATCHDOG=1"]


def test_sd_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"eve-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        sd_notify("READY=1")
        assert received(sock) == [b"READY=1"]


def test_sd_notify_without_socket_is_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sd_notify("READY=1")  # nothing to send to: no error
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    sd_notify("READY=1")  # a socket that is gone: no error either
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    sd_notify("READY=1")


# ---------------------------------------------------------------- a whole node


def provision(root: Path, ctl: LiveController, serial: str) -> NodePaths:
    """The config partition an installer writes (as tests/e2e/harness.Node does)."""
    paths = NodePaths.from_root(root)
    paths.config.mkdir(parents=True)
    paths.server.write_text(ctl.address + "\n")
    state = ctl.pki.state
    shutil.copy(state.root_cert, paths.root_certificate)
    shutil.copy(state.onboard_cert, paths.onboard_cert)
    shutil.copy(state.onboard_key, paths.onboard_key)
    paths.soft_serial.write_text(serial + "\n")
    return paths


def status_of(paths: NodePaths) -> dict[str, object]:
    try:
        data = json.loads(paths.status_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    assert isinstance(data, dict)
    return data


async def run_node_until_running(
    settings: AgentSettings, notify: socket.socket, messages: list[bytes]
) -> tuple[Node, asyncio.Event, asyncio.Task[None]]:
    node = Node(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))

    def ready() -> bool:
        messages.extend(received(notify))
        status = status_of(settings.paths)
        return b"READY=1" in messages and status.get("phase") == "running"

    try:
        await until(ready, within=10, what="the node to run and notify READY=1")
        await until(
            lambda: status_of(settings.paths).get("config_source"),
            within=10,
            what="a config in status.json",
        )
    except BaseException:
        stop.set()
        await asyncio.wait_for(task, 5)
        raise
    return node, stop, task


async def stop_node(node: Node, stop: asyncio.Event, task: asyncio.Task[None]) -> float:
    start = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, node.settings.stop_grace + 2)
    return time.monotonic() - start


async def test_node_runs_against_the_controller_and_stops_in_grace(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "daemon-node-1")
        settings = AgentSettings(paths=paths, status_interval=0.05, stop_grace=2.0)
        messages: list[bytes] = []
        root_handlers = list(logging.getLogger().handlers)
        node, stop, task = await run_node_until_running(settings, notify_socket, messages)

        status = status_of(paths)
        (device,) = ctl.store.list_devices()
        assert status["uuid"] == device.uuid == node.device_uuid
        assert paths.uuid.read_text().strip() == device.uuid
        assert status["server"] == ctl.address
        assert status["config_source"] == "controller"
        assert status["config_applied_ok"] is True
        assert status["controller_reachable"] is True
        assert status["attestation"] == {"state": "complete", "error": ""}
        assert device.serial == "daemon-node-1"
        assert ctl.count("config", 200) == 1
        assert messages.count(b"READY=1") == 1
        assert b"WATCHDOG=1" in messages

        elapsed = await stop_node(node, stop, task)
    assert elapsed < settings.stop_grace
    assert task.result() is None
    assert status_of(paths)["phase"] == "stopped"
    assert node.phase == "stopped"
    assert logging.getLogger().handlers == root_handlers  # the log spool handler is removed
    assert node.client is not None and node.client._session is None  # closed


async def test_node_restart_runs_the_saved_config_first(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "daemon-node-2")
        settings = AgentSettings(paths=paths, status_interval=0.05, stop_grace=2.0)
        node, stop, task = await run_node_until_running(settings, notify_socket, [])
        first_uuid = node.device_uuid
        await stop_node(node, stop, task)
        registered = ctl.count("register")
        # What kills in the middle of writes left: removed at the start.
        leftovers = [paths.checkpoint / ".lastconfig.k2x9_a0q.tmp",
                     paths.persist / "status" / ".boot.json.abcdefgh.tmp"]  # fmt: skip
        for leftover in leftovers:
            leftover.write_bytes(b"half")

        again, stop, task = await run_node_until_running(settings, notify_socket, [])
        try:
            assert not any(leftover.exists() for leftover in leftovers)
            assert again.device_uuid == first_uuid
            assert status_of(paths)["config_source"] == "checkpoint"
            await until(lambda: ctl.count("config", 304) == 1, what="the 304 for the saved config")
            assert ctl.count("register") == registered  # no onboarding the second time
            assert ctl.count("config", 200) == 1
        finally:
            await stop_node(again, stop, task)


# ---------------------------------------------------------------- systemd liveness


async def test_ready_before_the_controller_answers(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    """A node the controller has not admitted yet is up: READY=1, and it keeps pinging."""
    silent = socket.socket()  # accepts connections, never answers a byte
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        async with live_controller(tmp_path) as ctl:
            paths = provision(tmp_path / "node", ctl, "daemon-node-3")
        paths.server.write_text(f"127.0.0.1:{silent.getsockname()[1]}\n")
        settings = AgentSettings(paths=paths, status_interval=0.05, stop_grace=2.0)
        node = Node(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        messages: list[bytes] = []
        try:
            await until(
                lambda: messages.extend(received(notify_socket)) or b"READY=1" in messages,
                within=10,
                what="READY=1 without a controller",
            )
            assert node.phase == "onboarding" and node.device_uuid is None
            await asyncio.sleep(0.3)
            messages.extend(received(notify_socket))
            assert b"STATUS=onboarding" in messages
            after = messages[messages.index(b"READY=1") :]
            assert after.count(b"WATCHDOG=1") >= 2
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    finally:
        silent.close()


async def test_watchdog_pings_stop_while_something_is_hung(
    tmp_path: Path, notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "daemon-node-4")
        settings = AgentSettings(paths=paths, status_interval=0.05, stop_grace=2.0)
        node, stop, task = await run_node_until_running(settings, notify_socket, [])
        try:
            hung = ["config poll running for 400 s (limit 300 s)"]
            node.liveness.add_check("test", lambda: hung)
            await asyncio.sleep(0.15)
            received(notify_socket)  # drop what was sent before the hang was seen
            await asyncio.sleep(0.3)
            assert b"WATCHDOG=1" not in received(notify_socket)
            assert "hung, not feeding the systemd watchdog: test: config poll" in caplog.text
            assert status_of(paths)["hung"] == ["test: " + hung[0]]
            hung.clear()
            await asyncio.sleep(0.3)
            assert b"WATCHDOG=1" in received(notify_socket)
        finally:
            await stop_node(node, stop, task)


async def test_a_status_snapshot_bug_does_not_end_the_status_task(
    tmp_path: Path,
    notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent import status as status_mod

    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "daemon-node-5")
        settings = AgentSettings(paths=paths, status_interval=0.05, stop_grace=2.0)
        node, stop, task = await run_node_until_running(settings, notify_socket, [])
        try:
            real = status_mod.snapshot
            monkeypatch.setattr(status_mod, "snapshot", lambda n: 1 / 0)
            await asyncio.sleep(0.2)
            assert "cannot take the status snapshot" in caplog.text
            assert not task.done()
            monkeypatch.setattr(status_mod, "snapshot", real)
            before = status_of(paths)["updated_at"]
            await until(lambda: status_of(paths)["updated_at"] != before, what="status again")
        finally:
            await stop_node(node, stop, task)


def test_watchdog_interval_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.drivers.systemd import watchdog_interval

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "6000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 3.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None


async def test_ready_is_told_as_soon_as_the_link_runs(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    """READY=1 does not wait for the watchdog loop's next turn (here 30 s away)."""
    async with live_controller(tmp_path) as ctl:
        paths = provision(tmp_path / "node", ctl, "daemon-node-ready")
        settings = AgentSettings(paths=paths, status_interval=30.0, stop_grace=2.0)
        node = Node(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(node.run(stop))
        messages: list[bytes] = []
        try:

            def ready() -> bool:
                messages.extend(received(notify_socket))
                return b"READY=1" in messages

            await until(ready, within=10, what="READY=1 before the watchdog loop's next turn")
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
