"""The hypervisor interface: :class:`Hypervisor`, the values it takes and returns, and the naming
and file layout every implementation shares, so the libvirt driver (:mod:`agent.drivers.libvirt`)
and the fake (:mod:`agent.drivers.libvirt_fake`) cannot drift apart.  See
:mod:`agent.drivers.libvirt` for the ownership and error contract.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from agent.drivers import domainxml
from agent.drivers.cloudinit import NoCloud
from agent.drivers.domainxml import Accel, Disk, DomainConfig, KernelBoot, Mark, Nic, SeedBus
from agent.drivers.errors import PermanentError

CONSOLE_LOG = "console.log"
SEED = domainxml.SEED_NAME


class AccelSetting(enum.StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class DomainState(enum.StrEnum):
    """libvirt's domain states, by name."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"

    @property
    def active(self) -> bool:
        return self not in (DomainState.SHUTOFF, DomainState.CRASHED, DomainState.NOSTATE)


#: virDomainState values in order.
STATES = list(DomainState)


@dataclass(frozen=True)
class HypervisorSettings:
    node: str
    #: Per-domain directories (seed, console log) live here; see the module docstring.
    state_dir: Path
    uri: str = "qemu:///system"
    accel: AccelSetting = AccelSetting.AUTO
    kvm_probe_timeout: float = 5.0
    #: Where libvirt writes each domain's QEMU log (removed on undefine); None leaves it.
    qemu_log_dir: Path | None = Path("/var/log/libvirt/qemu")
    #: How often a graceful shutdown polls the domain's state.
    poll_interval: float = 0.2
    #: The network namespace the network instances' bridges live in when it is not libvirt's
    #: (an emulated node's ``--netns``): NICs are then taps moved there (see ``Nic.ethernet``).
    nic_netns: str | None = None


@dataclass(frozen=True)
class VmSpec:
    """One VM as the app layer asks for it."""

    app_uuid: uuid.UUID
    generation: int
    memory_mib: int
    vcpus: int
    disks: tuple[Disk, ...] = ()
    #: Interfaces on the network instances' bridges (the bridges must exist).
    nics: tuple[Nic, ...] = ()
    kernel: KernelBoot | None = None
    cloud_init: NoCloud | None = None
    seed_bus: SeedBus = SeedBus.CDROM
    uefi: bool = False
    machine: str = "pc"


@dataclass(frozen=True)
class DomainInfo:
    name: str
    mark: Mark
    state: DomainState
    console_log: Path


@dataclass(frozen=True)
class DiskStats:
    """One file-backed disk of a domain (the NoCloud seed aside): its virtual size and the bytes
    it takes on the host, as libvirt's ``blockInfo`` gives them (capacity, allocation)."""

    path: Path
    format: str
    capacity_bytes: int
    allocation_bytes: int


@dataclass(frozen=True)
class DomainStats:
    """One sample of a domain's use of the host, cheap to take (``virDomainGetInfo``,
    ``virDomainMemoryStats``, ``virDomainGetBlockInfo``).

    ``cpu_ns`` is the cumulative CPU time of the whole domain (all vCPUs and QEMU's own threads)
    since it started; rates are the caller's.  ``memory_bytes`` is what the domain holds on the
    host (QEMU's resident set, as EVE reports its cgroup's usage), ``memory_max_bytes`` what it
    may have.  A domain that is not running has ``cpu_ns == 0`` and ``memory_bytes == 0``.
    """

    cpu_ns: int
    memory_bytes: int
    memory_max_bytes: int
    vcpus: int
    running: bool
    disks: tuple[DiskStats, ...] = ()


class Hypervisor(Protocol):
    """A node's VMs.  Addressed by app UUID; see the module docstring for naming, marks,
    files and errors."""

    @property
    def node(self) -> str: ...

    def domain_name(self, app_uuid: uuid.UUID) -> str: ...

    def console_log(self, app_uuid: uuid.UUID) -> Path:
        """The serial console log of the app's domain (it may not exist yet)."""
        ...

    async def detect_accel(self) -> Accel:
        """KVM or TCG: the setting when forced, else a probe (cached)."""
        ...

    async def define_and_start(self, spec: VmSpec) -> DomainInfo:
        """(Re)write the seed, define the domain and start it.  A domain of this app already
        running with the same generation is left alone; one running with another generation
        is a PermanentError (stop it first)."""
        ...

    async def state(self, app_uuid: uuid.UUID) -> DomainInfo:
        """NotFoundError when the app has no domain."""
        ...

    async def stats(self, app_uuid: uuid.UUID) -> DomainStats:
        """One :class:`DomainStats` sample.  NotFoundError when the app has no domain,
        PermanentError for a foreign domain under our name."""
        ...

    async def shutdown(self, app_uuid: uuid.UUID, grace: float) -> bool:
        """ACPI power button, then destroy after ``grace`` seconds.  True when the guest
        went off by itself (or was not running)."""
        ...

    async def destroy(self, app_uuid: uuid.UUID) -> None:
        """Hard stop; nothing to do when it is off or gone."""
        ...

    async def undefine(self, app_uuid: uuid.UUID) -> None:
        """Destroy if running, undefine (NVRAM too) and remove the domain's files.  A domain
        already gone is success."""
        ...

    async def list_owned(self) -> list[DomainInfo]:
        """The domains of this node (our metadata naming this node); nothing else."""
        ...

    async def close(self) -> None: ...


