"""Reboots, power loss and a changed kernel on the node image, booted as a machine (UEFI, swtpm,
systemd) against the test controller.  One node, three boots:

1. It onboards, attests (the policy without IMA's PCR 10, see test_node_image.py) and reports
   its first boot (FIRST).
2. ``device reboot``: the agent records the counter and the reason, tells the controller and asks
   systemd to reboot; the guest comes back with a new boot id and reports REBOOT_CMD and the
   counter.
3. The controller stops; the machine loses power (QEMU killed: no ACPI, no shutdown) and, while
   it is off, its kernel on the ESP changes (bytes appended to ``EFI/eve/a/vmlinuz`` in the
   node's disk overlay: still a bootable PE image, another digest).  It boots with the
   controller down and runs its saved config (``eve-agent status`` in the guest: the config
   from the checkpoint, boot reason POWER_FAIL).  Then the controller comes back: the device
   info it stores says POWER_FAIL, and it refuses the node's quote, naming PCR 4 (where the
   firmware measured the kernel that systemd-boot loaded).  The operator accepts the new
   values (``attest policy --accept-current``): the node attests and its vault opens again.

About 5 minutes on 2 cores under TCG with a cached image.  Needs what test_node_image.py needs.
Run it under ``flock /tmp/eve-qemu.lock`` where other QEMU nodes may boot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Controller, wait_for
from tests.e2e.test_node_image import (  # noqa: F401 - fixtures
    BOOT_TIMEOUT,
    POLICY_PCRS,
    diagnosis,
    image,
    vm_controller,
)
from tests.e2e.test_node_power import power, reported
from tools.node_vm import Node, NodeImage, NodeVmError, Provisioning

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

#: From the guest agent's first answer (early in the boot) or the controller's return to the
#: agent's device info (it starts after the network, then attests).
REPORT_TIMEOUT = 240.0
#: The kernel systemd-boot loads (images/node/build.sh).
KERNEL = "::/EFI/eve/a/vmlinuz"


class PowerNode(Node):
    def power_loss(self) -> None:
        """Pull the plug: QEMU killed, the guest gets no ACPI event and flushes nothing more
        (what it wrote before is in the host's page cache: the disk keeps it, as a disk with
        its cache flushed would)."""
        if self._qemu is not None and self._qemu.poll() is None:
            os.killpg(self._qemu.pid, signal.SIGKILL)
            self._qemu.wait(10)
        self.stop(timeout=5)  # the swtpm ends with QEMU's control channel

    def change_kernel(self, node_image: NodeImage) -> None:
        """Append bytes to the ESP's kernel in the (powered-off) node's overlay: read the ESP
        out with ``qemu-img dd``, change the file with mtools, write it back with ``qemu-io``."""
        assert not self.alive()
        start, size = node_image.partition("EFI System")
        esp, kernel = self.dir / "esp.img", self.dir / "vmlinuz"
        overlay = self.dir / "disk.qcow2"
        run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", f"skip={start // 512}",
             f"count={size // 512}", f"if={overlay}", f"of={esp}"])  # fmt: skip
        run(["mcopy", "-n", "-i", str(esp), KERNEL, str(kernel)])
        with open(kernel, "ab") as f:
            f.write(b"\0changed by test_node_power_vm\0" * 64)
        run(["mcopy", "-o", "-i", str(esp), str(kernel), KERNEL])
        run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {esp} {start} {size}", str(overlay)])
        esp.unlink()


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr[-1500:]}"


def shown(controller: Controller, uuid: str) -> dict[str, Any]:
    data = json.loads(controller.cli("device", "show", uuid, "--json").stdout)
    assert isinstance(data, dict)
    return data


def guest_boot_id(node: Node) -> str | None:
    """The guest's boot id, None while its guest agent does not answer (booting)."""
    try:
        if not node.guest_agent_ready():
            return None
        result = node.exec(["cat", "/proc/sys/kernel/random/boot_id"], timeout=20)
    except (NodeVmError, OSError):
        return None
    return result.stdout.strip() if result.exitcode == 0 else None


def guest_status(node: Node) -> dict[str, Any] | None:
    try:
        result = node.exec(["eve-agent", "status", "--json"], timeout=30)
    except (NodeVmError, OSError):
        return None
    if result.exitcode != 0:
        return None
    data = json.loads(result.stdout)
    return data if isinstance(data, dict) else None


def test_reboot_command_power_loss_and_changed_kernel(
    tmp_path: Path,
    image: NodeImage,  # noqa: F811 - the fixture
    vm_controller: Controller,  # noqa: F811 - the fixture
) -> None:
    controller = vm_controller
    provisioning = Provisioning.from_certs(controller.certs, controller.port, "vm-power-1")
    node = PowerNode(image, tmp_path / "node-1", provisioning, controller_port=controller.port)
    try:
        node.start()
        try:
            check_power(node, image, controller)
        except (AssertionError, NodeVmError) as exc:
            raise AssertionError(f"{exc}\n{diagnosis(node)}") from exc
    finally:
        node.stop()


