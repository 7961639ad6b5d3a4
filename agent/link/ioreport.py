"""The node's USB devices and serial consoles in the device info, as EVE lists its I/O.

EVE reports every I/O adapter it knows in ``ZInfoDevice.assignableAdapters`` (repeated
``info.ZioBundle``: type, name, members, whether the base OS uses it, its usage).  Here each
USB device and serial console of the I/O lockdown (:mod:`agent.reconcile.iolockdown`) is one
bundle: ``type`` PhyIoUSBDevice or PhyIoCOM, ``name`` its sysfs name or tty, ``members`` its
description (and a network adapter's interfaces), ``usage`` PhyIoUsageDisabled while the
agent has it off, ``usedByBaseOS`` while it is on (the node's own, not an app's).  ``err`` is
left for errors: a disabled device is not one.  Pure.
"""

from __future__ import annotations

from agent.model.iolockdown import IoState
from agent.wire.pb.info import info_pb2

#: Bounds of what goes out (names come from the system, strings from USB descriptors).
MAX_BUNDLES = 256
MAX_TEXT = 256


def add_io_bundles(dinfo: info_pb2.ZInfoDevice, state: IoState | None) -> None:
    """Append one ``ZioBundle`` per device of ``state`` (nothing when None or not managed)."""
    if state is None or not state.managed:
        return
    for dev in state.devices[:MAX_BUNDLES]:
        bundle = dinfo.assignableAdapters.add()
        bundle.type = dev.phyio_type  # type: ignore[assignment]
        bundle.name = dev.name[:MAX_TEXT]
        bundle.members.append(dev.description[:MAX_TEXT])
        bundle.members.extend(name[:MAX_TEXT] for name in dev.ifnames)
        bundle.usage = dev.usage  # type: ignore[assignment]
        bundle.usedByBaseOS = not dev.disabled
