"""An emulated node with its own swtpm against the reference controller: measured boot, real
quotes, the PCR policy, and the vault across a rejected boot and a legitimate update.

Needs swtpm, tpm2-tss and loop devices (root): fails under EVE_AGENT_REQUIRE_SERVICES when they
are missing, skips otherwise.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from tests.e2e.harness import Controller, Node, wait_for

pytestmark = pytest.mark.e2e


def items(status: dict[str, Any]) -> dict[str, str]:
    value = status.get("config_items") or {}
    assert isinstance(value, dict)
    return value


def set_interval_config(controller: Controller, uuid: str, metric: str) -> None:
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": metric},
        ]},
    )  # fmt: skip


def device_json(controller: Controller, uuid: str) -> dict[str, Any]:
    data = json.loads(controller.cli("device", "show", uuid, "--json").stdout)
    assert isinstance(data, dict)
    return data


def test_tpm_node_attests_and_survives_an_update(controller: Controller, tpm_node: Node) -> None:
    node = tpm_node
    node.start()
    uuid = node.wait_onboarded()
    status = node.wait_status(
        lambda s: s["attestation"]["state"] == "complete" and s["config_hash"], 60, "attestation"
    )
    assert status["mode"] == "TPM (swtpm)"
    assert status["vault"]["state"] == "unlocked"
    assert {m["state"] for m in status["measurements"].values()} == {"measured"}
    shown = device_json(controller, uuid)
    assert "quote verified" in json.dumps(shown)

    # The device key never leaves the TPM: no private key in the node's files but the
    # onboarding key the installer put on the config partition.
    onboard_key = node.root / "config" / "onboard.key.pem"
    for path in node.root.rglob("*"):
        if path.is_file() and path != onboard_key and "tpm" not in path.parts:
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    assert not (node.root / "persist" / "certs" / "device.key.pem").exists()

    set_interval_config(controller, uuid, "41")
    node.wait_status(lambda s: items(s).get("timer.metric.interval") == "41", 30, "config")
    # The vault holds data, encrypted at rest on the image.
    secret = b"eve-agent-vault-marker-" + os.urandom(8).hex().encode()
    vault_dir = node.root / "persist" / "vault.fs" / "vault"
    (vault_dir / "secrets" / "marker").write_bytes(secret)
    os.sync()

    # An update: one boot component changes (a new kernel), then a power cycle.
    node.stop()
    node.poweroff()
    assert secret not in (node.root / "persist" / "vault.img").read_bytes()
    platform = node.root / "platform"
    platform.mkdir(exist_ok=True)
    (platform / "boot.json").write_text(json.dumps({"kernel": "vmlinuz 6.99 (updated)"}))
    node.start()
    status = node.wait_status(
        lambda s: s["attestation"]["state"] == "restart-wait" and s["attestation"]["error"],
        60,
        "the changed boot to be rejected",
    )
    assert status["vault"]["state"] == "locked"
    assert "QUOTE_FAILED" in status["attestation"]["error"]
    reason = device_json(controller, uuid)["attestation"]["reason"]
    assert "PCRs differing" in reason and "4" in reason, reason
    # Config is withheld: a new version does not reach the node.
    set_interval_config(controller, uuid, "42")
    time.sleep(12)
    assert items(node.status()).get("timer.metric.interval") == "41"
    # The controller was told why: device info says the vault is in error.
    info = controller.json_lines("info", uuid)
    assert any("DATASEC_AT_REST_ERROR" in json.dumps(i) for i in info)

    # The operator accepts the new measurements: the escrowed key reopens the vault.
    controller.cli("attest", "policy", uuid, "--accept-current")
    status = node.wait_status(
        lambda s: s["vault"]["state"] == "unlocked" and s["attestation"]["state"] == "complete",
        90,
        "attestation with the new golden values and the vault reopened through escrow",
    )
    node.wait_status(lambda s: items(s).get("timer.metric.interval") == "42", 30, "config v42")
    assert (vault_dir / "secrets" / "marker").read_bytes() == secret
    assert "vault key resealed to the current PCRs" in node.log()
    assert "vault after attestation: unlocked" in node.log()

    # The key was resealed to the new PCRs: the next boot opens the vault locally, before any
    # contact with the controller.
    node.stop()
    node.poweroff()
    controller.stop()
    node.start()
    status = node.wait_status(lambda s: s["vault"]["state"] == "unlocked", 40, "local unseal")
    assert not status["controller_reachable"]
    assert (vault_dir / "secrets" / "marker").read_bytes() == secret
    wait_for(lambda: "vault unlocked" in node.log(), 10, "the local unlock in the log")
