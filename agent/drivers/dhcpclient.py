"""A DHCP client per node port (busybox ``udhcpc``) that only *learns* leases: the agent applies
them.

EVE's nim runs a DHCP client on each port the device port config sets to DHCP.  Here each such
port gets one ``udhcpc`` running in the foreground (``-f``) in the node's network namespace, a
child of the agent.  Its event script is ours (:data:`SCRIPT`): it writes the lease (address,
prefix length, routers, DNS servers, lease time, when) as one JSON line to a file and configures
nothing, so addresses and routes reach the port through the netlink driver like everything else
the agent sets, and the agent knows exactly what it set.  ``-R`` releases the lease when the
client is stopped (a port leaving DHCP gives its address back).

Files, in ``run_dir/<ifname>/`` (root only; :class:`DhcpPaths`): ``udhcpc.pid`` (written by
udhcpc), ``lease.json`` (the script's), ``udhcpc.log`` (its output; emptied at a start once past
1 MiB).  The script is ``run_dir/udhcpc-script``: it is executed, so ``run_dir`` must not be on a
``noexec`` mount (PermanentError).

Supervision: :meth:`DhcpClientDriver.ensure` starts the client when none runs for the port and
is cheap when one does, so the caller calls it periodically and a client that died is started
again (a client that exits at once, e.g. for a missing interface, is a TemporaryError with its
last words).  A client outlives an agent restart (a session of its own, as dnsmasq does): a new
driver finds it by its pid file, which counts only while ``/proc/<pid>/cmdline`` is a udhcpc
with this port's pid file (a reused pid is not ours).  Children of this driver that exit are
reaped; adopted ones are init's.

Leases are hostile input (any DHCP server on the port's network may answer): the script keeps
only digits, dots and spaces of each value (udhcpc formats addresses and numbers so), and
:func:`parse_lease` accepts only an IPv4 address, a prefix of 1..32, IPv4 routers and DNS
servers (at most :data:`MAX_SERVERS` of each), a lease time of at most 2^32-1 s; anything else
is no lease.  A lease whose time ran out (no renewal recorded) is no lease either.

Network namespace: with ``netns`` the command is ``nsenter --net=/run/netns/<netns> busybox
udhcpc ...`` (nsenter execs, so the pid is udhcpc's).

Errors: a bad interface name or run directory -> PermanentError; busybox missing ->
PermanentError; a client that cannot start or dies at once, files that cannot be written ->
TemporaryError.  Stopping a client that is gone is success.  Calls for one port are serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, Protocol

from agent.drivers import procfiles, runner
from agent.drivers.errors import PermanentError, TemporaryError
from agent.util.atomicfile import write_atomic

log = logging.getLogger(__name__)

_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOG_MAX = 1 << 20
#: Routers and DNS servers kept from one lease.
MAX_SERVERS = 8
MAX_LEASE_FILE = 4096
_UINT32 = 0xFFFFFFFF

#: The event script udhcpc runs: records the lease for the agent, configures nothing.
SCRIPT = r"""#!/bin/sh
# eve-agent: record the DHCP lease as JSON for the agent; configure nothing.
# Only digits, dots and spaces pass (udhcpc formats addresses and numbers so).
out="${EVE_AGENT_LEASE:?}"
only() { case "$1" in *[!0-9.\ ]*) ;; *) printf '%s' "$1" ;; esac; }
now=$(date +%s)
case "$1" in
bound|renew)
    fmt='{"event":"%s","ip":"%s","mask":"%s","router":"%s","dns":"%s","lease":"%s",'
    printf "$fmt"'"at":"%s"}\n' \
        "$1" "$(only "${ip:-}")" "$(only "${mask:-}")" "$(only "${router:-}")" \
        "$(only "${dns:-}")" "$(only "${lease:-}")" "$now" > "$out.tmp" && mv -f "$out.tmp" "$out"
    ;;
deconfig|leasefail|nak)
    printf '{"event":"%s","at":"%s"}\n' "$1" "$now" > "$out.tmp" && mv -f "$out.tmp" "$out"
    ;;
