"""Remote I/O lockdown on the node image: USB and the serial console switched off and on again
by the controller's config, checked from inside the guest.

One node of the image (tools/node_vm.py, as tests/e2e/test_node_image.py boots it) with a USB
stick on an xHCI controller (``usb_stick``) and its serial console on ttyS0 (the kernel's
``console=ttyS0``, where Debian's systemd starts ``serial-getty@ttyS0``; QEMU writes it to
``console.log``).  It onboards with a config that allows both (``debug.enable.usb`` and
``debug.enable.console`` true); then:

- the config says false for both: inside the guest (QEMU's guest agent) the stick's
  ``authorized`` is 0, no ``sd*`` block device exists, the root hubs refuse new devices, the
  getty is inactive and masked, ttyS0 is no kernel console (a kernel message written to
  ``/dev/kmsg`` does not reach console.log); ``eve-agent status`` and the controller's device
  info (``assignableAdapters``) list the stick and ttyS0 as disabled;
- the config says true again: the stick's block device is back, the getty runs, the kernel
  prints to ttyS0 again.

About 3 minutes with a cached image on 2 cores under TCG.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Controller, wait_for
from tests.e2e.test_node_image import BOOT_TIMEOUT, POLICY_PCRS, diagnosis, in_guest

# The node image's fixtures (the image, the controller naming the guests' address for it).
from tests.e2e.test_node_image import image as image
from tests.e2e.test_node_image import vm_controller as vm_controller
from tools.node_vm import Node, NodeImage, NodeVmError, Provisioning

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FAST = {"key": "timer.config.interval", "value": "5"}
#: QEMU's usb-storage device: vendor 46f4 (QEMU), product 0001.
STICK_VENDOR = "46f4"


def io_items(allowed: bool) -> dict[str, Any]:
    value = "true" if allowed else "false"
    return {"configItems": [FAST, {"key": "debug.enable.usb", "value": value},
                            {"key": "debug.enable.console", "value": value}]}  # fmt: skip


@pytest.fixture
def usb_node(tmp_path: Path, image: NodeImage, vm_controller: Controller) -> Iterator[Node]:
    controller = vm_controller
    controller.set_default_config(io_items(True))
    stick = tmp_path / "stick.raw"
    with stick.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    provisioning = Provisioning.from_certs(controller.certs, controller.port, "vm-io-node")
    vm = Node(image, tmp_path / "node-1", provisioning, controller_port=controller.port,
              usb_stick=stick)  # fmt: skip
    try:
        vm.start()
        yield vm
    finally:
        vm.stop()


def sh(node: Node, script: str) -> str:
    return in_guest(node, "sh", "-c", script)


def stick_dir(node: Node) -> str:
    """The stick's sysfs directory (``/sys/bus/usb/devices/N-M``)."""
    found = sh(node, f"grep -l '^{STICK_VENDOR}$' /sys/bus/usb/devices/*/idVendor || true")
    paths = [line.rsplit("/", 1)[0] for line in found.split()]
    assert len(paths) == 1, found
    return paths[0]


def block_devices(node: Node) -> list[str]:
    return sorted(n for n in sh(node, "ls /sys/block").split() if n.startswith("sd"))


def getty(node: Node) -> dict[str, str]:
    out = node.exec(["systemctl", "show", "-pActiveState", "-pUnitFileState",
                     "serial-getty@ttyS0.service"]).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def probe(node: Node, tag: str) -> bool:
    """Write a kernel message (level err) and say whether it reached the serial console."""
    sh(node, f"echo '<3>io-lockdown probe {tag}' > /dev/kmsg")
    time.sleep(3)
    return f"io-lockdown probe {tag}" in node.console()


def adapters(controller: Controller, uuid: str) -> dict[str, dict[str, Any]]:
    infos = controller.json_lines("info", uuid, "--last", "1")
    if not infos:
        return {}
    text = json.dumps(infos[-1])
    data = json.loads(text)

    def find(obj: Any) -> list[dict[str, Any]]:
        if isinstance(obj, dict):
            if "assignableAdapters" in obj:
                return list(obj["assignableAdapters"])
            return [b for v in obj.values() for b in find(v)]
        if isinstance(obj, list):
            return [b for v in obj for b in find(v)]
        return []

    return {str(b.get("name")): b for b in find(data)}


