"""One dnsmasq per local network instance: DHCP and DNS for the apps on its bridge.

As EVE's zedrouter (nireconciler's dnsmasq item), each local network instance gets a dnsmasq of
its own, bound to the instance's bridge: DHCP from a range plus static MAC -> IP hosts, DNS for
the apps' names and the config's static entries, forwarding to the upstream servers (none: an
air-gapped instance resolves only its own names), and nft sets filled with the addresses of the
names that host ACLs match (``--nftset``).  The values and their rendering are
:mod:`agent.drivers.dnsmasqconf` (re-exported here); this module runs the processes.

Files, in ``run_dir/<instance uuid>/`` (root:<dnsmasq's group>, 0750; :class:`DnsmasqPaths`):
``dnsmasq.conf`` (the command line is only ``dnsmasq --conf-file=<it>``, which also keeps dnsmasq
off /etc/dnsmasq.conf), ``dhcp-hosts`` and ``hosts`` (re-read on SIGHUP), ``leases``,
``dnsmasq.pid``, ``dnsmasq.log`` (``--log-facility``; with ``quiet-dhcp`` only start-up and
problems, emptied at a start once past 1 MiB).

Reload or restart: a change of the hosts files only is applied with SIGHUP (same process, leases
kept); a change of the main file (range, bridge, upstreams, options, nft sets) restarts, and so
does a static address that a lease holds for another MAC (SIGHUP keeps leases, and dnsmasq will
not hand out an address leased to someone else): that lease is dropped while dnsmasq is stopped,
as EVE does.  A new main file is checked with ``dnsmasq --test`` before the running process is
stopped, so a refused configuration leaves a running instance as it was.

Process model: dnsmasq daemonizes itself (no ``--keep-in-foreground``).  Its first process exits
only once the daemon has bound its sockets, written its pid file and dropped privileges, with a
status that says what failed (1: configuration; 2: network - address in use, unknown or down
interface; 3: files) and the message on stderr, so a start is one call with a typed outcome.
And the daemon is nobody's child: it outlives an agent restart, and a new driver finds it as the
one that started it did, by its pid file: one code path, no exit status lost with a dead parent,
no zombie to reap.  A pid file is never trusted alone (the unprivileged dnsmasq owns it): a pid
counts only while ``/proc/<pid>/cmdline`` is a dnsmasq with this instance's ``--conf-file``.  A
start then checks that the daemon holds the gateway's DNS port and the DHCP port
(``/proc/<pid>/net/udp`` shows its namespace; its fds say which sockets are its): a bridge
without the gateway address is a TemporaryError, not a silent DNS outage.

Network namespace: with ``netns`` the command is ``nsenter --net=/run/netns/<netns> dnsmasq``;
nsenter execs dnsmasq, so the pid is dnsmasq's.  Python 3.11 has no ``os.setns`` and the runner
takes no pre-exec hook, so nsenter is the clean way (``ip netns exec`` also remounts /sys).

Security: ``bind-interfaces``, ``interface=<bridge>``, ``except-interface=lo``, ``no-hosts``,
``no-resolv``, ``dhcp-authoritative``, run as the ``dnsmasq`` user (``nobody`` without one) and
its group, keeping only CAP_NET_ADMIN (nft sets) and CAP_NET_BIND_SERVICE.  It re-reads its
hosts files as that user, so every directory above ``run_dir`` must be searchable by it
(checked: PermanentError; the driver makes ``run_dir`` 0711 when it creates it).  SIGHUP is
applied by dnsmasq asynchronously, within milliseconds of :meth:`DnsmasqDriver.ensure`.

Errors: a configuration dnsmasq refuses is a PermanentError with dnsmasq's message; the port
busy, the bridge missing or down, the namespace missing are TemporaryErrors; files that cannot be
written are TemporaryErrors; an instance already gone is success for :meth:`DnsmasqDriver.stop`.
Calls for one instance are serialised by the driver; different instances run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import grp
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from agent.drivers import procfiles, runner
from agent.drivers.dnsmasqconf import (
    MIN_LEASE_TIME,
    DnsmasqConfig,
    DnsmasqPaths,
    HostRecord,
    InvalidConfig,
    Lease,
    NftSet,
    NftsetRule,
    RenderedFiles,
    Route,
    StaticHost,
    conflicting_leases,
    parse_leases,
    render,
    safe_path,
)
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.util.atomicfile import write_atomic

log = logging.getLogger(__name__)

__all__ = [
    "MIN_LEASE_TIME",
    "Change",
    "Dnsmasq",
    "DnsmasqConfig",
    "DnsmasqDriver",
    "DnsmasqPaths",
    "DnsmasqState",
    "HostRecord",
    "InvalidConfig",
    "Lease",
    "NftSet",
    "NftsetRule",
    "RenderedFiles",
    "Route",
    "StaticHost",
    "conflicting_leases",
    "parse_leases",
    "render",
]

_LOG_MAX = 1 << 20
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# --- the interface -------------------------------------------------------------------------------


class Change(enum.StrEnum):
    """What :meth:`Dnsmasq.ensure` did."""

    STARTED = "started"
    RESTARTED = "restarted"  # the main configuration changed (or a lease had to go)
    RELOADED = "reloaded"  # SIGHUP: only the hosts files changed; same process
    NONE = "none"


@dataclass(frozen=True)
class DnsmasqState:
    """A running dnsmasq of this node."""

    instance_id: uuid.UUID
    bridge: str
    pid: int
    change: Change = Change.NONE


class Dnsmasq(Protocol):
    """The dnsmasq instances of one node; see the module docstring."""

    @property
    def node(self) -> str: ...

    async def ensure(self, config: DnsmasqConfig) -> DnsmasqState:
        """Make the instance run with ``config`` and say what that took: STARTED (it was not
        running), RESTARTED (the main configuration changed, or a static address is leased to
        another MAC: that lease is dropped), RELOADED (SIGHUP: only static hosts or DNS records
        changed; same pid, leases kept), NONE.  Idempotent.  Returns once dnsmasq holds its DNS
        and DHCP ports.  InvalidConfig/PermanentError: the configuration is refused (a running
        instance is left as it was); TemporaryError: port busy, bridge, its gateway address or
        the namespace missing, files not writable, start timed out."""
        ...

    async def stop(self, instance_id: uuid.UUID) -> None:
        """Stop the instance and remove its files (leases too).  Gone already: success."""
        ...

    async def list_owned(self) -> list[DnsmasqState]:
        """The running instances of this node (adopted after an agent restart), by instance
        id; stale pid files are removed on the way."""
        ...

    async def leases(self, instance_id: uuid.UUID) -> list[Lease]:
        """The instance's current IPv4 leases.  NotFoundError for an unknown instance."""
        ...