esac
exit 0
"""


# --- values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """What a DHCP server gave a port."""

    address: IPv4Interface
    routers: tuple[IPv4Address, ...] = ()
    dns: tuple[IPv4Address, ...] = ()
    #: Seconds, from ``obtained``.
    lease_time: int = 0
    #: Wall-clock time of the bind or renewal.
    obtained: float = 0.0

    @property
    def router(self) -> IPv4Address | None:
        return self.routers[0] if self.routers else None

    def expired(self, now: float) -> bool:
        """Whether the lease ran out by ``now`` (wall clock); an infinite one never does."""
        return self.lease_time != _UINT32 and now > self.obtained + self.lease_time


@dataclass(frozen=True)
class DhcpClientState:
    """A running client of this node."""

    ifname: str
    pid: int
    #: True when this call started it (or started it again).
    started: bool = False


def _addresses(text: Any) -> tuple[IPv4Address, ...]:
    if not isinstance(text, str):
        raise ValueError("not a string")
    return tuple(IPv4Address(part) for part in text.split()[:MAX_SERVERS])


def parse_lease(data: bytes, now: float) -> Lease | None:
    """The lease in a lease file's content, None for no lease (a deconfig, leasefail or nak
    event, an expired lease).  Raises ValueError for content that is no lease file."""
    try:
        doc = json.loads(data[:MAX_LEASE_FILE])
    except RecursionError:  # absurd nesting: not a lease file either
        raise ValueError("nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    event = doc.get("event")
    if event in ("deconfig", "leasefail", "nak"):
        return None
    if event not in ("bound", "renew"):
        raise ValueError(f"unknown event {str(event)[:16]!r}")
    prefix = int(str(doc.get("mask", "")))
    if not 1 <= prefix <= 32:
        raise ValueError(f"prefix length {prefix} out of range")
    address = IPv4Interface(f"{IPv4Address(str(doc.get('ip', '')))}/{prefix}")
    lease_time = int(str(doc.get("lease") or _UINT32))
    obtained = float(int(str(doc.get("at", ""))))
    if not 0 <= lease_time <= _UINT32:
        raise ValueError(f"lease time {lease_time} out of range")
    lease = Lease(address, _addresses(doc.get("router", "")), _addresses(doc.get("dns", "")),
                  lease_time, obtained)  # fmt: skip
    return None if lease.expired(now) else lease


def install_script(run_dir: Path) -> Path:
    """``run_dir`` (root only) with the lease script :data:`SCRIPT` as ``udhcpc-script``
    (rewritten only when it differs); its path.  PermanentError when ``run_dir`` is on a
    ``noexec`` mount (udhcpc could not run the script); OSError for disk trouble."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.statvfs(run_dir).f_flag & os.ST_NOEXEC:
        raise PermanentError(f"{run_dir} is on a noexec mount: udhcpc cannot run the agent's "
                             "lease script there")  # fmt: skip
    script = run_dir / "udhcpc-script"
    try:
        current = script.read_text()
    except FileNotFoundError:
        current = ""
    if current != SCRIPT:
        write_atomic(script, SCRIPT.encode(), mode=0o700)
    return script


def check_port(ifname: str) -> str:
    """A port's interface name safe as a directory name; else PermanentError."""
    if not _IFNAME.fullmatch(ifname):
        raise PermanentError(f"invalid interface name {ifname[:32]!r} for a DHCP client")
    return ifname


# --- the interface --------------------------------------------------------------------------------


class DhcpClient(Protocol):
    """The DHCP clients of one node's ports; see the module docstring."""

    @property
    def node(self) -> str: ...

    async def ensure(self, ifname: str) -> DhcpClientState:
        """A client runs for port ``ifname`` (started when none does).  Idempotent and cheap
        when it runs.  PermanentError: bad name, busybox missing, ``run_dir`` noexec;
        TemporaryError: the client could not start or died at once (its message says why)."""
        ...

    async def stop(self, ifname: str) -> None:
        """Stop the port's client (it releases its lease) and remove its files.  Gone already:
        success."""
        ...

    async def list_owned(self) -> list[DhcpClientState]:
        """The running clients of this node (adopted after an agent restart), by port."""
        ...

    async def lease(self, ifname: str) -> Lease | None:
        """The port's current lease, None when it has none (no client, no answer yet, lost,
        expired, or a lease file that makes no sense: logged)."""
        ...


