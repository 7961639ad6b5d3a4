"""The node's own USB devices and serial consoles: switched off and on for the I/O lockdown.

USB: the kernel's USB authorization (``Documentation/usb/authorization.rst``).  Each root hub
(``usbN``) has ``authorized_default``: 0 makes every device connected later come up
unauthorized (enumerated, but no driver binds, so no keyboard, no block device); each other
device has ``authorized``: writing 0 unbinds its drivers (a USB stick's block device goes),
writing 1 binds them again.  Root hubs themselves are never de-authorized.

Serial consoles: a console is a tty named on the kernel command line (``console=ttyS0``, listed
in ``/sys/class/tty/console/active``) or one with a ``serial-getty@`` unit.  Locking one stops
and masks its getty for this boot (``systemctl mask --runtime --now``: nobody can start it
again, not even the generator's ``getty.target`` wants) and detaches it as kernel console
(``/sys/class/tty/<tty>/console``, serial core since Linux 5.7: kernel messages stop going
there).  Unlocking attaches the console again, unmasks the getty and starts it when it ran
before.  What stays out of reach of a running system: the firmware's and the boot loader's
console, and the kernel's and systemd's output on it from boot until the agent locks it.

Every path is under ``root`` (``/`` on a real node) so tests run on a fake sysfs tree, and
systemctl goes through an injectable runner.  Blocking file work runs in a thread.  Errors are
the typed ones of :mod:`agent.drivers.errors`: a sysfs write the kernel refuses with EINVAL is
permanent, other OS errors temporary; a device that vanished in between is ignored.
"""

from __future__ import annotations

import asyncio
import errno
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.drivers import runner
from agent.drivers.errors import DriverError, PermanentError, TemporaryError

#: Runs an argv to its end (``runner.run`` with ``check=False``).
Run = Callable[[Sequence[str]], Awaitable[runner.Completed]]

_ROOT_HUB = re.compile(r"^usb\d+$")
_DEVICE = re.compile(r"^\d+-\d+(\.\d+)*$")
_VT = re.compile(r"^tty\d*$")
_TTY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_GETTY = re.compile(r"^serial-getty@([A-Za-z][A-Za-z0-9_]{0,31})\.service$")
HUB_CLASS = "09"


@dataclass(frozen=True)
class UsbDevice:
    """One USB device (never a root hub): sysfs ``name`` (``1-1.2``), ``vid:pid``, its
    strings, whether it is authorized, whether it is a hub, the network interfaces on it."""

    name: str
    ids: str
    description: str
    authorized: bool
    hub: bool = False
    ifnames: tuple[str, ...] = ()

    @property
    def depth(self) -> int:
        return self.name.count(".") + 1

    def ancestors(self) -> tuple[str, ...]:
        """The hubs above it, nearest first (``1-1.2.3`` -> ``1-1.2``, ``1-1``)."""
        out = []
        name = self.name
        while "." in name:
            name = name.rsplit(".", 1)[0]
            out.append(name)
        return tuple(out)


@dataclass(frozen=True)
class SerialConsole:
    """A serial console: its getty's state (``ActiveState``, ``UnitFileState`` as systemd
    says) and whether the kernel prints to it (None: the tty cannot be detached)."""

    tty: str
    getty_active: str
    getty_file_state: str
    kernel_console: bool | None

    @property
    def unit(self) -> str:
        return getty_unit(self.tty)

    @property
    def locked(self) -> bool:
        return self.getty_file_state.startswith("masked") or self.kernel_console is False


def getty_unit(tty: str) -> str:
    if not _TTY.match(tty):
        raise PermanentError(f"{tty!r} is not a tty name")
    return f"serial-getty@{tty}.service"


