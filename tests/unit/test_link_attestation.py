"""agent.link.attestation: the Attestor against the real controller and a misbehaving one."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from agent.link.attestation import Attestor, AttestState, NoTpmQuotes
from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import ControllerCertStore
from agent.link.transport import ControllerClient
from agent.util.timing import Backoff
from agent.wire import envelope, pki
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from controller.records import AttestState as ControllerAttestState
from tests.unit.link_harness import (
    ControllerPki,
    FakeController,
    LiveController,
    fake_controller,
    live_controller,
    make_pki,
    onboard_device,
    proto,
    tamper,
    unsigned,
    until,
)
from tests.unit.test_controller_harness import software_signer


def cert_store(directory: Path, ctl: ControllerPki) -> ControllerCertStore:
    return ControllerCertStore(CheckpointStore(directory, "controllercerts"), ctl.root_pem)


def tiny_backoff() -> Backoff:
    return Backoff(initial=0.005, maximum=0.02)


async def onboarded(
    tmp_path: Path, ctl: LiveController
) -> tuple[ControllerClient, SoftwareSigner, ControllerCertStore, str]:
    client = ctl.client()
    device = software_signer("device")
    certs = cert_store(tmp_path / "cp", ctl.pki)
    device_uuid = await onboard_device(client, device, certs, ctl.pki.onboard)
    return client, device, certs, device_uuid


def state_of(attestor: Attestor) -> AttestState:
    """The attestor's state, read through a call so that mypy does not narrow it."""
    return attestor.status.state


def backing_off(attestor: Attestor, attempts: int) -> bool:
    """True once ``attempts`` attempts have failed and the attestor waits before the next."""
    status = attestor.status
    return status.attempts >= attempts and status.state is AttestState.RESTART_WAIT


# ---------------------------------------------------------------- against the real controller


