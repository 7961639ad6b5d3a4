"""An in-memory :class:`agent.drivers.iolock.IoLock` for the reconciler's tests.

Behaves as the kernel does where it matters: a device connected (``plug``) while a root hub
refuses new devices comes up unauthorized; de-authorizing a hub takes the devices below it
away until it is authorized again; a locked console's getty is stopped and masked.  ``fail``
makes the next call of a method raise the given error (once).
"""

from __future__ import annotations

from dataclasses import replace

from agent.drivers.errors import DriverError
from agent.drivers.iolock import SerialConsole, UsbDevice, getty_unit


class FakeIoLock:
    managed = True

    def __init__(self, *, hubs: int = 2) -> None:
        self.hubs = hubs
        self.default = True
        self.devices: dict[str, UsbDevice] = {}
        self.routes: set[str] = set()
        #: tty -> [getty active, masked, kernel console]
        self.consoles: dict[str, list[bool]] = {}
        self.calls: list[str] = []
        self.failures: dict[str, DriverError] = {}

    # --- test helpers
    def plug(self, name: str, *, hub: bool = False, ifnames: tuple[str, ...] = ()) -> None:
        self.devices[name] = UsbDevice(name, "1234:5678", f"device {name}", self.default,
                                       hub=hub, ifnames=ifnames)  # fmt: skip

    def add_console(self, tty: str) -> None:
        self.consoles[tty] = [True, False, True]

    def fail(self, method: str, error: DriverError) -> None:
        self.failures[method] = error

    def _call(self, what: str) -> None:
        self.calls.append(what)
        error = self.failures.pop(what.split(" ", 1)[0], None)
        if error is not None:
            raise error

    def _visible(self, dev: UsbDevice) -> bool:
        return all(
            self.devices[a].authorized for a in dev.ancestors() if a in self.devices
        )  # fmt: skip

    # --- IoLock
    async def usb_devices(self) -> list[UsbDevice]:
        self._call("usb_devices")
        return [d for _, d in sorted(self.devices.items()) if self._visible(d)]

    async def usb_default(self) -> bool | None:
        return self.default if self.hubs else None

    async def set_usb_default(self, allowed: bool) -> None:
        self._call(f"set_usb_default {allowed}")
        self.default = allowed

    async def authorize(self, name: str, allowed: bool) -> None:
        self._call(f"authorize {name} {allowed}")
        dev = self.devices.get(name)
        if dev is not None and self._visible(dev):
            self.devices[name] = replace(dev, authorized=allowed)

    async def default_route_ifnames(self) -> set[str]:
        return set(self.routes)

    async def serial_consoles(self) -> list[SerialConsole]:
        self._call("serial_consoles")
        return [
            SerialConsole(tty, "active" if on else "inactive",
                          "masked-runtime" if masked else "static", kernel)
            for tty, (on, masked, kernel) in sorted(self.consoles.items())
        ]  # fmt: skip

    async def lock_console(self, tty: str) -> None:
        getty_unit(tty)
        self._call(f"lock_console {tty}")
        self.consoles[tty] = [False, True, False]

    async def unlock_console(self, tty: str, start_getty: bool) -> None:
        getty_unit(tty)
        self._call(f"unlock_console {tty} {start_getty}")
        self.consoles[tty] = [start_getty, False, True]
