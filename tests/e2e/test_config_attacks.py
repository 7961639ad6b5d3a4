"""Hostile config responses between a real controller and a real node.

A man in the middle (this test, holding a TLS certificate the node trusts, as a corporate proxy
would) forwards everything to the real controller but rewrites ``/config`` answers: tampered
bytes, a replay of an old response, an older config re-signed with the controller's own key,
a config for another device, a config signed by a foreign key, and signed garbage.  Each must be
rejected with nothing applied and nothing checkpointed, and the rejection must be visible.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.wire import envelope, pki
from agent.wire.envelope import HASH_SHA256_32, SoftwareSigner, pem_cert_hash
from agent.wire.pb.config import devconfig_pb2
from tests.e2e.harness import Controller, Node, free_port, wait_for

pytestmark = pytest.mark.e2e

Mutator = Callable[[bytes], bytes]


class ConfigProxy:
    """TLS reverse proxy in a thread; ``mutate`` (when set) rewrites 200 /config answers."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.port = free_port()
        self.mutate: Mutator | None = None
        self.last_config: bytes | None = None
        self.served_attacks = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        upstream = f"https://{self.controller.address}{request.rel_url}"
        ctx = ssl.create_default_context(cafile=str(self.controller.certs / "root-certificate.pem"))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "x-request-id")
        }
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, upstream, data=body or None, headers=headers, ssl=ctx
            ) as resp,
        ):
            data = await resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "application/x-proto-binary")
        if request.path.endswith("/config"):
            if status == 200:
                self.last_config = data
            if self.mutate is not None and self.last_config is not None:
                self.served_attacks += 1
                return web.Response(
                    status=200, body=self.mutate(self.last_config),
                    content_type="application/x-proto-binary",
                )  # fmt: skip
        return web.Response(status=status, body=data, headers={"Content-Type": ctype})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(
            self.controller.certs / "server.cert.pem", self.controller.certs / "server.key.pem"
        )
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def controller_signer(controller: Controller) -> SoftwareSigner:
    certs = controller.certs
    return SoftwareSigner(
        pki.load_key((certs / "signing.key.pem").read_bytes()),
        pki.load_cert((certs / "signing.cert.pem").read_bytes()),
    )


def resign(
    raw: bytes, signer: SoftwareSigner, edit: Callable[[devconfig_pb2.ConfigResponse], None]
) -> bytes:
    resp = devconfig_pb2.ConfigResponse()
    resp.ParseFromString(envelope.parse(raw).payload)
    edit(resp)
    resp.configHash = resp.configHash + "-x"  # a "new" config as far as the node can tell
    pem = pki.cert_pem(signer.certificate)
    return envelope.seal(
        resp.SerializeToString(), signer, sender_cert_hash=pem_cert_hash(pem), algo=HASH_SHA256_32
    )


@pytest.fixture
def proxied_node(tmp_path: Path, controller: Controller) -> Iterator[tuple[Node, ConfigProxy]]:
    proxy = ConfigProxy(controller)
    proxy.start()
    node = Node(tmp_path / "mitm-node", controller, serial="e2e-mitm")
    (node.root / "config" / "server").write_text(proxy.address + "\n")
    try:
        yield node, proxy
    finally:
        node.stop()
        proxy.stop()


def _older(resp: devconfig_pb2.ConfigResponse) -> None:
    resp.config.config_timestamp.FromDatetime(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    resp.config.configItems.add(key="timer.metric.interval", value="99")


def _other_device(resp: devconfig_pb2.ConfigResponse) -> None:
    resp.config.id.uuid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    resp.config.configItems.add(key="timer.metric.interval", value="99")


def _newer(resp: devconfig_pb2.ConfigResponse) -> None:
    resp.config.config_timestamp.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))
    resp.config.configItems.add(key="timer.metric.interval", value="99")


def test_hostile_configs_are_rejected(
    controller: Controller, proxied_node: tuple[Node, ConfigProxy]
) -> None:
    node, proxy = proxied_node
    node.start()
    uuid = node.wait_onboarded()
    node.wait_status(lambda s: s["config_items"].get("timer.config.interval") == "5", 60, "config")
    first = proxy.last_config
    assert first is not None
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "21"},
        ]},
    )  # fmt: skip
    good = node.wait_status(
        lambda s: s["config_items"].get("timer.metric.interval") == "21", 30, "B"
    )
    checkpoint = (node.checkpoint / "lastconfig").read_bytes()

    signer = controller_signer(controller)
    foreign_key = pki.new_ec_key()
    foreign = SoftwareSigner(foreign_key, pki.make_certificate(foreign_key, "mallory"))

    def tampered(raw: bytes) -> bytes:
        data = bytearray(raw)
        data[len(data) // 3] ^= 0x01
        return bytes(data)

    attacks: dict[str, tuple[Mutator, str]] = {
        "tampered": (tampered, "config envelope rejected"),
        "replayed": (lambda raw: first, "older than the applied config"),
        "older": (lambda raw: resign(raw, signer, _older), "older than the applied config"),
        "other device": (lambda raw: resign(raw, signer, _other_device), "is for device"),
        "foreign signer": (lambda raw: resign(raw, foreign, _newer), "unknown certificate"),
        "garbage payload": (
            lambda raw: envelope.seal(
                b"\xff\xff\xff garbage",
                signer,
                sender_cert_hash=pem_cert_hash(pki.cert_pem(signer.certificate)),
            ),
            "undecodable",
        ),
    }
    rejected = good["config_rejected"]
    for name, (mutate, reason) in attacks.items():
        proxy.mutate = mutate
        status = node.wait_status(
            lambda s, r=rejected, why=reason: (
                s["config_rejected"] > r and why in s["last_config_error"]
            ),
            20,
            f"the {name} config to be rejected",
        )
        rejected = status["config_rejected"]
        proxy.mutate = None
        assert status["config_hash"] == good["config_hash"], name
        assert status["config_items"] == good["config_items"], name
        assert (node.checkpoint / "lastconfig").read_bytes() == checkpoint, name
        assert "config rejected, nothing applied" in node.log()

    # The controller hears about it too: each rejection is in the logs it received.
    wait_for(
        lambda: (
            sum("config rejected" in str(e) for e in controller.json_lines("logs", uuid))
            >= len(attacks)
        ),
        60,
        "the rejections in the controller's logs",
    )

    # With the proxy honest again the node keeps following the controller.
    controller.set_config(
        uuid,
        {"configItems": [
            {"key": "timer.config.interval", "value": "5"},
            {"key": "timer.metric.interval", "value": "22"},
        ]},
    )  # fmt: skip
    node.wait_status(lambda s: s["config_items"].get("timer.metric.interval") == "22", 30, "C")
