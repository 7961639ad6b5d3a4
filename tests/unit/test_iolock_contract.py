"""One contract for both I/O lock drivers: the real one on a fake sysfs tree (with a fake
systemctl) and the in-memory fake the reconciler's tests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.drivers.errors import PermanentError
from agent.drivers.iolock import IoLock, SysfsIoLock
from agent.drivers.iolock_fake import FakeIoLock
from tests.unit.test_iolock_driver import FakeSystemctl, tty_tree, usb_tree


@pytest.fixture(params=["sysfs", "fake"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> IoLock:
    """Devices 1-1 (a hub), 1-1.1, 1-1.2 (eth1) and 2-1; serial console ttyS0 with a getty."""
    if request.param == "sysfs":
        usb_tree(tmp_path)
        tty_tree(tmp_path)
        return SysfsIoLock(tmp_path, FakeSystemctl())
    fake = FakeIoLock()
    fake.plug("1-1", hub=True)
    fake.plug("1-1.1")
    fake.plug("1-1.2", ifnames=("eth1",))
    fake.plug("2-1")
    fake.add_console("ttyS0")
    return fake


async def test_usb_switches(driver: IoLock) -> None:
    assert driver.managed
    devices = await driver.usb_devices()
    assert [d.name for d in devices] == ["1-1", "1-1.1", "1-1.2", "2-1"]
    assert all(d.authorized for d in devices)
    assert {d.name: d.ifnames for d in devices}["1-1.2"] == ("eth1",)
    assert await driver.usb_default() is True
    await driver.set_usb_default(False)
    await driver.set_usb_default(False)  # idempotent
    assert await driver.usb_default() is False
    await driver.authorize("2-1", False)
    await driver.authorize("2-1", False)
    assert not {d.name: d for d in await driver.usb_devices()}["2-1"].authorized
    await driver.authorize("2-1", True)
    assert {d.name: d for d in await driver.usb_devices()}["2-1"].authorized
    await driver.authorize("9-9", False)  # gone: no error
    await driver.set_usb_default(True)
    assert await driver.usb_default() is True


async def test_console_switches(driver: IoLock) -> None:
    (console,) = await driver.serial_consoles()
    assert console.tty == "ttyS0" and not console.locked and console.getty_active == "active"
    await driver.lock_console("ttyS0")
    await driver.lock_console("ttyS0")  # idempotent
    (console,) = await driver.serial_consoles()
    assert console.locked and console.getty_active == "inactive"
    assert console.kernel_console is False
    await driver.unlock_console("ttyS0", start_getty=True)
    (console,) = await driver.serial_consoles()
    assert not console.locked and console.getty_active == "active"
    assert console.kernel_console is True
    with pytest.raises(PermanentError):
        await driver.lock_console("../ttyS0")
