"""Corrupt the files in a node's persist directory one by one.

The node onboards, gets a config, and is stopped with the controller down for a moment so that
its outbox and log spool hold something too.  Its persist directory is copied; then, for each
file in it (in a random order, each with a random corruption: empty, truncated, garbage, one
byte flipped), persist is restored from the copy, that one file corrupted, and the agent started.

It must either converge (the controller's newest config applied, device info received) as the
same device (one device for its serial, the same UUID and certificate at the controller), or,
for the files without which the identity is unusable, refuse to start with a clear error (an
exit with a message naming the file, no traceback): never a traceback, never a crash without
a reason.  The files that may refuse are listed in :data:`MAY_REFUSE`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node, wait_for
from tests.faults.conftest import Nodes
from tests.faults.faultlib import (
    ControllerDB,
    Faults,
    agent_status,
    persist_files,
    wait_converged,
)

pytestmark = pytest.mark.e2e

#: Files without which the node's identity is unusable: a corrupt one may stop the agent with
#: an error naming it (the agent never makes a new identity over a real device's: that would
#: be another device to the controller).
MAY_REFUSE = {
    "certs/device.key.pem": "device.key.pem",
    "certs/device.cert.pem": "device.cert.pem",
    "certs/ecdh.key.pem": "ecdh.key.pem",
    "certs/ecdh.cert.pem": "ecdh.cert.pem",
}

CORRUPTIONS = ("empty", "truncated", "garbage", "flipped")


def corrupt(path: Path, how: str, faults: Faults) -> None:
    data = path.read_bytes()
    if how == "empty":
        new = b""
    elif how == "truncated":
        new = data[: len(data) // 2]
    elif how == "garbage":
        new = faults.rng.randbytes(max(len(data), 16))
    else:
        at = len(data) // 2 if data else 0
        new = data[:at] + bytes([(data[at] if data else 0) ^ 0x5A]) + data[at + 1 :]
    path.write_bytes(new)


def prepare(controller: Controller, db: ControllerDB, node: Node) -> str:
    """Onboard, apply a config, and stop with something in the outbox and the log spool."""
    node.start()
    uuid = node.wait_onboarded()
    items = [*FAST_ITEMS["configItems"], {"key": "timer.download.retry", "value": "800"}]
    controller.set_config(uuid, {"configItems": items})
    wait_converged(node, db, {"timer.download.retry": "800"}, since=time.time())
    # A start while the controller is down queues device info that cannot be delivered.
    controller.stop()
    assert node.stop() == 0
    node.start()
    node.wait_status(lambda s: not s["controller_reachable"], 30, "the controller gone")
    wait_for(lambda: list((node.root / "persist" / "outbox").glob("*.info")), 30, "an outbox")
    assert node.stop() == 0
    controller.start()
    return uuid


def test_corrupt_persist_files_one_by_one(
    controller: Controller, db: ControllerDB, nodes: Nodes, faults: Faults, tmp_path: Path
) -> None:
    node = nodes.new("faults-corrupt")
    persist = node.root / "persist"
    uuid = prepare(controller, db, node)
    [(_, cert)] = db.devices_of("faults-corrupt")
    pristine = tmp_path / "persist.pristine"
    shutil.copytree(persist, pristine, symlinks=True)
    files = persist_files(pristine)
    faults.note(f"files in persist: {files}")
    for kind in ("checkpoint/lastconfig", "checkpoint/controllercerts", "certs/device.key.pem",
                 "status/uuid", "outbox/", "newlog/pending/"):  # fmt: skip
        assert any(f.startswith(kind) for f in files), f"no {kind} to corrupt: {files}"
    faults.rng.shuffle(files)

    for i in faults.rounds(iterations=len(files), budget=100):
        shutil.rmtree(persist)
        shutil.copytree(pristine, persist, symlinks=True)
        how = faults.rng.choice(CORRUPTIONS)
        corrupt(persist / files[i], how, faults)
        outcome, code = start_once(node, db, uuid, f"{files[i]} {how}")
        check_outcome(node, files[i], how, outcome, code)
        devices = db.devices_of("faults-corrupt")
        assert devices == [(uuid, cert)], f"{files[i]} {how}: the controller's devices {devices}"
        faults.note(f"{files[i]} {how}: {outcome} (exit code {code})")

    faults.note(f"{faults.done} of {len(files)} files corrupted")
    assert faults.done >= min(len(files), 8)
    # The intact copy still runs.
    shutil.rmtree(persist)
    shutil.copytree(pristine, persist, symlinks=True)
    since = time.time()
    node.start()
    wait_for(lambda: converged(node, db, uuid, since), 45, "the intact node to converge")
    assert node.stop() == 0


def converged(node: Node, db: ControllerDB, uuid: str, since: float) -> bool:
    """The running agent applied the controller's newest config as ``uuid`` and the controller
    received its device info after ``since``."""
    status = agent_status(node)
    if status is None or status.get("uuid") != uuid or not status.get("controller_reachable"):
        return False
    if status.get("config_hash") != db.latest_config(uuid)[1]:
        return False
    return db.info_since(uuid, since)


def start_once(node: Node, db: ControllerDB, uuid: str, what: str) -> tuple[str, int]:
    """Start the agent until it converged or exited by itself, then stop it: ('converged' or
    'exited', its exit code)."""
    since = time.time()
    node.start()
    agent = node.agent
    assert agent is not None

    def outcome() -> str | None:
        if not agent.alive():
            return "exited"
        return "converged" if converged(node, db, uuid, since) else None

    try:
        result = wait_for(outcome, 45, f"the node with {what} to converge or refuse")
    finally:
        code = node.stop()
    return str(result), code


def check_outcome(node: Node, rel: str, how: str, outcome: str, code: int) -> None:
    """A refusal only for the identity's files, with exit code 2 and a line naming the file;
    otherwise no traceback."""
    log = node.log().split("Using selector")[-1]  # this run's lines
    if outcome == "exited":
        assert rel in MAY_REFUSE, f"{rel} {how}: the agent exited (code {code})\n{log[-2000:]}"
        refusal = [line for line in log.splitlines() if "cannot start: " in line]
        assert code == 2 and refusal and MAY_REFUSE[rel] in refusal[-1], (
            f"{rel} {how}: no clear error (code {code})\n{log[-3000:]}"
        )
    else:
        assert "Traceback" not in log, f"{rel} {how}: a traceback\n{log[-3000:]}"
