"""agent.link.configsync: signed config polling against the real controller, checkpoints, .bak
promotion, replay refusal, and a misbehaving controller."""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.link import configsync
from agent.link.attestation import Attestor, AttestState, NoTpmQuotes
from agent.link.checkpoint import CheckpointStore
from agent.link.configsync import ConfigSync
from agent.link.controllercerts import ControllerCertStore
from agent.link.transport import ControllerClient
from agent.model.config import NodeConfig
from agent.model.configitems import ConfigItems, parse_items
from agent.util.timing import Backoff
from agent.wire import envelope
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.config import devconfig_pb2
from controller.records import AttestState as ControllerAttestState
from tests.unit.link_harness import (
    ControllerPki,
    FakeController,
    LiveController,
    config_response,
    fake_controller,
    live_controller,
    make_pki,
    onboard_device,
    proto,
    rotate_signing,
    tamper,
    until,
)
from tests.unit.test_controller_harness import software_signer

#: The promotion window these tests configure (the minimum EVE allows).
WINDOW = 30


@dataclass
class Node:
    """The config side of one node, wired as agent.daemon wires it, around a ControllerClient."""

    client: ControllerClient
    device: SoftwareSigner
    checkpoint_dir: Path
    root_pem: bytes
    device_uuid: str | None = None
    apply_ok: bool = True
    applied: list[NodeConfig] = field(default_factory=list)
    unknown_device_calls: int = 0
    items: ConfigItems = field(
        default_factory=lambda: parse_items([("timer.test.baseimage.update", str(WINDOW))])
    )

    def __post_init__(self) -> None:
        self.certs = ControllerCertStore(
            CheckpointStore(self.checkpoint_dir, "controllercerts"), self.root_pem
        )
        self.attestor = Attestor(
            self.client,
            device=self.device,
            certs=self.certs,
            quotes=NoTpmQuotes(),
            backoff=Backoff(initial=0.005, maximum=0.02),
        )
        self.checkpoints = CheckpointStore(self.checkpoint_dir, "lastconfig")
        self.sync = ConfigSync(
            self.client,
            device=self.device,
            device_uuid=lambda: self.device_uuid,
            certs=self.certs,
            attestor=self.attestor,
            checkpoints=self.checkpoints,
            apply=self._apply,
            items=lambda: self.items,
            on_unknown_device=self._unknown,
        )

    async def _apply(self, config: NodeConfig) -> bool:
        self.applied.append(config)
        return self.apply_ok

    async def _unknown(self) -> None:
        self.unknown_device_calls += 1

    async def poll(self) -> None:
        await asyncio.wait_for(self.sync.poll_once(asyncio.Event()), 5)

    def restarted(self, client: ControllerClient | None = None) -> Node:
        """The same node after a restart: same disk, fresh memory, certs from the checkpoint."""
        node = Node(client or self.client, self.device, self.checkpoint_dir, self.root_pem)
        node.device_uuid = self.device_uuid
        node.certs.load_checkpoint()
        return node

    def saved(self, name: str = "lastconfig") -> devconfig_pb2.ConfigResponse:
        """The checkpoint file, verified like the agent does, as a ConfigResponse."""
        assert self.certs.current is not None
        raw = (self.checkpoint_dir / name).read_bytes()
        resp = devconfig_pb2.ConfigResponse()
        resp.ParseFromString(
            envelope.open_signed(raw, self.certs.current.trusted_signers()).payload
        )
        return resp


@dataclass
class Rig:
    ctl: LiveController
    node: Node

    @property
    def uuid(self) -> str:
        assert self.node.device_uuid is not None
        return self.node.device_uuid

    def set_config(self, document: dict[str, Any], *, age: float = 0.0) -> str:
        """A new config version on the controller, stamped ``age`` seconds before now."""
        return self.ctl.set_config(self.uuid, document, timestamp=time.time() - age).config_hash


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        node = Node(client, software_signer("device"), tmp_path / "checkpoint", ctl.pki.root_pem)
        try:
            node.device_uuid = await onboard_device(
                client, node.device, node.certs, ctl.pki.onboard
            )
            yield Rig(ctl, node)
        finally:
            await client.close()


# ---------------------------------------------------------------- polling the real controller


