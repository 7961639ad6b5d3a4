# SPDX-License-Identifier: Apache-2.0
"""Hardening: what the agent keeps and reports is bounded whatever the config says.

A config with far too many objects (30,000 apps against the model's 10,000) used to become
20,000 error records, as many log lines and info messages, and a status file of megabytes
rewritten every two seconds.  Now the config's object errors are bounded when it is received,
the engine's roll-up per owner is bounded, and the status snapshot lists a bounded number of
errors and owners (with counts of the rest) and is written only when it changes.  And a corrupt
``controllercerts.bak`` is replaced instead of kept for ever.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from agent.link import configsync
from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.model.config import from_proto
from agent.wire.pb.config import devconfig_pb2
from tests.unit.link_harness import ControllerPki, make_pki
from tests.unit.test_link_configsync import Rig, rig  # noqa: F401 - the fixture

MANY = 30_000


def crowded_config() -> devconfig_pb2.EdgeDevConfig:
    msg = devconfig_pb2.EdgeDevConfig()
    msg.id.uuid = str(uuid.uuid4())
    for n in range(MANY):
        app = msg.apps.add()
        app.uuidandversion.uuid = str(uuid.uuid4())
        app.displayname = f"app-{n}"
    return msg


def empty_config() -> devconfig_pb2.EdgeDevConfig:
    msg = devconfig_pb2.EdgeDevConfig()
    msg.id.uuid = str(uuid.uuid4())
    return msg


def test_a_crowded_config_keeps_a_bounded_number_of_errors() -> None:
    config = from_proto(crowded_config())
    assert len(config.errors) == MANY - 10_000  # the model's own limit, one error each
    bounded = configsync.bound_errors(config)
    assert len(bounded.errors) == configsync.MAX_CONFIG_ERRORS + 1
    last = bounded.errors[-1]
    assert (last.kind, last.id) == ("config", "errors-omitted")
    assert (
        last.message
        == f"{MANY - 10_000 - configsync.MAX_CONFIG_ERRORS} more object errors (app) not listed"
    )
    assert bounded.apps == config.apps  # the valid objects are all there
    few = from_proto(empty_config())
    assert configsync.bound_errors(few) is few


def test_long_error_fields_are_clipped() -> None:
    from dataclasses import replace

    from agent.model.config import ObjectError

    huge = ObjectError("app", "i" * 10_000, "n" * 10_000, "m" * 100_000)
    config = replace(from_proto(empty_config()), errors=(huge,))
    (err,) = configsync.bound_errors(config).errors
    assert (len(err.id), len(err.name), len(err.message)) == (64, 256, 2048)


async def test_config_sync_hands_over_the_bounded_config(
    rig: Rig,  # noqa: F811
) -> None:
    """What the reconciler gets: the bounded errors (before: every one of them)."""
    node = rig.node
    msg = crowded_config()
    config = await node.sync._model(msg)
    assert len(config.errors) == configsync.MAX_CONFIG_ERRORS + 1


# ---------------------------------------------------------------- the engine


async def test_the_engine_rolls_up_a_bounded_number_of_errors_per_owner() -> None:
    from agent.drivers.errors import PermanentError
    from agent.reconcile import engine as engine_mod
    from tests.unit.engine_fakes import Recorder, graph, t

    count = 300
    rec = Recorder(trust_deletes=True)
    rec.fail = {("create", f"t{n}"): PermanentError("x" * 5_000) for n in range(count)}
    eng = engine_mod.Engine({"x": rec})
    eng.set_desired(graph(*(t(f"t{n}") for n in range(count))))
    await eng.settle(30)
    (owner,) = eng.owners().values()
    limit = getattr(engine_mod, "MAX_OWNER_ERRORS", 50)
    assert len(owner.errors) == limit  # before: one per failed item
    assert owner.errors[-1].message == f"... and {count - limit + 1} more failed items"
    assert all(len(e.message) <= 4096 for e in owner.errors)
    assert len(eng.status) == count  # one state per item is still kept


# ---------------------------------------------------------------- the status file


async def test_the_status_snapshot_is_bounded(tmp_path: Path) -> None:
    from agent import status as status_mod
    from agent.daemon import Node
    from agent.settings import AgentSettings, NodePaths

    node = Node(AgentSettings(paths=NodePaths.from_root(tmp_path), workloads=False, networks=False))
    await node.reconciler.accept(from_proto(crowded_config()))  # unbounded, on purpose
    snapshot = status_mod.snapshot(node)
    assert len(snapshot["object_errors"]) == status_mod.MAX_LISTED
    assert snapshot["object_errors_omitted"] == MANY - 10_000 - status_mod.MAX_LISTED
    assert len(snapshot["owners"]) == status_mod.MAX_LISTED
    assert snapshot["owners_omitted"] > 0
    # Errors first: the bound hides quiet owners, never failing ones.
    assert all(o["state"] == "error" for o in snapshot["owners"])
    size = len(json.dumps(snapshot, indent=1))
    assert size < 512 * 1024, size  # before: megabytes
    text = status_mod.render(snapshot)
    assert f"... and {snapshot['object_errors_omitted']} more objects" in text


# ---------------------------------------------------------------- controllercerts.bak


@pytest.fixture
def pki(tmp_path: Path) -> ControllerPki:
    return make_pki(tmp_path / "controller")


def test_a_corrupt_controllercerts_bak_is_replaced_at_load(
    tmp_path: Path, pki: ControllerPki
) -> None:
    """Before: the .bak stayed corrupt for ever (only a missing one was ever written)."""
    from agent.wire import envelope
    from controller.api.onboarding import controller_certs

    raw = envelope.parse(controller_certs(pki.identity)).payload
    checkpoints = CheckpointStore(tmp_path / "cp", "controllercerts")
    checkpoints.save(raw)
    checkpoints.backup.write_bytes(b"\x00garbage")
    store = ControllerCertStore(checkpoints, pki.root_pem)
    assert store.load_checkpoint() is not None
    assert checkpoints.backup.read_bytes() == raw


async def test_a_corrupt_controllercerts_bak_is_replaced_at_the_next_save(
    rig: Rig,  # noqa: F811
) -> None:
    node = rig.node
    cp = node.certs._checkpoints
    good = cp.primary.read_bytes()
    cp.backup.write_bytes(b"\x00garbage")
    cp.primary.write_bytes(b"\x00garbage too")
    restarted = node.restarted()
    assert restarted.certs.current is None
    await restarted.certs.refresh(node.client)
    assert cp.backup.read_bytes() == good and cp.primary.read_bytes() == good