def check_power(node: PowerNode, node_image: NodeImage, controller: Controller) -> None:
    def registered() -> str | None:
        devices = controller.devices()
        return str(devices[0]["uuid"]) if devices else None

    # 1. First boot.
    uuid = wait_for(registered, BOOT_TIMEOUT, "the node to register", interval=2)
    controller.cli("attest", "policy", uuid, "--pcrs", POLICY_PCRS)
    wait_for(lambda: shown(controller, uuid)["attest_state"] == "attested", 120,
             "the node to attest", 2)  # fmt: skip
    first = reported(controller, uuid, last_boot_reason="FIRST", reboot=0)
    assert first["restart_counter"] == 0
    boot1 = wait_for(lambda: guest_boot_id(node), 60, "the guest agent", 2)

    # 2. The controller's reboot command.
    assert "reboot counter 1" in controller.cli("device", "reboot", uuid).stdout
    boot2 = wait_for(lambda: (b := guest_boot_id(node)) and b != boot1 and b, BOOT_TIMEOUT,
                     "the guest to reboot (a new boot id)", 3)  # fmt: skip
    back = reported(controller, uuid, timeout=REPORT_TIMEOUT, last_boot_reason="REBOOT_CMD",
                    reboot=1, state="ONLINE")  # fmt: skip
    assert back["restart_counter"] == 1 and "counter 1" in back["last_reboot_reason"]
    # A reboot, not a power-off: QEMU exited for the guest's reset and was powered on again.
    assert node.alive() and "guest-reset" in node.resets, node.resets
    # Before it went down, the node told the controller it took the command.
    infos = [line["message"].get("dinfo", {}) for line in controller.json_lines("info", uuid)]
    rebooting = [d for d in infos if d.get("state") == "ZDEVICE_STATE_REBOOTING"]
    assert rebooting and rebooting[0].get("rebootConfigCounter") == 1, infos[-3:]
    assert rebooting[0].get("rebootInprogress") is True, rebooting[0]
    wait_for(lambda: shown(controller, uuid)["attest_state"] == "attested", 120,
             "the node to attest after the reboot", 2)  # fmt: skip

    # 3. Power loss with the controller down, and a changed kernel.
    controller.stop()
    node.power_loss()
    node.change_kernel(node_image)
    node.start()
    wait_for(lambda: (b := guest_boot_id(node)) and b not in (boot1, boot2), BOOT_TIMEOUT,
             "the guest to boot after the power loss", 3)  # fmt: skip
    offline = wait_for(
        lambda: (s := guest_status(node)) and s.get("config_source") == "checkpoint"
        and s.get("phase") == "running" and s, 120, "the agent to run its saved config", 3,
    )  # fmt: skip
    assert offline["boot"]["reason"] == "POWER_FAIL", offline["boot"]
    assert offline["boot"]["reboot_counter"] == 1 and offline["boot"]["restart_counter"] == 2
    assert not offline["controller_reachable"]
    assert offline["config_hash"], "the saved config is in effect"
    assert offline["vault"]["state"] != "unlocked", "a changed kernel must not unseal the vault"

    controller.start()
    lost = reported(controller, uuid, timeout=REPORT_TIMEOUT, last_boot_reason="POWER_FAIL",
                    state="ONLINE")  # fmt: skip
    assert (lost["reboot"], lost["restart_counter"]) == (1, 2)

    def refused() -> dict[str, Any] | None:
        attestation = shown(controller, uuid)["attestation"]
        mismatched = attestation["pcr_policy"]["mismatched_pcrs"]
        return attestation if mismatched else None

    attestation = wait_for(refused, 180, "the controller to refuse the quote", 3)
    assert 4 in attestation["pcr_policy"]["mismatched_pcrs"], attestation
    assert "PCR 4" in attestation["reason"], attestation["reason"]
    assert shown(controller, uuid)["attest_state"] != "attested"
    text = controller.cli("device", "show", uuid).stdout
    assert "last quote differs in PCR(s) 4" in text, text

    # The operator accepts the new kernel: the node attests, its vault key comes back.
    controller.cli("attest", "policy", uuid, "--accept-current")
    wait_for(lambda: shown(controller, uuid)["attest_state"] == "attested", 180,
             "the node to attest with the accepted values", 3)  # fmt: skip
    wait_for(lambda: (s := guest_status(node)) and s["vault"]["state"] == "unlocked", 120,
             "the vault to open with the escrowed key", 3)  # fmt: skip
    assert power(controller, uuid)["reported"]["last_boot_reason"] == "POWER_FAIL"