# --- the real driver -----------------------------------------------------------------------------


class DnsmasqDriver:
    """The dnsmasq instances of node ``node``, with their files under ``run_dir``, running in
    the network namespace ``/run/netns/<netns>`` (the agent's own when None)."""

    def __init__(
        self,
        node: str,
        run_dir: Path,
        *,
        netns: str | None = None,
        user: str | None = None,
        dnsmasq: str = "dnsmasq",
        nsenter: str = "nsenter",
        start_timeout: float = 10.0,
        ready_timeout: float = 1.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """``user`` runs dnsmasq (default ``dnsmasq``, else ``nobody``), with its primary
        group.  ``ready_timeout`` bounds the wait for its sockets once it has started (dnsmasq
        binds them before it detaches, and with ``bind-interfaces`` never later: no point in
        waiting long).  Raises ValueError for an unsafe ``run_dir`` or ``netns`` or an unknown
        user."""
        self._node = node
        self.run_dir = safe_path(Path(run_dir).absolute(), "run_dir")
        if netns is not None and not _NETNS.fullmatch(netns):
            raise ValueError(f"unsafe network namespace name {netns!r}")
        self._netns = netns
        entry = _user(user)
        self.user, self._uid, self._gid = entry.pw_name, entry.pw_uid, entry.pw_gid
        self.group = _group_name(self._gid)
        self._dnsmasq = dnsmasq
        self._nsenter = nsenter
        self._start_timeout = start_timeout
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    @property
    def node(self) -> str:
        return self._node

    def paths(self, instance_id: uuid.UUID) -> DnsmasqPaths:
        return DnsmasqPaths.of(self.run_dir, instance_id)

    async def ensure(self, config: DnsmasqConfig) -> DnsmasqState:
        paths = self.paths(config.instance_id)
        files = render(config, paths, user=self.user, group=self.group)
        async with self._lock(config.instance_id):
            with _os_errors(f"dnsmasq files of {config.instance_id}"):
                pid = self._pid(paths)
                if pid is not None and await asyncio.to_thread(_same_main, config, paths, files):
                    return await asyncio.to_thread(self._reload, config, paths, files, pid)
                return await self._replace(config, paths, files, pid)

    async def stop(self, instance_id: uuid.UUID) -> None:
        paths = self.paths(instance_id)
        async with self._lock(instance_id):
            with _os_errors(f"dnsmasq files of {instance_id}"):
                pid = self._pid(paths)
                if pid is not None:
                    log.info("stopping dnsmasq %d of network instance %s", pid, instance_id)
                    await self._terminate(pid, instance_id)
                await asyncio.to_thread(_remove_tree, paths.dir)

    async def list_owned(self) -> list[DnsmasqState]:
        with _os_errors(f"dnsmasq files in {self.run_dir}"):
            return await asyncio.to_thread(self._scan)

    async def leases(self, instance_id: uuid.UUID) -> list[Lease]:
        paths = self.paths(instance_id)
        with _os_errors(f"lease file of {instance_id}"):
            found = await asyncio.to_thread(_read_leases, paths.leases, paths.dir)
        if found is None:
            raise NotFoundError(f"no dnsmasq for network instance {instance_id}")
        return found

    # --- internals (the blocking ones run in a worker thread)

    def _lock(self, instance_id: uuid.UUID) -> asyncio.Lock:
        # Kept after a stop: a call still waiting on it must exclude the next one.
        return self._locks.setdefault(instance_id, asyncio.Lock())

    def _scan(self) -> list[DnsmasqState]:
        found = []
        entries = sorted(os.listdir(self.run_dir)) if self.run_dir.is_dir() else []
        for entry in entries:
            try:
                instance_id = uuid.UUID(entry)
            except ValueError:
                continue
            paths = self.paths(instance_id)
            pid = self._pid(paths)
            if pid is not None:
                found.append(DnsmasqState(instance_id, _bridge_of(paths.conf), pid))
            elif paths.pid.exists():
                log.info("removing the stale pid file of network instance %s", instance_id)
                with contextlib.suppress(FileNotFoundError):
                    paths.pid.unlink()
        return found

    def _reload(
        self, config: DnsmasqConfig, paths: DnsmasqPaths, files: RenderedFiles, pid: int
    ) -> DnsmasqState:
        changed = _write_if_changed(paths.dhcp_hosts, files.dhcp_hosts)
        changed = _write_if_changed(paths.addn_hosts, files.addn_hosts) or changed
        if changed:
            log.info("dnsmasq %d of network instance %s: SIGHUP", pid, config.instance_id)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
        change = Change.RELOADED if changed else Change.NONE
        return DnsmasqState(config.instance_id, config.bridge, pid, change)

    async def _replace(
        self, config: DnsmasqConfig, paths: DnsmasqPaths, files: RenderedFiles, old: int | None
    ) -> DnsmasqState:
        """(Re)start with ``files``: check the new configuration first, so a refused one leaves
        the running instance alone; drop conflicting leases while no dnsmasq runs."""
        binary = shutil.which(self._dnsmasq)
        if binary is None:
            raise PermanentError(f"{self._dnsmasq} is not installed (Debian: dnsmasq-base)")
        await asyncio.to_thread(self._make_dir, paths, files.conf)
        done = await runner.run(
            [binary, "--test", f"--conf-file={paths.conf_check}"], timeout=30, check=False
        )
        await asyncio.to_thread(_remove_tree, paths.conf_check)
        if done.returncode != 0:
            raise PermanentError(
                f"dnsmasq refuses the configuration of network instance {config.instance_id}: "
                + done.tail()
            )
        if old is not None:
            log.info("restarting dnsmasq %d of network instance %s", old, config.instance_id)
            await self._terminate(old, config.instance_id)
        await asyncio.to_thread(_write_files, paths, files, config.static_hosts)
        pid = await self._start(config, paths, binary)
        change = Change.STARTED if old is None else Change.RESTARTED
        return DnsmasqState(config.instance_id, config.bridge, pid, change)

    def _make_dir(self, paths: DnsmasqPaths, conf: str) -> None:
        """The instance directory (dnsmasq's group may read it, nobody else) with the new main
        file to check in it.  Every directory above must let dnsmasq's user through: it
        re-reads the hosts files unprivileged.  The namespace is checked here too, before a
        running instance is stopped."""
        if self._netns is not None and not Path(f"/run/netns/{self._netns}").exists():
            raise TemporaryError(f"network namespace {self._netns} does not exist")
        self.run_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        paths.dir.mkdir(mode=0o750, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(paths.dir, 0, self._gid)
        os.chmod(paths.dir, 0o750)
        for directory in (paths.dir, *paths.dir.parents):
            mode = directory.stat()
            if not (
                mode.st_mode & stat.S_IXOTH
                or (mode.st_gid == self._gid and mode.st_mode & stat.S_IXGRP)
                or (mode.st_uid == self._uid and mode.st_mode & stat.S_IXUSR)
            ):
                raise PermanentError(
                    f"{directory} is not searchable by {self.user}: dnsmasq could not re-read "
                    "its hosts files (make it 0711)"
                )
        paths.conf_check.write_text(conf)

    def _argv(self, binary: str, paths: DnsmasqPaths) -> list[str]:
        argv = [binary, f"--conf-file={paths.conf}"]
        if self._netns is None:
            return argv
        return [self._nsenter, f"--net=/run/netns/{self._netns}", "--", *argv]

    async def _start(self, config: DnsmasqConfig, paths: DnsmasqPaths, binary: str) -> int:
        instance = config.instance_id
        log.info("starting dnsmasq for network instance %s on %s", instance, config.bridge)
        done = await runner.run(self._argv(binary, paths), timeout=self._start_timeout, check=False)
        if done.returncode != 0:
            raise _start_error(instance, self._netns, done)
        pid = self._pid(paths)
        deadline = time.monotonic() + self._ready_timeout
        while pid is None or not _listening(pid, config.gateway):
            if time.monotonic() > deadline:
                if pid is not None:
                    await self._terminate(pid, instance)
                tail = await asyncio.to_thread(_tail, paths.log)
                raise TemporaryError(
                    f"dnsmasq for network instance {instance} does not listen on "
                    f"{config.gateway}:53 and :67 of {config.bridge} (gateway address not on "
                    f"the bridge?): {tail}"
                )
            await asyncio.sleep(0.05)
            pid = pid if pid is not None else self._pid(paths)
        return pid

    async def _terminate(self, pid: int, instance_id: uuid.UUID) -> None:
        for sig, timeout in ((signal.SIGTERM, self._stop_timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while procfiles.alive(pid):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            else:
                return
        raise TemporaryError(f"dnsmasq {pid} of network instance {instance_id} does not exit")

    def _pid(self, paths: DnsmasqPaths) -> int | None:
        """The pid in the pid file if it is alive and a dnsmasq of this very configuration
        (three small reads, two of them in /proc: cheap enough for the event loop)."""
        conf = f"--conf-file={paths.conf}".encode()

        def ours(argv: Sequence[bytes]) -> bool:
            return os.path.basename(argv[0]) == b"dnsmasq" and conf in argv

        return procfiles.adopted_pid(paths.pid, ours)


def _user(name: str | None) -> pwd.struct_passwd:
    for candidate in [name] if name is not None else ["dnsmasq", "nobody"]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(candidate)
    raise ValueError(f"no user {name or 'dnsmasq or nobody'} to run dnsmasq as")


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise TemporaryError(f"{what}: {exc}") from exc


def _start_error(instance: uuid.UUID, netns: str | None, done: runner.Completed) -> Exception:
    message = done.tail()
    if message.startswith("nsenter:"):
        return TemporaryError(f"cannot enter network namespace {netns}: {message}")
    if done.returncode == 1:  # dnsmasq's EC_BADCONF
        return PermanentError(f"dnsmasq refuses the configuration of {instance}: {message}")
    return TemporaryError(
        f"dnsmasq for network instance {instance} failed (status {done.returncode}): {message}"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _write_if_changed(path: Path, text: str) -> bool:
    if _read(path) == text and path.exists():
        return False
    write_atomic(path, text.encode(), mode=0o644)
    return True


def _read_leases(path: Path, directory: Path | None = None) -> list[Lease] | None:
    """The leases, reading again briefly while the last line is incomplete (dnsmasq is
    writing); None when ``directory`` (the instance's) does not exist."""
    data = b""
    for _ in range(3):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None if directory is not None and not directory.is_dir() else []
        if not data or data.endswith(b"\n"):
            break
        time.sleep(0.02)
    return parse_leases(data)


def _same_main(config: DnsmasqConfig, paths: DnsmasqPaths, files: RenderedFiles) -> bool:
    """Whether the running main file is ``files.conf`` and no lease blocks a static host."""
    leases = _read_leases(paths.leases) or []
    return _read(paths.conf) == files.conf and not conflicting_leases(leases, config.static_hosts)


def _write_files(paths: DnsmasqPaths, files: RenderedFiles, hosts: tuple[StaticHost, ...]) -> None:
    """Everything a start needs, while no dnsmasq of the instance runs."""
    stale = {
        (lease.mac, lease.ip)
        for lease in conflicting_leases(_read_leases(paths.leases) or [], hosts)
    }
    if stale:
        lines = _read(paths.leases).splitlines(keepends=True)
        keep = [
            line
            for line in lines
            if not any((x.mac, x.ip) in stale for x in parse_leases(line.encode()))
        ]
        write_atomic(paths.leases, "".join(keep).encode(), mode=0o644)
    _write_if_changed(paths.dhcp_hosts, files.dhcp_hosts)
    _write_if_changed(paths.addn_hosts, files.addn_hosts)
    _write_if_changed(paths.conf, files.conf)
    _remove_tree(paths.pid)
    with contextlib.suppress(FileNotFoundError):
        if paths.log.stat().st_size > _LOG_MAX:
            os.truncate(paths.log, 0)


def _remove_tree(path: Path) -> None:
    """Remove a file or a directory tree; gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _bridge_of(conf: Path) -> str:
    for line in _read(conf).splitlines():
        if line.startswith("interface="):
            return line.removeprefix("interface=")
    return ""


def _listening(pid: int, gateway: IPv4Address) -> bool:
    """Whether ``pid`` holds UDP sockets on ``gateway``:53 (DNS) and on *:67 (DHCP).
    ``/proc/<pid>/net/udp`` lists the sockets of its namespace; its fds say which are its."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in fds}
        table = Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    bound = set()
    for line in table:
        fields = line.split()
        if len(fields) > 9 and fields[9] in inodes:
            host, _, port = fields[1].partition(":")
            addr = IPv4Address(int(host, 16).to_bytes(4, sys.byteorder))
            bound.add((addr, int(port, 16)))
    return (gateway, 53) in bound and (IPv4Address(0), 67) in bound


def _tail(path: Path, lines: int = 10) -> str:
    text = _read(path).strip().splitlines()[-lines:]
    return " | ".join(text) or "(empty log)"
