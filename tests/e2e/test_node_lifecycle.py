"""A node and the reference controller as real processes over HTTPS on loopback: onboarding,
config changes, controller outages, restarts from the checkpoint, a corrupt checkpoint."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.harness import Controller, Node, wait_for

pytestmark = pytest.mark.e2e


def items(status: dict[str, Any]) -> dict[str, str]:
    value = status.get("config_items") or {}
    assert isinstance(value, dict)
    return value


def test_onboarding_config_and_reports(controller: Controller, node: Node) -> None:
    node.start()
    uuid = node.wait_onboarded()
    assert uuid in [d["uuid"] for d in controller.devices()]
    status = node.wait_status(
        lambda s: items(s).get("timer.config.interval") == "5", 60, "the default config"
    )
    assert status["attestation"]["state"] == "complete"
    assert status["uuid"] == uuid
    assert (node.checkpoint / "lastconfig").exists()

    # A change is applied within one poll interval (5 s, plus a little for the round trip).
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "20"},
        ]},
    )  # fmt: skip
    started = time.monotonic()
    node.wait_status(lambda s: items(s).get("timer.metric.interval") == "20", 15, "the new item")
    assert time.monotonic() - started < 5 + 3

    # An item out of range is refused on its own and reported; the rest applies.
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "1"},
            {"key": "timer.deviceinfo.interval", "value": "300"},
        ]},
    )  # fmt: skip
    status = node.wait_status(
        lambda s: items(s).get("timer.deviceinfo.interval") == "300", 15, "the valid item"
    )
    assert "timer.metric.interval" not in items(status)
    assert any(e["id"] == "timer.metric.interval" for e in status["object_errors"])

    # The controller got device info (with the item errors), metrics and the agent's logs.
    wait_for(lambda: controller.json_lines("info", uuid), 30, "device info")
    wait_for(lambda: controller.json_lines("metrics", uuid), 30, "metrics")
    logs = wait_for(lambda: controller.json_lines("logs", uuid), 40, "logs")
    assert any("onboarded" in str(entry) for entry in logs)


def test_controller_outage_and_restart_from_checkpoint(controller: Controller, node: Node) -> None:
    node.start()
    uuid = node.wait_onboarded()
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "42"},
        ]},
    )  # fmt: skip
    node.wait_status(lambda s: items(s).get("timer.metric.interval") == "42", 30, "the config")

    controller.stop()
    status = node.wait_status(lambda s: not s["controller_reachable"], 30, "the outage to show")
    assert node.agent is not None and node.agent.alive()
    assert items(status)["timer.metric.interval"] == "42"

    # Restart the node while the controller is still down: it runs its checkpoint.
    assert node.stop() == 0
    node.start()
    status = node.wait_status(
        lambda s: s["config_source"] == "checkpoint" and s["phase"] != "stopped",
        30,
        "the node to run its saved config",
    )
    assert items(status)["timer.metric.interval"] == "42"
    time.sleep(3)
    assert node.agent is not None and node.agent.alive()

    # Controller back: the node reconnects, and logs written while offline arrive.
    controller.start()
    node.wait_status(lambda s: s["controller_reachable"], 40, "the controller to be reachable")
    logs = wait_for(
        lambda: [
            e for e in controller.json_lines("logs", uuid) if "running the saved config" in str(e)
        ],
        60,
        "logs written while the controller was down",
    )
    assert logs


def test_corrupt_checkpoint_falls_back_to_bak(controller: Controller, node: Node) -> None:
    node.start()
    uuid = node.wait_onboarded()
    node.wait_status(lambda s: items(s).get("timer.config.interval") == "5", 60, "first config")
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "33"},
        ]},
    )  # fmt: skip
    node.wait_status(lambda s: items(s).get("timer.metric.interval") == "33", 30, "second config")
    primary, backup = node.checkpoint / "lastconfig", node.checkpoint / "lastconfig.bak"
    assert primary.read_bytes() != backup.read_bytes()  # .bak is still the first config

    node.stop()
    controller.stop()
    data = bytearray(primary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    primary.write_bytes(bytes(data))

    node.start()
    status = node.wait_status(
        lambda s: s["config_source"] == "checkpoint", 30, "the node to run a saved config"
    )
    assert "timer.metric.interval" not in items(status)
    assert items(status)["timer.config.interval"] == "5"
    assert primary.read_bytes() == backup.read_bytes()  # primary restored from .bak
    assert "lastconfig unusable" in node.log()


def test_after_a_crash_the_known_good_config_runs(controller: Controller, node: Node) -> None:
    """EVE's rule against crash loops: after an abnormal stop the node starts from
    lastconfig.bak, not from the newest config, until the controller answers."""
    node.start()
    uuid = node.wait_onboarded()
    node.wait_status(lambda s: items(s).get("timer.config.interval") == "5", 60, "first config")
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "34"},
        ]},
    )  # fmt: skip
    node.wait_status(lambda s: items(s).get("timer.metric.interval") == "34", 30, "second config")
    controller.stop()
    assert node.agent is not None
    node.agent.kill()

    node.start()
    status = node.wait_status(lambda s: s["config_source"] == "checkpoint", 30, "a saved config")
    assert "timer.metric.interval" not in items(status)  # the known-good (first) config
    assert "did not stop cleanly" in node.log()
    primary = node.checkpoint / "lastconfig"
    assert primary.read_bytes() != (node.checkpoint / "lastconfig.bak").read_bytes()

    # A clean stop, then a start: the newest config again.
    assert node.stop() == 0
    node.start()
    status = node.wait_status(lambda s: s["config_source"] == "checkpoint", 30, "a saved config")
    assert items(status)["timer.metric.interval"] == "34"
