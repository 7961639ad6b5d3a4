"""Encrypted config secrets end to end: ``config set --encrypt-secrets`` at the controller, the
node decrypting with its ECDH key (software, and a swtpm node's TPM), and the secret nowhere in
clear: not in the stored config, not in the node's status, logs or files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node

pytestmark = pytest.mark.e2e

APP = "6a6a6a6a-6a6a-4a6a-8a6a-6a6a6a6a6a6a"


def secret_config(secret: str) -> dict[str, Any]:
    return {
        **FAST_ITEMS,
        "apps": [
            {
                "uuidandversion": {"uuid": APP, "version": "1"},
                "displayname": "secret-app",
                "activate": True,
                "userData": f"#cloud-config\npassword: {secret}\n",
            }
        ],
    }


def files_with(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def device_cert_types(controller: Controller, uuid: str) -> list[str]:
    shown = json.loads(controller.cli("device", "show", uuid, "--json").stdout)
    return [c["type"] for c in shown["device_certs"]]


def app_applied(status: dict[str, Any]) -> bool:
    # The app names no volume, so it cannot run: an error on it, by design.  What matters here
    # is that it got that far, its user data decrypted (a decryption failure leaves it out).
    errors = [e["error"] for e in status.get("object_errors", [])]
    return "secret-app" in status.get("apps", []) and any("disk volume" in e for e in errors)


def check_encrypted_app(controller: Controller, node: Node) -> str:
    """Onboard ``node``, set an app whose userData is a secret with --encrypt-secrets, and
    check it applies with the secret kept out of everything readable.  Returns the secret."""
    node.start()
    uuid = node.wait_onboarded()
    node.wait_status(
        lambda s: s["attestation"]["state"] == "complete" and bool(s["config_hash"]),
        90,
        "attestation (which sends the ECDH certificate)",
    )
    assert "CERT_TYPE_DEVICE_ECDH_EXCHANGE" in device_cert_types(controller, uuid)

    secret = "e2e-secret-" + os.urandom(12).hex()
    controller.set_config(uuid, secret_config(secret), "--encrypt-secrets")

    stored = controller.cli("config", "get", uuid).stdout
    assert secret not in stored
    document = json.loads(stored)
    (app,) = document["apps"]
    assert "userData" not in app and app["cipherData"]["cipherContextId"]
    assert len(document["cipherContexts"]) == 1

    status = node.wait_status(app_applied, 40, "the app with encrypted user data")
    assert all("decrypt" not in e["error"] for e in status["object_errors"]), status
    assert status["apps"] == ["secret-app"]

    status_file = node.root / "run" / "status.json"
    assert secret not in status_file.read_text()
    assert secret not in node.log()
    assert files_with(node.root, secret.encode()) == []
    assert files_with(controller.state, secret.encode()) == []
    return secret


def test_software_node_gets_encrypted_user_data(controller: Controller, node: Node) -> None:
    secret = check_encrypted_app(controller, node)

    # Restarted without the controller, the node decrypts its saved config again (with the
    # controller certificates from the checkpoint) and still runs the app.
    assert node.stop() == 0
    controller.stop()
    node.start()
    status = node.wait_status(
        lambda s: s["config_source"] == "checkpoint" and app_applied(s),
        40,
        "the saved config with the encrypted app",
    )
    assert all("decrypt" not in e["error"] for e in status["object_errors"]), status
    assert secret not in node.log()
    assert files_with(node.root, secret.encode()) == []


def test_tpm_node_gets_encrypted_user_data(controller: Controller, tpm_node: Node) -> None:
    check_encrypted_app(controller, tpm_node)
    # The TPM's ECDH key did the work: no software ECDH key was made.
    assert not (tpm_node.root / "persist" / "certs" / "ecdh.key.pem").exists()
