"""One contract for both hypervisor drivers: FakeHypervisor and LibvirtHypervisor on the host's
libvirtd (qemu:///system, TCG here).

The real half boots the test guest of ``images/vm`` (built, or found in the cache, by
``images/vm/build.sh``) from a qcow2 overlay of its disk, with a NoCloud seed whose user data
carries a marker, and reads the serial console log until the guest prints it.  Each test uses
a node name of its own (so its own domain prefix) and a state directory under /var/tmp (QEMU,
running as libvirt-qemu, cannot enter pytest's 0700 tmp directories); teardown destroys and
undefines every domain with the test's prefix or foreign name and removes the directory, also
when the test failed.  Without root, libvirt-python or libvirtd the real half fails when
services are required (CI, ``make test``) and skips otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agent.drivers import domainxml
from agent.drivers.cloudinit import NoCloud
from agent.drivers.domainxml import Disk, DiskFormat, KernelBoot, Mark, Nic
from agent.drivers.errors import NotFoundError, PermanentError
from agent.drivers.libvirt import (
    DomainState,
    Hypervisor,
    HypervisorSettings,
    LibvirtHypervisor,
    VmSpec,
    domain_uuid,
)
from agent.drivers.libvirt_fake import FakeHypervisor
from tests.integration.images import VmImages
from tests.integration.images import vm_images as find_vm_images

ROOT = Path(__file__).resolve().parents[2]
URI = "qemu:///system"
BOOT_TIMEOUT = 60.0


#: The test guest's files (built by images/vm, found by tests/integration/images.py).
Images = VmImages


@dataclass
class Env:
    kind: str
    hv: Hypervisor
    node: str
    state_dir: Path
    images: Images
    scratch: Path
    define_foreign: Callable[[str, str], None]
    foreign_exists: Callable[[str], bool]
    break_connection: Callable[[], None]
    foreign: list[str] = field(default_factory=list)

    def overlay(self, name: str) -> Path:
        """A qcow2 overlay of the test guest's disk (the test's own file)."""
        path = self.scratch / f"{name}.qcow2"
        if path.exists():
            return path
        if self.kind == "real":
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                 str(self.images.disk), str(path)],
                check=True,
            )  # fmt: skip
        else:
            path.write_bytes(b"QFI\xfb")
        return path


@pytest.fixture(scope="session")
def vm_images() -> Images | str:
    """The test guest from images/vm/build.sh, or why there is none."""
    return find_vm_images()


def _libvirt_conn() -> Any:
    import libvirt

    return libvirt.open(URI)


@pytest.fixture(params=["fake", "real"])
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    vm_images: Images | str,
    require_service: Callable[[str, str], NoReturn],
) -> Iterator[Env]:
    node = f"contract-{uuid.uuid4().hex[:12]}"
    if request.param == "fake":
        images = Images(tmp_path / "vmlinuz", tmp_path / "initrd.gz", tmp_path / "disk.qcow2")
        for path in (images.kernel, images.initrd, images.disk):
            path.write_bytes(b"x")
        settings = HypervisorSettings(node=node, state_dir=tmp_path / "state", qemu_log_dir=None)
        fake = FakeHypervisor(settings)
        yield Env(
            "fake", fake, node, settings.state_dir, images, tmp_path,
            define_foreign=lambda name, xml: fake.add_foreign(name, xml, running=False),
            foreign_exists=lambda name: name in fake.domains,
            break_connection=lambda: None,
        )  # fmt: skip
        return

    if isinstance(vm_images, str):
        require_service("test VM image", vm_images)
    try:
        conn = _libvirt_conn()
    except Exception as exc:  # noqa: BLE001 - import or connection: either way no libvirtd
        require_service("libvirtd", f"cannot open {URI}: {exc}")
    base = Path(tempfile.mkdtemp(prefix="eve-agent-libvirt-", dir="/var/tmp"))
    base.chmod(0o711)
    settings = HypervisorSettings(node=node, state_dir=base / "state")
    hv = LibvirtHypervisor(settings)
    foreign: list[str] = []

    def define_foreign(name: str, xml: str) -> None:
        foreign.append(name)
        conn.defineXML(xml)

    def foreign_exists(name: str) -> bool:
        return name in conn.listDefinedDomains() + [d.name() for d in conn.listAllDomains(0)]

    def break_connection() -> None:
        hv._conn.handle.close()  # the driver must notice and reconnect

    e = Env("real", hv, node, settings.state_dir, vm_images, base, define_foreign,
            foreign_exists, break_connection, foreign)  # fmt: skip
    try:
        yield e
    finally:
        asyncio.run(hv.close())
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(hv.prefix) or dom.name() in foreign:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(getattr(__import__("libvirt"), "VIR_DOMAIN_UNDEFINE_NVRAM", 0))
        conn.close()
        shutil.rmtree(base, ignore_errors=True)


def spec(e: Env, app: uuid.UUID, *, generation: int = 1, marker: str | None = None,
         kernel: bool = False) -> VmSpec:  # fmt: skip
    seed = None
    if marker is not None:
        seed = NoCloud(
            f"{app}.{generation}", "contract-vm", f"#cloud-config\n# {marker}\n".encode()
        )
    if kernel:
        return VmSpec(
            app_uuid=app, generation=generation, memory_mib=128, vcpus=1,
            kernel=KernelBoot(e.images.kernel, e.images.initrd, "console=ttyS0 quiet"),
            cloud_init=seed,
        )  # fmt: skip
    return VmSpec(
        app_uuid=app, generation=generation, memory_mib=128, vcpus=1,
        disks=(Disk(e.overlay(str(app)), DiskFormat.QCOW2),), cloud_init=seed,
    )  # fmt: skip


def foreign_xml(name: str, mark: Mark | None = None) -> str:
    """A domain the driver did not make: no mark, or another node's."""
    if mark is not None:
        cfg = domainxml.DomainConfig(
            name=name, uuid=uuid.uuid4(), mark=mark, memory_mib=64, vcpus=1,
            accel=domainxml.Accel.TCG, console_log=Path("/var/tmp/none.log"),
            kernel=KernelBoot(Path("/nonexistent")),
        )  # fmt: skip
        return domainxml.build(cfg)
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )


