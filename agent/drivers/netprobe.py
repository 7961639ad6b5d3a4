"""Can the node reach its controller from its network namespace?  A TCP connection decides.

EVE's nim tests a port config by reaching the controller through it (``conntester``).  Here a
probe opens a TCP connection to the controller's host and port from the namespace the node's
ports live in, within a timeout, and closes it at once.  As EVE counts a refused connection (a
TCP reset from the controller's address) as a remote failure that says nothing bad about the
node's ports, a refusal is a success with that detail.

Namespaces: one worker thread per prober enters the namespace (:mod:`agent.drivers.netns`;
again when the namespace was made anew), resolves the host there (so DNS goes out through the
node's ports) and makes the sockets; the event loop connects them, so a timeout never leaves a
thread blocked in ``connect``.  The thread is the
prober's own: a thread that entered another namespace must never go back to a shared pool.
Resolution itself cannot be interrupted; it is bounded by the resolver's own timeouts.  Call
:meth:`TcpProber.close`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from agent.drivers.errors import DriverError
from agent.drivers.netns import enter, netns_path, ns_id


@dataclass(frozen=True)
class ProbeResult:
    """``ok``: the controller's host answered (connected, or refused); ``detail`` says how or
    why not."""

    ok: bool
    detail: str


class Prober(Protocol):
    async def reach(self, host: str, port: int, within: float) -> ProbeResult:
        """One attempt to connect to ``host``:``port`` (every address it resolves to, in
        turn) within ``within`` seconds in all.  Never raises for network trouble: the result
        says what happened."""
        ...

    async def close(self) -> None: ...


class TcpProber:
    """Probes from the network namespace ``/run/netns/<netns>`` (or a path; None: the
    process's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.path = None if netns is None else netns_path(netns)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"probe-{netns or 'self'}")
        self._entered: tuple[int, int] | None = None

    def _sockets(self, host: str, port: int) -> list[tuple[socket.socket, tuple[str, int]]]:
        """In the worker thread: resolve in the namespace and make one socket per address."""
        if self.path is not None and (self._entered is None or ns_id(self.path) != self._entered):
            self._entered = enter(self.path)  # again when the namespace was made anew
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        out = []
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            out.append((sock, (str(address[0]), int(address[1]))))
        return out

    async def reach(self, host: str, port: int, within: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            async with asyncio.timeout(within):
                made = await loop.run_in_executor(self._pool, self._sockets, host, port)
        except TimeoutError:
            return ProbeResult(False, f"cannot resolve {host} within {within:.1f} s")
        except socket.gaierror as exc:
            return ProbeResult(False, f"cannot resolve {host}: {exc.strerror}")
        except DriverError as exc:  # the namespace is gone or cannot be entered
            return ProbeResult(False, str(exc))
        except OSError as exc:
            return ProbeResult(False, f"no socket for {host}: {exc.strerror or exc}")
        why = f"{host} resolves to no address"
        try:
            for sock, address in made:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        await loop.sock_connect(sock, address)
                    return ProbeResult(True, f"connected to {address[0]}:{port}")
                except TimeoutError:
                    why = f"no answer from {address[0]}:{port} within {within:.1f} s"
                except ConnectionRefusedError:
                    # EVE's "remote temporary failure": the host is there, its service is not.
                    return ProbeResult(True, f"{address[0]}:{port} refused the connection")
                except OSError as exc:
                    why = f"{address[0]}:{port}: {os.strerror(exc.errno or errno.EIO)}"
        finally:
            for sock, _ in made:
                sock.close()
        return ProbeResult(False, why)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class FakeProber:
    """A prober whose answers the test decides: ``answer(host, port)`` (default: reachable);
    every call is kept in ``calls``."""

    def __init__(self) -> None:
        self.reachable = True
        self.detail = "no answer within the timeout"
        self.calls: list[tuple[str, int, float]] = []

    async def reach(self, host: str, port: int, within: float) -> ProbeResult:
        self.calls.append((host, port, within))
        await asyncio.sleep(0)
        if self.reachable:
            return ProbeResult(True, f"connected to {host}:{port}")
        return ProbeResult(False, self.detail)

    async def close(self) -> None:
        return None


__all__ = ["FakeProber", "ProbeResult", "Prober", "TcpProber"]
