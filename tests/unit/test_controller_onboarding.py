"""The controller's /ping, /certs, /register and /uuid, driven like EVE drives them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.wire import envelope, pki
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.register import register_pb2
from controller.api import PREFIX, ApiSettings
from tests.unit.test_controller_harness import Harness, controller_harness, software_signer


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    async with controller_harness(tmp_path) as harness:
        yield harness


async def test_ping_answers_200_with_a_content_type(ctl: Harness) -> None:
    async with ctl.client.get(f"{PREFIX}/ping") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-proto-binary"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_certs_chain_to_the_root_and_hash_as_eve_expects(ctl: Harness, method: str) -> None:
    async with ctl.client.request(method, f"{PREFIX}/certs") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-proto-binary"
        body = await resp.read()

    env = envelope.parse(body)
    controller_certs = certs_pb2.ZControllerCert()
    controller_certs.ParseFromString(env.payload)
    by_type = {c.type: c for c in controller_certs.certs}
    assert set(by_type) == {
        certs_pb2.CERT_TYPE_CONTROLLER_SIGNING,
        certs_pb2.CERT_TYPE_CONTROLLER_ECDH_EXCHANGE,
    }
    root = pki.load_cert(ctl.state.root_cert.read_bytes())
    for zcert in controller_certs.certs:
        assert zcert.hashAlgo == envelope.HASH_SHA256_16
        assert zcert.certHash == envelope.pem_cert_hash(zcert.cert, envelope.HASH_SHA256_16)
        assert len(zcert.certHash) == 16
        pki.verify_chain(pki.load_cert(zcert.cert), [root])

    # The envelope is signed by the signing cert, named by SHA-256 of its PEM as delivered.
    signing_pem = by_type[certs_pb2.CERT_TYPE_CONTROLLER_SIGNING].cert
    assert env.algo == envelope.HASH_SHA256_32
    assert env.sender_cert_hash == envelope.pem_cert_hash(signing_pem, envelope.HASH_SHA256_32)
    envelope.verify_signature(env, pki.load_cert(signing_pem))


async def test_register_new_then_same_then_conflicting_cert(ctl: Harness) -> None:
    ctl.allow("serial-1")
    device = ctl.device("serial-1")
    first = await device.register()
    assert first.status == 201
    assert first.content_type == "application/x-proto-binary"
    assert (await device.register()).status == 200  # EVE re-registers on every boot

    impostor = ctl.device("serial-1")  # same onboarding cert and serial, another device key
    conflict = await impostor.register()
    assert conflict.status == 409
    assert len(ctl.store.list_devices()) == 1


async def test_register_refuses_unlisted_cert_and_serial(ctl: Harness) -> None:
    device = ctl.device("serial-1")
    assert (await device.register()).status == 403  # nothing allow-listed yet
    ctl.allow("serial-2")
    assert (await device.register()).status == 403  # listed, but not for this serial
    assert ctl.store.list_devices() == []


async def test_soft_serial_wins_over_serial(ctl: Harness) -> None:
    ctl.allow("soft-1")
    device = ctl.device("hardware-serial")
    assert (await device.register(soft_serial="soft-1")).status == 201
    assert [d.serial for d in ctl.store.list_devices()] == ["soft-1"]


async def test_register_accepts_raw_pem_as_well_as_base64(ctl: Harness) -> None:
    ctl.allow()
    device = ctl.device("serial-raw")
    assert (await device.register(pem_cert=device.cert_pem)).status == 201
    assert await device.fetch_uuid()


async def test_register_with_bad_signature_is_401(ctl: Harness) -> None:
    ctl.allow()
    msg = register_pb2.ZRegisterMsg(
        pemCert=base64.b64encode(ctl.device().cert_pem), serial="serial-1"
    )
    # Signed by a stranger, but claiming to be the onboarding cert.
    stranger = software_signer("stranger")
    body = envelope.seal(
        msg.SerializeToString(),
        stranger,
        sender_cert_hash=envelope.device_cert_hash(ctl.onboard.certificate),
        sender_cert_pem=ctl.onboard.certificate.public_bytes(Encoding.PEM),
    )
    async with ctl.client.post(f"{PREFIX}/register", data=body) as resp:
        assert resp.status == 401
    assert ctl.store.list_devices() == []


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no body", b""),
        ("not protobuf", b"\xff\xfe\xfd"),
        ("no senderCert", "no-sender-cert"),
        ("payload not ZRegisterMsg", "bad-payload"),
        ("pemCert not a cert", "bad-pem"),
    ],
)
async def test_register_rejects_malformed_requests_with_400(
    ctl: Harness, case: str, body: bytes | str
) -> None:
    ctl.allow()
    if body == "no-sender-cert":
        msg = register_pb2.ZRegisterMsg(pemCert=b"x", serial="s")
        body = envelope.seal_as_device(msg.SerializeToString(), ctl.onboard)
    elif body == "bad-payload":
        body = envelope.seal_as_device(b"\xff\xff\xff", ctl.onboard, include_cert=True)
    elif body == "bad-pem":
        msg = register_pb2.ZRegisterMsg(pemCert=base64.b64encode(b"nope"), serial="s")
        body = envelope.seal_as_device(msg.SerializeToString(), ctl.onboard, include_cert=True)
    assert isinstance(body, bytes)
    async with ctl.client.post(f"{PREFIX}/register", data=body) as resp:
        assert resp.status == 400, case
        assert resp.headers["Content-Type"].startswith("text/plain")


async def test_uuid_answers_registered_devices_only(ctl: Harness) -> None:
    ctl.allow()
    device = ctl.device()
    stranger = ctl.device("never-registered")
    await device.register()
    device_uuid = await device.fetch_uuid()
    assert device_uuid == ctl.store.list_devices()[0].uuid

    unknown = await stranger.send("/uuid", b"")
    assert unknown.status == 400  # "400 unknown" in the spec
    assert unknown.content_type is not None

    # Right certificate hash, wrong key: a bad signature.
    forged = envelope.seal(
        b"",
        stranger.signer,
        sender_cert_hash=envelope.device_cert_hash(device.signer.certificate),
    )
    assert (await device.post("/uuid", forged)).status == 401


async def test_device_requests_mark_the_device_seen(ctl: Harness) -> None:
    ctl.allow()
    device = ctl.device()
    await device.onboard()
    ctl.clock.now += 60
    await device.fetch_uuid()
    assert ctl.store.list_devices()[0].last_seen == ctl.clock.now


async def test_last_seen_is_written_at_most_once_per_seen_interval(
    ctl: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each write is a committed SQLite transaction on the event loop: a device flooding
    # requests used to make one per request (see docs/controller.md, the hostile-client test).
    ctl.allow()
    device = ctl.device()
    await device.onboard()
    writes: list[str] = []
    touch = ctl.store.touch

    def counted(device_uuid: str) -> None:
        writes.append(device_uuid)
        touch(device_uuid)

    monkeypatch.setattr(ctl.store, "touch", counted)
    interval = ApiSettings().seen_interval
    ctl.clock.now += 60
    await device.fetch_uuid()
    for _ in range(5):
        ctl.clock.now += interval / 10
        await device.fetch_uuid()
    assert writes == [device.uuid]
    ctl.clock.now += interval
    await device.fetch_uuid()
    assert writes == [device.uuid] * 2
    assert ctl.store.list_devices()[0].last_seen == ctl.clock.now
