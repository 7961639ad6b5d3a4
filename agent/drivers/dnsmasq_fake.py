"""An in-memory :class:`~agent.drivers.dnsmasq.Dnsmasq`: same validation, decisions and errors
as :class:`~agent.drivers.dnsmasq.DnsmasqDriver`, no process.

The fake renders every configuration with :func:`~agent.drivers.dnsmasq.render` (so hostile
values fail the same way) and decides as the real driver: same main file and no lease blocking a
static address -> SIGHUP when the hosts files changed, else nothing; otherwise (re)start,
dropping the leases that hold a static address for another MAC.  Situations and their errors:

- a bridge the host does not have (:class:`FakeDnsmasqHost` ``bridges``), or one another
  running instance of the same namespace serves: TemporaryError (dnsmasq's "unknown interface",
  "Address already in use");
- a driver made with ``refuse="message"`` fails every (re)start as a dnsmasq refusing its
  configuration (the real driver given a broken ``dnsmasq``): PermanentError, a running
  instance left as it was;
- an unknown instance: NotFoundError from ``leases``; stopping one is success.

"Processes" live in the :class:`FakeDnsmasqHost`, so a new :class:`FakeDnsmasq` on the same host
and run directory adopts them, as a driver made after an agent restart.  Test hooks:
:attr:`FakeDnsmasqHost.events` (``("start" | "restart" | "sighup" | "stop", instance)``), each
instance's ``reloads`` and ``restarts``; :meth:`FakeDnsmasq.inject_leases`;
:meth:`FakeDnsmasq.crash`; and a small emulation of what clients see:
:meth:`FakeDnsmasq.serve_dhcp` (static address, the lease the MAC has, or the first free one of
the range) and :meth:`FakeDnsmasq.resolve` (local records and lease names, then the upstream
"internet" of :attr:`FakeDnsmasqHost.upstream`, filling :attr:`FakeDnsmasqHost.nft_sets` as
``--nftset`` would).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from agent.drivers.dnsmasq import (
    Change,
    DnsmasqConfig,
    DnsmasqPaths,
    DnsmasqState,
    Lease,
    RenderedFiles,
    conflicting_leases,
    render,
)
from agent.drivers.dnsmasqconf import IPAddress
from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError


@dataclass
class FakeInstance:
    """One instance's files and "process" (``pid`` None: not running)."""

    config: DnsmasqConfig
    files: RenderedFiles
    netns: str | None
    pid: int | None = None
    leases: list[Lease] = field(default_factory=list)
    reloads: int = 0
    restarts: int = 0


class FakeDnsmasqHost:
    """What the fake drivers of a host share: instances by (run_dir, id), the host's bridges
    (None: any name exists), the upstream world and the nft sets."""

    def __init__(self, bridges: Iterable[str] | None = None) -> None:
        self.bridges = None if bridges is None else set(bridges)
        self.instances: dict[tuple[Path, uuid.UUID], FakeInstance] = {}
        #: Names the upstream servers answer (any upstream: they all agree).
        self.upstream: dict[str, list[IPAddress]] = {}
        #: Elements dnsmasq added, by ``(family, table, set)``.
        self.nft_sets: dict[tuple[str, str, str], set[IPAddress]] = {}
        self.events: list[tuple[str, uuid.UUID]] = []
        self._pids = itertools.count(4000)

    def next_pid(self) -> int:
        return next(self._pids)


