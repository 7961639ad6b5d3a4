"""An app's failure reaches the operator: the node rolls it up to the app, sends EVE's ZInfoApp
with the error, and ``eve-controller device objects`` shows it; once the app leaves the config,
the node reports it deleted and the controller forgets it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node, wait_for

pytestmark = pytest.mark.e2e

APP = "6a6a6a6a-6a6a-4a6a-8a6a-6a6a6a6a6a6b"
MISSING_VOLUME = "6a6a6a6a-6a6a-4a6a-8a6a-6a6a6a6a6a6c"


def objects(controller: Controller, uuid: str) -> list[dict[str, Any]]:
    found = json.loads(controller.cli("device", "objects", uuid, "--json").stdout)
    assert isinstance(found, list)
    return found


def test_app_error_reaches_the_controller(controller: Controller, node: Node) -> None:
    node.start()
    uuid = node.wait_onboarded()
    controller.set_config(
        uuid,
        {
            **FAST_ITEMS,
            "apps": [
                {
                    "uuidandversion": {"uuid": APP, "version": "1"},
                    "displayname": "broken-app",
                    "activate": True,
                    "volumeRefList": [{"uuid": MISSING_VOLUME, "mount_dir": "/data"}],
                }
            ],
        },
    )
    shown = wait_for(
        lambda: [o for o in objects(controller, uuid) if o["uuid"] == APP], 40, "the app's info"
    )
    [app] = shown
    assert (app["kind"], app["name"], app["state"]) == ("app", "broken-app", "ERROR")
    assert any("refers to missing volume" in e["description"] for e in app["errors"]), app
    assert all(e["severity"] == "ERROR" and e["time"] for e in app["errors"])
    text = controller.cli("device", "objects", uuid).stdout
    assert "broken-app" in text and "refers to missing volume" in text

    controller.set_config(uuid, FAST_ITEMS)
    wait_for(lambda: not objects(controller, uuid), 40, "the app reported deleted")