async def wait_for_console(path: Path, text: str, limit: float = BOOT_TIMEOUT) -> str:
    deadline = time.monotonic() + limit
    content = ""
    while time.monotonic() < deadline:
        if await asyncio.to_thread(path.exists):
            content = await asyncio.to_thread(path.read_text, errors="replace")
            if text in content:
                return content
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} not on the console within {limit:g} s; log: {content[-2000:]}")


async def test_boot_seed_list_shutdown_undefine(env: Env) -> None:
    hv = env.hv
    app = uuid.uuid4()
    marker = f"MARKER-{uuid.uuid4().hex}"
    # Foreign domains: one under our prefix without a mark, one marked by another node.
    foreign_plain = f"{hv.domain_name(uuid.uuid4())}"
    other_app = uuid.uuid4()
    foreign_other = hv.domain_name(other_app)
    env.define_foreign(foreign_plain, foreign_xml(foreign_plain))
    env.define_foreign(foreign_other, foreign_xml(foreign_other, Mark("other-node", other_app, 1)))

    t0 = time.monotonic()
    info = await hv.define_and_start(spec(env, app, marker=marker))
    assert info.state is DomainState.RUNNING
    assert info.name == hv.domain_name(app) and info.mark == Mark(env.node, app, 1)
    console = await wait_for_console(hv.console_log(app), marker)
    boot = time.monotonic() - t0
    assert "----- meta-data" in console and f"instance-id: {app}.1" in console
    print(f"{env.kind}: user data on the console {boot:.1f} s after define_and_start")

    owned = await hv.list_owned()
    assert [(o.name, o.mark, o.state) for o in owned] == [
        (info.name, info.mark, DomainState.RUNNING)
    ]
    # Idempotent start; another generation while running is refused.
    again = await hv.define_and_start(spec(env, app, marker=marker))
    assert again.state is DomainState.RUNNING
    with pytest.raises(PermanentError, match="generation 1"):
        await hv.define_and_start(spec(env, app, generation=2, marker=marker))

    assert await hv.shutdown(app, grace=30) is True  # the guest honours the power button
    assert (await hv.state(app)).state is DomainState.SHUTOFF
    await hv.undefine(app)
    await hv.undefine(app)  # already gone: fine
    with pytest.raises(NotFoundError):
        await hv.state(app)
    await hv.destroy(app)
    assert await hv.shutdown(app, grace=1) is True
    assert await hv.list_owned() == []
    assert not (env.state_dir / info.name).exists()
    if env.kind == "real":
        qemu_log = Path(f"/var/log/libvirt/qemu/{info.name}.log")
        assert not await asyncio.to_thread(qemu_log.exists)
    # The foreign domains are untouched.
    assert env.foreign_exists(foreign_plain) and env.foreign_exists(foreign_other)


async def test_foreign_domain_under_our_name_is_never_touched(env: Env) -> None:
    hv = env.hv
    app = uuid.uuid4()
    name = hv.domain_name(app)
    env.define_foreign(name, foreign_xml(name))
    with pytest.raises(PermanentError, match="not ours"):
        await hv.define_and_start(spec(env, app, kernel=True))
    for op in (
        hv.undefine(app),
        hv.destroy(app),
        hv.shutdown(app, 1),
        hv.state(app),
        hv.stats(app),
    ):
        with pytest.raises(PermanentError, match="not ours"):
            await op
    assert env.foreign_exists(name)
    assert await hv.list_owned() == []


