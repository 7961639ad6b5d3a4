"""Running the device API over HTTPS until SIGTERM or SIGINT.

The TLS certificate is ``certs/server.cert.pem``, issued by the root that devices pin; TLS 1.2 is
the minimum, as EVE requires.  No client certificates: API v2 authenticates devices by the
signature on each request body, not by TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from controller.api import ApiContext, ApiSettings, make_app
from controller.identity import ControllerIdentity
from controller.state import StateDir
from controller.store import Store

DEFAULT_LISTEN = "127.0.0.1:8443"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``HOST:PORT`` or ``[IPv6]:PORT``; port 0 picks a free port.  Raises ValueError."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        return cls(host=host, port=port)

    def url(self, port: int | None = None) -> str:
        """``https://host:port`` with IPv6 literals bracketed."""
        host = self.host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        return f"https://{host}:{self.port if port is None else port}"


def tls_context(state: StateDir) -> ssl.SSLContext:
    """Server-side TLS with the controller's server certificate; raises OSError, ssl.SSLError."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(state.server_cert, state.server_key)
    return ctx


async def serve(
    state: StateDir,
    listen: ListenAddress,
    *,
    settings: ApiSettings | None = None,
    ready: Callable[[str], None] = lambda url: print(f"listening on {url}", flush=True),
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set, or SIGTERM/SIGINT arrives; then close cleanly.

    ``ready`` gets the URL once the socket accepts connections (with the real port when
    ``listen.port`` is 0).  Raises FileNotFoundError when ``init`` has not run, OSError when the
    address cannot be bound.
    """
    identity = ControllerIdentity.load(state)
    tls = tls_context(state)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with Store.open(state.database) as store:
        ctx = ApiContext(store=store, identity=identity, settings=settings or ApiSettings())
        # Our request_log middleware writes the one line per request; aiohttp's would double it.
        runner = web.AppRunner(make_app(ctx), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, listen.host, listen.port, ssl_context=tls)
            await site.start()
            port = _bound_port(runner, listen.port)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            try:
                ready(listen.url(port))
                await stop.wait()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        finally:
            await runner.cleanup()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested
