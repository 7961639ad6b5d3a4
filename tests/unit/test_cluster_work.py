# SPDX-License-Identifier: Apache-2.0
"""controller.clusterwork: recomposition over time (lost nodes replaced), nodes moving between
clusters, members whose config cannot be written, the server's periodic task, device removal."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.wire import pki
from agent.wire.pb.certs import certs_pb2
from controller import clusterwork
from controller.cli import main
from controller.clusters import ClusterStore
from controller.records import AttestState, DeviceCert
from controller.state import StateDir
from controller.store import Store
from tests.unit.test_cluster_cli import Member, model, node


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cli(capsys: pytest.CaptureFixture[str], state: StateDir, *argv: str) -> str:
    code = main([*argv[:2], "--state", str(state.root), *argv[2:]])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture
def state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StateDir:
    state = StateDir(tmp_path / "state")
    assert main(["init", "--state", str(state.root)]) == 0
    capsys.readouterr()
    return state


def members(state: StateDir, name: str) -> dict[str, str]:
    with Store.open(state.database) as store:
        cs = ClusterStore(store.connection, store.clock)
        record = cs.cluster_by_name(name)
        assert record is not None
        return {m.device_uuid: m.role.value for m in cs.members(record.id)}


def recompose_at(state: StateDir, clock: Clock, seen: list[Member]) -> clusterwork.Outcome:
    with Store.open(state.database, clock=clock) as store:
        for n in seen:
            store.touch(n.uuid)
        return clusterwork.recompose(store, clusterwork.load_keys(state))


def test_a_lost_member_is_replaced_and_released(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = sorted(
        (node(state, tmp_path / f"n{i}", f"s{i}") for i in range(3)), key=lambda n: n.uuid
    )
    for n in nodes:
        cli(capsys, state, "device", "tag", n.uuid, "pool=a")
    cli(capsys, state, "cluster", "create", "c", "--select", "pool=a", "--servers", "2:2",
        "--network-tag", "uplink", "--lost-after", "60")  # fmt: skip
    assert set(members(state, "c")) == {nodes[0].uuid, nodes[1].uuid}
    clock = Clock(time.time())
    # Within lost_after nothing changes, even with the init server silent.
    assert recompose_at(state, Clock(clock.now + 30), nodes[1:]).configs == 0
    # Past it, the init server is replaced: the other server takes over as the join server,
    # the spare node joins, and the lost node's config loses its cluster part.
    outcome = recompose_at(state, Clock(clock.now + 120), nodes[1:])
    assert members(state, "c") == {nodes[1].uuid: "init", nodes[2].uuid: "server"}
    assert outcome.configs == 3  # the lost node, the new init server, the newcomer
    assert model(state, nodes[0]).cluster is None
    joined = model(state, nodes[2]).cluster
    assert joined is not None and joined.join_server_ip == "10.244.0.11"
    text = cli(capsys, state, "cluster", "events", "c")
    assert "left (init)" in text and "lost: last seen" in text and "join server" in text


def test_a_node_moves_between_clusters_in_one_step(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = node(state, tmp_path / "a", "a")
    cli(capsys, state, "device", "tag", a.uuid, "pool=one")
    for name in ("one", "two"):
        cli(capsys, state, "cluster", "create", name, "--select", f"pool={name}",
            "--network-tag", "uplink")  # fmt: skip
    assert members(state, "one") == {a.uuid: "init"}
    cli(capsys, state, "device", "tag", a.uuid, "pool=two")
    assert members(state, "one") == {} and members(state, "two") == {a.uuid: "init"}
    cluster = model(state, a).cluster
    assert cluster is not None and cluster.name == "two"
    assert cluster.ip_prefix == "10.244.1.10/24"


def test_a_member_whose_config_cannot_be_written(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = node(state, tmp_path / "a", "a")
    # An ECDH certificate its device certificate did not issue: the token cannot be sealed.
    key = pki.new_ec_key()
    with Store.open(state.database) as store:
        store.set_device_certs(
            a.uuid,
            [DeviceCert(certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE, 1, b"",
                        pki.cert_pem(pki.make_certificate(key, "stranger")), True, False, b"")],
        )  # fmt: skip
    cli(capsys, state, "device", "tag", a.uuid, "pool=x")
    cli(capsys, state, "cluster", "create", "c", "--select", "pool=x", "--network-tag", "uplink")
    assert model(state, a).cluster is None
    events = cli(capsys, state, "cluster", "events", "c")
    assert events.count("cannot write the config") == 1 and "not issued" in events
    with Store.open(state.database) as store:
        assert clusterwork.recompose(store, clusterwork.load_keys(state)).events == 0
    shown = cli(capsys, state, "cluster", "show", "c")
    assert "cannot encrypt the token" in shown


def test_removing_a_member_device_is_in_the_history(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (node(state, tmp_path / n, n) for n in "ab")
    for n in (a, b):
        cli(capsys, state, "device", "tag", n.uuid, "pool=x")
    cli(capsys, state, "cluster", "create", "c", "--select", "pool=x", "--network-tag", "uplink")
    (first,) = members(state, "c")
    cli(capsys, state, "device", "remove", first)
    assert "removed from the controller" in cli(capsys, state, "cluster", "events", "c")
    with Store.open(state.database) as store:
        clusterwork.recompose(store, clusterwork.load_keys(state))
    assert list(members(state, "c").values()) == ["init"] and first not in members(state, "c")


def test_the_server_recomposes_periodically(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = node(state, tmp_path / "a", "a", attested=False)
    cli(capsys, state, "device", "tag", a.uuid, "pool=x")
    cli(capsys, state, "cluster", "create", "c", "--select", "pool=x", "--network-tag", "uplink")
    assert members(state, "c") == {}
    # The node attests later: the next periodic round takes it in.
    with Store.open(state.database) as store:
        store.set_device_certs(
            a.uuid,
            [DeviceCert(certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE, 1, b"", a.ecdh.cert_pem,
                        True, False, b"")],
        )  # fmt: skip
        store.set_attestation(a.uuid, AttestState.ATTESTED, "", integrity_token=b"t" * 32)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(clusterwork.run_periodically(state, stop, interval=0.05))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if members(state, "c"):
                break
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert members(state, "c") == {a.uuid: "init"}
    assert model(state, a).cluster is not None
