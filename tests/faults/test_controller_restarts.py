"""The controller killed (kill -9) and restarted under load.

Four nodes report (metrics every 5 s, info, their logs) and get new config versions while the
controller is killed at random moments, down for a random while, and started again.  Before
each kill the rows of its database (reports and log entries) are noted: every one is still there
after the restart (nothing the controller acknowledged is lost, SQLite's WAL commits before the
answer).  The records the nodes held durably (their log spools on disk, read between kills) all
reach the controller in the end; each node converges to its newest config, as the one device of
its serial, with the UUID it had.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, Node, wait_for
from tests.faults.conftest import Nodes
from tests.faults.faultlib import (
    ControllerDB,
    Faults,
    LogTail,
    spooled_records,
    wait_converged,
)

pytestmark = pytest.mark.e2e

NODES = 4


def config(value: str) -> dict[str, object]:
    return {"configItems": [*FAST_ITEMS["configItems"],
                            {"key": "timer.metric.interval", "value": "5"},
                            {"key": "timer.download.retry", "value": value}]}  # fmt: skip


def restart(controller: Controller) -> None:
    """Start the controller again and wait until this run listens."""
    tail = LogTail(controller.state.parent / f"{controller.state.name}.log")
    controller.start()
    assert tail.wait("listening on", 30), "the controller did not listen again"


def rows(db: ControllerDB) -> set[tuple[str, int]]:
    """Every report and log entry the controller stored, by table and id."""
    return {("report", int(i)) for (i,) in db.query("SELECT id FROM report")} | {
        ("log_entry", int(i)) for (i,) in db.query("SELECT id FROM log_entry")
    }


def durable(nodes: list[Node]) -> set[tuple[str, int, str]]:
    """The log records in the nodes' spools on disk now (files may go as they are read)."""
    found: set[tuple[str, int, str]] = set()
    for node in nodes:
        uuid = node.uuid or ""
        for _ in range(3):
            try:
                found |= {(uuid, m, c) for m, c in spooled_records(node.root / "persist")}
                break
            except (FileNotFoundError, EOFError):
                continue  # delivered and deleted while read: read again
    return found


def test_controller_killed_under_load(
    controller: Controller, db: ControllerDB, nodes: Nodes, faults: Faults
) -> None:
    fleet = [nodes.new(f"faults-fleet-{i}") for i in range(NODES)]
    for node in fleet:
        node.start()
    uuids = {node.root.name: node.wait_onboarded() for node in fleet}
    for node in fleet:
        controller.set_config(uuids[node.root.name], config("600"))
    latest = {name: "600" for name in uuids}
    spooled = durable(fleet)

    started = time.time()
    first = len(rows(db))
    for i in faults.rounds(iterations=4, budget=45):
        time.sleep(faults.rng.uniform(2.0, 6.0))
        before = rows(db)
        spooled |= durable(fleet)
        assert controller.server is not None
        controller.server.kill()
        controller.server.stop()
        # Configs change while it is down (the admin commands write the database directly).
        name = faults.rng.choice(sorted(uuids))
        latest[name] = str(601 + i)
        controller.set_config(uuids[name], config(latest[name]))
        down = faults.rng.uniform(0.5, 3.0)
        time.sleep(down)
        restart(controller)
        lost = before - rows(db)
        faults.note(f"round {i}: killed with {len(before)} rows stored, down {down:.1f} s; "
                    f"{len(spooled)} spooled records seen")  # fmt: skip
        assert not lost, f"acknowledged rows gone after the restart: {sorted(lost)[:10]}"
        devices = db.devices()
        assert len(devices) == NODES, f"devices after the restart: {devices}"

    for node in fleet:
        # Device info goes when it changes: a node that did not change need not send more.
        name = node.root.name
        status = wait_converged(node, db, {"timer.download.retry": latest[name]}, since=started)
        assert status["uuid"] == uuids[name] == node.uuid
        assert [u for u, _ in db.devices_of(name)] == [uuids[name]]
    spooled |= durable(fleet)

    def missing() -> set[tuple[str, int, str]]:
        have = {(u, m, c) for u in uuids.values() for m, c in db.log_records(u)}
        return spooled - have

    try:
        wait_for(lambda: not missing(), 90, "every spooled log record at the controller")
    except AssertionError:
        lost_records = sorted(missing())
        raise AssertionError(f"{len(lost_records)} records lost: {lost_records[:10]}") from None
    stored = len(rows(db))
    faults.note(f"{len(spooled)} spooled records all at the controller; rows {first} -> {stored}")
    assert stored > first + NODES * faults.done, "hardly any load while the controller restarted"
    assert faults.done >= 2
    for node in fleet:
        assert "Traceback" not in node.log()
        assert node.stop() == 0
