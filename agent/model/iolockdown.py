"""Remote I/O lockdown: which of the node's own I/O the controller allows.  Pure.

EVE takes this from three runtime config items (``eve:pkg/pillar/types/global.go``,
``docs/CONFIG-PROPERTIES.md``): ``debug.enable.usb`` (USB devices: keyboards, storage),
``debug.enable.console`` (console input: the serial console's getty) and ``debug.enable.vga``
(a local screen).  EVE's own default is "allowed" only while the node has no controller config
(bootstrap: a new machine can be brought up with a keyboard); a config from the controller
that leaves an item out means "not allowed" (``eve:pkg/pillar/cmd/zedagent/handleconfig.go``,
``parseConfigItems``).  Our config item model already has ``False`` as the default of all
three, so a node with a config is locked down unless the controller says otherwise, and a
node without one (before onboarding) is left as it is.

The management ports (``SystemAdapter`` with a management usage) are never locked: a USB
network adapter carrying the controller connection stays authorized, with the hubs above it.

Also the reports: :class:`IoState` is what the agent found and did, for the device info's
``assignableAdapters`` (``info.ZioBundle``) and ``eve-agent status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.model.configitems import ConfigItems
from agent.model.ports import Port


@dataclass(frozen=True)
class IoPolicy:
    """What the config allows.  ``keep_ifnames``: network interfaces whose USB device (and
    the hubs above it) stay authorized whatever ``usb`` says."""

    usb: bool = True
    console: bool = True
    keep_ifnames: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, items: ConfigItems, ports: Mapping[str, Port]) -> IoPolicy:
        """The policy of a controller's config (defaults as in :mod:`agent.model.configitems`:
        not allowed).  Never raises."""
        return cls(
            usb=items.bool("debug.enable.usb"),
            console=items.bool("debug.enable.console"),
            keep_ifnames=tuple(sorted({p.ifname for p in ports.values() if p.management})),
        )


#: ``common.PhyIoType`` values used in the reports.
PHYIO_COM = 3
PHYIO_USB_DEVICE = 14
#: ``common.PhyIoMemberUsage`` values used in the reports.
USAGE_NONE = 0
USAGE_MGMT_AND_APPS = 1
USAGE_DISABLED = 4


@dataclass(frozen=True)
class IoDevice:
    """One USB device or serial console as the agent left it.

    ``kind`` is ``usb`` or ``serial``; ``name`` the sysfs name (``1-1``) or the tty
    (``ttyS0``); ``disabled`` whether the agent has it off; ``why`` a short reason (kept for a
    management port, refused, getty stopped and kernel console detached...).
    """

    kind: str
    name: str
    description: str
    disabled: bool
    why: str = ""
    #: Network interfaces on it (a USB network adapter).
    ifnames: tuple[str, ...] = ()

    @property
    def phyio_type(self) -> int:
        return PHYIO_USB_DEVICE if self.kind == "usb" else PHYIO_COM

    @property
    def usage(self) -> int:
        """Disabled when off; a network adapter left on is a port (management and apps)."""
        if self.disabled:
            return USAGE_DISABLED
        return USAGE_MGMT_AND_APPS if self.ifnames else USAGE_NONE


@dataclass(frozen=True)
class IoState:
    """The I/O lockdown as it stands.  ``managed`` False: this node's I/O is not the agent's
    (an emulated node sharing the host's USB and consoles); ``note`` says why."""

    managed: bool = True
    usb_locked: bool = False
    console_locked: bool = False
    devices: tuple[IoDevice, ...] = ()
    note: str = ""

    def disabled(self) -> tuple[IoDevice, ...]:
        return tuple(d for d in self.devices if d.disabled)
