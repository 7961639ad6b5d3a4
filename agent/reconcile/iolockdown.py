"""Remote I/O lockdown: the node's USB devices and serial consoles off unless the config
allows them (:mod:`agent.model.iolockdown`), on again when it does.

Two node-wide items, present while the config forbids:

- ``usblock``: every root hub refuses new devices, every USB device is de-authorized (its
  drivers unbound: no keyboard, no block device) but those that carry a management port or a
  default route, and the hubs above them.  Deleting the item lets new devices in and
  authorizes every device again.
- ``consolelock``: each serial console's getty stopped and masked for this boot, and the tty
  detached as kernel console.  Deleting the item undoes both and starts the gettys that ran.

What the agent did is written down first (a record in the node's run directory, which a
reboot clears together with what it did), so a restarted agent adopts its lock, and a lock it
has no record of (a crash in between) is adopted as an item that compares unequal: locked
again, or undone.  EVE does USB differently (it unloads the USB HID and storage drivers and
gives the USB controllers to pciback, ``eve:pkg/pillar/cmd/domainmgr``) and disables its
console only at the next boot; see docs/io-lockdown.md.

On an emulated node (``IoLock.managed`` False) nothing renders: the host's USB and consoles
are never touched, and the report says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.drivers.errors import DriverError
from agent.drivers.iolock import IoLock, SerialConsole, UsbDevice
from agent.model.iolockdown import IoDevice, IoPolicy, IoState
from agent.reconcile.items import BaseConfigurator, Configurator, Item, ItemRef, NodeItem
from agent.reconcile.records import RecordBook

log = logging.getLogger(__name__)

USB_KIND = "usblock"
CONSOLE_KIND = "consolelock"
_KEY = "node"
NOT_MANAGED = "not managed here: an emulated node shares the host's USB and consoles"


@dataclass(frozen=True)
class UsbLockItem(NodeItem):
    """USB locked, keeping the devices of ``keep_ifnames``; ``None`` for a lock found on the
    system with no record (adopted: it compares unequal to anything rendered)."""

    KIND = USB_KIND
    keep_ifnames: tuple[str, ...] | None = ()


@dataclass(frozen=True)
class ConsoleLockItem(NodeItem):
    """The serial consoles locked; ``adopted`` for a lock found with no record."""

    KIND = CONSOLE_KIND
    adopted: bool = False


def render(policy: IoPolicy, managed: bool) -> dict[ItemRef, Item]:
    """The lock items ``policy`` asks for (none on a node whose I/O is not managed).  Pure."""
    out: dict[ItemRef, Item] = {}
    if not managed:
        return out
    if not policy.usb:
        usb = UsbLockItem(policy.keep_ifnames)
        out[usb.ref] = usb
    if not policy.console:
        console = ConsoleLockItem()
        out[console.ref] = console
    return out


def kept_devices(devices: Sequence[UsbDevice], keep_ifnames: set[str]) -> dict[str, str]:
    """The devices a USB lock leaves authorized, with why: those carrying one of
    ``keep_ifnames`` and the hubs above them.  Pure."""
    kept: dict[str, str] = {}
    for dev in devices:
        carried = sorted(set(dev.ifnames) & keep_ifnames)
        if not carried:
            continue
        kept[dev.name] = f"kept: carries {', '.join(carried)}"
        for hub in dev.ancestors():
            kept.setdefault(hub, f"kept: hub above {dev.name}")
    return kept


class IoLockdown:
    """The two configurators (``configurators()``) over one driver, and the report."""

    def __init__(self, driver: IoLock, records: RecordBook) -> None:
        self.driver = driver
        self.records = records
        self.usb = _UsbConfigurator(self)
        self.console = _ConsoleConfigurator(self)
        self._state = IoState(managed=driver.managed, note="" if driver.managed else NOT_MANAGED)
        self._kept: dict[str, str] = {}

    def configurators(self) -> dict[str, Configurator]:
        return {USB_KIND: self.usb, CONSOLE_KIND: self.console}

    def render(self, policy: IoPolicy) -> dict[ItemRef, Item]:
        return render(policy, self.driver.managed)

    @property
    def state(self) -> IoState:
        """The lockdown as last seen (after every apply and observation).  Never raises."""
        return self._state

    async def refresh(self) -> IoState:
        """Look at the system again for the report.  Raises DriverError."""
        if not self.driver.managed:
            return self._state
        default = await self.driver.usb_default()
        devices = await self.driver.usb_devices()
        consoles = await self.driver.serial_consoles()
        found = [_usb_report(d, self._kept.get(d.name, "")) for d in devices]
        found += [_console_report(c) for c in consoles]
        self._state = IoState(
            managed=True,
            usb_locked=default is False,
            console_locked=bool(consoles) and all(c.locked for c in consoles),
            devices=tuple(found),
        )
        return self._state

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except (DriverError, OSError) as exc:  # the report must never fail an apply
            log.debug("I/O report not refreshed: %s", exc)


def _usb_report(dev: UsbDevice, kept: str) -> IoDevice:
    what = f"{dev.description} ({dev.ids})" if dev.description else dev.ids
    why = kept if dev.authorized and kept else ("" if dev.authorized else "not authorized")
    return IoDevice("usb", dev.name, what, not dev.authorized, why, dev.ifnames)


def _console_report(console: SerialConsole) -> IoDevice:
    parts = []
    if console.getty_file_state.startswith("masked"):
        parts.append("getty masked")
    if console.kernel_console is False:
        parts.append("kernel console detached")
    elif console.kernel_console is None:
        parts.append("kernel console not detachable")
    return IoDevice("serial", console.tty, "serial console", console.locked, ", ".join(parts))


def _kept_record(record: Mapping[str, Any]) -> dict[str, str]:
    """The devices a lock kept (name -> ``vid:pid``), from its record."""
    kept = record.get("kept", {})
    return {str(k): str(v) for k, v in kept.items()} if isinstance(kept, dict) else {}


def _returned(devices: Sequence[UsbDevice], record: Mapping[str, Any]) -> bool:
    """A device the lock kept is there again, unauthorized (it was reset or replugged)."""
    before = _kept_record(record)
    return any(not d.authorized and before.get(d.name) == d.ids for d in devices)


class _UsbConfigurator(BaseConfigurator):
    def __init__(self, parent: IoLockdown) -> None:
        self._parent = parent
        self._driver = parent.driver

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        records = await self._parent.records.load(USB_KIND)
        record = records.get(_KEY)
        default = await self._driver.usb_default()
        await self._parent._refresh_quietly()
        if default is True or (default is None and record is None):
            if record is not None:
                await self._parent.records.remove(USB_KIND, _KEY)
            return {}
        keep = tuple(record.get("keep", ())) if record is not None else None
        if record is not None and _returned(await self._driver.usb_devices(), record):
            keep = None  # compares unequal: locked again, which lets it back in
        item = UsbLockItem(keep)
        return {item.ref: item}

    async def create(self, item: UsbLockItem) -> None:
        await self._lock(item)

    async def modify(self, old: UsbLockItem, new: UsbLockItem) -> None:
        await self._lock(new)

    async def _lock(self, item: UsbLockItem) -> None:
        keep = tuple(item.keep_ifnames or ())
        previous = (await self._parent.records.load(USB_KIND)).get(_KEY) or {}
        before = _kept_record(previous)
        await self._parent.records.save(USB_KIND, _KEY, {"keep": list(keep), "kept": before})
        # New devices first: nothing slips in while the present ones are switched off.
        await self._driver.set_usb_default(False)
        devices = await self._driver.usb_devices()
        protected = set(keep) | await self._driver.default_route_ifnames()
        kept = kept_devices(devices, protected)
        # A kept adapter that came back (a USB reset, a replug into the same port) is new and
        # unauthorized: no interface shows what it is, its port and ids do.
        for dev in devices:
            if dev.name not in kept and not dev.authorized and before.get(dev.name) == dev.ids:
                kept[dev.name] = "kept: came back on the port of a kept device"
                for hub in dev.ancestors():
                    kept.setdefault(hub, f"kept: hub above {dev.name}")
        ids = {d.name: d.ids for d in devices}
        await self._parent.records.save(USB_KIND, _KEY, {
            "keep": list(keep), "kept": {n: ids[n] for n in sorted(kept) if n in ids}})  # fmt: skip
        off = []
        # Deepest first: a device below a hub is switched off before the hub takes it away.
        for dev in sorted(devices, key=lambda d: (-d.depth, d.name)):
            if dev.name in kept:
                if not dev.authorized:
                    await self._driver.authorize(dev.name, True)
            elif dev.authorized:
                await self._driver.authorize(dev.name, False)
                off.append(f"{dev.name} ({dev.description or dev.ids})")
        self._parent._kept = kept
        log.info(
            "USB locked (debug.enable.usb false): new devices refused; de-authorized %s; kept %s",
            ", ".join(off) or "nothing more",
            ", ".join(f"{n} ({why})" for n, why in sorted(kept.items())) or "none",
        )
        await self._parent._refresh_quietly()

    async def delete(self, item: UsbLockItem) -> None:
        await self._driver.set_usb_default(True)
        on: list[str] = []
        # Shallowest first; a hub authorized again brings the devices below it back, new,
        # authorized by default: a few passes pick up any that were off on their own.
        for _ in range(3):
            devices = [d for d in await self._driver.usb_devices() if not d.authorized]
            if not devices:
                break
            for dev in sorted(devices, key=lambda d: (d.depth, d.name)):
                await self._driver.authorize(dev.name, True)
                on.append(dev.name)
        await self._parent.records.remove(USB_KIND, _KEY)
        self._parent._kept = {}
        log.info("USB allowed again (debug.enable.usb true): authorized %s",
                 ", ".join(on) or "nothing (all were on)")  # fmt: skip
        await self._parent._refresh_quietly()


class _ConsoleConfigurator(BaseConfigurator):
    def __init__(self, parent: IoLockdown) -> None:
        self._parent = parent
        self._driver = parent.driver

    async def observe(self) -> Mapping[ItemRef, Item] | None:
        record = (await self._parent.records.load(CONSOLE_KIND)).get(_KEY)
        consoles = await self._driver.serial_consoles()
        await self._parent._refresh_quietly()
        if record is not None and all(c.locked for c in consoles):
            item = ConsoleLockItem()
        elif record is None and any(c.locked for c in consoles):
            item = ConsoleLockItem(adopted=True)
        else:
            if record is not None:
                await self._parent.records.remove(CONSOLE_KIND, _KEY)
            return {}
        return {item.ref: item}

    async def create(self, item: ConsoleLockItem) -> None:
        await self._lock()

    async def modify(self, old: ConsoleLockItem, new: ConsoleLockItem) -> None:
        await self._lock()

    async def _lock(self) -> None:
        consoles = await self._driver.serial_consoles()
        record = (await self._parent.records.load(CONSOLE_KIND)).get(_KEY) or {}
        ran: dict[str, Any] = dict(record.get("gettys", {}))
        for console in consoles:
            if not console.locked:
                ran[console.tty] = console.getty_active in ("active", "activating", "reloading")
        await self._parent.records.save(CONSOLE_KIND, _KEY, {"gettys": ran})
        for console in consoles:
            await self._driver.lock_console(console.tty)
        log.info(
            "serial consoles locked (debug.enable.console false): %s",
            ", ".join(f"{c.tty} (getty stopped and masked, kernel console detached)"
                      for c in consoles) or "none found",
        )  # fmt: skip
        await self._parent._refresh_quietly()

    async def delete(self, item: ConsoleLockItem) -> None:
        record = (await self._parent.records.load(CONSOLE_KIND)).get(_KEY) or {}
        ran = {str(k): bool(v) for k, v in dict(record.get("gettys", {})).items()}
        consoles = await self._driver.serial_consoles()
        ttys = sorted(set(ran) | {c.tty for c in consoles if c.locked})
        for tty in ttys:
            # A lock without a record: its gettys ran before (a console has one).
            await self._driver.unlock_console(tty, ran.get(tty, True))
        await self._parent.records.remove(CONSOLE_KIND, _KEY)
        log.info("serial consoles allowed again (debug.enable.console true): %s",
                 ", ".join(ttys) or "none locked")  # fmt: skip
        await self._parent._refresh_quietly()
