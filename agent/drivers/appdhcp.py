"""DHCP for an app interface on a switch network instance: one busybox ``udhcpc`` run in the
app's network namespace that asks once and exits.

On a switch instance the outside network's DHCP server addresses the apps (EVE: "external
DHCP").  A VM runs its own client; a container usually has none (nor busybox), so the agent asks
for it: ``nsenter --net=<the container's namespace> busybox udhcpc -q -n ...`` on the app's
interface, with the app's MAC (the interface's) and hostname.  The client only records the
lease (the same event script as the ports' clients, :data:`agent.drivers.dhcpclient.SCRIPT`);
the agent applies it through the netlink driver, so the app's addressing stays the agent's.

Why once and not a client that stays: a process left in the container's namespace would keep
that namespace alive after the container restarts (with the old interface in it), and it would
have to be found and killed then.  A one-shot run holds nothing: the caller renews at half the
lease time (``-r`` asks for the address it had) and asks afresh for a new namespace.

Files, in ``run_dir/<key>/`` (root only; ``key`` is the interface's host-side name, unique on
the node): ``lease.json`` (the script's, read and removed after each run), ``udhcpc.log`` (the
last run's output).

Errors: a bad key, interface name, hostname or namespace path -> PermanentError; busybox or
nsenter missing -> PermanentError; a namespace that is gone -> NotFoundError; files that cannot
be written, a run that does not end in time -> TemporaryError.  No server answering is not an
error: None.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from agent.drivers import runner
from agent.drivers.dhcpclient import Lease, check_port, install_script, parse_lease
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NETNS_PATH = re.compile(r"/proc/[0-9]{1,10}/ns/net|/run/netns/[A-Za-z0-9_.-]{1,64}")
_MAX_LEASE = 4096


def check_request(key: str, netns: str, ifname: str, hostname: str) -> None:
    """PermanentError unless every part of a request is safe to put on a command line."""
    check_port(key)
    check_port(ifname)
    if not _NETNS_PATH.fullmatch(netns):
        raise PermanentError(f"unsafe network namespace path {netns[:80]!r}")
    if hostname and not _HOSTNAME.fullmatch(hostname):
        raise PermanentError(f"invalid hostname {hostname[:80]!r} for DHCP")


class AppDhcp(Protocol):
    """Asks the DHCP server behind an app interface for a lease; see the module docstring."""

    async def acquire(
        self,
        key: str,
        netns: str,
        ifname: str,
        *,
        requested: IPv4Address | None = None,
        hostname: str = "",
    ) -> Lease | None:
        """One DHCP exchange on ``ifname`` inside the namespace ``netns`` (``/proc/<pid>/ns/net``
        or ``/run/netns/<name>``), asking for ``requested`` when given (a renewal) and sending
        ``hostname``.  The lease, or None when no server answered in time (or it said no).
        ``key`` names the run's files.  Errors: see the module docstring."""
        ...

    async def forget(self, key: str) -> None:
        """Remove ``key``'s files (its interface is gone).  Idempotent."""
        ...


class AppDhcpDriver:
    """:class:`AppDhcp` with busybox ``udhcpc`` under ``nsenter``, files under ``run_dir``."""

    def __init__(
        self,
        run_dir: Path,
        *,
        busybox: str = "busybox",
        nsenter: str = "nsenter",
        tries: int = 3,
        pause: int = 1,
    ) -> None:
        """``tries`` discovers ``pause`` s apart per run (udhcpc's ``-t``/``-T``): a run without
        a server ends within about ``tries * pause`` s."""
        self.run_dir = Path(run_dir).absolute()
        self._busybox = busybox
        self._nsenter = nsenter
        self._tries = tries
        self._pause = pause
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def script(self) -> Path:
        return self.run_dir / "udhcpc-script"

    async def acquire(
        self,
        key: str,
        netns: str,
        ifname: str,
        *,
        requested: IPv4Address | None = None,
        hostname: str = "",
    ) -> Lease | None:
        check_request(key, netns, ifname, hostname)
        tools = [shutil.which(self._busybox), shutil.which(self._nsenter)]
        if None in tools:
            raise PermanentError(f"{self._busybox} and {self._nsenter} are needed for app "
                                 "DHCP (Debian: busybox, util-linux)")  # fmt: skip
        busybox, nsenter = (str(t) for t in tools)
        base = self.run_dir / key
        lease_file, log_file = base / "lease.json", base / "udhcpc.log"
        async with self._locks.setdefault(key, asyncio.Lock()):
            try:
                await asyncio.to_thread(self._prepare, base, lease_file, netns)
            except OSError as exc:
                raise TemporaryError(f"app DHCP files of {key}: {exc}") from exc
            argv = [nsenter, f"--net={netns}", "--", busybox, "udhcpc", "-f", "-q", "-n",
                    "-i", ifname, "-s", str(self.script), "-t", str(self._tries),
                    "-T", str(self._pause), "-A", "0"]  # fmt: skip
            if requested is not None:
                argv += ["-r", str(requested)]
            if hostname:
                argv += ["-x", f"hostname:{hostname}"]
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EVE_AGENT_LEASE": str(lease_file)}
            # -n: exit 1 when no lease came; a few seconds more than the discovers take.
            timeout = self._tries * (self._pause + 1) + 10
            done = await runner.run(argv, timeout=timeout, check=False, env=env)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(log_file.write_bytes, done.stdout + done.stderr)
            if done.returncode != 0:
                return None
            return await asyncio.to_thread(self._read, lease_file)

    def _prepare(self, base: Path, lease_file: Path, netns: str) -> None:
        if not os.path.exists(netns):
            raise NotFoundError(f"network namespace {netns} is gone")
        install_script(self.run_dir)
        base.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            lease_file.unlink()

    @staticmethod
    def _read(lease_file: Path) -> Lease | None:
        try:
            with open(lease_file, "rb") as f:
                data = f.read(_MAX_LEASE + 1)
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            lease_file.unlink()
        try:
            return parse_lease(data, time.time())
        except (ValueError, TypeError) as exc:
            raise TemporaryError(f"the app's DHCP lease makes no sense: {exc}") from exc

    async def forget(self, key: str) -> None:
        """Remove ``key``'s files (its interface is gone).  Idempotent."""
        check_port(key)
        self._locks.pop(key, None)
        await asyncio.to_thread(shutil.rmtree, self.run_dir / key, True)


__all__ = ["AppDhcp", "AppDhcpDriver", "check_request"]
