"""The real I/O lock driver on a fake sysfs tree (tmp_path) with a fake systemctl: never the
host's own sysfs or systemd."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.drivers.errors import PermanentError, TemporaryError
from agent.drivers.iolock import NotManaged, SysfsIoLock
from agent.drivers.runner import Completed


def usb_tree(root: Path) -> Path:
    """Two root hubs; a hub 1-1 with a stick 1-1.1 and a network adapter 1-1.2 (eth1); a
    keyboard 2-1."""
    devices = root / "sys/bus/usb/devices"
    for hub in ("usb1", "usb2"):
        (devices / hub).mkdir(parents=True)
        (devices / hub / "authorized_default").write_text("1\n")
        (devices / hub / "authorized").write_text("1\n")
    for name, cls, product in (("1-1", "09", "Hub"), ("1-1.1", "00", "Stick"),
                               ("1-1.2", "00", "Ethernet"), ("2-1", "00", "Keyboard")):  # fmt: skip
        d = devices / name
        d.mkdir()
        (d / "authorized").write_text("1\n")
        (d / "bDeviceClass").write_text(cls + "\n")
        (d / "idVendor").write_text("46f4\n")
        (d / "idProduct").write_text("0001\n")
        (d / "product").write_text(product + "\n")
        (devices / f"{name.split('-')[0]}-0:1.0").mkdir(exist_ok=True)  # root hub interface
    (devices / "1-1.2" / "1-1.2:1.0" / "net" / "eth1").mkdir(parents=True)
    (devices / "1-1.1:1.0").mkdir()  # an interface entry: not a device
    return devices


class FakeSystemctl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.units = {"ttyS0": ["active", "static"], "ttyS1": ["inactive", "disabled"]}
        self.fail: str | None = None

    async def __call__(self, argv: Sequence[str]) -> Completed:
        args = tuple(argv)
        self.calls.append(args)
        assert args[0] == "systemctl"
        verb = args[1]
        if verb == self.fail:
            return Completed(args, 1, b"", b"Failed to do it")
        out = ""
        if verb == "list-units":
            out = "".join(f"serial-getty@{t}.service loaded {s[0]} running x\n"
                          for t, s in self.units.items() if s[0] == "active")  # fmt: skip
        elif verb == "show":
            tty = args[-1].split("@", 1)[1].split(".")[0]
            state = self.units.get(tty, ["inactive", ""])
            out = f"ActiveState={state[0]}\nUnitFileState={state[1]}\n"
        elif verb == "mask":
            tty = args[-1].split("@", 1)[1].split(".")[0]
            self.units[tty] = ["inactive", "masked-runtime"]
        elif verb == "unmask":
            tty = args[-1].split("@", 1)[1].split(".")[0]
            self.units[tty][1] = "static"
        elif verb == "start":
            tty = args[-1].split("@", 1)[1].split(".")[0]
            self.units[tty][0] = "active"
        return Completed(args, 0, out.encode(), b"")


def tty_tree(root: Path) -> None:
    (root / "sys/class/tty/console").mkdir(parents=True)
    (root / "sys/class/tty/console/active").write_text("tty0 ttyS0\n")
    (root / "sys/class/tty/ttyS0").mkdir()
    (root / "sys/class/tty/ttyS0/console").write_text("Y\n")


async def test_usb_devices_listed_without_root_hubs_or_interfaces(tmp_path: Path) -> None:
    usb_tree(tmp_path)
    driver = SysfsIoLock(tmp_path, FakeSystemctl())
    devices = await driver.usb_devices()
    assert [d.name for d in devices] == ["1-1", "1-1.1", "1-1.2", "2-1"]
    by_name = {d.name: d for d in devices}
    assert by_name["1-1"].hub and not by_name["1-1.1"].hub
    assert by_name["1-1.2"].ifnames == ("eth1",)
    assert by_name["1-1.1"].ids == "46f4:0001" and by_name["1-1.1"].description == "Stick"
    assert by_name["1-1.2"].ancestors() == ("1-1",)
    assert await driver.usb_default() is True


async def test_usb_default_and_authorize_write_sysfs(tmp_path: Path) -> None:
    devices = usb_tree(tmp_path)
    driver = SysfsIoLock(tmp_path, FakeSystemctl())
    await driver.set_usb_default(False)
    assert (devices / "usb1/authorized_default").read_text() == "0"
    assert (devices / "usb2/authorized_default").read_text() == "0"
    assert await driver.usb_default() is False
    await driver.authorize("1-1.1", False)
    assert (devices / "1-1.1/authorized").read_text() == "0"
    assert not {d.name: d for d in await driver.usb_devices()}["1-1.1"].authorized
    # Root hubs are never de-authorized; a name that is no device is refused.
    with pytest.raises(PermanentError):
        await driver.authorize("usb1", False)
    with pytest.raises(PermanentError):
        await driver.authorize("../../x", False)
    # A device that went away is no error.
    await driver.authorize("3-9", True)
    await driver.set_usb_default(True)
    assert await driver.usb_default() is True


async def test_no_usb_at_all(tmp_path: Path) -> None:
    driver = SysfsIoLock(tmp_path, FakeSystemctl())
    assert await driver.usb_devices() == []
    assert await driver.usb_default() is None
    await driver.set_usb_default(False)  # nothing to do


async def test_write_refused_by_the_kernel_is_typed(tmp_path: Path) -> None:
    devices = usb_tree(tmp_path)
    target = devices / "1-1.1/authorized"
    target.unlink()
    target.mkdir()  # opening a directory for writing fails with EISDIR: an OSError
    driver = SysfsIoLock(tmp_path, FakeSystemctl())
    with pytest.raises(TemporaryError):
        await driver.authorize("1-1.1", False)


async def test_default_routes(tmp_path: Path) -> None:
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth9\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
    )
    zero = "0" * 32
    (tmp_path / "proc/net/ipv6_route").write_text(
        f"{zero} 00 {zero} 00 fe800000000000000000000000000001 00000400 1 0 3 wwan0\n"
        f"{zero} 00 {zero} 00 {zero} ffffffff 1 0 3 lo\n"
        f"fe800000000000000000000000000000 40 {zero} 00 {zero} 00000100 1 0 1 eth2\n"
    )
    driver = SysfsIoLock(tmp_path, FakeSystemctl())
    assert await driver.default_route_ifnames() == {"eth0", "wwan0"}


async def test_serial_consoles_lock_and_unlock(tmp_path: Path) -> None:
    tty_tree(tmp_path)
    systemctl = FakeSystemctl()
    driver = SysfsIoLock(tmp_path, systemctl)
    consoles = await driver.serial_consoles()
    # ttyS0 from the kernel command line (tty0, a VT, is not serial); ttyS1 has no running
    # getty and is not a console: not listed.
    assert [(c.tty, c.getty_active, c.kernel_console, c.locked) for c in consoles] == [
        ("ttyS0", "active", True, False)
    ]
    await driver.lock_console("ttyS0")
    assert ("systemctl", "mask", "--runtime", "--now", "serial-getty@ttyS0.service") in (
        systemctl.calls
    )
    assert (tmp_path / "sys/class/tty/ttyS0/console").read_text() == "N"
    (locked,) = await driver.serial_consoles()
    assert locked.locked and locked.getty_file_state == "masked-runtime"
    assert locked.kernel_console is False
    await driver.unlock_console("ttyS0", start_getty=True)
    assert (tmp_path / "sys/class/tty/ttyS0/console").read_text() == "Y"
    assert systemctl.calls[-2:] == [
        ("systemctl", "unmask", "--runtime", "serial-getty@ttyS0.service"),
        ("systemctl", "start", "--no-block", "serial-getty@ttyS0.service"),
    ]
    (again,) = await driver.serial_consoles()
    assert not again.locked and again.getty_active == "active"


async def test_console_without_detach_and_failing_systemctl(tmp_path: Path) -> None:
    tty_tree(tmp_path)
    (tmp_path / "sys/class/tty/ttyS0/console").unlink()  # an older kernel: no such switch
    systemctl = FakeSystemctl()
    driver = SysfsIoLock(tmp_path, systemctl)
    (console,) = await driver.serial_consoles()
    assert console.kernel_console is None
    systemctl.fail = "mask"
    with pytest.raises(TemporaryError, match="Failed to do it"):
        await driver.lock_console("ttyS0")
    systemctl.fail = None
    await driver.lock_console("ttyS0")
    (console,) = await driver.serial_consoles()
    assert console.locked  # by its getty alone
    with pytest.raises(PermanentError):
        await driver.lock_console("ttyS0/../x")


async def test_not_managed_touches_nothing() -> None:
    driver = NotManaged()
    assert not driver.managed
    assert await driver.usb_devices() == [] and await driver.serial_consoles() == []
    assert await driver.usb_default() is None
