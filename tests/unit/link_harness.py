"""Shared helpers for the controller-link tests (no tests here).

* :func:`live_controller` serves the REAL controller app (``controller.api.make_app``) over HTTPS
  on 127.0.0.1 with the certificates ``eve-controller init`` makes, as ``controller.server`` does;
  it records every request's method, action and final status.
* :func:`fake_controller` serves a scriptable controller with the same PKI, for the answers a
  genuine controller never gives (wrong status codes, tampered bodies, no Content-Type, silence).
* :func:`until` polls a condition from inside the event loop.

Agents talk to both through a real :class:`agent.link.transport.ControllerClient`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler as AiohttpHandler
from cryptography.hazmat.primitives.serialization import Encoding
from multidict import CIMultiDict

from agent.link.controllercerts import ControllerCertStore
from agent.link.onboarding import onboard
from agent.link.transport import ControllerClient
from agent.util.timing import Backoff
from agent.wire import envelope, pki
from agent.wire.envelope import SoftwareSigner
from agent.wire.pb.auth import auth_pb2
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from controller import configs
from controller.api import ApiContext, ApiSettings, make_app
from controller.api.onboarding import controller_certs
from controller.identity import ControllerIdentity, init_certs
from controller.records import ConfigVersion
from controller.server import tls_context
from controller.state import StateDir
from controller.store import Store
from tests.unit.test_controller_harness import onboard_sha256

PREFIX = "/api/v2/edgedevice/"
PROTO = "application/x-proto-binary"


async def until(predicate: Callable[[], Any], within: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every few ms until it is truthy; fail the test after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.005)


def action_of(path: str) -> str:
    """``/api/v2/edgedevice/id/<uuid>/config`` -> ``config``; ``.../certs`` -> ``certs``."""
    rest = path[len(PREFIX) :] if path.startswith(PREFIX) else path
    if rest.startswith("id/"):
        rest = rest.split("/", 2)[2] if rest.count("/") >= 2 else ""
    return rest


@dataclass
class ControllerPki:
    """A controller state directory after ``init``: root, server, signing, ECDH, onboarding."""

    state: StateDir
    identity: ControllerIdentity
    onboard: SoftwareSigner

    @property
    def root_pem(self) -> bytes:
        return self.state.root_cert.read_bytes()


def make_pki(directory: Path) -> ControllerPki:
    state = StateDir(directory)
    init_certs(state)
    onboard_signer = SoftwareSigner(
        pki.load_key(state.onboard_key.read_bytes()), pki.load_cert(state.onboard_cert.read_bytes())
    )
    return ControllerPki(state, ControllerIdentity.load(state), onboard_signer)


async def _serve(app: web.Application, pki: ControllerPki) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_context(pki.state))
    await site.start()
    address = runner.addresses[0]
    return runner, int(address[1])


@dataclass(frozen=True)
class Served:
    method: str
    action: str
    status: int


@dataclass
class LiveController:
    """The real controller app, its store and PKI, listening on ``address``."""

    pki: ControllerPki
    store: Store
    port: int
    served: list[Served] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> ControllerClient:
        return ControllerClient(self.address, self.pki.root_pem, **kwargs)

    def count(self, action: str, status: int | None = None) -> int:
        return sum(
            1 for s in self.served if s.action == action and (status is None or s.status == status)
        )

    def allow_onboarding(self) -> None:
        """``eve-controller onboard add --cert onboard.cert.pem --any-serial``."""
        cert = self.pki.onboard.certificate
        self.store.add_onboard(
            cert_pem=cert.public_bytes(Encoding.PEM),
            cert_sha256=onboard_sha256(self.pki.onboard),
            subject=cert.subject.rfc4514_string(),
            serials=(),
            any_serial=True,
        )

    def set_config(
        self, device_uuid: str, document: dict[str, Any], *, timestamp: float
    ) -> ConfigVersion:
        """``eve-controller config set`` with an explicit config_timestamp."""
        config = configs.config_from_document(document)
        stamp = configs.timestamp_from_unix(timestamp)
        return self.store.add_config(
            device_uuid,
            lambda version: configs.stamp(
                config, device_uuid=device_uuid, version=version, timestamp=stamp
            ),
        )


@asynccontextmanager
async def live_controller(
    directory: Path, *, allow_onboarding: bool = True, pki: ControllerPki | None = None
) -> AsyncIterator[LiveController]:
    pki = pki or make_pki(directory / "controller")
    with Store.open(pki.state.database) as store:
        app = make_app(ApiContext(store=store, identity=pki.identity, settings=ApiSettings()))
        served: list[Served] = []

        @web.middleware
        async def record(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
            response = await handler(request)
            served.append(Served(request.method, action_of(request.path), response.status))
            return response

        app.middlewares.insert(0, record)  # outermost: sees the final status
        runner, port = await _serve(app, pki)
        try:
            ctl = LiveController(pki, store, port, served)
            if allow_onboarding:
                ctl.allow_onboarding()
            yield ctl
        finally:
            await runner.cleanup()


@dataclass(frozen=True)
class Seen:
    """One request the fake controller received."""

    method: str
    path: str
    action: str
    headers: CIMultiDict[str]
    body: bytes


FakeHandler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class FakeController:
    """A scriptable controller: ``handlers[action]`` answers; the rest get 404.

    ``/certs`` answers with the genuine signed ZControllerCert of ``pki`` unless replaced.
    """

    pki: ControllerPki
    port: int = 0
    handlers: dict[str, FakeHandler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> ControllerClient:
        return ControllerClient(self.address, self.pki.root_pem, **kwargs)

    def count(self, action: str) -> int:
        return sum(1 for s in self.seen if s.action == action)

    def seal(self, payload: bytes) -> bytes:
        return self.pki.identity.seal(payload)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = action_of(request.path)
        headers = CIMultiDict(request.headers)
        self.seen.append(Seen(request.method, request.path, action, headers, body))
        handler = self.handlers.get(action)
        if handler is None:
            return web.Response(status=404, text=f"no fake handler for {action}")
        return await handler(request, body)

    async def genuine_certs(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return proto(controller_certs(self.pki.identity))


def proto(body: bytes = b"", status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type=PROTO)


@asynccontextmanager
async def fake_controller(pki: ControllerPki) -> AsyncIterator[FakeController]:
    fake = FakeController(pki)
    fake.handlers["certs"] = fake.genuine_certs
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake._dispatch)
    runner, fake.port = await _serve(app, pki)
    try:
        yield fake
    finally:
        await runner.cleanup()


def config_response(
    device_uuid: str,
    *,
    config_hash: str = "hash-1",
    timestamp: float = 1_800_000_000.0,
    version: str = "1",
    controllercert_confighash: str = "",
) -> devconfig_pb2.ConfigResponse:
    """A ConfigResponse as a controller would send it (not yet sealed)."""
    resp = devconfig_pb2.ConfigResponse(configHash=config_hash)
    resp.config.id.uuid = device_uuid
    resp.config.id.version = version
    resp.config.config_timestamp.CopyFrom(configs.timestamp_from_unix(timestamp))
    resp.config.controllercert_confighash = controllercert_confighash
    return resp


async def onboard_device(
    client: ControllerClient,
    device: SoftwareSigner,
    certs: ControllerCertStore,
    onboard_signer: SoftwareSigner,
    serial: str = "node-1",
) -> str:
    """Onboard ``device`` through the agent's own onboarding loop; sets the client's UUID."""
    result = await asyncio.wait_for(
        onboard(
            client,
            device=device,
            onboard_signer=onboard_signer,
            certs=certs,
            serial="",
            soft_serial=serial,
            stop=asyncio.Event(),
            backoff=Backoff(initial=0.01, maximum=0.05),
        ),
        10,
    )
    assert result is not None
    client.device_uuid = result.uuid
    return result.uuid


@dataclass(frozen=True)
class RotatedSigning:
    """A new controller signing key and certificate under the same root (a cert rotation)."""

    signer: SoftwareSigner
    pem: bytes
    ecdh_pem: bytes

    def seal(self, payload: bytes) -> bytes:
        return envelope.seal(
            payload, self.signer, sender_cert_hash=envelope.pem_cert_hash(self.pem)
        )

    def certs_answer(self) -> bytes:
        """The signed /certs answer naming the new signing certificate."""
        msg = certs_pb2.ZControllerCert()
        msg.certs.add(type=certs_pb2.CERT_TYPE_CONTROLLER_SIGNING, cert=self.pem)
        msg.certs.add(type=certs_pb2.CERT_TYPE_CONTROLLER_ECDH_EXCHANGE, cert=self.ecdh_pem)
        return self.seal(msg.SerializeToString())


def rotate_signing(ctl: ControllerPki) -> RotatedSigning:
    root_key = pki.load_key(ctl.state.root_key.read_bytes())
    key = pki.new_ec_key()
    cert = pki.make_certificate(
        key, "rotated signing", issuer_key=root_key, issuer_cert=ctl.identity.root_cert
    )
    return RotatedSigning(SoftwareSigner(key, cert), pki.cert_pem(cert), ctl.identity.ecdh_pem)


def tamper(sealed: bytes) -> bytes:
    """Flip one bit of the payload inside a sealed AuthContainer (the signature stays)."""
    container = auth_pb2.AuthContainer()
    container.ParseFromString(sealed)
    payload = bytearray(container.protectedPayload.payload)
    payload[-1] ^= 0x01
    container.protectedPayload.payload = bytes(payload)
    return container.SerializeToString()


def unsigned(payload: bytes) -> bytes:
    """An AuthContainer carrying ``payload`` with no signature at all."""
    container = auth_pb2.AuthContainer()
    container.protectedPayload.payload = payload
    container.algo = envelope.HASH_SHA256_32
    container.senderCertHash = b"\0" * 32
    return container.SerializeToString()