class FakeDnsmasq:
    """The dnsmasq instances of one node, in memory; see the module docstring."""

    def __init__(
        self,
        host: FakeDnsmasqHost,
        node: str,
        run_dir: Path,
        *,
        netns: str | None = None,
        user: str = "dnsmasq",
        group: str = "nogroup",
        refuse: str | None = None,
    ) -> None:
        """``refuse``: what "dnsmasq" says of every configuration it is started with (None: it
        takes them)."""
        self.host = host
        self._node = node
        self.run_dir = Path(run_dir).absolute()
        self._netns = netns
        self.user, self.group = user, group
        self._refusal = refuse

    @property
    def node(self) -> str:
        return self._node

    def paths(self, instance_id: uuid.UUID) -> DnsmasqPaths:
        return DnsmasqPaths.of(self.run_dir, instance_id)

    def instance(self, instance_id: uuid.UUID) -> FakeInstance:
        """The instance's record (KeyError when unknown): counters, files, leases."""
        return self.host.instances[(self.run_dir, instance_id)]

    # --- the interface

    async def ensure(self, config: DnsmasqConfig) -> DnsmasqState:
        key = (self.run_dir, config.instance_id)
        files = render(config, self.paths(config.instance_id), user=self.user, group=self.group)
        current = self.host.instances.get(key)
        if current is not None and current.pid is not None:
            blocked = conflicting_leases(current.leases, config.static_hosts)
            if current.files.conf == files.conf and not blocked:
                change = Change.NONE
                if (current.files.dhcp_hosts, current.files.addn_hosts) != (
                    files.dhcp_hosts,
                    files.addn_hosts,
                ):
                    change = Change.RELOADED
                    current.reloads += 1
                    self.host.events.append(("sighup", config.instance_id))
                current.config, current.files = config, files
                return DnsmasqState(config.instance_id, config.bridge, current.pid, change)
        if current is None:  # the real driver has made the instance's directory by now
            self.host.instances[key] = FakeInstance(config, files, self._netns)
        if self._refusal is not None:
            raise PermanentError(
                f"dnsmasq refuses the configuration of network instance {config.instance_id}: "
                f"{self._refusal}"
            )
        old_pid = current.pid if current is not None else None
        if current is not None and current.pid is not None:
            current.pid = None
            current.restarts += 1
        instance = self.host.instances[key]
        blocked = conflicting_leases(instance.leases, config.static_hosts)
        instance.leases = [lease for lease in instance.leases if lease not in blocked]
        instance.config, instance.files, instance.netns = config, files, self._netns
        self._check_start(config)
        instance.pid = self.host.next_pid()
        change = Change.STARTED if old_pid is None else Change.RESTARTED
        self.host.events.append(("start" if old_pid is None else "restart", config.instance_id))
        return DnsmasqState(config.instance_id, config.bridge, instance.pid, change)

    async def stop(self, instance_id: uuid.UUID) -> None:
        instance = self.host.instances.pop((self.run_dir, instance_id), None)
        if instance is not None and instance.pid is not None:
            self.host.events.append(("stop", instance_id))

    async def list_owned(self) -> list[DnsmasqState]:
        return [
            DnsmasqState(instance_id, inst.config.bridge, inst.pid)
            for (run_dir, instance_id), inst in sorted(
                self.host.instances.items(), key=lambda item: str(item[0][1])
            )
            if run_dir == self.run_dir and inst.pid is not None
        ]

    async def leases(self, instance_id: uuid.UUID) -> list[Lease]:
        try:
            return list(self.instance(instance_id).leases)
        except KeyError:
            raise NotFoundError(f"no dnsmasq for network instance {instance_id}") from None

    # --- test hooks

    def inject_leases(self, instance_id: uuid.UUID, leases: Iterable[Lease]) -> None:
        """Replace the instance's leases, as dnsmasq writing its lease file would."""
        self.instance(instance_id).leases = list(leases)

    def crash(self, instance_id: uuid.UUID) -> None:
        """The process dies (its files stay): not listed, started again by ``ensure``."""
        self.instance(instance_id).pid = None

    def serve_dhcp(
        self, instance_id: uuid.UUID, mac: str, hostname: str | None = None
    ) -> Lease | None:
        """A DHCP exchange for ``mac``: its static address, the address it holds, or the first
        free one of the range; None when not running or the range is full."""
        inst = self.instance(instance_id)
        if inst.pid is None:
            return None
        config, mac = inst.config, mac.lower()
        static = {h.mac: h for h in config.static_hosts}
        held = {lease.ip for lease in inst.leases if lease.mac != mac}
        ip: IPv4Address | None = None
        if mac in static:
            ip, hostname = static[mac].ip, static[mac].hostname or hostname
        else:
            mine = [lease.ip for lease in inst.leases if lease.mac == mac]
            reserved = held | {h.ip for h in config.static_hosts}
            start, end = config.dhcp_range
            free = (IPv4Address(a) for a in range(int(start), int(end) + 1))
            ip = mine[0] if mine else next((a for a in free if a not in reserved), None)
        if ip is None or ip in held:
            return None
        expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=config.lease_time)
        lease = Lease(mac, ip, hostname, expiry)
        inst.leases = [old for old in inst.leases if old.mac != mac] + [lease]
        return lease

    def resolve(self, instance_id: uuid.UUID, name: str) -> list[IPAddress]:
        """What the instance answers for ``name``: its records and lease names (also under its
        domain), else the upstream world's answer when it has upstreams (and ``name`` has a
        dot: ``domain-needed``), added to the nft sets of the matching rules."""
        inst = self.instance(instance_id)
        if inst.pid is None:
            return []
        config, name = inst.config, name.lower().rstrip(".")
        local = name
        if config.domain is not None and name.endswith("." + config.domain):
            local = name.removesuffix("." + config.domain)
        found: list[IPAddress] = [
            a for r in config.dns_records if r.name in (name, local) for a in r.addresses
        ]
        found += [lease.ip for lease in inst.leases if lease.hostname in (name, local)]
        if found or not config.upstreams or "." not in name:
            return found
        if config.domain is not None and name.endswith("." + config.domain):
            return []  # local=/domain/: never forwarded
        answer = list(self.host.upstream.get(name, []))
        for rule in config.nftsets:
            if name == rule.domain or name.endswith("." + rule.domain):
                for nft in rule.sets:
                    key = (nft.family, nft.table, nft.name)
                    added = {a for a in answer if a.version == nft.ip_version}
                    self.host.nft_sets.setdefault(key, set()).update(added)
        return answer

    # --- internals

    def _check_start(self, config: DnsmasqConfig) -> None:
        if self.host.bridges is not None and config.bridge not in self.host.bridges:
            raise TemporaryError(
                f"dnsmasq for network instance {config.instance_id} failed (status 2): "
                f"dnsmasq: unknown interface {config.bridge}"
            )
        for (_, other_id), other in self.host.instances.items():
            if (
                other_id != config.instance_id
                and other.pid is not None
                and other.netns == self._netns
                and other.config.bridge == config.bridge
            ):
                raise TemporaryError(
                    f"dnsmasq for network instance {config.instance_id} failed (status 2): "
                    f"dnsmasq: failed to create listening socket for {config.gateway}: "
                    "Address already in use"
                )
