"""VMs through libvirt: the :class:`Hypervisor` interface and its libvirt-python implementation.

One :class:`LibvirtHypervisor` serves one node (``HypervisorSettings.node``).  Every domain it
makes is named ``<prefix><app uuid>`` with a prefix derived from the node
(:func:`domain_prefix`: ``eve-`` and eight hex digits of the node's SHA-256), has a UUID
derived from node and app (so several emulated nodes can run the same app on one host), and
carries our metadata element (:mod:`agent.drivers.domainxml`: node, app UUID, generation).
A domain without that element, or with another node's, is never started, stopped, undefined
nor listed: an operation that finds one under our name fails with ``PermanentError``.

Files: each domain has a directory ``<state_dir>/<domain name>/`` with the NoCloud seed
(``seed.iso``) and the serial console log (``console.log``, appended by virtlogd); undefine
removes it, libvirt's NVRAM file (UEFI) and libvirt's own QEMU log of the domain.  QEMU runs as
``libvirt-qemu``: ``state_dir`` and its parents must be searchable by that user (mode o+x;
not a 0700 directory such as pytest's ``/tmp/pytest-of-root``), as must the disks' paths.

Every libvirt call runs in a worker thread.  The connection is opened on first use and opened
again when it is found dead (libvirtd restarted): an operation that hits a dead connection
reconnects and runs once more before it reports ``TemporaryError``.

Errors (:mod:`agent.drivers.errors`): no such domain -> ``NotFoundError`` (only from
:meth:`~Hypervisor.state` and :meth:`~Hypervisor.stats`: stopping and undefining what is
already gone succeeds); invalid XML, unsupported configuration, missing kernel or disk file, a
foreign domain under our name -> ``PermanentError``; connection failures and anything else ->
``TemporaryError``.

Acceleration: ``accel`` ``"kvm"`` or ``"tcg"`` forces one; ``"auto"`` (the default) uses KVM
only when the CPU shows hardware virtualisation (``vmx``/``svm`` in ``/proc/cpuinfo``) and a
probe guest actually runs on it (``/dev/kvm`` is opened and a one-instruction guest is run to
its ``hlt`` in a child process with a timeout).  The flag check matters: our CI hosts have a
``/dev/kvm`` from ``kvm_pvm`` (KVM without hardware virtualisation) on which the probe halts
but ordinary guest kernels hang; there TCG is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.drivers import cloudinit, domainxml
from agent.drivers.domainxml import (
    Accel,
    DomainXmlError,
    Mark,
)
from agent.drivers.errors import DriverError, NotFoundError, PermanentError, TemporaryError
from agent.drivers.hypervisor import (
    STATES,
    AccelSetting,
    DiskStats,
    DomainInfo,
    DomainState,
    DomainStats,
    Hypervisor,
    HypervisorSettings,
    Layout,
    LayoutNaming,
    VmSpec,
    domain_prefix,
    domain_uuid,
)
from agent.drivers.kvm import kvm_probe, kvm_usable
from agent.drivers.netlink import claim_links

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- libvirt -------------------------------------------------------------------------------------


def _libvirt() -> Any:
    import libvirt

    # libvirt prints every error to stderr by default; ours are raised and logged instead.
    libvirt.registerErrorHandler(_ignore_error, None)
    return libvirt


def _ignore_error(_ctx: object, _err: object) -> None:
    return None


def _codes(lv: Any, *names: str) -> frozenset[int]:
    return frozenset(getattr(lv, n) for n in names if hasattr(lv, n))


class _Reconnect(Exception):
    """The connection died under an operation; run it again on a fresh one."""


@dataclass
class _Conn:
    handle: Any = None
    opened: float = 0.0
    opens: int = 0


class LibvirtHypervisor(LayoutNaming):
    """:class:`Hypervisor` over libvirt-python; see the module docstring."""

    def __init__(self, settings: HypervisorSettings) -> None:
        self._lv = _libvirt()
        self._layout = Layout(settings)
        self._settings = settings
        self._conn = _Conn()
        self._accel: Accel | None = None
        lv = self._lv
        self._not_found = _codes(lv, "VIR_ERR_NO_DOMAIN")
        self._permanent = _codes(
            lv,
            "VIR_ERR_XML_ERROR",
            "VIR_ERR_XML_DETAIL",
            "VIR_ERR_XML_INVALID_SCHEMA",
            "VIR_ERR_CONFIG_UNSUPPORTED",
            "VIR_ERR_INVALID_ARG",
            "VIR_ERR_NO_SUPPORT",
            "VIR_ERR_NO_SOURCE",
            "VIR_ERR_DOM_EXIST",
            "VIR_ERR_INVALID_DOMAIN",
        )
        self._not_running = _codes(lv, "VIR_ERR_OPERATION_INVALID")
        self._connection_codes = _codes(lv, "VIR_ERR_NO_CONNECT", "VIR_ERR_INVALID_CONN")

    # --- connection and errors (worker threads)
    def _connection(self) -> Any:
        conn = self._conn.handle
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except self._lv.libvirtError:
                pass
            self._drop()
        try:
            conn = self._lv.open(self._settings.uri)
        except self._lv.libvirtError as exc:
            raise TemporaryError(
                f"cannot connect to {self._settings.uri}: {exc.get_error_message()}",
                retry_after=2.0,
            ) from exc
        self._conn = _Conn(handle=conn, opened=time.monotonic(), opens=self._conn.opens + 1)
        if self._conn.opens > 1:
            log.info("libvirt: reconnected to %s", self._settings.uri)
        return conn

    def _drop(self) -> None:
        conn, self._conn.handle = self._conn.handle, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _is_dead(self, exc: Any) -> bool:
        # VIR_ERR_SYSTEM_ERROR also reports local failures (QEMU refused a disk file): only a
        # connection that libvirt itself says is gone counts as lost.
        conn = self._conn.handle
        if conn is None:
            return True
        try:
            alive = bool(conn.isAlive())
        except self._lv.libvirtError:
            return True
        return not alive or exc.get_error_code() in self._connection_codes

    def _translate(self, exc: Any, what: str) -> DriverError:
        code = exc.get_error_code()
        message = f"{what}: {exc.get_error_message()}"
        if code in self._not_found:
            return NotFoundError(message)
        if code in self._permanent:
            return PermanentError(message)
        return TemporaryError(message)

    def _in_thread(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)``; a dead connection is reopened and ``fn`` run once more."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return fn(conn)
            except self._lv.libvirtError as exc:
                if self._is_dead(exc):
                    self._drop()
                    if attempt == 1:
                        log.warning("libvirt: connection lost during %s; reconnecting", what)
                        continue
                    raise TemporaryError(
                        f"{what}: libvirt connection lost: {exc.get_error_message()}",
                        retry_after=2.0,
                    ) from exc
                raise self._translate(exc, what) from exc
        raise AssertionError("unreachable")

    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self._in_thread, what, fn)

    # --- domain helpers (worker threads)
    def _mark_of(self, dom: Any) -> Mark | None:
        lv = self._lv
        try:
            xml = dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, domainxml.NAMESPACE, 0)
        except lv.libvirtError as exc:
            if exc.get_error_code() == getattr(lv, "VIR_ERR_NO_DOMAIN_METADATA", -1):
                return None
            raise
        try:
            return domainxml.parse_mark_element(xml)
        except DomainXmlError:
            log.warning("libvirt: domain %s has a malformed eve-agent mark", dom.name())
            return None

    def _lookup(self, conn: Any, app_uuid: uuid.UUID) -> tuple[Any, Mark] | None:
        """Our domain of the app, None when there is none; PermanentError for a foreign one."""
        name = self._layout.name(app_uuid)
        try:
            dom = conn.lookupByName(name)
        except self._lv.libvirtError as exc:
            if exc.get_error_code() in self._not_found:
                return None
            raise
        mark = self._layout.check_mark(name, self._mark_of(dom), app_uuid)
        return dom, mark

    def _info(self, dom: Any, mark: Mark) -> DomainInfo:
        state = dom.state()[0]
        name = dom.name()
        return DomainInfo(
            name=name,
            mark=mark,
            state=STATES[state] if 0 <= state < len(STATES) else DomainState.NOSTATE,
            console_log=self._layout.console_log(name),
        )

    def _sample(self, dom: Any) -> DomainStats:
        """:class:`DomainStats` of ``dom``: ``info`` (cumulative CPU time, memory limit, vCPUs),
        ``memoryStats`` (QEMU's resident set) while it runs, ``blockInfo`` of each disk."""
        _state, max_kib, _current_kib, vcpus, cpu_ns = dom.info()
        running = bool(dom.isActive())
        rss_kib = 0
        if running:
            try:
                rss_kib = int(dom.memoryStats().get("rss", 0))
            except self._lv.libvirtError as exc:
                # It stopped between the two calls: a stopped domain holds no memory.
                if self._is_dead(exc) or exc.get_error_code() not in self._not_running:
                    raise
                running = False
        return DomainStats(
            cpu_ns=int(cpu_ns) if running else 0,
            memory_bytes=rss_kib * 1024 if running else 0,
            memory_max_bytes=int(max_kib) * 1024,
            vcpus=int(vcpus),
            running=running,
            disks=self._disk_stats(dom),
        )

    def _disk_stats(self, dom: Any) -> tuple[DiskStats, ...]:
        try:
            disks = domainxml.parse(dom.XMLDesc(0)).disks
        except DomainXmlError as exc:
            log.warning("libvirt: no disk figures for %s: %s", dom.name(), exc)
            return ()
        out = []
        for disk in disks:
            try:
                capacity, allocation, _physical = dom.blockInfo(str(disk.path), 0)
            except self._lv.libvirtError as exc:
                # A disk file that vanished under a defined domain: the rest still counts.
                if self._is_dead(exc) or exc.get_error_code() in self._not_found:
                    raise
                log.debug("libvirt: no block info for %s: %s", disk.path, exc)
                continue
            out.append(DiskStats(disk.path, disk.format.value, int(capacity), int(allocation)))
        return tuple(out)

    def _destroy(self, dom: Any) -> None:
        try:
            dom.destroy()
        except self._lv.libvirtError as exc:
            # Already off (VIR_ERR_OPERATION_INVALID) or gone: the goal is reached.
            if exc.get_error_code() not in self._not_found | _codes(
                self._lv, "VIR_ERR_OPERATION_INVALID"
            ):
                raise

    # --- the interface
    async def detect_accel(self) -> Accel:
        if self._accel is not None:
            return self._accel
        setting = self._settings.accel
        if setting is AccelSetting.KVM:
            self._accel = Accel.KVM
        elif setting is AccelSetting.TCG:
            self._accel = Accel.TCG
        else:
            usable, why = await kvm_usable(self._settings.kvm_probe_timeout)
            self._accel = Accel.KVM if usable else Accel.TCG
            log.info("libvirt: using %s (%s)", self._accel.value.upper(), why)
        return self._accel

    async def define_and_start(self, spec: VmSpec) -> DomainInfo:
        accel = await self.detect_accel()
        config = self._layout.config(spec, accel)
        await asyncio.to_thread(self._layout.check_files, spec)
        xml = domainxml.build(config)

        def existing(conn: Any) -> DomainInfo | None:
            found = self._lookup(conn, spec.app_uuid)
            if found is None:
                return None
            return self._info(*found)

        current = await self._call(f"look up {config.name}", existing)
        if current is not None and current.state.active:
            if current.mark == config.mark:
                return current
            raise PermanentError(
                f"domain {config.name} runs generation {current.mark.generation}, "
                f"not {config.mark.generation}: shut it down first"
            )

        def prepare() -> None:
            self._layout.make_dir(config.name)
            if spec.cloud_init is not None and config.seed is not None:
                cloudinit.make_seed_sync(config.seed, spec.cloud_init)

        try:
            await asyncio.to_thread(prepare)
        except OSError as exc:
            raise TemporaryError(f"cannot write the files of {config.name}: {exc}") from exc

        def define_and_create(conn: Any) -> DomainInfo:
            # The name may have been taken meanwhile: never redefine a foreign domain.
            found = self._lookup(conn, spec.app_uuid)
            if found is not None and found[0].isActive():
                return self._info(*found)
            dom = conn.defineXML(xml)
            dom.create()
            return self._info(dom, config.mark)

        info = await self._call(f"define and start {config.name}", define_and_create)
        netns = self._settings.nic_netns
        if netns is not None and config.nics:
            # The bridges are in the emulated node's namespace: its taps go there.
            links = [(n.target, n.bridge) for n in config.nics if n.target]
            await asyncio.to_thread(claim_links, links, netns)
        log.info("libvirt: started %s (generation %d)", config.name, spec.generation)
        return info

    async def state(self, app_uuid: uuid.UUID) -> DomainInfo:
        name = self._layout.name(app_uuid)

        def get(conn: Any) -> DomainInfo:
            found = self._lookup(conn, app_uuid)
            if found is None:
                raise NotFoundError(f"no domain {name}")
            return self._info(*found)

        return await self._call(f"state of {name}", get)

    async def stats(self, app_uuid: uuid.UUID) -> DomainStats:
        name = self._layout.name(app_uuid)

        def sample(conn: Any) -> DomainStats:
            found = self._lookup(conn, app_uuid)
            if found is None:
                raise NotFoundError(f"no domain {name}")
            return self._sample(found[0])

        return await self._call(f"stats of {name}", sample)

    async def shutdown(self, app_uuid: uuid.UUID, grace: float) -> bool:
        name = self._layout.name(app_uuid)
        lv = self._lv

        def request(conn: Any) -> bool:
            found = self._lookup(conn, app_uuid)
            if found is None or not found[0].isActive():
                return False
            try:
                found[0].shutdownFlags(lv.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            except lv.libvirtError as exc:
                if exc.get_error_code() in self._not_found | _codes(
                    lv, "VIR_ERR_OPERATION_INVALID"
                ):
                    return False
                raise
            return True

        def active(conn: Any) -> bool:
            found = self._lookup(conn, app_uuid)
            return found is not None and bool(found[0].isActive())

        if not await self._call(f"shut down {name}", request):
            return True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            await asyncio.sleep(self._settings.poll_interval)
            if not await self._call(f"state of {name}", active):
                log.info("libvirt: %s shut down", name)
                return True
        log.info("libvirt: %s did not shut down within %g s; destroying it", name, grace)
        await self.destroy(app_uuid)
        return False

    async def destroy(self, app_uuid: uuid.UUID) -> None:
        name = self._layout.name(app_uuid)

        def stop(conn: Any) -> None:
            found = self._lookup(conn, app_uuid)
            if found is not None:
                self._destroy(found[0])

        await self._call(f"destroy {name}", stop)

    async def undefine(self, app_uuid: uuid.UUID) -> None:
        name = self._layout.name(app_uuid)
        lv = self._lv
        flags = 0
        for flag in (
            "VIR_DOMAIN_UNDEFINE_NVRAM",
            "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
            "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
            "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA",
        ):
            flags |= getattr(lv, flag, 0)

        def remove(conn: Any) -> None:
            found = self._lookup(conn, app_uuid)
            if found is None:
                return
            dom = found[0]
            if dom.isActive():
                self._destroy(dom)
            try:
                dom.undefineFlags(flags)
            except lv.libvirtError as exc:
                if exc.get_error_code() not in self._not_found:
                    raise

        await self._call(f"undefine {name}", remove)
        await asyncio.to_thread(self._layout.remove_files, name)
        log.info("libvirt: undefined %s", name)

    async def list_owned(self) -> list[DomainInfo]:
        prefix = self._layout.prefix

        def scan(conn: Any) -> list[DomainInfo]:
            out: list[DomainInfo] = []
            for dom in conn.listAllDomains(0):
                try:
                    name = dom.name()
                    if not name.startswith(prefix):
                        continue
                    mark = self._mark_of(dom)
                    if mark is None or mark.node != self._settings.node:
                        continue
                    if name != self._layout.name(mark.app_uuid):
                        continue
                    out.append(self._info(dom, mark))
                except self._lv.libvirtError as exc:
                    if exc.get_error_code() in self._not_found:
                        continue  # undefined while we listed
                    raise
            return sorted(out, key=lambda i: i.name)

        return await self._call("list domains", scan)

    async def close(self) -> None:
        await asyncio.to_thread(self._drop)


__all__ = [
    "AccelSetting",
    "DiskStats",
    "DomainInfo",
    "DomainState",
    "DomainStats",
    "Hypervisor",
    "HypervisorSettings",
    "Layout",
    "LibvirtHypervisor",
    "VmSpec",
    "domain_prefix",
    "domain_uuid",
    "kvm_probe",
    "kvm_usable",
]