async def test_destroy_and_undefine_a_running_domain(env: Env) -> None:
    hv = env.hv
    app = uuid.uuid4()
    info = await hv.define_and_start(spec(env, app, kernel=True, marker="direct-kernel"))
    await wait_for_console(info.console_log, "direct-kernel")
    await hv.destroy(app)
    await hv.destroy(app)
    assert (await hv.state(app)).state is DomainState.SHUTOFF
    info = await hv.define_and_start(spec(env, app, generation=2, kernel=True))
    assert info.mark.generation == 2 and info.state is DomainState.RUNNING
    await hv.undefine(app)  # running: destroyed first
    assert await hv.list_owned() == []
    assert not (env.state_dir / info.name).exists()


async def test_stats_of_a_running_and_a_stopped_domain(env: Env) -> None:
    hv = env.hv
    app = uuid.uuid4()
    with pytest.raises(NotFoundError):
        await hv.stats(app)
    info = await hv.define_and_start(spec(env, app, marker="stats-guest"))
    await wait_for_console(info.console_log, "stats-guest")
    first = await hv.stats(app)
    assert first.running and first.vcpus == 1
    assert first.memory_max_bytes == 128 * 2**20
    assert first.memory_bytes > 0 and first.cpu_ns > 0
    [disk] = first.disks  # the seed is not a disk of the app
    assert disk.path == env.overlay(str(app)) and disk.format == "qcow2"
    assert disk.capacity_bytes > 0 and disk.allocation_bytes > 0
    second = await hv.stats(app)
    assert second.cpu_ns >= first.cpu_ns  # cumulative
    print(f"{env.kind}: {first.cpu_ns / 1e9:.2f} s CPU, {first.memory_bytes >> 20} MiB resident")

    await hv.destroy(app)
    off = await hv.stats(app)
    assert not off.running and off.cpu_ns == 0 and off.memory_bytes == 0
    assert off.memory_max_bytes == 128 * 2**20 and off.vcpus == 1
    await hv.undefine(app)
    with pytest.raises(NotFoundError):
        await hv.stats(app)


async def test_bad_input_is_permanent_and_defines_nothing(env: Env) -> None:
    hv = env.hv
    app = uuid.uuid4()
    missing = VmSpec(app, 1, 128, 1, kernel=KernelBoot(env.scratch / "no-such-kernel"))
    with pytest.raises(PermanentError, match="missing"):
        await hv.define_and_start(missing)
    with pytest.raises(PermanentError, match="invalid VM spec"):
        await hv.define_and_start(VmSpec(app, 1, 128, 0, kernel=KernelBoot(env.images.kernel)))
    assert await hv.list_owned() == []
    with pytest.raises(NotFoundError):
        await hv.state(app)


async def test_reconnects_after_the_connection_is_lost(env: Env) -> None:
    hv = env.hv
    assert await hv.list_owned() == []
    env.break_connection()
    assert await hv.list_owned() == []
    assert str(domain_uuid(env.node, uuid.UUID(int=1))) != str(domain_uuid("x", uuid.UUID(int=1)))


def _links(*calls: tuple[str, str]) -> list[tuple[int | None, str | None] | None]:
    """In a thread (pyroute2's IPRoute runs an event loop of its own): ``("add"|"del"|"get",
    name)`` on the root namespace's bridges and links; "get" gives (master index, MAC)."""
    from pyroute2 import IPRoute

    out: list[tuple[int | None, str | None] | None] = []
    with IPRoute() as ipr:
        for op, name in calls:
            if op == "add":
                ipr.link("add", ifname=name, kind="bridge")
            elif op == "del":
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=name)
            elif op == "index":
                found = ipr.link_lookup(ifname=name)
                out.append((found[0], None) if found else None)
            else:
                found = ipr.link_lookup(ifname=name)
                if not found:
                    out.append(None)
                    continue
                (link,) = ipr.get_links(*found)
                out.append((link.get_attr("IFLA_MASTER"), link.get_attr("IFLA_ADDRESS")))
    return out


async def test_a_nic_on_a_bridge(env: Env) -> None:
    """A NIC is a tap libvirt makes under the name asked and enslaves to the bridge.  The real
    half makes its own bridge in the root namespace (libvirt's QEMU runs there), named with
    this test's prefix, and deletes it after."""
    hv = env.hv
    app = uuid.uuid4()
    bridge, tap = f"evt{uuid.uuid4().hex[:8]}", f"evt{uuid.uuid4().hex[:8]}"
    real = env.kind == "real"
    if real:
        await asyncio.to_thread(_links, ("add", bridge))
    try:
        base = spec(env, app, kernel=True)
        nic = Nic(bridge, "02:00:00:aa:bb:cc", tap)
        info = await hv.define_and_start(dataclasses.replace(base, nics=(nic,)))
        assert info.state is DomainState.RUNNING
        if real:
            got, index = await asyncio.to_thread(_links, ("get", tap), ("index", bridge))
            assert got is not None and index is not None
            assert got[0] == index[0]  # enslaved to our bridge
            assert got[1] == "fe:00:00:aa:bb:cc"  # libvirt gives the tap this MAC
        await hv.undefine(app)
        if real:
            assert await asyncio.to_thread(_links, ("get", tap)) == [None]  # gone with it
    finally:
        if real:
            await asyncio.to_thread(_links, ("del", bridge))