def test_usb_and_serial_locked_and_allowed_by_config(
    usb_node: Node, vm_controller: Controller
) -> None:
    try:
        check_lockdown(usb_node, vm_controller)
    except (AssertionError, NodeVmError) as exc:
        raise AssertionError(f"{exc}\n{diagnosis(usb_node)}") from exc


def check_lockdown(node: Node, controller: Controller) -> None:
    def registered() -> str | None:
        devices = controller.devices()
        return str(devices[0]["uuid"]) if devices else None

    uuid = wait_for(registered, BOOT_TIMEOUT, "the node to register", interval=2)
    controller.cli("attest", "policy", uuid, "--pcrs", POLICY_PCRS)
    wait_for(node.guest_agent_ready, 120, "the guest agent", 1)

    # Allowed (the config the node starts with): the stick is a block device, the getty runs.
    stick = stick_dir(node)
    wait_for(lambda: block_devices(node), 60, "the stick's block device", 2)
    assert sh(node, f"cat {stick}/authorized").strip() == "1"
    wait_for(lambda: getty(node).get("ActiveState") == "active", 60, "serial-getty@ttyS0", 2)
    assert "ttyS0" in sh(node, "cat /sys/class/tty/console/active").split()
    assert probe(node, "before"), "a kernel message did not reach the serial console"

    # Not allowed.
    controller.set_config(uuid, io_items(False))
    wait_for(lambda: sh(node, f"cat {stick}/authorized").strip() == "0", 90,
             "the stick de-authorized", 2)  # fmt: skip
    wait_for(lambda: not block_devices(node), 30, "the stick's block device gone", 1)
    for hub in sh(node, "ls -d /sys/bus/usb/devices/usb*").split():
        assert sh(node, f"cat {hub}/authorized_default").strip() == "0", hub
    wait_for(lambda: getty(node) == {"ActiveState": "inactive", "UnitFileState": "masked-runtime"},
             60, "serial-getty@ttyS0 stopped and masked", 2)  # fmt: skip
    wait_for(lambda: sh(node, "cat /sys/class/tty/ttyS0/console").strip() == "N", 30,
             "ttyS0 detached as kernel console", 1)  # fmt: skip
    assert not probe(node, "locked"), "a kernel message reached the locked serial console"
    journal = in_guest(node, "journalctl", "-u", "eve-agent", "--no-pager", "-o", "cat")
    assert "USB locked (debug.enable.usb false)" in journal
    assert "serial consoles locked (debug.enable.console false): ttyS0" in journal
    io = json.loads(in_guest(node, "eve-agent", "status", "--json"))["io_lockdown"]
    assert io["managed"] and io["usb_locked"] and io["console_locked"], io
    assert any(line.startswith("serial ttyS0") for line in io["disabled"]), io
    assert any(line.startswith(f"usb {stick.rsplit('/', 1)[1]} ") for line in io["disabled"]), io

    def reported_disabled() -> bool:
        found = adapters(controller, uuid)
        serial = found.get("ttyS0", {})
        usb = found.get(stick.rsplit("/", 1)[1], {})
        return (serial.get("usage") == "PhyIoUsageDisabled"
                and usb.get("usage") == "PhyIoUsageDisabled")  # fmt: skip

    wait_for(reported_disabled, 90, "device info listing the stick and ttyS0 as disabled", 3)

    # Allowed again.
    controller.set_config(uuid, io_items(True))
    wait_for(lambda: block_devices(node), 90, "the stick's block device back", 2)
    assert sh(node, f"cat {stick}/authorized").strip() == "1"
    wait_for(lambda: getty(node).get("ActiveState") == "active", 60,
             "serial-getty@ttyS0 running again", 2)  # fmt: skip
    assert getty(node)["UnitFileState"] != "masked-runtime"
    assert sh(node, "cat /sys/class/tty/ttyS0/console").strip() == "Y"
    assert probe(node, "after"), "a kernel message did not reach the serial console again"
    for hub in sh(node, "ls -d /sys/bus/usb/devices/usb*").split():
        assert sh(node, f"cat {hub}/authorized_default").strip() == "1", hub
