"""The one way the agent runs other programs: timeouts, bounded captured output, typed errors.

Every driver that runs a tool goes through here; this is the only module of the agent that
imports :mod:`subprocess`.

- :func:`run` (async, for coroutines) and :func:`run_sync` (blocking, for code that already runs
  in a worker thread) run a program to completion: no shell, stdin from ``input`` or
  ``/dev/null``, stdout and stderr captured separately.  The child gets a session (and process
  group) of its own, so a timeout or a cancellation kills it *and* whatever it started, then
  waits for it: no process outlives the call.
- Captured output is bounded: only the last ``max_output`` bytes of each stream are kept (64 KiB
  by default), so a chatty tool cannot grow the agent.  An error's message ends with the tail of
  stderr (stdout when stderr is empty).
- :func:`spawn` starts a long-lived daemon (swtpm, dnsmasq...) with its output in a log file and
  returns a :class:`Daemon` handle; the caller owns its lifetime.

Errors (all :class:`~agent.drivers.errors.DriverError`, so the reconcile engine can classify
them by type alone):

- :class:`CommandNotFound` (permanent): the program does not exist or is not executable;
- :class:`CommandTimeout` (temporary): killed after ``timeout`` seconds;
- :class:`CommandFailed`: a non-zero exit status (only with ``check=True``).  Whether that is
  temporary or permanent depends on the tool, so drivers catch it and translate; left as is, the
  engine treats it as temporary;
- :class:`CommandStartError` (temporary): the process could not be started for another reason
  (no memory, too many processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from agent.drivers.errors import DriverError, PermanentError, TemporaryError

#: Bytes of each stream kept by default (the end of it).
MAX_OUTPUT = 64 * 1024
#: Characters of output quoted at the end of an error message.
MESSAGE_TAIL = 2000
#: How long a killed process may take to be reaped before we stop waiting for its pipes.
_REAP_GRACE = 5.0
_CHUNK = 65536


@dataclass(frozen=True)
class Completed:
    """A finished process.  ``stdout`` and ``stderr`` are the last ``max_output`` bytes of each;
    ``*_dropped`` counts the bytes that were cut from their beginning."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def tail(self, limit: int = MESSAGE_TAIL) -> str:
        """The end of stderr, or of stdout when stderr is empty, stripped; "" when both are."""
        text = (self.stderr_text.strip() or self.stdout_text.strip())[-limit:]
        return text


class CommandError(DriverError):
    """A program did not run to a successful end.  ``argv`` is what was run; ``returncode``,
    ``stdout`` and ``stderr`` are what it left (None and empty when it never ran)."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        returncode: int | None = None,
        stdout: bytes = b"",
        stderr: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


_E = TypeVar("_E", bound=CommandError)


class CommandNotFound(CommandError, PermanentError):
    """The program does not exist or may not be executed."""


class CommandStartError(CommandError, TemporaryError):
    """The process could not be started (out of memory, processes, file descriptors)."""


class CommandTimeout(CommandError, TemporaryError):
    """The program ran past its timeout and was killed (with its process group)."""


class CommandFailed(CommandError):
    """The program exited with a non-zero status (or was killed by a signal: negative)."""


# --- helpers shared by both variants -------------------------------------------------------------


class _Tail:
    """The last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess


def _name(argv: Sequence[str]) -> str:
    return os.path.basename(argv[0]) if argv else "?"


def _start_error(argv: Sequence[str], exc: OSError) -> CommandError:
    if isinstance(exc, FileNotFoundError | PermissionError) or exc.errno in (
        errno.ENOEXEC,
        errno.ENOTDIR,
        errno.EISDIR,
    ):
        return CommandNotFound(f"cannot run {argv[0]}: {exc.strerror or exc}", argv=argv)
    return CommandStartError(f"cannot start {argv[0]}: {exc.strerror or exc}", argv=argv)


def _completed(argv: Sequence[str], returncode: int, out: _Tail, err: _Tail) -> Completed:
    return Completed(
        argv=tuple(argv),
        returncode=returncode,
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
    )


def _with_tail(message: str, done: Completed) -> str:
    tail = done.tail()
    return f"{message}: {tail}" if tail else message


def _timeout_error(done: Completed, timeout: float) -> CommandTimeout:
    what = f"did not finish within {timeout:g} s and was killed"
    return _error(CommandTimeout, what, done)


def _error(cls: type[_E], what: str, done: Completed) -> _E:
    """``cls`` for ``done``: the command's name, ``what`` happened, the output's tail."""
    return cls(
        _with_tail(f"{_name(done.argv)} {what}", done),
        argv=done.argv,
        returncode=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
    )


def _check(done: Completed) -> Completed:
    if done.returncode == 0:
        return done
    if done.returncode < 0:
        what = f"killed by signal {-done.returncode}"
    else:
        what = f"exited with status {done.returncode}"
    raise _error(CommandFailed, what, done)


