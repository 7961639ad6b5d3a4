"""A VM's NIC on a bridge in another network namespace (an emulated node's), with the real
libvirt/QEMU: libvirt makes the tap in its own namespace, the driver moves it to the node's and
enslaves it to the bridge there, where QEMU still holds it (carrier up).  Root; the namespace,
bridge and domain are this test's and go after it."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from agent.drivers import domainxml
from agent.drivers.domainxml import KernelBoot, Nic
from agent.drivers.hypervisor import DomainState, HypervisorSettings, VmSpec
from agent.drivers.libvirt import LibvirtHypervisor
from tests.integration.images import vm_images

URI = "qemu:///system"


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=False, timeout=30)


@pytest.fixture
async def node_ns(require_service: Callable[[str, str], NoReturn]) -> AsyncIterator[str]:
    images = vm_images()
    if isinstance(images, str):
        require_service("test VM image", images)
    try:
        import libvirt

        libvirt.open(URI).close()
    except Exception as exc:  # noqa: BLE001 - import or connection: either way no libvirtd
        require_service("libvirtd", f"cannot open {URI}: {exc}")
    ns = f"evt-vmn-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_ip, "netns", "add", ns)
    try:
        yield ns
    finally:
        await asyncio.to_thread(_ip, "netns", "del", ns)


async def test_a_tap_moves_to_the_nodes_bridge(node_ns: str, tmp_path: Path) -> None:
    images = vm_images()
    assert not isinstance(images, str)
    bridge, tap = f"evb{uuid.uuid4().hex[:8]}", f"evt{uuid.uuid4().hex[:8]}"
    for argv in (("link", "add", bridge, "type", "bridge"), ("link", "set", bridge, "up")):
        assert (await asyncio.to_thread(_ip, "-n", node_ns, *argv)).returncode == 0
    base = Path(tempfile.mkdtemp(prefix="eve-agent-vmnic-", dir="/var/tmp"))
    await asyncio.to_thread(base.chmod, 0o711)  # QEMU (libvirt-qemu) reaches the files
    node = f"vmnic-{uuid.uuid4().hex[:8]}"
    hv = LibvirtHypervisor(HypervisorSettings(node=node, state_dir=base, nic_netns=node_ns))
    app = uuid.uuid4()
    try:
        spec = VmSpec(
            app_uuid=app, generation=1, memory_mib=128, vcpus=1,
            kernel=KernelBoot(images.kernel, images.initrd, "console=ttyS0 quiet"),
            nics=(Nic(bridge, "02:00:00:aa:bb:dd", tap),),
        )  # fmt: skip
        info = await hv.define_and_start(spec)
        assert info.state is DomainState.RUNNING
        # libvirt's XML: an ethernet interface on the tap, the bridge named in its alias.
        (nic,) = domainxml.parse(await asyncio.to_thread(_xml, info.name)).nics
        assert nic.ethernet and nic.bridge == bridge and nic.target == tap
        # The tap is gone from libvirt's namespace and sits on the bridge in the node's.
        assert _ip("link", "show", tap).returncode != 0
        shown = await asyncio.to_thread(_ip, "-n", node_ns, "-o", "link", "show", tap)
        assert shown.returncode == 0, shown.stderr
        assert f"master {bridge}" in shown.stdout and "UP" in shown.stdout
        # QEMU still holds it: the carrier is up in its new namespace.
        argv = ["ip", "netns", "exec", node_ns, "cat", f"/sys/class/net/{tap}/carrier"]
        carrier = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, check=False
        )
        assert carrier.stdout.strip() == "1"
        await hv.undefine(app)
        gone = await asyncio.to_thread(_ip, "-n", node_ns, "link", "show", tap)
        assert gone.returncode != 0  # QEMU closed it: it went with the domain
    finally:
        await _cleanup(hv)
        shutil.rmtree(base, ignore_errors=True)


def _xml(name: str) -> str:
    import libvirt

    conn: Any = libvirt.open(URI)
    try:
        return str(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()


async def _cleanup(hv: LibvirtHypervisor) -> None:
    def destroy() -> None:
        import libvirt

        conn: Any = libvirt.open(URI)
        try:
            for dom in conn.listAllDomains(0):
                if dom.name().startswith(hv.prefix):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
        finally:
            conn.close()

    await asyncio.to_thread(destroy)
    await hv.close()
