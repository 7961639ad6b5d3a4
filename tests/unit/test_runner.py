# SPDX-License-Identifier: Apache-2.0
"""The subprocess runner against real processes: results, bounded output, timeouts that kill the
whole process group, cancellation, typed errors; the async and the blocking variant alike."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.drivers import runner
from agent.drivers.errors import DriverError, PermanentError, TemporaryError
from agent.drivers.runner import (
    CommandFailed,
    CommandNotFound,
    CommandTimeout,
    Completed,
)

Run = Callable[..., Awaitable[Completed]]


async def _async_run(*args: Any, **kwargs: Any) -> Completed:
    return await runner.run(*args, **kwargs)


async def _sync_run(*args: Any, **kwargs: Any) -> Completed:
    # The blocking variant, as a driver in a worker thread calls it.
    return await asyncio.to_thread(runner.run_sync, *args, **kwargs)


@pytest.fixture(params=["async", "sync"])
def run(request: pytest.FixtureRequest) -> Run:
    return _async_run if request.param == "async" else _sync_run


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of someone else's counts as gone.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


async def test_true(run: Run) -> None:
    done = await run(["/bin/true"], timeout=5)
    assert done.returncode == 0
    assert done.stdout == b"" and done.stderr == b""
    assert done.argv == ("/bin/true",)


async def test_output_and_input(run: Run) -> None:
    script = "cat; echo out-line; echo err-line >&2"
    done = await run(["/bin/sh", "-c", script], timeout=5, input=b"from stdin\n")
    assert done.stdout == b"from stdin\nout-line\n"
    assert done.stderr == b"err-line\n"
    assert done.stdout_text.endswith("out-line\n") and done.stderr_text == "err-line\n"


async def test_large_input_while_output_flows(run: Run) -> None:
    """Feeding stdin and draining stdout at once: no pipe deadlock with 4 MiB each way."""
    data = os.urandom(4 * 1024 * 1024)
    done = await run(["/bin/cat"], timeout=20, input=data, max_output=len(data))
    assert done.stdout == data


async def test_no_input_means_dev_null(run: Run) -> None:
    done = await run(["/bin/cat"], timeout=5)  # would hang on an inherited terminal
    assert done.returncode == 0 and done.stdout == b""


async def test_env_and_cwd(run: Run, tmp_path: Path) -> None:
    done = await run(
        ["/bin/sh", "-c", 'echo "$GREETING"; pwd'], timeout=5, env={"GREETING": "hi"}, cwd=tmp_path
    )
    assert done.stdout_text.splitlines() == ["hi", str(tmp_path)]


async def test_large_output_is_bounded(run: Run) -> None:
    # 8 MiB on stdout, and a marker at its very end; 1 MiB on stderr.
    script = "head -c 8388608 /dev/zero; echo END; head -c 1048576 /dev/zero >&2"
    done = await run(["/bin/sh", "-c", script], timeout=20, max_output=4096)
    assert len(done.stdout) == 4096 and done.stdout.endswith(b"\0END\n")
    assert done.stdout_dropped == 8 * 1024 * 1024 + 4 - 4096
    assert len(done.stderr) == 4096 and done.stderr_dropped == 1024 * 1024 - 4096


async def test_default_bound_is_64_kib(run: Run) -> None:
    done = await run(["/bin/sh", "-c", "head -c 1000000 /dev/zero"], timeout=20)
    assert len(done.stdout) == runner.MAX_OUTPUT == 64 * 1024


async def test_nonzero_exit_raises_with_the_stderr_tail(run: Run) -> None:
    script = "echo some output; for i in $(seq 1 3000); do echo noise $i >&2; done; "
    script += "echo 'mkfs: the real reason' >&2; exit 3"
    with pytest.raises(CommandFailed) as caught:
        await run(["/bin/sh", "-c", script], timeout=5)
    exc = caught.value
    assert isinstance(exc, DriverError)
    assert not isinstance(exc, PermanentError | TemporaryError)  # the driver decides
    assert exc.returncode == 3
    assert exc.stdout == b"some output\n"
    message = str(exc)
    assert message.startswith("sh exited with status 3: ")
    assert message.endswith("mkfs: the real reason")
    assert "noise 1\n" not in message  # only the tail
    assert len(message) < runner.MESSAGE_TAIL + 100


async def test_nonzero_exit_falls_back_to_stdout(run: Run) -> None:
    with pytest.raises(CommandFailed, match=r"status 1: only on stdout$"):
        await run(["/bin/sh", "-c", "echo only on stdout; exit 1"], timeout=5)


async def test_silent_failure_message(run: Run) -> None:
    with pytest.raises(CommandFailed) as caught:
        await run(["/bin/false"], timeout=5)
    assert str(caught.value) == "false exited with status 1"


async def test_check_false_returns_the_status(run: Run) -> None:
    done = await run(["/bin/sh", "-c", "echo why >&2; exit 7"], timeout=5, check=False)
    assert done.returncode == 7 and done.stderr == b"why\n"
    assert done.tail() == "why"


async def test_killed_by_a_signal(run: Run) -> None:
    with pytest.raises(CommandFailed, match="killed by signal 15") as caught:
        await run(["/bin/sh", "-c", "kill -TERM $$"], timeout=5)
    assert caught.value.returncode == -signal.SIGTERM


async def test_timeout_kills_and_reaps(run: Run, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; echo started >&2; sleep 5"
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await run(["/bin/sh", "-c", script], timeout=0.2)
    elapsed = time.monotonic() - t0
    assert elapsed < 2, f"took {elapsed:.2f} s"
    exc = caught.value
    assert isinstance(exc, TemporaryError) and isinstance(exc, DriverError)
    assert str(exc) == "sh did not finish within 0.2 s and was killed: started"
    assert exc.stderr == b"started\n"
    assert _gone(int(pid_file.read_text()))


async def test_timeout_kills_grandchildren(run: Run, tmp_path: Path) -> None:
    """A child that started its own children (and holds our pipes through them) still ends in
    time: the whole process group is killed."""
    pid_file = tmp_path / "pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        await run(["/bin/sh", "-c", script], timeout=0.2)
    assert time.monotonic() - t0 < 2
    grandchild = int(pid_file.read_text())
    for _ in range(100):
        if _gone(grandchild):
            break
        await asyncio.sleep(0.01)
    assert _gone(grandchild)


async def test_missing_program_is_permanent(run: Run, tmp_path: Path) -> None:
    with pytest.raises(CommandNotFound, match="cannot run /nonexistent/tool") as caught:
        await run(["/nonexistent/tool", "--help"], timeout=5)
    assert isinstance(caught.value, PermanentError)
    assert caught.value.returncode is None


async def test_not_executable_is_permanent(run: Run, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(CommandNotFound):
        await run([script], timeout=5)


async def test_path_arguments(run: Run, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"content")
    done = await run([Path("/bin/cat"), tmp_path / "f"], timeout=5)
    assert done.stdout == b"content"


async def test_empty_argv(run: Run) -> None:
    with pytest.raises(ValueError, match="empty argv"):
        await run([], timeout=5)


async def test_cancellation_kills_and_reaps(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(
        runner.run(["/bin/sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=60)
    )
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(pid)


async def test_async_run_leaves_the_loop_free() -> None:
    """While a program runs, other coroutines keep running (the point of the async variant)."""
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    task = asyncio.create_task(heartbeat())
    try:
        await runner.run(["/bin/sleep", "0.3"], timeout=5)
    finally:
        task.cancel()
    assert beats >= 10


def test_spawn_a_daemon(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    log.write_bytes(b"earlier\n")
    # stdin is /dev/null: `read` meets the end of the file at once and fails.
    daemon = runner.spawn(
        ["/bin/sh", "-c", 'echo out; echo err >&2; read line; echo "read:$?"'], log=log
    )
    assert daemon.wait(5)
    assert daemon.returncode == 0
    assert log.read_bytes() == b"earlier\nout\nerr\nread:1\n"


def test_spawn_and_stop_a_long_running_daemon(tmp_path: Path) -> None:
    daemon = runner.spawn(["/bin/sleep", "30"])
    assert daemon.poll() is None
    assert os.getpgid(daemon.pid) == daemon.pid  # a session and process group of its own
    assert not daemon.wait(0.05)
    os.kill(daemon.pid, signal.SIGTERM)
    assert daemon.wait(5)
    assert daemon.returncode == -signal.SIGTERM


def test_spawn_missing_program() -> None:
    with pytest.raises(CommandNotFound):
        runner.spawn(["/nonexistent/daemon"])


def test_only_the_runner_imports_subprocess() -> None:
    """DESIGN.md: drivers run subprocesses through one runner."""
    agent = Path(runner.__file__).resolve().parent.parent
    offenders = [
        str(path.relative_to(agent.parent))
        for path in sorted(agent.rglob("*.py"))
        if path.name != "runner.py"
        and any(
            line.strip().startswith(("import subprocess", "from subprocess "))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []
