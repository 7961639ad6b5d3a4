"""FakeHypervisor specifics (the shared behaviour is in tests/integration/test_libvirt_contract)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agent.drivers.cloudinit import NoCloud
from agent.drivers.domainxml import Accel, KernelBoot
from agent.drivers.errors import PermanentError, TemporaryError
from agent.drivers.libvirt import (
    AccelSetting,
    DomainState,
    HypervisorSettings,
    VmSpec,
    domain_prefix,
)
from agent.drivers.libvirt_fake import FakeHypervisor


def make(tmp_path: Path, node: str = "n1", **kw: object) -> FakeHypervisor:
    settings = HypervisorSettings(node=node, state_dir=tmp_path / "s", qemu_log_dir=None, **kw)  # type: ignore[arg-type]
    return FakeHypervisor(settings)


def vm(tmp_path: Path, app: uuid.UUID, gen: int = 1) -> VmSpec:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    return VmSpec(app, gen, 64, 1, kernel=KernelBoot(kernel), cloud_init=NoCloud("i", "h", b"UD"))


def test_names_derive_from_the_node(tmp_path: Path) -> None:
    a, b = make(tmp_path, "a"), make(tmp_path, "b")
    app = uuid.uuid4()
    assert a.domain_name(app).startswith(domain_prefix("a"))
    assert a.domain_name(app) != b.domain_name(app)
    assert a.console_log(app).parent == tmp_path / "s" / a.domain_name(app)


async def test_accel_setting(tmp_path: Path) -> None:
    assert await make(tmp_path).detect_accel() is Accel.TCG
    assert await make(tmp_path, accel=AccelSetting.KVM).detect_accel() is Accel.KVM


async def test_nodes_do_not_see_each_other(tmp_path: Path) -> None:
    a = make(tmp_path, "a")
    b = make(tmp_path, "b")
    b.domains = a.domains  # one host
    app = uuid.uuid4()
    await a.define_and_start(vm(tmp_path, app))
    assert [i.mark.app_uuid for i in await a.list_owned()] == [app]
    assert await b.list_owned() == []


async def test_injected_failure_and_ungraceful_shutdown(tmp_path: Path) -> None:
    hv = make(tmp_path)
    app = uuid.uuid4()
    hv.fail_next("define_and_start", TemporaryError("busy"))
    with pytest.raises(TemporaryError):
        await hv.define_and_start(vm(tmp_path, app))
    await hv.define_and_start(vm(tmp_path, app))
    hv.graceful = False
    assert await hv.shutdown(app, 0.01) is False
    assert (await hv.state(app)).state is DomainState.SHUTOFF
    await hv.define_and_start(vm(tmp_path, app, 2))
    hv.power_off(app)
    assert (await hv.state(app)).state is DomainState.SHUTOFF
    with pytest.raises(PermanentError):
        await hv.define_and_start(VmSpec(app, 1, 64, 1))  # nothing to boot
    await hv.undefine(app)
    assert not (tmp_path / "s" / hv.domain_name(app)).exists()