async def test_first_poll_applies_and_checkpoints_then_304(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    current = rig.ctl.store.current_config(rig.uuid)
    assert current is not None and current.version == 0
    (config,) = node.applied
    assert config.device_uuid == rig.uuid
    assert config.version == "0"
    assert node.sync.current is config
    status = node.sync.status
    assert status.config_hash == current.config_hash
    assert status.source == "controller"
    assert status.applied_ok is True
    assert status.controller_reachable is True
    assert status.last_error == ""
    registered_at = rig.ctl.store.require_device(rig.uuid).registered_at
    assert status.config_timestamp == pytest.approx(registered_at, abs=1e-3)
    # The checkpoint is the signed response; the first one also seeds .bak.
    assert node.saved().configHash == current.config_hash
    primary = node.checkpoints.primary.read_bytes()
    assert node.checkpoints.backup.read_bytes() == primary
    # The config request carried the integrity token from attestation.
    assert node.attestor.current_token == rig.ctl.store.require_device(rig.uuid).integrity_token

    await node.poll()
    assert len(node.applied) == 1
    assert rig.ctl.count("config", 200) == 1
    assert rig.ctl.count("config", 304) == 1
    assert node.checkpoints.primary.read_bytes() == primary


async def test_new_config_is_applied_and_checkpointed_but_not_promoted(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    bak = node.checkpoints.backup.read_bytes()
    new_hash = rig.set_config({"configItems": [{"key": "timer.config.interval", "value": "5"}]})
    await node.poll()
    assert [c.version for c in node.applied] == ["0", "1"]
    assert node.applied[1].items.int("timer.config.interval") == 5
    assert node.sync.status.config_hash == new_hash
    assert node.saved().configHash == new_hash
    assert node.checkpoints.backup.read_bytes() == bak  # .bak still the known-good v0


async def test_403_restarts_attestation(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    first_token = node.attestor.current_token
    # The controller revokes the token (as after a failed quote).
    rig.ctl.store.set_attestation(
        rig.uuid, ControllerAttestState.FAILED, "revoked", integrity_token=None
    )
    await node.poll()
    assert rig.ctl.count("config", 403) == 1
    assert node.attestor.current_token is None
    assert node.attestor.status.state is AttestState.RESTART_WAIT
    assert "403" in node.attestor.status.error
    assert len(node.applied) == 1
    # The next poll attests again and the config request is accepted.
    await node.poll()
    assert node.attestor.current_token not in (None, first_token)
    assert rig.ctl.count("config", 304) == 1
    assert rig.ctl.count("attest", 201) == 4


async def test_404_calls_on_unknown_device(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    node.client.device_uuid = str(uuidlib.uuid4())  # a UUID the controller does not know
    await node.poll()
    assert rig.ctl.count("config", 404) == 1
    assert node.unknown_device_calls == 1
    assert len(node.applied) == 1


async def test_400_after_the_device_was_deleted_calls_on_unknown_device(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    assert rig.ctl.store.remove_device(rig.uuid)
    await node.poll()
    assert rig.ctl.count("config", 400) == 1
    assert node.unknown_device_calls == 1
    assert len(node.applied) == 1


async def test_changed_controllercert_confighash_refreshes_certs(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    certs_fetched = rig.ctl.count("certs")
    before = node.certs.current

    rig.set_config({"controllercert_confighash": "certs-1"})
    await node.poll()  # first hash seen: remembered, nothing to compare with
    assert rig.ctl.count("certs") == certs_fetched
    assert node.certs.current is before

    rig.set_config({"controllercert_confighash": "certs-2"})
    await node.poll()  # changed: /certs is fetched again
    assert rig.ctl.count("certs") == certs_fetched + 1
    assert node.certs.current is not before

    rig.set_config({"controllercert_confighash": "certs-2", "device_name": "same certs"})
    await node.poll()
    assert rig.ctl.count("certs") == certs_fetched + 1
    assert [c.version for c in node.applied] == ["0", "1", "2", "3"]


async def test_older_config_timestamp_is_refused(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    applied_hash = node.sync.status.config_hash
    primary = node.checkpoints.primary.read_bytes()

    rig.set_config({"device_name": "replayed"}, age=3600)
    await node.poll()
    status = node.sync.status
    assert len(node.applied) == 1
    assert status.rejected == 1
    assert "older than the applied config" in status.last_error
    assert status.last_error_at > 0
    assert status.config_hash == applied_hash
    assert node.checkpoints.primary.read_bytes() == primary

    # A newer config is applied again and clears the error.
    new_hash = rig.set_config({"device_name": "fresh"}, age=-10)
    await node.poll()
    assert [c.version for c in node.applied] == ["0", "2"]
    assert status.config_hash == new_hash
    assert status.last_error == ""
    assert status.rejected == 1


async def test_apply_errors_are_reported(rig: Rig) -> None:
    rig.node.apply_ok = False
    await rig.node.poll()
    assert len(rig.node.applied) == 1
    assert rig.node.sync.status.applied_ok is False


# ---------------------------------------------------------------- checkpoints across restarts


async def test_load_checkpoint_after_restart(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    new_hash = rig.set_config({"device_name": "saved"})
    await node.poll()
    served = len(rig.ctl.served)

    again = node.restarted()
    assert await again.sync.load_checkpoint() is True
    assert len(rig.ctl.served) == served  # nothing asked of the controller
    (config,) = again.applied
    assert config.version == "1"
    assert config.device_uuid == rig.uuid
    assert again.sync.current is config
    assert again.sync.status.source == "checkpoint"
    assert again.sync.status.config_hash == new_hash
    assert again.sync.status.applied_ok is True
    # Back in contact, the controller has nothing new: 304, no second apply.
    await again.poll()
    assert len(again.applied) == 1
    assert rig.ctl.count("config", 304) == 1


async def test_load_checkpoint_restores_corrupt_primary_from_bak(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    rig.set_config({"device_name": "newer"})
    await node.poll()
    bak = node.checkpoints.backup.read_bytes()
    node.checkpoints.primary.write_bytes(b"\x00 torn write")

    again = node.restarted()
    assert await again.sync.load_checkpoint() is True
    (config,) = again.applied
    assert config.version == "0"  # the known-good .bak
    assert node.checkpoints.primary.read_bytes() == bak


async def test_load_checkpoint_refuses_a_primary_from_another_controller(
    rig: Rig, tmp_path: Path
) -> None:
    node = rig.node
    await node.poll()
    other = make_pki(tmp_path / "other")
    forged = config_response(rig.uuid, timestamp=time.time() + 100, version="99")
    node.checkpoints.primary.write_bytes(other.identity.seal(forged.SerializeToString()))

    again = node.restarted()
    assert await again.sync.load_checkpoint() is True
    assert [c.version for c in again.applied] == ["0"]


async def test_load_checkpoint_without_controller_certs(rig: Rig) -> None:
    node = rig.node
    await node.poll()
    (node.checkpoint_dir / "controllercerts").unlink()
    (node.checkpoint_dir / "controllercerts.bak").unlink()
    again = node.restarted()
    assert again.certs.current is None
    assert await again.sync.load_checkpoint() is False
    assert again.applied == []


async def test_load_checkpoint_without_saved_config(rig: Rig) -> None:
    assert await rig.node.sync.load_checkpoint() is False
    assert rig.node.applied == []


# ---------------------------------------------------------------- .bak promotion


class FakeTime:
    """Stands in for the ``time`` module inside agent.link.configsync only."""

    def __init__(self, monotonic: float) -> None:
        self.now = monotonic

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


async def _run_until_applied(rig: Rig, count: int) -> tuple[asyncio.Task[None], asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(rig.node.sync.run(stop))
    await until(lambda: len(rig.node.applied) >= count, what=f"{count} applied configs")
    return task, stop


async def _two_more_polls(rig: Rig) -> None:
    """Wake the loop twice and wait for both polls: the first one's promotion check is done."""
    for _ in range(2):
        polls = rig.ctl.count("config")
        rig.node.sync.wake.set()
        await until(lambda: rig.ctl.count("config") > polls, what="another config poll")  # noqa: B023


async def test_bak_is_promoted_after_the_window_of_clean_running(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeTime(1000.0)
    monkeypatch.setattr(configsync, "time", clock)
    node = rig.node
    await node.poll()
    v0 = node.checkpoints.backup.read_bytes()
    rig.set_config({"device_name": "v1"})
    task, stop = await _run_until_applied(rig, 2)
    try:
        v1 = node.checkpoints.primary.read_bytes()
        assert v1 != v0
        clock.now = 1000.0 + WINDOW - 1
        await _two_more_polls(rig)
        assert node.checkpoints.backup.read_bytes() == v0  # not yet
        clock.now = 1000.0 + WINDOW
        rig.node.sync.wake.set()
        await until(lambda: node.checkpoints.backup.read_bytes() == v1, what="promotion")
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


async def test_bak_is_not_promoted_when_apply_reported_errors(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeTime(1000.0)
    monkeypatch.setattr(configsync, "time", clock)
    node = rig.node
    await node.poll()
    v0 = node.checkpoints.backup.read_bytes()
    node.apply_ok = False
    rig.set_config({"device_name": "broken"})
    task, stop = await _run_until_applied(rig, 2)
    try:
        clock.now = 1000.0 + 100 * WINDOW
        await _two_more_polls(rig)
        assert node.sync.status.applied_ok is False
        assert node.checkpoints.backup.read_bytes() == v0
        assert node.checkpoints.primary.read_bytes() != v0
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


async def test_run_returns_promptly_on_stop(rig: Rig) -> None:
    task, stop = await _run_until_applied(rig, 1)
    start = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 1)
    assert time.monotonic() - start < 0.5


# ---------------------------------------------------------------- a misbehaving controller


def attest_answer(body: bytes) -> bytes:
    req = attest_pb2.ZAttestReq()
    req.ParseFromString(envelope.parse(body).payload)
    resp = attest_pb2.ZAttestResponse()
    if req.reqType == attest_pb2.ATTEST_REQ_NONCE:
        resp.respType = attest_pb2.ATTEST_RESP_NONCE
        resp.nonce.nonce = b"n" * 32
    else:
        resp.respType = attest_pb2.ATTEST_RESP_QUOTE_RESP
        resp.quoteResp.response = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
        resp.quoteResp.integrity_token = b"fake-token"
    return resp.SerializeToString()


@dataclass
class FakeRig:
    fake: FakeController
    node: Node
    config_answers: list[web.Response]

    @property
    def uuid(self) -> str:
        assert self.node.device_uuid is not None
        return self.node.device_uuid


@pytest.fixture
async def fake_rig(tmp_path: Path) -> AsyncIterator[FakeRig]:
    ctl_pki = make_pki(tmp_path / "controller")
    async with fake_controller(ctl_pki) as fake:
        answers: list[web.Response] = []

        async def attest(request: web.Request, body: bytes) -> web.StreamResponse:
            return proto(fake.seal(attest_answer(body)), status=201)

        async def config(request: web.Request, body: bytes) -> web.StreamResponse:
            # The answers in turn, the last one for good; copied, a response is sent only once.
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            assert isinstance(answer.body, bytes)
            return web.Response(
                status=answer.status, body=answer.body, content_type=answer.content_type
            )

        fake.handlers.update(attest=attest, config=config)
        client = fake.client()
        node = Node(client, software_signer("d"), tmp_path / "checkpoint", ctl_pki.root_pem)
        node.device_uuid = client.device_uuid = str(uuidlib.uuid4())
        try:
            await node.certs.refresh(client)
            yield FakeRig(fake, node, answers)
        finally:
            await client.close()


def sealed(pki_: ControllerPki, resp: devconfig_pb2.ConfigResponse) -> web.Response:
    return proto(pki_.identity.seal(resp.SerializeToString()))


def _config_rejections(rig: FakeRig, other: ControllerPki) -> dict[str, tuple[web.Response, str]]:
    p = rig.fake.pki
    good = config_response(rig.uuid)
    no_uuid = config_response(rig.uuid)
    no_uuid.config.id.uuid = ""
    bad_uuid = config_response(rig.uuid)
    bad_uuid.config.id.uuid = "not-a-uuid"
    return {
        "tampered": (proto(tamper(p.identity.seal(good.SerializeToString()))), "envelope rejected"),
        "unsigned": (proto(b"\x0a\x00"), "config envelope rejected"),
        "other controller": (sealed(other, good), "unknown certificate"),
        "other device": (
            sealed(p, config_response(str(uuidlib.uuid4()))),
            "config is for device",
        ),
        "no uuid": (sealed(p, no_uuid), "carries no valid device UUID"),
        "bad uuid": (sealed(p, bad_uuid), "carries no valid device UUID"),
        "garbage payload": (proto(p.identity.seal(b"\xff\xff\xff")), "undecodable"),
    }


@pytest.mark.parametrize(
    "case",
    ["tampered", "unsigned", "other controller", "other device", "no uuid", "bad uuid",
     "garbage payload"],
)  # fmt: skip
async def test_rejected_configs_are_neither_applied_nor_saved(
    fake_rig: FakeRig, tmp_path: Path, case: str
) -> None:
    answer, reason = _config_rejections(fake_rig, make_pki(tmp_path / "other"))[case]
    fake_rig.config_answers.append(answer)
    node = fake_rig.node
    await node.poll()
    assert node.applied == []
    assert node.sync.status.rejected == 1
    assert reason in node.sync.status.last_error
    assert node.sync.status.config_hash == ""
    assert not node.checkpoints.primary.exists()
    if case == "other controller":
        assert fake_rig.fake.count("certs") == 2  # one refresh before giving up


async def test_200_with_the_same_hash_is_not_applied_again(fake_rig: FakeRig) -> None:
    fake_rig.config_answers.append(sealed(fake_rig.fake.pki, config_response(fake_rig.uuid)))
    node = fake_rig.node
    await node.poll()
    await node.poll()
    assert len(node.applied) == 1
    assert fake_rig.fake.count("config") == 2
    # The second request echoed the hash of the applied config.
    second = fake_rig.fake.seen[-1]
    req = devconfig_pb2.ConfigRequest()
    req.ParseFromString(envelope.parse(second.body).payload)
    assert (req.configHash, req.integrity_token) == ("hash-1", b"fake-token")


async def test_unknown_signer_fetches_rotated_certs_then_applies(fake_rig: FakeRig) -> None:
    rotated = rotate_signing(fake_rig.fake.pki)

    async def rotated_certs(request: web.Request, body: bytes) -> web.StreamResponse:
        return proto(rotated.certs_answer())

    fake_rig.fake.handlers["certs"] = rotated_certs
    config = config_response(fake_rig.uuid).SerializeToString()
    fake_rig.config_answers.append(proto(rotated.seal(config)))
    # Attestation answers are still signed with the old key, which the node already knows.
    node = fake_rig.node
    await node.poll()
    assert len(node.applied) == 1
    assert node.certs.current is not None
    assert node.certs.current.signing_pem == rotated.pem
    assert fake_rig.fake.count("certs") == 2


@pytest.mark.parametrize("status", [500, 503, 409])
async def test_other_statuses_change_nothing(fake_rig: FakeRig, status: int) -> None:
    fake_rig.config_answers.append(web.Response(status=status, text="no"))
    node = fake_rig.node
    await node.poll()
    assert node.applied == []
    assert node.unknown_device_calls == 0
    assert node.attestor.current_token == b"fake-token"
    assert node.sync.status.controller_reachable is True
    assert node.sync.status.rejected == 0


async def test_transport_error_marks_the_controller_unreachable(fake_rig: FakeRig) -> None:
    async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(5)
        return proto()

    node = fake_rig.node
    fake_rig.config_answers.append(sealed(fake_rig.fake.pki, config_response(fake_rig.uuid)))
    await node.poll()
    assert node.sync.status.controller_reachable is True
    contact = node.sync.status.last_contact
    fake_rig.fake.handlers["config"] = slow
    node.client.send_timeout = 0.2
    await node.poll()
    assert node.sync.status.controller_reachable is False
    assert node.sync.status.last_contact == contact
    assert len(node.applied) == 1


async def test_a_200_that_is_not_protobuf_is_not_parsed(fake_rig: FakeRig) -> None:
    """A captive portal or a proxy's error page answers 200 too: EVE checks the Content-Type."""
    good = sealed(fake_rig.fake.pki, config_response(fake_rig.uuid))
    fake_rig.config_answers.append(
        web.Response(status=200, body=good.body, content_type="text/html")
    )
    node = fake_rig.node
    await node.poll()
    assert node.applied == []
    assert node.sync.status.rejected == 0  # not a rejected config: no config at all
    assert not node.checkpoints.primary.exists()
