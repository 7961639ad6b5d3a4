"""Running the device API over HTTPS until SIGTERM or SIGINT.

The TLS certificate is ``certs/server.cert.pem``, issued by the root that devices pin; TLS 1.2 is
the minimum, as EVE requires.  No client certificates: API v2 authenticates devices by the
signature on each request body, not by TLS.

aiohttp serves the requests; :mod:`controller.listener` accepts the connections, so that a peer
cannot hold connections open without sending (timeouts for the handshake, the first request's
headers and keep-alive) or open more than the server can carry (a connection limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from controller.api import ApiContext, ApiSettings, make_app
from controller.identity import ControllerIdentity
from controller.listener import Listener, ServerSettings
from controller.logsafe import LogThrottle, printable
from controller.state import StateDir
from controller.store import Store

DEFAULT_LISTEN = "127.0.0.1:8443"

logger = logging.getLogger("controller.server")


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
    server_settings: ServerSettings | None = None,
    ready: Callable[[str], None] = lambda url: print(f"listening on {url}", flush=True),
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set, or SIGTERM/SIGINT arrives; then close cleanly.

    ``ready`` gets the URL once the socket accepts connections (with the real port when
    ``listen.port`` is 0).  Connections are accepted by :class:`controller.listener.Listener`
    within ``server_settings``' timeouts and limits.  While serving, the event loop's exception
    handler and aiohttp's error log are throttled: one line per condition and interval, and no
    traceback for what a peer caused.  Raises FileNotFoundError when ``init`` has not run,
    OSError when the address cannot be bound.
    """
    identity = ControllerIdentity.load(state)
    tls = tls_context(state)
    stop = stop or asyncio.Event()
    server_settings = server_settings or ServerSettings()
    loop = asyncio.get_running_loop()
    log = LogThrottle(logger, interval=server_settings.log_interval)
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_loop_errors(log))
    try:
        with Store.open(state.database) as store:
            ctx = ApiContext(store=store, identity=identity, settings=settings or ApiSettings())
            # Our request_log middleware writes the one line per request; aiohttp's would
            # double it.
            runner = web.AppRunner(
                make_app(ctx),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=server_settings.shutdown_timeout,
                keepalive_timeout=server_settings.keepalive_timeout,
                lingering_time=server_settings.lingering_time,
                max_line_size=server_settings.max_line_size,
                max_field_size=server_settings.max_field_size,
                max_headers=server_settings.max_headers,
                logger=_HttpErrors(log),
            )
            await runner.setup()
            assert runner.server is not None
            listener = Listener(runner.server, tls, server_settings, log)
            try:
                await listener.start(listen.host, listen.port)
                port = listener.addresses[0][1] if listener.addresses else listen.port
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                try:
                    ready(listen.url(port))
                    await stop.wait()
                finally:
                    for sig in (signal.SIGTERM, signal.SIGINT):
                        loop.remove_signal_handler(sig)
            finally:
                await listener.stop()
                await runner.cleanup()
    finally:
        loop.set_exception_handler(previous_handler)


def _peer_caused(exc: BaseException | None) -> bool:
    """Errors a peer can cause at will (resets, TLS and HTTP protocol errors): no traceback."""
    return isinstance(exc, OSError | EOFError | HttpProcessingError)


def _loop_errors(
    log: LogThrottle,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler that logs one line per kind of error and interval."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "unhandled error in the event loop")
        exc = context.get("exception")
        error = exc if isinstance(exc, BaseException) else None
        summary = f": {type(error).__name__}: {error}" if error is not None else ""
        peer = _peer_caused(error)
        log.emit(
            logging.INFO if peer else logging.ERROR,
            f"loop {message} {type(error).__name__}",
            "%s%s",
            printable(message),
            printable(summary, 300),
            exc_info=None if peer else error,
        )

    return handle


class _HttpErrors(logging.LoggerAdapter[logging.Logger]):
    """What aiohttp's request handler logs (bad requests, client disconnects), throttled.

    aiohttp logs every malformed request with a traceback at ERROR; a peer can send thousands.
    Each kind of message gets one line per interval, with the exception's type and text and no
    traceback when the peer caused it.
    """

    def __init__(self, log: LogThrottle) -> None:
        super().__init__(logging.getLogger("controller.http"), {})
        self._throttle = log

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        exc_info = kwargs.get("exc_info")
        if exc_info is True:
            exc_info = sys.exc_info()[1]
        elif isinstance(exc_info, tuple):
            exc_info = exc_info[1]
        error = exc_info if isinstance(exc_info, BaseException) else None
        text = str(msg) % args if args else str(msg)
        if error is not None:
            text += f": {type(error).__name__}: {error}"
        peer = _peer_caused(error)
        self._throttle.emit(
            logging.INFO if peer else level,
            f"http {msg} {type(error).__name__}",
            "%s",
            printable(text, 300),
            exc_info=None if peer else error,
        )
