"""An in-memory :class:`~agent.drivers.libvirt.Hypervisor`: same names, marks, files and errors
as :class:`~agent.drivers.libvirt.LibvirtHypervisor`, no libvirt.

Domains are kept as their XML (built by :mod:`agent.drivers.domainxml`, so the fake exercises
the builder and the parser).  The per-domain directory holds a stand-in seed (``seed.iso``
with the meta-data and user-data one after the other, not an ISO) and a console log into which
a started domain "prints" what the test guest of ``images/vm`` prints, so tests that wait for
the user data on the console run against either implementation.

Test hooks: :meth:`FakeHypervisor.add_foreign` defines a domain the agent did not make;
:meth:`FakeHypervisor.fail_next` makes the next call of an operation raise the given error;
:meth:`FakeHypervisor.power_off` stops a domain as a guest that powered itself off would.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent.drivers import domainxml
from agent.drivers.domainxml import Accel, DomainXmlError, Mark
from agent.drivers.errors import DriverError, NotFoundError, PermanentError
from agent.drivers.hypervisor import (
    SEED,
    AccelSetting,
    DiskStats,
    DomainInfo,
    DomainState,
    DomainStats,
    HypervisorSettings,
    Layout,
    LayoutNaming,
    VmSpec,
)

#: CPU time a running fake domain uses between two :meth:`FakeHypervisor.stats` calls.
CPU_NS_PER_SAMPLE = 1_000_000


@dataclass
class FakeDomain:
    xml: str
    state: DomainState = DomainState.SHUTOFF
    #: Cumulative CPU time since the domain started (tests may set it).
    cpu_ns: int = 0

    @property
    def mark(self) -> Mark | None:
        try:
            return domainxml.parse_mark(self.xml)
        except DomainXmlError:
            return None


def _disk_stats(disks: tuple[domainxml.Disk, ...]) -> tuple[DiskStats, ...]:
    out = []
    for disk in disks:
        try:
            size = Path(disk.path).stat().st_size
        except FileNotFoundError:
            continue
        out.append(DiskStats(disk.path, disk.format.value, size, size))
    return tuple(out)


def _append(path: Path, text: str) -> None:
    with open(path, "a") as log:
        log.write(text)


class FakeHypervisor(LayoutNaming):
    """See the module docstring."""

    def __init__(self, settings: HypervisorSettings, *, graceful: bool = True) -> None:
        self._settings = settings
        self._layout = Layout(settings)
        #: Whether guests honour the power button (else shutdown waits and destroys).
        self.graceful = graceful
        #: All domains on the "host", ours and others, by name.
        self.domains: dict[str, FakeDomain] = {}
        self._failures: dict[str, DriverError] = {}
        self.calls: list[str] = []

    # --- test hooks
    def add_foreign(self, name: str, xml: str, *, running: bool = True) -> None:
        self.domains[name] = FakeDomain(
            xml, DomainState.RUNNING if running else DomainState.SHUTOFF
        )

    def fail_next(self, operation: str, error: DriverError) -> None:
        """``operation``: a method name (``define_and_start``, ``undefine``...)."""
        self._failures[operation] = error

    def power_off(self, app_uuid: uuid.UUID) -> None:
        self.domains[self._layout.name(app_uuid)].state = DomainState.SHUTOFF

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error

    # --- helpers
    def _lookup(self, app_uuid: uuid.UUID) -> tuple[FakeDomain, Mark] | None:
        name = self._layout.name(app_uuid)
        dom = self.domains.get(name)
        if dom is None:
            return None
        return dom, self._layout.check_mark(name, dom.mark, app_uuid)

    def _info(self, name: str, dom: FakeDomain, mark: Mark) -> DomainInfo:
        return DomainInfo(name, mark, dom.state, self._layout.console_log(name))

    # --- the interface
    async def detect_accel(self) -> Accel:
        return Accel.KVM if self._settings.accel is AccelSetting.KVM else Accel.TCG

    async def define_and_start(self, spec: VmSpec) -> DomainInfo:
        self._enter("define_and_start")
        accel = await self.detect_accel()
        config = self._layout.config(spec, accel)
        self._layout.check_files(spec)
        xml = domainxml.build(config)
        found = self._lookup(spec.app_uuid)
        if found is not None and found[0].state.active:
            if found[1] == config.mark:
                return self._info(config.name, *found)
            raise PermanentError(
                f"domain {config.name} runs generation {found[1].generation}, "
                f"not {config.mark.generation}: shut it down first"
            )
        self._layout.make_dir(config.name)
        lines = ["eve-test-guest: up, kernel fake"]
        if spec.cloud_init is not None and config.seed is not None:
            meta = spec.cloud_init.meta_data()
            config.seed.write_bytes(meta + spec.cloud_init.user_data)
            cdrom = config.seed_bus == "cdrom"
            lines += [
                f"eve-test-guest: NoCloud seed on /dev/{'sr0' if cdrom else 'vdb'}",
                "----- meta-data",
                meta.decode(errors="replace").rstrip("\n"),
                "----- user-data",
                spec.cloud_init.user_data.decode(errors="replace").rstrip("\n"),
                "----- end of seed",
            ]
        else:
            lines.append("eve-test-guest: no NoCloud seed (no filesystem labelled cidata)")
        lines.append("eve-test-guest: running")
        await asyncio.to_thread(_append, config.console_log, "\n".join(lines) + "\n")
        self.domains[config.name] = FakeDomain(xml, DomainState.RUNNING)
        await asyncio.sleep(0)
        return self._info(config.name, self.domains[config.name], config.mark)

    async def state(self, app_uuid: uuid.UUID) -> DomainInfo:
        self._enter("state")
        found = self._lookup(app_uuid)
        name = self._layout.name(app_uuid)
        if found is None:
            raise NotFoundError(f"no domain {name}")
        return self._info(name, *found)

    async def stats(self, app_uuid: uuid.UUID) -> DomainStats:
        """As libvirt's: a running domain uses :data:`CPU_NS_PER_SAMPLE` of CPU per call and
        holds a quarter of its memory; disks are their files' sizes."""
        self._enter("stats")
        found = self._lookup(app_uuid)
        if found is None:
            raise NotFoundError(f"no domain {self._layout.name(app_uuid)}")
        dom = found[0]
        config = domainxml.parse(dom.xml)
        running = dom.state.active
        if running:
            dom.cpu_ns += CPU_NS_PER_SAMPLE
        max_bytes = config.memory_mib * 2**20
        disks = await asyncio.to_thread(_disk_stats, config.disks)
        return DomainStats(
            cpu_ns=dom.cpu_ns if running else 0,
            memory_bytes=max_bytes // 4 if running else 0,
            memory_max_bytes=max_bytes,
            vcpus=config.vcpus,
            running=running,
            disks=disks,
        )

    async def shutdown(self, app_uuid: uuid.UUID, grace: float) -> bool:
        self._enter("shutdown")
        found = self._lookup(app_uuid)
        if found is None or not found[0].state.active:
            return True
        if self.graceful:
            found[0].state = DomainState.SHUTOFF
            return True
        await asyncio.sleep(min(grace, 0.01))
        found[0].state = DomainState.SHUTOFF
        return False

    async def destroy(self, app_uuid: uuid.UUID) -> None:
        self._enter("destroy")
        found = self._lookup(app_uuid)
        if found is not None:
            found[0].state = DomainState.SHUTOFF

    async def undefine(self, app_uuid: uuid.UUID) -> None:
        self._enter("undefine")
        name = self._layout.name(app_uuid)
        if self._lookup(app_uuid) is not None:
            del self.domains[name]
        self._layout.remove_files(name)

    async def list_owned(self) -> list[DomainInfo]:
        self._enter("list_owned")
        out = []
        for name, dom in self.domains.items():
            mark = dom.mark
            if mark is None or mark.node != self.node or name != self._layout.name(mark.app_uuid):
                continue
            out.append(self._info(name, dom, mark))
        return sorted(out, key=lambda i: i.name)

    async def close(self) -> None:
        return None


__all__ = ["CPU_NS_PER_SAMPLE", "SEED", "FakeDomain", "FakeHypervisor"]