def _kill_group(pid: int) -> None:
    """SIGKILL the process group the child leads (it was started in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _argv(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    out = [os.fspath(a) for a in argv]
    if not out:
        raise ValueError("empty argv")
    return out


# --- async ---------------------------------------------------------------------------------------


async def _pump(stream: asyncio.StreamReader | None, sink: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        sink.add(chunk)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if stdin is None:
        return
    try:
        if data:
            stdin.write(data)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program exited without reading all of it: its status says what happened
    finally:
        stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await stdin.wait_closed()


async def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    # A parameter rather than asyncio.timeout() around the call: the process is killed and
    # reaped either way, but this one raises CommandTimeout with the output's tail.
    timeout: float,  # noqa: ASYNC109
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    max_output: int = MAX_OUTPUT,
) -> Completed:
    """Run ``argv`` to completion without blocking the event loop.

    ``env`` replaces the environment when given (as in :mod:`subprocess`).  Raises
    CommandNotFound, CommandStartError, CommandTimeout (after killing the process group and
    reaping the child), and CommandFailed for a non-zero status when ``check``.  Cancelling the
    caller kills the process group too, and the cancellation propagates once it is reaped.
    """
    args = _argv(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise _start_error(args, exc) from exc
    out, err = _Tail(max_output), _Tail(max_output)
    io = asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), _feed(proc.stdin, input))
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(io)
                await proc.wait()
        except TimeoutError:
            timed_out = True
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            # Reap it even when we are being cancelled: no zombie, no orphan.
            await asyncio.shield(_reap(proc, io))
        elif not io.done():
            await asyncio.shield(_reap(proc, io))
    # None only for a child that even SIGKILL did not end within the grace period.
    returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    done = _completed(args, returncode, out, err)
    if timed_out:
        raise _timeout_error(done, timeout)
    return _check(done) if check else done


async def _reap(proc: asyncio.subprocess.Process, io: asyncio.Future[Any]) -> None:
    """Wait for a killed process; give its pipes a moment to drain, then stop reading them
    (a grandchild that left the process group could hold them open)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), _REAP_GRACE)
    with contextlib.suppress(TimeoutError, Exception):
        await asyncio.wait_for(asyncio.shield(io), 1.0)
    if not io.done():
        io.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await io


# --- blocking ------------------------------------------------------------------------------------


def run_sync(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    max_output: int = MAX_OUTPUT,
) -> Completed:
    """:func:`run` for code that already runs in a worker thread (never call it from a
    coroutine: it blocks).  Same arguments, result and errors."""
    args = _argv(argv)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise _start_error(args, exc) from exc
    out, err = _Tail(max_output), _Tail(max_output)
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        timed_out = not _communicate(proc, input, out, err, deadline)
        if not timed_out:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if proc.poll() is None:
            _kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_REAP_GRACE)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    done = _completed(args, returncode, out, err)
    if timed_out:
        raise _timeout_error(done, timeout)
    return _check(done) if check else done


def _communicate(
    proc: subprocess.Popen[bytes], data: bytes | None, out: _Tail, err: _Tail, deadline: float
) -> bool:
    """Feed stdin and drain stdout and stderr until both close; False at the deadline."""
    sinks: dict[int, _Tail] = {}
    pending = memoryview(data or b"")
    with selectors.DefaultSelector() as sel:
        for pipe, sink in ((proc.stdout, out), (proc.stderr, err)):
            if pipe is not None:
                sel.register(pipe, selectors.EVENT_READ)
                sinks[pipe.fileno()] = sink
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in sel.select(remaining):
                fileobj: IO[bytes] = key.fileobj  # type: ignore[assignment]
                if key.events & selectors.EVENT_WRITE:
                    try:
                        written = os.write(key.fd, pending[:_CHUNK])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        written, pending = 0, memoryview(b"")
                    pending = pending[written:]
                    if not pending:
                        sel.unregister(fileobj)
                        fileobj.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    sinks[key.fd].add(chunk)
                else:
                    sel.unregister(fileobj)
    return True


# --- long-lived daemons --------------------------------------------------------------------------


class Daemon:
    """A long-lived child started by :func:`spawn`.  Stopping it is the caller's business."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def poll(self) -> int | None:
        """The exit status once it has exited (reaping it), else None."""
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for it to exit (reaping it); False when it still runs after ``timeout``."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    new_session: bool = True,
) -> Daemon:
    """Start a daemon: stdin from /dev/null, stdout and stderr appended to ``log`` (discarded
    without one), in a session of its own unless ``new_session`` is False (so a terminal's
    Ctrl-C does not reach it).  Raises CommandNotFound or CommandStartError."""
    args = _argv(argv)
    with contextlib.ExitStack() as stack:
        output: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            output = stack.enter_context(open(log, "ab"))
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=new_session,
            )
        except OSError as exc:
            raise _start_error(args, exc) from exc
    return Daemon(proc)


__all__ = [
    "MAX_OUTPUT",
    "CommandError",
    "CommandFailed",
    "CommandNotFound",
    "CommandStartError",
    "CommandTimeout",
    "Completed",
    "Daemon",
    "run",
    "run_sync",
    "spawn",
]
