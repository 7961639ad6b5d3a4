"""Reboot and shutdown commands from the controller, and boot reasons, on an emulated node.

The controller raises a counter (``eve-controller device reboot|shutdown``); the node records
the counter.  For a reboot it records the boot reason, tells the controller (state REBOOTING, the
new counter), asks its power driver (an emulated node's records the request and never touches
the host) and stops; its next start is a new boot that reports why it happened.  A kill plus an
emulated power-off is a power loss: POWER_FAIL.  A shutdown, as in EVE, halts the apps and
leaves the node up: PREPARED_POWEROFF.  The same on a machine (QEMU, systemd) is in
test_node_power_vm.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.harness import Controller, Node, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def power(controller: Controller, uuid: str) -> dict[str, Any]:
    shown = json.loads(controller.cli("device", "show", uuid, "--json").stdout)
    result = shown["power"]
    assert isinstance(result, dict)
    return result


def reported(
    controller: Controller, uuid: str, *, timeout: float = 60, **expected: Any
) -> dict[str, Any]:
    """Wait for a device info saying ``expected``."""

    def matches() -> dict[str, Any] | None:
        got = power(controller, uuid)["reported"]
        return got if got and all(got[k] == v for k, v in expected.items()) else None

    result = wait_for(matches, timeout, f"device info with {expected}", 0.5)
    assert isinstance(result, dict)
    return result


def requests(node: Node) -> list[dict[str, Any]]:
    path = node.root / "run" / "power-requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_stopped(node: Node) -> int:
    assert node.agent is not None
    wait_for(lambda: not node.agent.alive(), 60, "the agent to stop for the command", 0.5)  # type: ignore[union-attr]
    return node.stop()


def test_reboot_shutdown_and_power_loss(controller: Controller, node: Node) -> None:
    node.start()
    uuid = node.wait_onboarded()
    first = reported(controller, uuid, last_boot_reason="FIRST", restart_counter=0, reboot=0)
    assert first["state"] == "ONLINE"

    out = controller.cli("device", "reboot", uuid).stdout
    assert "reboot counter 1" in out, out
    assert wait_stopped(node) == 0, node.log()[-3000:]
    # Before going down the node said it took the command.
    going = power(controller, uuid)["reported"]
    assert (going["reboot"], going["state"], going["reboot_inprogress"]) == (1, "REBOOTING", True)
    assert [r["action"] for r in requests(node)] == ["reboot"]

    node.start()  # the emulated node's next boot
    back = reported(controller, uuid, last_boot_reason="REBOOT_CMD", state="ONLINE")
    assert (back["reboot"], back["restart_counter"]) == (1, 1)
    assert "reboot command (counter 1)" in back["last_reboot_reason"]
    # The same config again (every poll, and the checkpoint at a restart) does nothing.
    node.wait_status(lambda s: s["boot"].get("reason") == "REBOOT_CMD", 30, "the status")
    assert node.agent is not None and node.agent.alive()
    assert len(requests(node)) == 1

    # Power loss: the agent killed, the emulated machine powered off, started again.
    node.agent.kill()
    node.poweroff()
    node.start()
    lost = reported(controller, uuid, last_boot_reason="POWER_FAIL", state="ONLINE")
    assert (lost["reboot"], lost["restart_counter"]) == (1, 2)

    # EVE's shutdown: the apps are halted, the node stays up, ready to be powered off.
    controller.cli("device", "shutdown", uuid)
    off = reported(controller, uuid, shutdown=1, state="PREPARED_POWEROFF")
    assert (off["reboot"], off["restart_counter"]) == (1, 2)
    assert node.agent is not None and node.agent.alive()
    assert [r["action"] for r in requests(node)] == ["reboot"]
    shown = controller.cli("device", "show", uuid).stdout
    assert "asked reboot 1 shutdown 1; handled reboot 1 shutdown 1; PREPARED_POWEROFF" in shown, (
        shown
    )
