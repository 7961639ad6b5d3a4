"""Apps posting to the metadata server (EVE's AppInstMetaData): the real server on loopback
with the agent's answers, the vault store, and the info message."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from agent.drivers.errors import TemporaryError
from agent.drivers.metadata import MAX_POST, MetadataServer
from agent.drivers.netlink_fake import FakeNetlink
from agent.link.appmeta import app_meta_info, queue_app_meta
from agent.link.reporting import Outbox
from agent.model.config import AppInstance, NodeConfig
from agent.model.configitems import parse_items
from agent.model.secret import Secret
from agent.reconcile.appmeta import AppMetaStore
from agent.reconcile.metadata import KUBECONFIG, MetadataAnswers
from agent.reconcile.netplan import NetPlan, VifPlan
from agent.wire.pb.info import info_pb2

APP = "6d3b3b4e-8a3c-4c47-9d41-00000000a001"
DEVICE = "6d3b3b4e-8a3c-4c47-9d41-00000000d001"
KUBE = b'{"apiVersion": "v1", "kind": "Config", "clusters": []}'


def _config() -> NodeConfig:
    app = AppInstance(APP, "1", "k3s", True, 1024, 1, 0, 0, (), (), 0, 0, Secret(), False, 0, 0)
    return NodeConfig(DEVICE, "1", 0.0, parse_items([]), apps={APP: app})


def _plan(ip: str) -> NetPlan:
    plan = NetPlan()
    plan.vifs[(APP, 0)] = VifPlan(APP, 0, "ni", "ev0", "02:00:00:00:00:01", ip, "k3s")
    return plan


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, list[tuple[str, int, bytes]], list[str]]]:
    posted: list[tuple[str, int, bytes]] = []
    caller = ["127.0.0.1"]  # the app's address in the plan (the test's, or someone else's)

    async def sink(app_id: str, kind: int, data: bytes) -> None:
        posted.append((app_id, kind, data))

    answers = MetadataAnswers(_config, lambda: _plan(caller[0]), FakeNetlink("n1"), sink=sink)
    port = _port()
    srv = MetadataServer(answers, address="127.0.0.1", port=port, poster=answers.post)
    await srv.start()
    try:
        yield f"http://127.0.0.1:{port}", posted, caller
    finally:
        await srv.stop()


async def _post(url: str, body: bytes, content_type: str = "application/json") -> int:
    headers = {"Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        await r.read()
        return r.status


async def test_an_app_posts_its_kubeconfig(
    server: tuple[str, list[tuple[str, int, bytes]], list[str]],
) -> None:
    base, posted, caller = server
    assert await _post(f"{base}/eve/v1/kubeconfig", KUBE) == 200
    assert posted == [(APP, KUBECONFIG, KUBE)]
    # EVE's checks: the content type, the size; a stranger is told nothing and nothing is kept.
    assert await _post(f"{base}/eve/v1/kubeconfig", KUBE, "text/yaml") == 415
    assert await _post(f"{base}/eve/v1/kubeconfig", b"x" * (MAX_POST + 1)) == 500
    assert await _post(f"{base}/eve/v1/kubeconfig", b"x" * MAX_POST) == 200
    assert await _post(f"{base}/eve/v1/unknown", KUBE) == 404
    caller[0] = "10.9.9.9"
    assert await _post(f"{base}/eve/v1/kubeconfig", KUBE) == 204
    assert len(posted) == 2
    # GETs still answer as before.
    caller[0] = "127.0.0.1"
    async with aiohttp.ClientSession() as session, session.get(f"{base}/meta-data") as r:
        assert r.status == 200 and APP in await r.text()


async def test_the_store_keeps_the_latest_in_the_vault(tmp_path: Path) -> None:
    vault: list[Path | None] = [None]
    store = AppMetaStore(lambda: vault[0])
    with pytest.raises(TemporaryError, match="vault is locked"):
        store.save(APP, KUBECONFIG, KUBE)
    assert store.load() == {}
    vault[0] = tmp_path
    assert store.save(APP, KUBECONFIG, KUBE) is True
    assert store.save(APP, KUBECONFIG, KUBE) is False  # unchanged: nothing to report again
    path = tmp_path / "appmeta" / f"{APP}.{KUBECONFIG}"
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.load() == {(APP, KUBECONFIG): KUBE}
    with pytest.raises(ValueError):
        store.save("../../etc/passwd", KUBECONFIG, KUBE)
    assert store.forget([APP]) == []
    assert store.forget([]) == [(APP, KUBECONFIG)]
    assert not path.exists()


async def test_the_info_message_is_eves(tmp_path: Path) -> None:
    msg = app_meta_info(DEVICE, APP, KUBECONFIG, KUBE)
    assert msg.ztype == info_pb2.ZiAppInstMetaData and msg.devId == DEVICE
    assert msg.WhichOneof("InfoContent") == "amdinfo"
    assert (msg.amdinfo.uuid, msg.amdinfo.type, msg.amdinfo.data) == (
        APP, info_pb2.APP_INST_META_DATA_TYPE_KUBE_CONFIG, KUBE)  # fmt: skip
    outbox = Outbox(tmp_path / "outbox")
    assert await asyncio.to_thread(queue_app_meta, outbox, DEVICE, APP, KUBECONFIG, KUBE)
    ((key, payload, _),) = outbox.pending()
    assert key == f"appmeta-{APP}-1"
    assert info_pb2.ZInfoMsg.FromString(payload).amdinfo.data == KUBE
