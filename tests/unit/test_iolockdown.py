"""The I/O lockdown reconciler on the engine, over the in-memory driver: the config's policy
locks and unlocks USB and serial consoles idempotently, keeps management ports, adopts what a
previous run did and reports it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.drivers.errors import TemporaryError
from agent.drivers.iolock import NotManaged, UsbDevice
from agent.drivers.iolock_fake import FakeIoLock
from agent.link.ioreport import add_io_bundles
from agent.model.configitems import parse_items
from agent.model.iolockdown import USAGE_DISABLED, USAGE_MGMT_AND_APPS, IoPolicy
from agent.model.ports import Port
from agent.reconcile.engine import Engine
from agent.reconcile.iolockdown import (
    CONSOLE_KIND,
    USB_KIND,
    IoLockdown,
    kept_devices,
    render,
)
from agent.reconcile.records import RecordBook
from agent.wire.pb.info import info_pb2

LOCKED = IoPolicy(usb=False, console=False)
OPEN = IoPolicy(usb=True, console=True)


def node(tmp_path: Path, driver: FakeIoLock | None = None) -> tuple[FakeIoLock, IoLockdown]:
    fake = driver or FakeIoLock()
    if driver is None:
        fake.plug("1-1", hub=True)
        fake.plug("1-1.1")  # a USB stick behind a hub
        fake.plug("1-1.2", ifnames=("eth1",))  # a USB network adapter behind the same hub
        fake.plug("2-1")  # a keyboard
        fake.add_console("ttyS0")
    return fake, IoLockdown(fake, RecordBook(tmp_path / "run" / "iolock"))


async def apply(lockdown: IoLockdown, policy: IoPolicy, engine: Engine | None = None) -> Engine:
    if engine is None:
        engine = Engine(lockdown.configurators())
        await engine.resync()
    engine.set_desired(lockdown.render(policy))
    await engine.settle(5)
    return engine


def authorized(fake: FakeIoLock) -> dict[str, bool]:
    return {name: dev.authorized for name, dev in fake.devices.items()}


def test_policy_from_config_items_and_ports() -> None:
    eth = Port("uplink", "eth1", True, True, 0, (), "client")
    app = Port("apps", "eth2", False, True, 0, (), "client")
    # A controller's config without the items: EVE's default there is "not allowed".
    policy = IoPolicy.from_config(parse_items([]), {"uplink": eth, "apps": app})
    assert policy == IoPolicy(usb=False, console=False, keep_ifnames=("eth1",))
    items = parse_items([("debug.enable.usb", "true"), ("debug.enable.console", "true")])
    assert IoPolicy.from_config(items, {}) == IoPolicy(usb=True, console=True)
    assert render(policy, managed=False) == {}
    assert set(render(policy, managed=True)) == {(USB_KIND, "node"), (CONSOLE_KIND, "node")}
    assert render(IoPolicy(), managed=True) == {}


def test_kept_devices_are_the_adapters_and_the_hubs_above() -> None:
    devices = [
        UsbDevice("1-1", "", "", True, hub=True),
        UsbDevice("1-1.3", "", "", True, hub=True),
        UsbDevice("1-1.3.4", "", "", True, ifnames=("eth1", "eth9")),
        UsbDevice("2-1", "", "", True, ifnames=("wlan0",)),
    ]
    assert kept_devices(devices, {"eth1"}) == {
        "1-1.3.4": "kept: carries eth1",
        "1-1.3": "kept: hub above 1-1.3.4",
        "1-1": "kept: hub above 1-1.3.4",
    }
    assert kept_devices(devices, set()) == {}


async def test_lock_then_allow_again(tmp_path: Path) -> None:
    fake, lockdown = node(tmp_path)
    engine = await apply(lockdown, LOCKED)
    assert not fake.default
    assert authorized(fake) == {"1-1": False, "1-1.1": False, "1-1.2": False, "2-1": False}
    assert fake.consoles["ttyS0"] == [False, True, False]  # getty off, masked, no kernel output
    state = lockdown.state
    assert state.usb_locked and state.console_locked
    assert {d.name for d in state.disabled()} == {"2-1", "1-1", "ttyS0"}  # 1-1.x went with 1-1

    # A device plugged in while locked comes up unauthorized (the root hubs refuse it).
    fake.plug("2-2")
    assert not fake.devices["2-2"].authorized

    await apply(lockdown, OPEN, engine)
    assert fake.default
    assert all(authorized(fake).values()), authorized(fake)
    assert fake.consoles["ttyS0"] == [True, False, True]
    assert not lockdown.state.usb_locked and not lockdown.state.console_locked
    assert not lockdown.state.disabled()
    assert engine.owners() == {} or all(not o.errors for o in engine.owners().values())


async def test_management_port_and_default_route_stay(tmp_path: Path) -> None:
    fake, lockdown = node(tmp_path)
    fake.plug("2-2", ifnames=("wwan0",))
    fake.routes = {"wwan0"}  # the controller is reached through it, though no port names it
    await apply(lockdown, IoPolicy(usb=False, console=True, keep_ifnames=("eth1",)))
    assert authorized(fake) == {
        "1-1": True, "1-1.1": False, "1-1.2": True, "2-1": False, "2-2": True,
    }  # fmt: skip
    kept = {d.name: d for d in lockdown.state.devices}
    assert kept["1-1"].why == "kept: hub above 1-1.2" and not kept["1-1"].disabled
    assert kept["1-1.2"].why == "kept: carries eth1"
    assert fake.consoles["ttyS0"] == [True, False, True]  # console allowed: untouched


async def test_idempotent_and_adopted_after_restart(tmp_path: Path) -> None:
    fake, lockdown = node(tmp_path)
    engine = await apply(lockdown, LOCKED)
    calls = len(fake.calls)
    await apply(lockdown, LOCKED, engine)
    await engine.resync()
    await engine.settle(5)
    changing = [c for c in fake.calls[calls:] if c.startswith(("authorize", "set_", "lock", "un"))]
    assert changing == []

    # A restarted agent (new reconciler, same run directory) adopts its lock and, when the
    # config allows again, undoes it.
    _, again = node(tmp_path, fake)
    engine2 = await apply(again, LOCKED)
    assert not any(c.startswith(("authorize", "set_usb_default True")) for c in fake.calls[calls:])
    await apply(again, OPEN, engine2)
    assert fake.default and all(authorized(fake).values())
    assert fake.consoles["ttyS0"] == [True, False, True]


async def test_lock_found_without_record_is_undone(tmp_path: Path) -> None:
    fake, lockdown = node(tmp_path)
    await apply(lockdown, LOCKED)
    # Records lost (a crash between lock and record, or a wiped run directory).
    for path in (tmp_path / "run" / "iolock").rglob("*.json"):
        path.unlink()
    _, fresh = node(tmp_path, fake)
    await apply(fresh, OPEN)
    assert fake.default and all(authorized(fake).values())
    assert fake.consoles["ttyS0"] == [True, False, True]


async def test_failure_is_retried_and_reported(tmp_path: Path) -> None:
    fake, lockdown = node(tmp_path)
    fake.fail("lock_console", TemporaryError("systemctl: connection refused"))
    engine = Engine(lockdown.configurators())
    await engine.resync()
    engine.set_desired(lockdown.render(LOCKED))
    await engine.settle(5)
    errors = [e.message for o in engine.owners().values() for e in o.errors]
    assert any("connection refused" in m for m in errors), errors
    assert not fake.default  # USB is locked all the same: one failure does not stop the other
    # The retry comes due after its backoff; step the engine until the console is locked.
    for _ in range(100):
        if fake.consoles["ttyS0"][1]:
            break
        await asyncio.sleep(0.1)
        engine.step()
        await engine.settle(5)
    assert fake.consoles["ttyS0"] == [False, True, False]
    assert not [e for o in engine.owners().values() for e in o.errors]


async def test_not_managed_node_renders_nothing_and_says_so(tmp_path: Path) -> None:
    lockdown = IoLockdown(NotManaged(), RecordBook(tmp_path / "run" / "iolock"))
    assert lockdown.render(LOCKED) == {}
    await lockdown.refresh()
    assert not lockdown.state.managed and "emulated" in lockdown.state.note
    dinfo = info_pb2.ZInfoDevice()
    add_io_bundles(dinfo, lockdown.state)
    assert len(dinfo.assignableAdapters) == 0


async def test_device_info_lists_devices_with_usage(tmp_path: Path) -> None:
    _fake, lockdown = node(tmp_path)
    await apply(lockdown, IoPolicy(usb=False, console=False, keep_ifnames=("eth1",)))
    dinfo = info_pb2.ZInfoDevice()
    add_io_bundles(dinfo, lockdown.state)
    bundles = {b.name: b for b in dinfo.assignableAdapters}
    assert set(bundles) == {"1-1", "1-1.1", "1-1.2", "2-1", "ttyS0"}
    assert bundles["1-1.1"].usage == USAGE_DISABLED and not bundles["1-1.1"].usedByBaseOS
    assert bundles["1-1.2"].usage == USAGE_MGMT_AND_APPS and bundles["1-1.2"].usedByBaseOS
    assert list(bundles["1-1.2"].members) == ["device 1-1.2 (1234:5678)", "eth1"]
    assert bundles["ttyS0"].type == 3 and bundles["ttyS0"].usage == USAGE_DISABLED
    assert bundles["2-1"].type == 14


async def test_kept_adapter_back_after_a_reset_is_let_in(tmp_path: Path) -> None:
    fake, lockdown = node(tmp_path)
    engine = await apply(lockdown, IoPolicy(usb=False, console=True, keep_ifnames=("eth1",)))
    assert authorized(fake)["1-1.2"]
    # The adapter resets: it enumerates again, new, unauthorized (the root hubs refuse new
    # devices), so no driver binds and it has no interface to recognise it by.
    fake.devices["1-1.2"] = UsbDevice("1-1.2", "1234:5678", "device 1-1.2", False)
    # Another device with other ids on a port the lock switched off stays off.
    fake.devices["2-1"] = UsbDevice("2-1", "dead:beef", "a keyboard", False)
    await engine.resync()
    await engine.settle(5)
    assert authorized(fake)["1-1.2"] and not authorized(fake)["2-1"]
    kept = {d.name: d.why for d in lockdown.state.devices}
    assert kept["1-1.2"] == "kept: came back on the port of a kept device"
    # Nothing more to do on the next observation.
    calls = len(fake.calls)
    await engine.resync()
    await engine.settle(5)
    assert not [c for c in fake.calls[calls:] if c.startswith(("authorize", "set_"))]
