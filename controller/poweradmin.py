"""``eve-controller device reboot|shutdown UUID``: raise the device's command counter
(:mod:`controller.deviceops`); at its next config poll the device reboots (or, for shutdown,
halts every app and stays up, ready to be powered off, as EVE's) and
reports the counter it took in its device info (``device show``, "power" line)."""

from __future__ import annotations

import argparse
from typing import Any

from controller.admin import AdminError, open_store, resolve_device
from controller.deviceops import Operation, bump
from controller.state import StateDir
from controller.store import UnknownDevice


def add_parsers(device_cmds: Any, common: argparse.ArgumentParser) -> None:
    """Add ``device reboot`` and ``device shutdown`` to the CLI's parsers."""
    for operation, what in ((Operation.REBOOT, "reboot the device (raise its reboot counter)"),
                            (Operation.SHUTDOWN, "halt every app, ready for power-off (raise "
                                                 "its shutdown counter)")):  # fmt: skip
        parser = device_cmds.add_parser(operation.value, parents=[common], help=what)
        parser.add_argument("uuid", metavar="UUID")


def handles(args: argparse.Namespace) -> bool:
    """Whether ``args`` is one of this module's commands."""
    return args.command == "device" and getattr(args, "action", None) in set(Operation)


def run(state: StateDir, args: argparse.Namespace) -> int:
    """Execute a command :func:`handles` accepted."""
    operation = Operation(args.action)
    with open_store(state) as store:
        device = resolve_device(store, args.uuid)
        try:
            counter, stored = bump(store, device.uuid, operation)
        except UnknownDevice as exc:  # removed between resolving and storing
            raise AdminError(str(exc)) from exc
    print(f"{device.uuid}: {operation.value} counter {counter}, config version {stored.version} "
          f"{stored.config_hash}")  # fmt: skip
    return 0
