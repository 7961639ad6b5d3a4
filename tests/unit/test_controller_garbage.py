"""Hostile input at every endpoint: the answer is always a 4xx with a Content-Type, never a 5xx,
and each request is one line in the request log."""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.wire import envelope
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.auth import auth_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.info import info_pb2
from agent.wire.pb.register import register_pb2
from controller.api import PREFIX, ApiSettings
from tests.unit.test_controller_harness import FakeDevice, Harness, controller_harness
from tests.unit.test_controller_newlogs import ENTRY, lines, make_gzip

APP = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
UNKNOWN = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
async def ctl(tmp_path: Path) -> AsyncIterator[Harness]:
    settings = ApiSettings(max_body_bytes=256 * 1024)
    async with controller_harness(tmp_path, settings=settings) as harness:
        yield harness


@pytest.fixture
async def device(ctl: Harness) -> FakeDevice:
    device = await ctl.onboarded()
    await device.attest_without_tpm()
    return device


def endpoints(device_uuid: str) -> list[str]:
    dev = f"/id/{device_uuid}"
    return [
        "/ping",
        "/certs",
        "/register",
        "/uuid",
        *(
            f"{dev}/{action}"
            for action in (
                "config",
                "attest",
                "info",
                "metrics",
                "flowlog",
                "hardwarehealth",
                "newlogs",
                f"apps/instanceid/{APP}/newlogs",
                "apps/instanceid/zzz/newlogs",
            )
        ),
        f"/id/{UNKNOWN}/config",
        "/id/../../config",
        "/no/such/endpoint",
    ]


def garbage_bodies(device: FakeDevice) -> list[bytes]:
    """Bodies that are wrong in many different ways, most of them signed properly."""
    rng = random.Random(1234)

    def sealed(payload: bytes) -> bytes:
        return envelope.seal_as_device(payload, device.signer)

    bad_time = info_pb2.ZInfoMsg()
    bad_time.atTimeStamp.seconds = -(10**15)
    weird_attest = attest_pb2.ZAttestReq(reqType=99)  # type: ignore[arg-type]
    store_keys_without_keys = attest_pb2.ZAttestReq(reqType=attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS)
    container = auth_pb2.AuthContainer(senderCertHash=b"x" * 32, signatureHash=b"s")
    container.senderCert = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    wrong_algo = auth_pb2.AuthContainer(algo=7, senderCertHash=b"h", signatureHash=b"s")  # type: ignore[arg-type]
    short_hash = envelope.seal(b"", device.signer, sender_cert_hash=b"short")
    good = sealed(devconfig_pb2.ConfigRequest(integrity_token=device.token).SerializeToString())
    register = envelope.seal_as_device(
        register_pb2.ZRegisterMsg(pemCert=b"\x00" * 200, serial="s" * 300).SerializeToString(),
        device.signer,
        include_cert=True,
    )
    bodies = [
        b"",
        b"\x00",
        b"\xff" * 64,
        b"GET / HTTP/1.1\r\n\r\n",
        bytes(rng.randrange(256) for _ in range(512)),
        container.SerializeToString(),
        wrong_algo.SerializeToString(),
        short_hash,
        sealed(b""),
        sealed(b"\xff\xff\xff\xff"),
        sealed(bytes(rng.randrange(256) for _ in range(300))),
        sealed(bad_time.SerializeToString()),
        sealed(weird_attest.SerializeToString()),
        sealed(store_keys_without_keys.SerializeToString()),
        sealed(make_gzip(b"[" * 50_000)),
        sealed(make_gzip(b"\x00" * (8 << 20))),  # gzip bomb
        sealed(make_gzip(lines(ENTRY), comment="\xff" * 1000, name="\x01")),
        sealed(b"\x1f\x8b\x08\x1c" + b"\x00" * 6),  # header fields announced, missing
        register,
        b"\x00" * (300 * 1024),  # over the body limit
    ]
    # Bit flips of a valid, signed request: mostly bad signatures, some odd protobuf.
    for _ in range(40):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        bodies.append(bytes(mutated))
    return bodies


async def test_no_garbage_gets_a_5xx(ctl: Harness, device: FakeDevice) -> None:
    failures = []
    statuses = set()
    for path in endpoints(device.uuid):
        for method in ("GET", "POST", "PUT"):
            bodies = garbage_bodies(device) if method == "POST" else [b"", b"junk"]
            for body in bodies:
                async with ctl.client.request(method, PREFIX + path, data=body) as resp:
                    await resp.read()
                    statuses.add(resp.status)
                    if resp.status >= 500 or "Content-Type" not in resp.headers:
                        failures.append((method, path, body[:40], resp.status))
    assert not failures
    # The corpus really reached the checks behind the envelope.
    assert {400, 401, 403, 404, 405, 413} <= statuses


async def test_a_refused_request_is_one_log_line(
    ctl: Harness, device: FakeDevice, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controller.api")
    stranger = ctl.device("stranger")
    await stranger.send(f"/id/{device.uuid}/info", info_pb2.ZInfoMsg())
    [record] = [r for r in caplog.records if r.name == "controller.api"]
    message = record.getMessage()
    assert message.startswith(f"POST {PREFIX}/id/{device.uuid}/info 400 device=- ")
    assert "unknown device certificate" in message

    caplog.clear()
    await device.send(f"/id/{device.uuid}/info", info_pb2.ZInfoMsg())
    [record] = [r for r in caplog.records if r.name == "controller.api"]
    assert record.getMessage() == f"POST {PREFIX}/id/{device.uuid}/info 201 device={device.uuid}"


async def test_wrong_method_says_what_is_allowed(ctl: Harness) -> None:
    async with ctl.client.put(f"{PREFIX}/register") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert resp.headers["Content-Type"].startswith("text/plain")
