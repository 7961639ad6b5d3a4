"""kill -9 of the agent during config apply and report upload, in a loop.

Each round the controller gets a new config version (``timer.download.retry`` = 600 + round)
while the agent is down; the agent is started and killed at a stage read from its log (config
received, applying, applied, attested), after a random delay, or after 10-14 s (past a roll of
the log spool, so that records are on disk when it dies); one round in five it is stopped
cleanly instead, which leaves its spool on disk for the next start to upload first (a kill then
interrupts the upload).

After every kill: every file in persist parses (the checkpoint verifies), the temporary files
of writes an earlier kill interrupted are gone once a start got past its clean-up, and what the
agent holds durably is noted: the records of its log spool on disk (``newlog/pending``) and its
info outbox.  At the end the node converges to the LAST config, and nothing durable was lost: every
spooled record is at the controller, and every outbox message is there byte for byte or replaced
by a later one of its kind (the outbox keeps the latest per key).  Records still in memory at a
kill were never promised: they are not counted.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import FAST_ITEMS
from tests.e2e.harness import Controller, wait_for
from tests.faults.conftest import Nodes
from tests.faults.faultlib import (
    ControllerDB,
    Faults,
    Killed,
    LogTail,
    Stage,
    info_delivered_or_superseded,
    outbox_infos,
    spooled_records,
    start_and_kill,
    wait_converged,
    whole_files,
)

pytestmark = pytest.mark.e2e

STAGES = [
    # A restart first applies its checkpoint ("applying", "config items changed"), then
    # receives the new version: these markers are waited for whatever came before.
    Stage("config received", "new config ", past=""),
    Stage("applying", "applying config", past=""),
    Stage("applied", "config items changed", jitter=0.2),
    Stage("attested", "attestation complete", jitter=0.1),
    Stage("timed", None, delay=(0.2, 3.0)),
    Stage("timed", None, delay=(0.2, 3.0)),
]
#: Every fourth round: long enough for the spool to roll (10 s), or a clean stop.
LONG = [Stage("after a spool roll", None, delay=(10.0, 13.0))]


def config(value: str) -> dict[str, object]:
    return {"configItems": [*FAST_ITEMS["configItems"],
                            {"key": "timer.download.retry", "value": value}]}  # fmt: skip


def test_kill_during_config_apply_and_report_upload(
    controller: Controller, db: ControllerDB, nodes: Nodes, faults: Faults
) -> None:
    root_pem = (controller.certs / "root-certificate.pem").read_bytes()
    node = nodes.new("faults-apply")
    persist = node.root / "persist"
    node.start()
    uuid = node.wait_onboarded()
    wait_converged(node, db, {"timer.config.interval": "5"}, since=0)
    assert node.stop() == 0

    spooled = spooled_records(persist)
    infos = list(outbox_infos(persist).values())
    value = ""
    earlier: list[str] = []
    for i in faults.rounds(iterations=12, budget=60):
        value = str(600 + i)
        controller.set_config(uuid, config(value))
        if i % 4 == 3 and faults.rng.random() < 0.5:
            tail = LogTail(node.root / "agent.log")
            node.start()
            time.sleep(faults.rng.uniform(1.0, 3.0))
            assert node.stop() == 0
            run = Killed("clean stop", tail.read())
        else:
            run = start_and_kill(node, faults, LONG if i % 4 == 3 else STAGES)
        where = run.where
        problems, leftovers = whole_files(persist, root_pem)
        assert not problems, f"half-written files after {where}: {problems}"
        kept = set(leftovers) & set(earlier)
        if run.cleaned_up():
            assert not kept, f"temporary files of an earlier kill still there: {kept}"
        earlier = leftovers
        now_spooled = spooled_records(persist)
        now_infos = outbox_infos(persist)
        faults.note(f"round {i}: config {value}, {where}: {len(now_spooled)} spooled records, "
                    f"outbox {sorted(now_infos)}, leftovers {leftovers}")  # fmt: skip
        spooled |= now_spooled
        infos.extend(now_infos.values())

    version = db.latest_config(uuid)[0]
    since = time.time()
    node.start()
    wait_converged(node, db, {"timer.download.retry": value}, since=since, version=version)
    faults.note(f"converged on version {version}; {len(spooled)} spooled records to find")
    try:
        wait_for(lambda: not (spooled - db.log_records(uuid)), 60, "the spooled records")
    except AssertionError:
        missing = sorted(spooled - db.log_records(uuid))
        raise AssertionError(f"{len(missing)} spooled log records lost: {missing[:10]}") from None

    def lost_infos() -> list[bytes]:
        delivered = [raw for _, _, raw in db.reports(uuid)]
        return [p for p in infos if not info_delivered_or_superseded(p, delivered)]

    wait_for(lambda: not lost_infos(), 30, "every queued info at the controller")
    assert faults.done >= 3
    assert "Traceback" not in node.log()
    assert node.stop() == 0
