"""kill -9 of the agent at random points of onboarding, in a loop.

Each round is a new node (its own serial), started and killed one to three times at a stage read
from its log (key made, registering, registered, first config) or after a random delay, then left
to run.  After every kill: the identity is both files or neither, every file in persist is whole,
the controller has at most one device for the serial and the UUID the node learnt never changes.
At the end of the round the node converges (the default config applied, device info at the
controller) as exactly one device, whose certificate is the node's.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.harness import Controller
from tests.faults.conftest import Nodes
from tests.faults.faultlib import (
    LEFTOVERS_CHECKED,
    ControllerDB,
    Faults,
    Stage,
    identity_state,
    start_and_kill,
    wait_converged,
    whole_files,
)

pytestmark = pytest.mark.e2e

STAGES = [
    Stage("key made", "made a new device key"),
    Stage("ECDH key made", "made a new software ECDH key"),
    Stage("registering", "device certificate "),
    Stage("controller certificates", "controller signing certificate"),
    Stage("registered", "registered with the controller"),
    Stage("onboarded", "onboarded: device UUID"),
    Stage("first config", "new config "),
    Stage("applying", "applying config"),
    Stage("timed", None, delay=(0.0, 2.0)),
    Stage("timed", None, delay=(0.0, 2.0)),
]


def test_kill_during_onboarding(
    controller: Controller, db: ControllerDB, nodes: Nodes, faults: Faults
) -> None:
    root_pem = (controller.certs / "root-certificate.pem").read_bytes()
    for i in faults.rounds(iterations=8, budget=45):
        serial = f"faults-onboard-{i}"
        node = nodes.new(serial)
        persist = node.root / "persist"
        learnt: str | None = None
        earlier: list[str] = []
        for _ in range(faults.rng.randint(1, 3)):
            run = start_and_kill(node, faults, STAGES)
            where = run.where
            state = identity_state(persist) if persist.exists() else "none"
            devices = db.devices_of(serial)
            faults.note(f"round {i}: killed at {where}: identity {state}, "
                        f"{len(devices)} device(s), uuid {node.uuid}")  # fmt: skip
            if persist.exists():
                problems, leftovers = whole_files(persist, root_pem)
                assert not problems, f"half-written files after a kill at {where}: {problems}"
                kept = set(leftovers) & set(earlier)
                # A kill before the start's clean-up (still importing) leaves them to the next.
                if run.cleaned_up():
                    assert not kept, f"temporary files of an earlier kill still there: {kept}"
                earlier = leftovers
            assert len(devices) <= 1, f"duplicate registration: {devices}"
            if learnt is not None:
                assert node.uuid == learnt, "the device UUID changed after a kill"
            learnt = node.uuid or learnt
            if state == "none":
                assert not devices, "registered, but the node has no identity left"

        since = time.time()
        node.start()
        status = wait_converged(node, db, {"timer.config.interval": "5"}, since=since)
        devices = db.devices_of(serial)
        assert len(devices) == 1, f"expected one device for {serial}, got {devices}"
        assert status["uuid"] == devices[0][0] == node.uuid
        if learnt is not None:
            assert node.uuid == learnt
        cert = (persist / "certs" / "device.cert.pem").read_bytes()
        assert devices[0][1].strip() == cert.strip(), "the controller knows another certificate"
        assert identity_state(persist) == "both"
        log = node.log()
        assert "Traceback" not in log, log[-3000:]
        assert LEFTOVERS_CHECKED in log, "the start's clean-up marker is missing from the log"
        assert node.stop() == 0
    assert faults.done >= 3
