"""Shared helpers for the controller tests (no tests here): a controller on an in-process test
server with a fake clock, and a fake device that builds requests the way EVE does, with
``agent.wire.envelope.seal_as_device`` and a software key."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import Message

from agent.wire import envelope, pki
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.register import register_pb2
from controller.api import PREFIX, ApiContext, ApiSettings, make_app
from controller.api.context import QuoteVerifier
from controller.attestation import verify_quote
from controller.identity import ControllerIdentity, init_certs
from controller.state import StateDir
from controller.store import Store

T0 = 1_800_000_000.0


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    state: StateDir
    store: Store
    identity: ControllerIdentity
    client: TestClient  # type: ignore[type-arg]
    clock: FakeClock
    onboard: envelope.SoftwareSigner

    def unwrap(self, body: bytes) -> bytes:
        """Verify a response envelope against the controller's signing cert; return the payload."""
        trusted = {self.identity.sender_cert_hash: self.identity.signer.certificate}
        return envelope.open_signed(body, trusted).payload

    def allow(self, *serials: str) -> None:
        """Allow-list the harness's onboarding certificate for ``serials`` (or any serial)."""
        cert = self.onboard.certificate
        self.store.add_onboard(
            cert_pem=cert.public_bytes(Encoding.PEM),
            cert_sha256=onboard_sha256(self.onboard),
            subject=cert.subject.rfc4514_string(),
            serials=serials,
            any_serial=not serials,
        )

    def device(self, serial: str = "serial-1") -> FakeDevice:
        return FakeDevice(self, serial=serial)

    async def onboarded(self, serial: str = "serial-1") -> FakeDevice:
        """A device on the allow list, onboarded (the usual start of a controller test)."""
        self.allow()
        device = self.device(serial)
        await device.onboard()
        return device


def onboard_sha256(signer: envelope.SoftwareSigner) -> str:
    return hashlib.sha256(signer.certificate.public_bytes(Encoding.DER)).hexdigest()


def software_signer(common_name: str) -> envelope.SoftwareSigner:
    key = pki.new_ec_key()
    return envelope.SoftwareSigner(key=key, cert=pki.make_certificate(key, common_name))


@asynccontextmanager
async def controller_harness(
    tmp_path: Path,
    *,
    settings: ApiSettings | None = None,
    verifier: QuoteVerifier = verify_quote,
) -> AsyncIterator[Harness]:
    state = StateDir(tmp_path / "state")
    init_certs(state)
    clock = FakeClock()
    identity = ControllerIdentity.load(state)
    onboard = envelope.SoftwareSigner(
        key=pki.load_key(state.onboard_key.read_bytes()),
        cert=pki.load_cert(state.onboard_cert.read_bytes()),
    )
    with Store.open(state.database, clock=clock) as store:
        ctx = ApiContext(
            store=store,
            identity=identity,
            settings=settings or ApiSettings(),
            verify_quote=verifier,
        )
        async with TestClient(TestServer(make_app(ctx))) as client:
            yield Harness(state, store, identity, client, clock, onboard)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str | None


@dataclass
class FakeDevice:
    """A device with a software key, speaking to the harness's controller."""

    ctl: Harness
    serial: str
    signer: envelope.SoftwareSigner = field(default_factory=lambda: software_signer("device"))
    uuid: str = ""
    token: bytes = b""

    @property
    def cert_pem(self) -> bytes:
        return self.signer.certificate.public_bytes(Encoding.PEM)

    async def post(self, path: str, body: bytes) -> Answer:
        async with self.ctl.client.post(PREFIX + path, data=body) as resp:
            return Answer(resp.status, await resp.read(), resp.headers.get("Content-Type"))

    async def send(self, path: str, message: Message | bytes) -> Answer:
        """POST ``message`` sealed with the device key, as EVE does for every endpoint."""
        payload = message if isinstance(message, bytes) else message.SerializeToString()
        return await self.post(path, envelope.seal_as_device(payload, self.signer))

    async def register(self, *, soft_serial: str = "", pem_cert: bytes | None = None) -> Answer:
        msg = register_pb2.ZRegisterMsg(
            pemCert=pem_cert if pem_cert is not None else base64.b64encode(self.cert_pem),
            serial=self.serial,
            softSerial=soft_serial,
        )
        body = envelope.seal_as_device(msg.SerializeToString(), self.ctl.onboard, include_cert=True)
        return await self.post("/register", body)

    async def fetch_uuid(self) -> str:
        answer = await self.send("/uuid", eveuuid_pb2.UuidRequest())
        assert answer.status == 200, answer
        response = eveuuid_pb2.UuidResponse()
        response.ParseFromString(self.ctl.unwrap(answer.body))
        self.uuid = response.uuid
        return self.uuid

    async def onboard(self) -> str:
        """Register and learn the UUID (the harness must have allowed the serial)."""
        answer = await self.register()
        assert answer.status in (200, 201), answer
        return await self.fetch_uuid()

    async def attest(self, request: attest_pb2.ZAttestReq) -> attest_pb2.ZAttestResponse:
        answer = await self.send(f"/id/{self.uuid}/attest", request)
        assert answer.status == 201, answer
        response = attest_pb2.ZAttestResponse()
        response.ParseFromString(self.ctl.unwrap(answer.body))
        return response

    async def nonce(self) -> bytes:
        response = await self.attest(attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_NONCE))
        assert response.respType == attest_pb2.ATTEST_RESP_NONCE
        return bytes(response.nonce.nonce)

    async def quote(
        self, quote: attest_pb2.ZAttestQuote | None = None
    ) -> attest_pb2.ZAttestQuoteResp:
        request = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_QUOTE)
        request.quote.CopyFrom(quote or attest_pb2.ZAttestQuote())
        response = await self.attest(request)
        assert response.respType == attest_pb2.ATTEST_RESP_QUOTE_RESP
        if response.quoteResp.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS:
            self.token = bytes(response.quoteResp.integrity_token)
        return response.quoteResp

    async def attest_without_tpm(self) -> bytes:
        await self.nonce()
        result = await self.quote()
        assert result.response == attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS, result
        return self.token

    async def config(
        self, config_hash: str = "", token: bytes | None = None
    ) -> tuple[Answer, devconfig_pb2.ConfigResponse | None]:
        request = devconfig_pb2.ConfigRequest(
            configHash=config_hash, integrity_token=self.token if token is None else token
        )
        answer = await self.send(f"/id/{self.uuid}/config", request)
        if answer.status != 200:
            return answer, None
        response = devconfig_pb2.ConfigResponse()
        response.ParseFromString(self.ctl.unwrap(answer.body))
        return answer, response