# --- the real driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DhcpPaths:
    dir: Path
    pid: Path
    lease: Path
    log: Path

    @classmethod
    def of(cls, run_dir: Path, ifname: str) -> DhcpPaths:
        base = run_dir / check_port(ifname)
        return cls(base, base / "udhcpc.pid", base / "lease.json", base / "udhcpc.log")


class DhcpClientDriver:
    """The udhcpc clients of node ``node`` with their files under ``run_dir``, in the network
    namespace ``/run/netns/<netns>`` (the agent's own when None)."""

    def __init__(
        self,
        node: str,
        run_dir: Path,
        *,
        netns: str | None = None,
        busybox: str = "busybox",
        nsenter: str = "nsenter",
        discover_tries: int = 3,
        discover_pause: int = 2,
        fail_wait: int = 5,
        start_timeout: float = 2.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """``discover_tries`` discovers ``discover_pause`` s apart, then a wait of ``fail_wait``
        s before the next round (udhcpc's ``-t``, ``-T``, ``-A``): a port without a server is
        asked again within seconds, not minutes.  ValueError for an unsafe ``netns``."""
        self._node = node
        self.run_dir = Path(run_dir).absolute()
        if netns is not None and not _NETNS.fullmatch(netns):
            raise ValueError(f"unsafe network namespace name {netns!r}")
        self._netns = netns
        self._busybox = busybox
        self._nsenter = nsenter
        self._tries = (discover_tries, discover_pause, fail_wait)
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._children: dict[str, runner.Daemon] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._bad_lease: dict[str, bytes] = {}

    @property
    def node(self) -> str:
        return self._node

    @property
    def script(self) -> Path:
        return self.run_dir / "udhcpc-script"

    def paths(self, ifname: str) -> DhcpPaths:
        return DhcpPaths.of(self.run_dir, ifname)

    async def ensure(self, ifname: str) -> DhcpClientState:
        paths = self.paths(ifname)
        async with self._lock(ifname):
            self._reap(ifname)
            pid = _pid(paths)
            if pid is not None:
                return DhcpClientState(ifname, pid)
            binary = shutil.which(self._busybox)
            if binary is None:
                raise PermanentError(f"{self._busybox} is not installed (Debian: busybox)")
            with _os_errors(f"DHCP client files of {ifname}"):
                await asyncio.to_thread(self._prepare, paths)
            return await self._start(ifname, paths, binary)

    async def stop(self, ifname: str) -> None:
        paths = self.paths(ifname)
        async with self._lock(ifname):
            pid = _pid(paths)
            if pid is not None:
                log.info("stopping the DHCP client %d of %s", pid, ifname)
                await self._terminate(ifname, pid)
            child = self._children.pop(ifname, None)
            if child is not None:
                child.poll()  # reaped quietly: it was asked to go
            with _os_errors(f"DHCP client files of {ifname}"):
                await asyncio.to_thread(shutil.rmtree, paths.dir, True)

    async def list_owned(self) -> list[DhcpClientState]:
        for ifname in list(self._children):
            self._reap(ifname)
        with _os_errors(f"DHCP client files in {self.run_dir}"):
            return await asyncio.to_thread(self._scan)

    async def lease(self, ifname: str) -> Lease | None:
        paths = self.paths(ifname)
        if _pid(paths) is None:
            return None  # a dead client renews nothing; its successor starts with deconfig
        try:
            data = await asyncio.to_thread(_read_small, paths.lease)
        except OSError as exc:
            log.warning("lease file of %s unreadable: %s", ifname, exc)
            return None
        if data is None:
            return None
        try:
            found = parse_lease(data, time.time())
        except (ValueError, TypeError) as exc:
            if self._bad_lease.get(ifname) != data:  # once per content, not every poll
                self._bad_lease[ifname] = data
                log.warning("lease file of %s makes no sense (%s); no lease", ifname, exc)
            return None
        self._bad_lease.pop(ifname, None)
        return found

    # --- internals

    def _lock(self, ifname: str) -> asyncio.Lock:
        return self._locks.setdefault(ifname, asyncio.Lock())

    def _reap(self, ifname: str) -> None:
        child = self._children.get(ifname)
        if child is not None and child.poll() is not None:
            del self._children[ifname]
            log.warning("the DHCP client of %s exited (status %s)", ifname, child.returncode)

    def _prepare(self, paths: DhcpPaths) -> None:
        """The namespace there, the run directory (root only), the script, the port's
        directory, no stale pid file, and a log kept small."""
        if self._netns is not None and not os.path.exists(f"/run/netns/{self._netns}"):
            raise TemporaryError(f"network namespace {self._netns} does not exist")
        install_script(self.run_dir)
        paths.dir.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            paths.pid.unlink()
        with contextlib.suppress(FileNotFoundError):
            if paths.log.stat().st_size > _LOG_MAX:
                os.truncate(paths.log, 0)

    def _argv(self, binary: str, ifname: str, paths: DhcpPaths) -> list[str]:
        tries, pause, wait = self._tries
        argv = [binary, "udhcpc", "-f", "-R", "-i", ifname, "-s", str(self.script),
                "-p", str(paths.pid), "-t", str(tries), "-T", str(pause),
                "-A", str(wait)]  # fmt: skip
        if self._netns is None:
            return argv
        return [self._nsenter, f"--net=/run/netns/{self._netns}", "--", *argv]

    async def _start(self, ifname: str, paths: DhcpPaths, binary: str) -> DhcpClientState:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EVE_AGENT_LEASE": str(paths.lease)}
        log.info("starting a DHCP client on %s", ifname)
        child = runner.spawn(self._argv(binary, ifname, paths), log=paths.log, env=env)
        self._children[ifname] = child
        # udhcpc writes its pid file once it has the interface: wait for that, or its end.
        deadline = time.monotonic() + self._start_timeout
        while _pid(paths) != child.pid:
            if child.poll() is not None:
                del self._children[ifname]
                tail = await asyncio.to_thread(_tail, paths.log)
                message = f"exited at once (status {child.returncode}): {tail}"
                raise TemporaryError(f"the DHCP client of {ifname} {message}", retry_after=5)
            if time.monotonic() > deadline:
                await self._terminate(ifname, child.pid)
                self._reap(ifname)
                raise TemporaryError(f"the DHCP client of {ifname} did not start within "
                                     f"{self._start_timeout:g} s")  # fmt: skip
            await asyncio.sleep(0.02)
        return DhcpClientState(ifname, child.pid, started=True)

    async def _terminate(self, ifname: str, pid: int) -> None:
        child = self._children.get(ifname)
        for sig, timeout in ((signal.SIGTERM, self._stop_timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while procfiles.alive(pid) and (child is None or child.poll() is None):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            else:
                return
        raise TemporaryError(f"the DHCP client {pid} of {ifname} does not exit")

    def _scan(self) -> list[DhcpClientState]:
        found = []
        entries = sorted(os.listdir(self.run_dir)) if self.run_dir.is_dir() else []
        for entry in entries:
            if not _IFNAME.fullmatch(entry) or not (self.run_dir / entry).is_dir():
                continue
            pid = _pid(self.paths(entry))
            if pid is not None:
                found.append(DhcpClientState(entry, pid))
        return found


def _pid(paths: DhcpPaths) -> int | None:
    """The pid in the pid file while it is alive and a udhcpc with this very pid file (busybox's
    applet: ``busybox udhcpc ...`` or ``udhcpc ...``)."""
    pid_file = str(paths.pid).encode()

    def ours(argv: Sequence[bytes]) -> bool:
        return b"udhcpc" in (os.path.basename(a) for a in argv[:2]) and pid_file in argv

    return procfiles.adopted_pid(paths.pid, ours)


def _read_small(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_LEASE_FILE + 1)
    except FileNotFoundError:
        return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return " | ".join(text) or "(empty log)"


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TemporaryError(f"{what}: {exc}") from exc


def lease_record(lease: Lease | None) -> Mapping[str, Any] | None:
    """A lease as JSON values (for status output and records), None for no lease."""
    if lease is None:
        return None
    return {"address": str(lease.address), "routers": [str(r) for r in lease.routers],
            "dns": [str(d) for d in lease.dns], "lease_time": lease.lease_time,
            "obtained": lease.obtained}  # fmt: skip


__all__ = [
    "SCRIPT",
    "DhcpClient",
    "DhcpClientDriver",
    "DhcpClientState",
    "DhcpPaths",
    "Lease",
    "check_port",
    "install_script",
    "lease_record",
    "parse_lease",
]
