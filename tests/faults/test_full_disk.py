"""A tiny filesystem that fills up under a whole node, with kills while it is full.

The node's persist directory is an 8 MiB tmpfs of its own.  Each round fills it to the last byte,
gives the node a new config, kills the agent (kill -9) at a random moment, at random either soon
after the change or once the controller was told of the full disk, and starts it again on the
still-full disk.  The agent must come up (no exit, no crash loop), run and apply the new config
from memory, and tell the controller (device info storage state DEGRADED).  Then the filler goes:
the node converges by itself (the new config checkpointed, ONLINE reported), every file in
persist whole.  tests/integration/test_hardening_fullfs.py covers the same in one process
without kills; this is the whole-process loop.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node, require, wait_for
from tests.faults.conftest import Nodes
from tests.faults.faultlib import (
    ControllerDB,
    Faults,
    agent_status,
    checkpoint_hash,
    fill,
    items,
    small_fs,
    storage_states,
    wait_converged,
    whole_files,
)

pytestmark = pytest.mark.e2e


def config(value: str) -> dict[str, object]:
    return {"configItems": [*FAST_ITEMS["configItems"],
                            {"key": "timer.download.retry", "value": value}]}  # fmt: skip


def test_full_disk_with_kills(
    controller: Controller, db: ControllerDB, nodes: Nodes, faults: Faults
) -> None:
    if os.geteuid() != 0:
        require("small filesystem", "mounting a tmpfs needs root")
    root_pem = (controller.certs / "root-certificate.pem").read_bytes()
    node = nodes.new("faults-fullfs")
    persist = node.root / "persist"
    with small_fs(persist, "8m"):
        try:
            node.start()
            uuid = node.wait_onboarded()
            wait_converged(node, db, {"timer.config.interval": "5"}, since=0)
            wait_for(lambda: "STORAGE_STATUS_ONLINE" in storage_states(db, uuid), 30, "ONLINE")
            for i in faults.rounds(iterations=3, budget=60):
                full_round(i, controller, db, node, faults, root_pem, uuid)
            assert faults.done >= 2
            assert "Traceback" not in node.log()
        finally:
            node.stop()


def full_round(
    i: int,
    controller: Controller,
    db: ControllerDB,
    node: Node,
    faults: Faults,
    root_pem: bytes,
    uuid: str,
) -> None:
    """Fill, change the config, kill, restart on the full disk, free, converge."""
    persist = node.root / "persist"
    value = str(700 + i)
    filler = fill(persist)
    since = time.time()
    controller.set_config(uuid, config(value))
    if faults.rng.random() < 0.5:
        pause = faults.rng.uniform(0.0, 3.0)
        time.sleep(pause)
        where = f"{pause:.2f} s after the change"
    else:
        node.wait_status(lambda s: items(s).get("timer.download.retry") == value, 30,
                         "the new config applied on the full disk")  # fmt: skip
        wait_for(lambda: "STORAGE_STATUS_DEGRADED" in storage_states(db, uuid, since),
                 30, "the full disk reported")  # fmt: skip
        where = "once the full disk was reported"
    assert node.agent is not None and node.agent.alive()
    node.agent.kill()
    node.stop()
    faults.note(f"round {i}: config {value}, killed {where} on the full disk")

    restarted = time.time()
    node.start()
    status = node.wait_status(
        lambda s: items(s).get("timer.download.retry") == value and s["storage"],
        40,
        "the new config applied after a restart on the full disk",
    )
    assert status["phase"] == "running", status["phase"]
    faults.note(f"storage problems on the full disk: {status['storage']}")
    wait_for(lambda: "STORAGE_STATUS_DEGRADED" in storage_states(db, uuid, restarted),
             30, "the full disk reported after the restart")  # fmt: skip
    assert node.agent is not None and node.agent.alive()

    filler.unlink()
    freed = time.time()
    status = wait_converged(node, db, {"timer.download.retry": value}, since=freed)
    wait_for(lambda: (agent_status(node) or {"storage": 1})["storage"] == [], 30,
             "no storage problem left")  # fmt: skip
    wait_for(lambda: storage_states(db, uuid, freed)[-1:] == ["STORAGE_STATUS_ONLINE"],
             30, "ONLINE reported again")  # fmt: skip
    assert checkpoint_hash(persist, root_pem) == status["config_hash"]
    problems, leftovers = whole_files(persist, root_pem)
    assert not problems, problems
    faults.note(f"round {i}: converged once space returned; leftovers {leftovers}")