async def test_token_from_the_real_controller_without_tpm(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client, device, certs, device_uuid = await onboarded(tmp_path, ctl)
        attestor = Attestor(
            client, device=device, certs=certs, quotes=NoTpmQuotes(), backoff=tiny_backoff()
        )
        try:
            assert attestor.current_token is None
            assert attestor.status.state is AttestState.UNSPECIFIED
            token = await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
            # A second call answers from memory: no new exchange.
            assert await attestor.token(asyncio.Event()) == token
        finally:
            await client.close()
        stored = ctl.store.require_device(device_uuid)
    assert token
    assert token == stored.integrity_token
    assert attestor.current_token == token
    assert stored.attest_state is ControllerAttestState.ATTESTED_NO_TPM
    assert state_of(attestor) is AttestState.COMPLETE
    assert attestor.status.error == ""
    assert attestor.status.attempts == 1
    assert attestor.status.escrowed_keys == []
    assert ctl.count("attest", 201) == 2  # nonce, then the (empty) quote


async def test_restart_forgets_the_token_and_attests_again(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client, device, certs, device_uuid = await onboarded(tmp_path, ctl)
        attestor = Attestor(
            client, device=device, certs=certs, quotes=NoTpmQuotes(), backoff=tiny_backoff()
        )
        try:
            first = await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
            attestor.restart("config answered 403")
            assert attestor.current_token is None
            assert attestor.status.state is AttestState.RESTART_WAIT
            assert attestor.status.error == "config answered 403"
            second = await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
        finally:
            await client.close()
        assert first != second
        assert ctl.store.require_device(device_uuid).integrity_token == second
        assert ctl.count("attest", 201) == 4
    assert state_of(attestor) is AttestState.COMPLETE
    assert attestor.status.error == ""


async def test_quote_failed_is_recorded_and_retried(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client, device, certs, device_uuid = await onboarded(tmp_path, ctl)
        ctl.store.set_device_policy(device_uuid, allow_no_tpm=False)
        attestor = Attestor(
            client, device=device, certs=certs, quotes=NoTpmQuotes(), backoff=tiny_backoff()
        )
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(attestor.token(stop))
            await until(lambda: backing_off(attestor, 3), what="three failed attempts")
            assert not task.done()
            assert attestor.current_token is None
            assert attestor.status.state is AttestState.RESTART_WAIT
            assert "Z_ATTEST_RESPONSE_CODE_QUOTE_FAILED" in attestor.status.error
            assert (
                ctl.store.require_device(device_uuid).attest_state is ControllerAttestState.FAILED
            )
            # The operator lets the device run without a TPM: the next retry succeeds.
            ctl.store.set_device_policy(device_uuid, allow_no_tpm=True)
            token = await asyncio.wait_for(task, 5)
        finally:
            await client.close()
        assert token is not None
        assert token == ctl.store.require_device(device_uuid).integrity_token
    assert state_of(attestor) is AttestState.COMPLETE
    assert attestor.status.error == ""


async def test_stop_while_retrying_returns_none(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client, device, certs, device_uuid = await onboarded(tmp_path, ctl)
        ctl.store.set_device_policy(device_uuid, allow_no_tpm=False)
        attestor = Attestor(
            client,
            device=device,
            certs=certs,
            quotes=NoTpmQuotes(),
            backoff=Backoff(initial=60, maximum=600),
        )
        stop = asyncio.Event()
        try:
            task = asyncio.create_task(attestor.token(stop))
            await until(lambda: backing_off(attestor, 1), what="a failed quote")
            assert "QUOTE_FAILED" in attestor.status.error
            stop.set()
            assert await asyncio.wait_for(task, 1) is None
        finally:
            await client.close()
    assert attestor.status.attempts == 1
    assert attestor.current_token is None


class CertQuotes(NoTpmQuotes):
    """A platform with an attestation certificate to send, and still an empty quote."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem

    def attestation_certs(self) -> list[certs_pb2.ZCert]:
        z = certs_pb2.ZCert(type=certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING, cert=self.pem)
        z.attributes.is_mutable = True
        return [z]


async def test_attestation_certs_are_sent_once(tmp_path: Path) -> None:
    pem = pki.cert_pem(pki.make_certificate(pki.new_ec_key(), "attestation key"))
    async with live_controller(tmp_path) as ctl:
        client, device, certs, device_uuid = await onboarded(tmp_path, ctl)
        attestor = Attestor(
            client, device=device, certs=certs, quotes=CertQuotes(pem), backoff=tiny_backoff()
        )
        try:
            assert await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
            assert ctl.count("attest") == 3  # certs, nonce, quote
            attestor.restart("again")
            assert await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
            assert ctl.count("attest") == 5  # nonce, quote: the certs were sent already
        finally:
            await client.close()
        (stored,) = ctl.store.device_certs(device_uuid)
    assert stored.pem == pem
    assert stored.cert_type == certs_pb2.CERT_TYPE_DEVICE_RESTRICTED_SIGNING


async def test_fetches_controller_certs_when_it_has_none(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        client, device, _certs, _uuid = await onboarded(tmp_path, ctl)
        empty = cert_store(tmp_path / "cp2", ctl.pki)
        attestor = Attestor(
            client, device=device, certs=empty, quotes=NoTpmQuotes(), backoff=tiny_backoff()
        )
        certs_before = ctl.count("certs")
        try:
            assert await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
        finally:
            await client.close()
        assert ctl.count("certs") == certs_before + 1
    assert empty.current is not None


# ---------------------------------------------------------------- a misbehaving controller

#: (fake, another controller's PKI, request type) -> the answer the fake sends.
AttestScript = Callable[[FakeController, ControllerPki, int], web.Response]


def answer(req_type: int, *, nonce: bytes = b"n" * 32, token: bytes = b"token-1") -> bytes:
    resp = attest_pb2.ZAttestResponse()
    if req_type == attest_pb2.ATTEST_REQ_NONCE:
        resp.respType = attest_pb2.ATTEST_RESP_NONCE
        resp.nonce.nonce = nonce
    elif req_type == attest_pb2.ATTEST_REQ_QUOTE:
        resp.respType = attest_pb2.ATTEST_RESP_QUOTE_RESP
        resp.quoteResp.response = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
        resp.quoteResp.integrity_token = token
    else:
        resp.respType = attest_pb2.ATTEST_RESP_CERT
    return resp.SerializeToString()


def genuine(fake: FakeController, req_type: int) -> web.Response:
    return proto(fake.seal(answer(req_type)), status=201)


def _quote_answer(code: int, token: bytes) -> bytes:
    resp = attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_QUOTE_RESP)
    resp.quoteResp.response = code  # type: ignore[assignment]
    resp.quoteResp.integrity_token = token
    return resp.SerializeToString()


def foreign_signer(fake: FakeController, other: ControllerPki, req_type: int) -> web.Response:
    return proto(other.identity.seal(answer(req_type)), status=201)


SCRIPTS: dict[str, tuple[AttestScript, str]] = {
    "tampered": (
        lambda f, o, t: proto(tamper(f.seal(answer(t))), status=201),
        "signature does not match",
    ),
    "unsigned": (lambda f, o, t: proto(unsigned(answer(t)), status=201), "no signature"),
    "not an envelope": (lambda f, o, t: proto(b"\xff\xff\xff\xff", status=201), "AuthContainer"),
    "foreign signer": (foreign_signer, "unknown signer"),
    "http 503": (lambda f, o, t: web.Response(status=503, text="busy"), "answered HTTP 503"),
    "http 200 empty": (lambda f, o, t: proto(b"", status=200), "AuthContainer has no signature"),
    "signed garbage": (lambda f, o, t: proto(f.seal(b"\xff\xff\xff"), status=201), "Error parsing"),
    "no nonce": (
        lambda f, o, t: proto(f.seal(answer(t, nonce=b"")), status=201),
        "controller sent no nonce",
    ),
    "huge nonce": (
        lambda f, o, t: proto(f.seal(answer(t, nonce=b"n" * 65)), status=201),
        "nonce of 65 bytes refused",
    ),
    "no token": (
        lambda f, o, t: proto(f.seal(answer(t, token=b"")), status=201),
        "sent no integrity token",
    ),
    "quote failed": (
        lambda f, o, t: proto(
            f.seal(
                answer(t)
                if t != attest_pb2.ATTEST_REQ_QUOTE
                else _quote_answer(attest_pb2.Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH, b"tok")
            ),
            status=201,
        ),
        "rejected the quote: Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH",
    ),
}


def request_type(body: bytes) -> int:
    req = attest_pb2.ZAttestReq()
    req.ParseFromString(envelope.parse(body).payload)
    return int(req.reqType)


@pytest.mark.parametrize("scenario", sorted(SCRIPTS))
async def test_bad_attest_answers_are_rejected_and_retried(tmp_path: Path, scenario: str) -> None:
    script, reason = SCRIPTS[scenario]
    other = make_pki(tmp_path / "other")
    ctl_pki = make_pki(tmp_path / "c")
    async with fake_controller(ctl_pki) as fake:
        requests: list[int] = []

        async def attest(request: web.Request, body: bytes) -> web.StreamResponse:
            requests.append(request_type(body))
            return script(fake, other, requests[-1])

        fake.handlers["attest"] = attest
        client = fake.client()
        client.device_uuid = str(uuidlib.uuid4())
        certs = cert_store(tmp_path / "cp", ctl_pki)
        attestor = Attestor(
            client,
            device=software_signer("d"),
            certs=certs,
            quotes=NoTpmQuotes(),
            backoff=tiny_backoff(),
        )
        stop = asyncio.Event()
        try:
            await certs.refresh(client)
            task = asyncio.create_task(attestor.token(stop))
            await until(lambda: backing_off(attestor, 3), what="three failed attempts")
            assert attestor.current_token is None
            assert attestor.status.state is AttestState.RESTART_WAIT
            assert reason in attestor.status.error
            stop.set()
            assert await asyncio.wait_for(task, 1) is None
        finally:
            await client.close()
        if scenario == "foreign signer":
            # Each unknown signer made the attestor fetch /certs once more before giving up.
            assert fake.count("certs") >= 1 + 3
        else:
            assert fake.count("certs") == 1
    assert all(t in (attest_pb2.ATTEST_REQ_NONCE, attest_pb2.ATTEST_REQ_QUOTE) for t in requests)


async def test_recovers_once_the_controller_behaves(tmp_path: Path) -> None:
    ctl_pki = make_pki(tmp_path / "c")
    async with fake_controller(ctl_pki) as fake:
        bad = 2

        async def attest(request: web.Request, body: bytes) -> web.StreamResponse:
            nonlocal bad
            req_type = request_type(body)
            if bad and req_type == attest_pb2.ATTEST_REQ_NONCE:
                bad -= 1
                return proto(tamper(fake.seal(answer(req_type))), status=201)
            return genuine(fake, req_type)

        fake.handlers["attest"] = attest
        client = fake.client()
        client.device_uuid = str(uuidlib.uuid4())
        backoff = tiny_backoff()
        attestor = Attestor(
            client,
            device=software_signer("d"),
            certs=cert_store(tmp_path / "cp", ctl_pki),
            quotes=NoTpmQuotes(),
            backoff=backoff,
        )
        try:
            token = await asyncio.wait_for(attestor.token(asyncio.Event()), 5)
        finally:
            await client.close()
        # The device's requests went under id/<uuid>/.
        attests = [s for s in fake.seen if s.action == "attest"]
        assert len(attests) == 4  # two tampered nonces, then nonce and quote
        assert all(s.path.endswith(f"/id/{client.device_uuid}/attest") for s in attests)
    assert token == b"token-1"
    assert attestor.status.attempts == 3
    assert state_of(attestor) is AttestState.COMPLETE
    assert attestor.status.error == ""
    assert backoff.attempts == 0  # reset on success