class IoLock(Protocol):
    """The node's USB and serial console switches.  Every method is idempotent."""

    #: False when this node's I/O is not the agent's (an emulated node): nothing is touched.
    managed: bool

    async def usb_devices(self) -> list[UsbDevice]:
        """Every USB device but the root hubs, sorted by name."""
        ...

    async def usb_default(self) -> bool | None:
        """False when any root hub refuses new devices, True when all take them, None when
        there is no USB at all."""
        ...

    async def set_usb_default(self, allowed: bool) -> None:
        """``authorized_default`` of every root hub."""
        ...

    async def authorize(self, name: str, allowed: bool) -> None:
        """``authorized`` of one device; a device that is gone is no error."""
        ...

    async def default_route_ifnames(self) -> set[str]:
        """The interfaces that carry a default route now (IPv4 and IPv6)."""
        ...

    async def serial_consoles(self) -> list[SerialConsole]:
        """The serial consoles (see the module docstring), sorted by tty."""
        ...

    async def lock_console(self, tty: str) -> None:
        """Stop and mask its getty (for this boot), detach it as kernel console."""
        ...

    async def unlock_console(self, tty: str, start_getty: bool) -> None:
        """Attach it as kernel console, unmask its getty, start it when ``start_getty``."""
        ...


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _write(path: Path, value: str, what: str) -> None:
    try:
        with path.open("w") as f:
            f.write(value)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise PermanentError(f"{what}: the kernel refused {value!r}: {exc}") from exc
        raise TemporaryError(f"{what}: {exc}") from exc


