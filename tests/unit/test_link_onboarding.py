"""agent.link.onboarding: register + uuid against the real controller, conflicts, stop, backoff."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.link.onboarding import (
    OnboardingError,
    UuidResult,
    fetch_uuid,
    onboard,
    register,
    register_body,
)
from agent.link.transport import ControllerClient
from agent.util.timing import Backoff
from agent.wire import envelope, pki
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.register import register_pb2
from tests.unit.link_harness import (
    ControllerPki,
    fake_controller,
    live_controller,
    make_pki,
    proto,
    rotate_signing,
    tamper,
    unsigned,
    until,
)
from tests.unit.test_controller_harness import software_signer


class RecordingBackoff(Backoff):
    """A real Backoff that remembers every delay it handed out."""

    def __init__(self, initial: float, maximum: float, seed: int = 7) -> None:
        super().__init__(initial=initial, maximum=maximum, rng=random.Random(seed))
        self.delays: list[float] = []

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay


def cert_store(directory: Path, ctl: ControllerPki) -> ControllerCertStore:
    return ControllerCertStore(CheckpointStore(directory, "controllercerts"), ctl.root_pem)


async def run_onboard(
    client: ControllerClient,
    device: SoftwareSigner,
    certs: ControllerCertStore,
    onboard_signer: SoftwareSigner | None,
    stop: asyncio.Event,
    *,
    serial: str = "node-1",
    backoff: Backoff | None = None,
) -> UuidResult | None:
    return await onboard(
        client,
        device=device,
        onboard_signer=onboard_signer,
        certs=certs,
        serial="",
        soft_serial=serial,
        stop=stop,
        backoff=backoff or Backoff(initial=0.01, maximum=0.05),
    )


async def test_first_onboarding_gets_a_uuid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    device = software_signer("device")
    async with live_controller(tmp_path) as ctl:
        certs = cert_store(tmp_path / "cp", ctl.pki)
        client = ctl.client(soft_serial="node-1")
        backoff = RecordingBackoff(0.01, 0.05)
        try:
            with caplog.at_level(logging.INFO, logger="agent.link.onboarding"):
                result = await asyncio.wait_for(
                    run_onboard(
                        client, device, certs, ctl.pki.onboard, asyncio.Event(), backoff=backoff
                    ),
                    10,
                )
        finally:
            await client.close()
        assert result is not None
        (registered,) = ctl.store.list_devices()
        assert result.uuid == registered.uuid
        assert str(uuidlib.UUID(result.uuid)) == result.uuid
        assert registered.serial == "node-1"
        assert registered.cert_sha256 == envelope.device_cert_hash(device.certificate)
        # /certs first, then register (201, created) and uuid (200): no retry was needed.
        assert [(s.action, s.status) for s in ctl.served] == [
            ("certs", 200),
            ("register", 201),
            ("uuid", 200),
        ]
    assert backoff.delays == []
    assert "registered with the controller (HTTP 201)" in caplog.text
    # onboard() does not set the UUID on the client: the caller does, after storing it.
    assert client.device_uuid is None
    assert certs.current is not None
    assert (tmp_path / "cp" / "controllercerts").exists()


async def test_reboot_re_registers_with_200(tmp_path: Path) -> None:
    device = software_signer("device")
    async with live_controller(tmp_path) as ctl:
        certs = cert_store(tmp_path / "cp", ctl.pki)
        client = ctl.client()
        try:
            first = await run_onboard(client, device, certs, ctl.pki.onboard, asyncio.Event())
            second = await run_onboard(client, device, certs, ctl.pki.onboard, asyncio.Event())
        finally:
            await client.close()
        assert first is not None and second is not None
        assert first.uuid == second.uuid
        assert ctl.count("register", 201) == 1
        assert ctl.count("register", 200) == 1
        assert len(ctl.store.list_devices()) == 1


async def test_same_serial_other_device_cert_gets_409_and_keeps_retrying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with live_controller(tmp_path) as ctl:
        first_client = ctl.client()
        second_client = ctl.client()
        try:
            first = await run_onboard(
                first_client,
                software_signer("first"),
                cert_store(tmp_path / "cp1", ctl.pki),
                ctl.pki.onboard,
                asyncio.Event(),
            )
            assert first is not None
            stop = asyncio.Event()
            with caplog.at_level(logging.ERROR, logger="agent.link.onboarding"):
                task = asyncio.create_task(
                    run_onboard(
                        second_client,
                        software_signer("second"),
                        cert_store(tmp_path / "cp2", ctl.pki),
                        ctl.pki.onboard,
                        stop,
                    )
                )
                await until(lambda: ctl.count("register", 409) >= 3, what="three 409s")
                assert not task.done()
                stop.set()
                assert await asyncio.wait_for(task, 1) is None
        finally:
            await first_client.close()
            await second_client.close()
        # Each conflict was followed by a /uuid that the controller refused (unknown device).
        assert ctl.count("register", 201) == 1
        assert ctl.count("uuid", 400) >= 3
        assert ctl.count("uuid", 200) == 1
        (only,) = ctl.store.list_devices()
        assert only.uuid == first.uuid
    assert "onboarding conflict: serial 'node-1' is registered with another device" in caplog.text


async def test_stop_set_before_start_sends_nothing(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        stop = asyncio.Event()
        stop.set()
        try:
            result = await run_onboard(
                client, software_signer("d"), cert_store(tmp_path, ctl.pki), ctl.pki.onboard, stop
            )
        finally:
            await client.close()
        assert result is None
        assert ctl.served == []


async def test_stop_ends_a_long_backoff_promptly(tmp_path: Path) -> None:
    pki_ = make_pki(tmp_path / "c")
    async with fake_controller(pki_) as fake:

        async def busy(request: web.Request, body: bytes) -> web.StreamResponse:
            return web.Response(status=503, text="busy")

        fake.handlers["certs"] = busy
        client = fake.client()
        stop = asyncio.Event()
        backoff = RecordingBackoff(60.0, 600.0)
        try:
            task = asyncio.create_task(
                run_onboard(
                    client,
                    software_signer("d"),
                    cert_store(tmp_path / "cp", pki_),
                    pki_.onboard,
                    stop,
                    backoff=backoff,
                )
            )
            await until(lambda: len(backoff.delays) == 1, what="the first failure")
            assert backoff.delays[0] >= 60.0
            start = time.monotonic()
            stop.set()
            assert await asyncio.wait_for(task, 1) is None
            assert time.monotonic() - start < 0.5
        finally:
            await client.close()
        assert fake.count("certs") == 1


async def test_backoff_grows_until_the_controller_allows_the_device(tmp_path: Path) -> None:
    async with live_controller(tmp_path, allow_onboarding=False) as ctl:
        client = ctl.client()
        backoff = RecordingBackoff(0.004, 10.0, seed=3)
        try:
            task = asyncio.create_task(
                run_onboard(
                    client,
                    software_signer("d"),
                    cert_store(tmp_path / "cp", ctl.pki),
                    ctl.pki.onboard,
                    asyncio.Event(),
                    backoff=backoff,
                )
            )
            await until(lambda: len(backoff.delays) >= 5, what="five failed attempts")
            ctl.allow_onboarding()
            result = await asyncio.wait_for(task, 5)
        finally:
            await client.close()
        assert result is not None
        # Each delay lies in [ceiling/2, ceiling] with the ceiling doubling per attempt.
        delays = backoff.delays
        for attempt, delay in enumerate(delays):
            ceiling = 0.004 * 2**attempt
            assert max(0.004, ceiling / 2) <= delay <= ceiling, (attempt, delays)
        assert delays[4] > 2 * delays[0]
        # Success resets the backoff; every failure was a 403 followed by an unknown /uuid.
        assert backoff.attempts == 0
        assert ctl.count("register", 403) == len(delays)
        assert ctl.count("register", 201) == 1


async def test_without_onboarding_cert_only_uuid_is_tried(tmp_path: Path) -> None:
    device = software_signer("pre-registered")
    async with live_controller(tmp_path) as ctl:
        client = ctl.client()
        certs = cert_store(tmp_path / "cp", ctl.pki)
        try:
            stop = asyncio.Event()
            task = asyncio.create_task(run_onboard(client, device, certs, None, stop))
            await until(lambda: ctl.count("uuid", 400) >= 2, what="unknown /uuid twice")
            assert not task.done()
            # The operator pre-registers the device (here: with the onboarding key, out of band).
            status = await register(client, ctl.pki.onboard, device, "", "node-1")
            assert status == 201
            result = await asyncio.wait_for(task, 5)
        finally:
            await client.close()
        assert result is not None
        assert result.uuid == ctl.store.list_devices()[0].uuid
        assert ctl.count("register") == 1  # only ours, never the loop's


def test_register_body_is_signed_by_the_onboarding_key(tmp_path: Path) -> None:
    ctl = make_pki(tmp_path)
    device = software_signer("device")
    body = register_body(ctl.onboard, pki.cert_pem(device.certificate), "HW", "SW")
    env = envelope.parse(body)
    assert env.sender_cert_pem == pki.cert_pem(ctl.onboard.certificate)
    envelope.verify_signature(env, ctl.onboard.certificate)
    msg = register_pb2.ZRegisterMsg()
    msg.ParseFromString(env.payload)
    assert (msg.serial, msg.softSerial) == ("HW", "SW")
    assert base64.b64decode(msg.pemCert) == pki.cert_pem(device.certificate)


# ---------------------------------------------------------------- fetch_uuid with a bad controller


AnswerMaker = Callable[[ControllerPki], web.Response]


async def _fetch_from(
    tmp_path: Path, make_answer: AnswerMaker, *, with_certs: bool = True
) -> tuple[UuidResult | None, int]:
    """fetch_uuid against a fake controller whose /uuid gives ``make_answer(its pki)``."""
    pki_ = make_pki(tmp_path / "c")
    async with fake_controller(pki_) as fake:

        async def uuid_handler(request: web.Request, body: bytes) -> web.StreamResponse:
            return make_answer(pki_)

        fake.handlers["uuid"] = uuid_handler
        certs = cert_store(tmp_path / "cp", pki_)
        client = fake.client()
        try:
            if with_certs:
                await certs.refresh(client)
            return await fetch_uuid(client, software_signer("d"), certs), fake.count("uuid")
        finally:
            await client.close()


def _uuid_answer(pki_: ControllerPki, text: str) -> bytes:
    return pki_.identity.seal(eveuuid_pb2.UuidResponse(uuid=text).SerializeToString())


async def test_fetch_uuid_good_answer(tmp_path: Path) -> None:
    good = str(uuidlib.uuid4())
    result, calls = await _fetch_from(tmp_path, lambda p: proto(_uuid_answer(p, good.upper())))
    assert result == UuidResult(good, "", "")
    assert calls == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_fetch_uuid_unknown_device_statuses(tmp_path: Path, status: int) -> None:
    result, calls = await _fetch_from(tmp_path, lambda p: web.Response(status=status, text="no"))
    assert (result, calls) == (None, 1)


@pytest.mark.parametrize("status", [201, 409, 500, 503])
async def test_fetch_uuid_other_statuses_are_errors(tmp_path: Path, status: int) -> None:
    with pytest.raises(OnboardingError, match=f"/uuid answered {status}"):
        await _fetch_from(tmp_path, lambda p: web.Response(status=status, text="no"))


async def test_fetch_uuid_tampered_answer_rejected(tmp_path: Path) -> None:
    with pytest.raises(envelope.BadSignature):
        await _fetch_from(tmp_path, lambda p: proto(tamper(_uuid_answer(p, str(uuidlib.uuid4())))))


async def test_fetch_uuid_unsigned_answer_rejected(tmp_path: Path) -> None:
    payload = eveuuid_pb2.UuidResponse(uuid=str(uuidlib.uuid4())).SerializeToString()
    with pytest.raises(envelope.MalformedEnvelope, match="no signature"):
        await _fetch_from(tmp_path, lambda p: proto(unsigned(payload)))


async def test_fetch_uuid_answer_signed_by_another_controller_rejected(tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    with pytest.raises(envelope.UnknownSigner):
        await _fetch_from(tmp_path, lambda p: proto(_uuid_answer(other, str(uuidlib.uuid4()))))


async def test_fetch_uuid_bad_uuid_rejected(tmp_path: Path) -> None:
    with pytest.raises(OnboardingError, match="not a UUID"):
        await _fetch_from(tmp_path, lambda p: proto(_uuid_answer(p, "not-a-uuid")))


async def test_fetch_uuid_without_certs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OnboardingError, match="no controller certificates"):
        await _fetch_from(tmp_path, lambda p: proto(b"whatever"), with_certs=False)


async def test_registers_again_when_uuid_says_unknown_after_register(tmp_path: Path) -> None:
    """Registered, but /uuid does not know the device (record deleted): register again."""
    pki_ = make_pki(tmp_path / "c")
    good = str(uuidlib.uuid4())
    uuid_answers = [web.Response(status=404, text="unknown"), proto(_uuid_answer(pki_, good))]
    async with fake_controller(pki_) as fake:

        async def uuid_handler(request: web.Request, body: bytes) -> web.StreamResponse:
            return uuid_answers.pop(0)

        async def created(request: web.Request, body: bytes) -> web.StreamResponse:
            return proto(status=201)

        fake.handlers.update(uuid=uuid_handler, register=created)
        client = fake.client()
        try:
            result = await asyncio.wait_for(
                run_onboard(
                    client,
                    software_signer("d"),
                    cert_store(tmp_path / "cp", pki_),
                    pki_.onboard,
                    asyncio.Event(),
                ),
                5,
            )
        finally:
            await client.close()
        assert result is not None and result.uuid == good
        assert [s.action for s in fake.seen] == ["certs", "register", "uuid", "register", "uuid"]


async def test_rotated_controller_certs_are_fetched_again(tmp_path: Path) -> None:
    """Saved certificates from before a signing-cert rotation: one /certs refresh, then go on.

    The node has the old certificates (checkpointed by an earlier boot); the controller now signs
    with a new certificate under the same root, so /uuid answers name an unknown signer.
    """
    pki_ = make_pki(tmp_path / "c")
    good = str(uuidlib.uuid4())
    async with fake_controller(pki_) as fake:
        certs = cert_store(tmp_path / "cp", pki_)
        client = fake.client()
        try:
            old = await certs.refresh(client)  # the certificates an earlier boot saved
            rotated = rotate_signing(pki_)

            async def new_certs(request: web.Request, body: bytes) -> web.StreamResponse:
                return proto(rotated.certs_answer())

            async def uuid_handler(request: web.Request, body: bytes) -> web.StreamResponse:
                answer = eveuuid_pb2.UuidResponse(uuid=good).SerializeToString()
                return proto(rotated.seal(answer))

            async def created(request: web.Request, body: bytes) -> web.StreamResponse:
                return proto(status=201)

            fake.handlers.update(certs=new_certs, uuid=uuid_handler, register=created)
            result = await asyncio.wait_for(
                run_onboard(client, software_signer("d"), certs, pki_.onboard, asyncio.Event()),
                5,
            )
        finally:
            await client.close()
        assert result is not None and result.uuid == good
        assert certs.current is not None and certs.current.signing_pem == rotated.pem
        assert certs.current.signing_pem != old.signing_pem
        assert fake.count("certs") == 2
        assert fake.count("uuid") == 2


async def test_onboarding_survives_tampered_and_bogus_uuid_answers(tmp_path: Path) -> None:
    """Bad /uuid answers are logged and retried; a good one ends the loop."""
    pki_ = make_pki(tmp_path / "c")
    good = str(uuidlib.uuid4())
    answers = [
        proto(tamper(_uuid_answer(pki_, good))),  # bad signature
        proto(_uuid_answer(pki_, "not-a-uuid")),  # signed, but no UUID
        proto(pki_.identity.seal(b"\xff\xff\xff")),  # signed garbage
        proto(_uuid_answer(pki_, good.upper())),  # good (canonicalised)
    ]
    async with fake_controller(pki_) as fake:

        async def uuid_handler(request: web.Request, body: bytes) -> web.StreamResponse:
            return answers.pop(0)

        async def created(request: web.Request, body: bytes) -> web.StreamResponse:
            return proto(status=201)

        fake.handlers.update(uuid=uuid_handler, register=created)
        client = fake.client()
        backoff = RecordingBackoff(0.005, 0.02)
        try:
            result = await asyncio.wait_for(
                run_onboard(
                    client,
                    software_signer("d"),
                    cert_store(tmp_path / "cp", pki_),
                    pki_.onboard,
                    asyncio.Event(),
                    backoff=backoff,
                ),
                5,
            )
        finally:
            await client.close()
        assert result is not None
        assert result.uuid == good
        assert fake.count("uuid") == 4
        assert len(backoff.delays) == 3
        # Registered once (201); later attempts go straight to /uuid.
        assert fake.count("register") == 1