def domain_prefix(node: str) -> str:
    return "eve-" + hashlib.sha256(node.encode()).hexdigest()[:8] + "-"


def domain_uuid(node: str, app_uuid: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{domainxml.NAMESPACE}/{node}/{app_uuid}")


class Layout:
    """Names and paths of one node's domains, and the domain config of a spec: what the
    real driver and the fake share."""

    def __init__(self, settings: HypervisorSettings) -> None:
        if not settings.node:
            raise ValueError("node must not be empty")
        self.settings = settings
        self.prefix = domain_prefix(settings.node)
        self.state_dir = Path(settings.state_dir).absolute()

    def name(self, app_uuid: uuid.UUID) -> str:
        return f"{self.prefix}{app_uuid}"

    def domain_dir(self, name: str) -> Path:
        return self.state_dir / name

    def console_log(self, name: str) -> Path:
        return self.domain_dir(name) / CONSOLE_LOG

    def check_files(self, spec: VmSpec) -> None:
        """PermanentError naming the first kernel, initrd or disk file that is missing."""
        paths: list[Path] = [d.path for d in spec.disks]
        if spec.kernel is not None:
            paths.append(spec.kernel.kernel)
            if spec.kernel.initrd is not None:
                paths.append(spec.kernel.initrd)
        for path in paths:
            if not Path(path).is_file():
                raise PermanentError(f"VM file missing: {path}")

    def config(self, spec: VmSpec, accel: Accel) -> DomainConfig:
        name = self.name(spec.app_uuid)
        try:
            return DomainConfig(
                name=name,
                uuid=domain_uuid(self.settings.node, spec.app_uuid),
                mark=Mark(self.settings.node, spec.app_uuid, spec.generation),
                memory_mib=spec.memory_mib,
                vcpus=spec.vcpus,
                accel=accel,
                console_log=self.console_log(name),
                disks=spec.disks,
                nics=tuple(
                    replace(n, ethernet=True) if self.settings.nic_netns else n for n in spec.nics
                ),
                kernel=spec.kernel,
                seed=self.domain_dir(name) / SEED if spec.cloud_init is not None else None,
                seed_bus=spec.seed_bus,
                uefi=spec.uefi,
                machine=spec.machine,
            )
        except ValueError as exc:
            raise PermanentError(f"invalid VM spec: {exc}") from exc

    def make_dir(self, name: str) -> Path:
        path = self.domain_dir(name)
        path.mkdir(parents=True, exist_ok=True)
        # QEMU (libvirt-qemu) must reach the seed; the log is written by root's virtlogd.
        path.chmod(0o711)
        return path

    def remove_files(self, name: str) -> None:
        shutil.rmtree(self.domain_dir(name), ignore_errors=True)
        if self.settings.qemu_log_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.settings.qemu_log_dir / f"{name}.log").unlink()

    def check_mark(self, name: str, mark: Mark | None, app_uuid: uuid.UUID | None) -> Mark:
        if mark is None:
            raise PermanentError(f"domain {name} exists but is not ours (no eve-agent metadata)")
        if mark.node != self.settings.node or (app_uuid is not None and mark.app_uuid != app_uuid):
            raise PermanentError(
                f"domain {name} belongs to node {mark.node!r} app {mark.app_uuid}, not to us"
            )
        return mark


class LayoutNaming:
    """The naming part of :class:`Hypervisor`, the same for every implementation (they set
    ``_settings`` and ``_layout``)."""

    _settings: HypervisorSettings
    _layout: Layout

    @property
    def node(self) -> str:
        return self._settings.node

    @property
    def prefix(self) -> str:
        return self._layout.prefix

    def domain_name(self, app_uuid: uuid.UUID) -> str:
        return self._layout.name(app_uuid)

    def console_log(self, app_uuid: uuid.UUID) -> Path:
        return self._layout.console_log(self._layout.name(app_uuid))
