"""Zero-touch clusters end to end: a real controller and two real agents; tagging the nodes and
creating a cluster gives each its role and its K3s VM, which the agent accepts (the token opens
with its own ECDH key, the node side finds the VM at its cluster address); untagging takes the
VM away; the token appears nowhere readable."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node

pytestmark = pytest.mark.e2e

DS = "7a1e5f0c-3b2d-4c8e-9f10-00000000d0c1"
TREE = "7a1e5f0c-3b2d-4c8e-9f10-00000000c0c1"


@pytest.fixture
def nodes(tmp_path: Path, controller: Controller) -> Iterator[list[Node]]:
    # The K3s image's datastore answers nothing: the VM never runs, which is not the point.
    controller.set_default_config({
        **FAST_ITEMS,
        "datastores": [{"id": DS, "dType": "DsHttp", "fqdn": "http://127.0.0.1:9"}],
        "contentInfo": [{"uuid": TREE, "URL": "k3s.qcow2", "iformat": "QCOW2",
                         "sha256": "ab" * 32, "dsIdsList": [DS]}],
    })  # fmt: skip
    made = [Node(tmp_path / f"n{i}", controller, serial=f"cluster-{i}") for i in range(2)]
    try:
        yield made
    finally:
        for n in made:
            n.shutdown()


def vm_accepted(status: dict[str, Any]) -> bool:
    return status.get("apps") == ["k3s-e2e"]


def test_tagged_nodes_become_a_cluster(controller: Controller, nodes: list[Node]) -> None:
    for n in nodes:
        n.start()
    uuids = [n.wait_onboarded() for n in nodes]
    for n in nodes:
        n.wait_status(
            lambda s: s["attestation"]["state"] == "complete" and bool(s["config_hash"]),
            90,
            "attestation (sends the ECDH certificate the token is encrypted for)",
        )
    outputs = []
    for uuid in uuids:
        outputs.append(controller.cli("device", "tag", uuid, "pool=e2e").stdout)
    outputs.append(
        controller.cli(
            "cluster", "create", "e2e", "--select", "pool=e2e", "--servers", "1:1",
            "--agents", "1:1", "--network-tag", "uplink", "--k3s-image", TREE,
        ).stdout
    )  # fmt: skip
    for n in nodes:
        status = n.wait_status(vm_accepted, 60, "the K3s VM in the node's config")
        # No decryption failure, no "no app has the node's cluster address".
        assert status["object_errors"] == [], status["object_errors"]

    shown = json.loads(controller.cli("cluster", "show", "e2e", "--json").stdout)
    assert shown["state"] == "up"
    assert sorted(m["role"] for m in shown["members"]) == ["agent", "init"]
    init = next(m["node"] for m in shown["members"] if m["role"] == "init")
    config = json.loads(controller.cli("config", "get", init).stdout)
    assert config["cluster"]["joinServerIp"] == "10.244.0.10"
    assert config["cluster"]["clusterIpPrefix"] == "10.244.0.10/24"

    # Untag the agent: its config loses the cluster and the VM; the node follows.
    agent_uuid = next(m["node"] for m in shown["members"] if m["role"] == "agent")
    agent_node = nodes[uuids.index(agent_uuid)]
    outputs.append(controller.cli("device", "untag", agent_uuid, "pool").stdout)
    agent_node.wait_status(lambda s: s.get("apps") == [], 60, "the VM gone from the agent")

    with contextlib.closing(sqlite3.connect(controller.state / "controller.db")) as db:
        (token,) = db.execute("SELECT token FROM cluster").fetchone()
    assert isinstance(token, str) and len(token) > 20
    assert controller.server is not None
    server_log = controller.server.output()
    for text in (*outputs, json.dumps(shown), server_log, *(n.log() for n in nodes)):
        assert token not in text
    for n in nodes:
        assert token not in (n.root / "run" / "status.json").read_text()