class SysfsIoLock:
    """The real switches, under ``root`` (``Path("/")`` on a real node)."""

    managed = True

    def __init__(self, root: Path = Path("/"), run: Run | None = None) -> None:
        self.root = root
        self._run = run or _systemctl_runner

    @property
    def _usb(self) -> Path:
        return self.root / "sys/bus/usb/devices"

    # --- USB
    def _list_usb(self) -> list[UsbDevice]:
        try:
            names = sorted(p.name for p in self._usb.iterdir())
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if not _DEVICE.match(name):
                continue
            path = self._usb / name
            ifnames: list[str] = []
            try:
                for sub in path.iterdir():
                    if sub.name.startswith(f"{name}:") and (sub / "net").is_dir():
                        ifnames += [n.name for n in (sub / "net").iterdir()]
            except OSError:
                continue  # unplugged while we looked
            ids = f"{_read(path / 'idVendor')}:{_read(path / 'idProduct')}"
            words = [_read(path / "manufacturer"), _read(path / "product")]
            out.append(
                UsbDevice(
                    name,
                    ids,
                    " ".join(w for w in words if w),
                    _read(path / "authorized") != "0",
                    hub=_read(path / "bDeviceClass") == HUB_CLASS,
                    ifnames=tuple(sorted(ifnames)),
                )
            )
        return out

    def _root_hubs(self) -> list[Path]:
        try:
            return sorted(p for p in self._usb.iterdir() if _ROOT_HUB.match(p.name))
        except FileNotFoundError:
            return []

    async def usb_devices(self) -> list[UsbDevice]:
        return await asyncio.to_thread(self._list_usb)

    async def usb_default(self) -> bool | None:
        def read() -> bool | None:
            values = [_read(hub / "authorized_default") for hub in self._root_hubs()]
            if not values:
                return None
            return all(v not in ("0", "") for v in values)

        return await asyncio.to_thread(read)

    async def set_usb_default(self, allowed: bool) -> None:
        def write() -> None:
            for hub in self._root_hubs():
                path = hub / "authorized_default"
                if _read(path) != ("1" if allowed else "0"):
                    _write(path, "1" if allowed else "0", f"{hub.name} authorized_default")

        await asyncio.to_thread(write)

    async def authorize(self, name: str, allowed: bool) -> None:
        if not _DEVICE.match(name):
            raise PermanentError(f"{name!r} is not a USB device name")

        def write() -> None:
            path = self._usb / name / "authorized"
            try:
                if _read(path) != ("1" if allowed else "0"):
                    _write(path, "1" if allowed else "0", f"USB device {name}")
            except FileNotFoundError:
                pass  # unplugged, or gone with a hub above it

        await asyncio.to_thread(write)

    async def default_route_ifnames(self) -> set[str]:
        def read() -> set[str]:
            out = set()
            for line in _read(self.root / "proc/net/route").splitlines()[1:]:
                fields = line.split()
                if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                    out.add(fields[0])
            for line in _read(self.root / "proc/net/ipv6_route").splitlines():
                fields = line.split()
                default = len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00"
                if default and fields[9] != "lo":
                    out.add(fields[9])
            return out

        return await asyncio.to_thread(read)

    # --- serial consoles
    async def _systemctl(self, *args: str) -> runner.Completed:
        return await self._run(["systemctl", *args])

    async def serial_consoles(self) -> list[SerialConsole]:
        active = _read(self.root / "sys/class/tty/console/active").split()
        ttys = {t for t in active if not _VT.match(t) and _TTY.match(t)}
        listed = await self._systemctl(
            "list-units", "--all", "--plain", "--no-legend", "--full", "serial-getty@*.service"
        )
        for line in listed.stdout_text.splitlines():
            fields = line.split()
            found = _GETTY.match(fields[0]) if fields else None
            if found:
                ttys.add(found.group(1))
        out = []
        for tty in sorted(ttys):
            shown = await self._systemctl(
                "show", "-p", "ActiveState", "-p", "UnitFileState", getty_unit(tty)
            )
            props = dict(
                line.split("=", 1) for line in shown.stdout_text.splitlines() if "=" in line
            )
            flag = _read(self.root / "sys/class/tty" / tty / "console")
            out.append(
                SerialConsole(
                    tty,
                    props.get("ActiveState", ""),
                    props.get("UnitFileState", ""),
                    None if not flag else flag.upper() in ("Y", "1"),
                )
            )
        return out

    async def _checked(self, *args: str) -> None:
        done = await self._systemctl(*args)
        if done.returncode != 0:
            raise TemporaryError(f"systemctl {' '.join(args)}: {done.tail()}")

    async def _kernel_console(self, tty: str, on: bool) -> None:
        path = self.root / "sys/class/tty" / tty / "console"

        def write() -> None:
            current = _read(path)
            if not current or current.upper().startswith("Y" if on else "N"):
                return  # not detachable, or already as asked
            _write(path, "Y" if on else "N", f"kernel console {tty}")

        await asyncio.to_thread(write)

    async def lock_console(self, tty: str) -> None:
        unit = getty_unit(tty)
        await self._checked("mask", "--runtime", "--now", unit)
        await self._kernel_console(tty, False)

    async def unlock_console(self, tty: str, start_getty: bool) -> None:
        unit = getty_unit(tty)
        await self._kernel_console(tty, True)
        await self._checked("unmask", "--runtime", unit)
        if start_getty:
            await self._checked("start", "--no-block", unit)


async def _systemctl_runner(argv: Sequence[str]) -> runner.Completed:
    try:
        return await runner.run(argv, timeout=30.0, check=False)
    except runner.CommandNotFound as exc:
        raise PermanentError(f"no systemctl on this node: {exc}") from exc


class NotManaged:
    """An emulated node: the USB devices and consoles are the host's, never touched."""

    managed = False

    async def usb_devices(self) -> list[UsbDevice]:
        return []

    async def usb_default(self) -> bool | None:
        return None

    async def set_usb_default(self, allowed: bool) -> None:
        return None

    async def authorize(self, name: str, allowed: bool) -> None:
        raise DriverError("USB is not managed on an emulated node")

    async def default_route_ifnames(self) -> set[str]:
        return set()

    async def serial_consoles(self) -> list[SerialConsole]:
        return []

    async def lock_console(self, tty: str) -> None:
        raise DriverError("consoles are not managed on an emulated node")

    async def unlock_console(self, tty: str, start_getty: bool) -> None:
        raise DriverError("consoles are not managed on an emulated node")
