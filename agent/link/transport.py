"""HTTPS transport to the controller (EVE API v2).

URLs are built like EVE's ``URLPathString``: ``https://<server>/api/v2/edgedevice/`` then
``id/<uuid>/`` once the device UUID is known, then the action.  TLS trusts the system store plus
the node's root certificate (EVE's ``GetTLSConfig``); the controller's identity for *config* comes
from the signing certificate, checked separately.

Errors are typed: :class:`TransportError` for anything that never produced an HTTP answer
(temporary), :class:`Response` for every HTTP answer whatever its status; callers decide what
a status means for their endpoint.
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass

import aiohttp

from agent.util.liveness import Liveness

PROTO_TYPE = "application/x-proto-binary"
API_PREFIX = "/api/v2/edgedevice/"


class TransportError(Exception):
    """No HTTP answer: DNS, connect, TLS, timeout or a dropped connection.  Always temporary."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str

    @property
    def ok(self) -> bool:
        # EVE's SendOnIntf treats exactly these as success at the transport level.
        return self.status in (200, 201, 204, 304)


def normalise_server(text: str) -> str:
    """``/config/server`` holds ``host[:port]``; tolerate a scheme and trailing slash."""
    server = text.strip()
    for scheme in ("https://", "http://"):
        if server.startswith(scheme):
            server = server[len(scheme) :]
    server = server.rstrip("/")
    try:
        parts = urllib.parse.urlsplit("//" + server)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if (
        parts is None
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in server
        or server.endswith(":")
        or port == 0
        or any(c.isspace() for c in server)
    ):
        raise ValueError(f"controller address {text!r} is not host[:port]")
    return server


def make_tls_context(root_pem: bytes) -> ssl.SSLContext:
    """Client TLS context: system CAs plus the node's root certificate, TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=root_pem.decode("ascii"))
    return ctx


class ControllerClient:
    """One HTTPS session to the controller.  Not thread-safe; use from one event loop.

    ``device_uuid`` and the serials go into request URLs and headers as EVE does: the serial
    headers only while the UUID is unknown.
    """

    def __init__(
        self,
        server: str,
        root_pem: bytes,
        *,
        serial: str = "",
        soft_serial: str = "",
        send_timeout: float = 120.0,
        dial_timeout: float = 10.0,
    ) -> None:
        self.server = normalise_server(server)
        self._tls = make_tls_context(root_pem)
        self.serial = serial
        self.soft_serial = soft_serial
        self.device_uuid: str | None = None
        self.send_timeout = send_timeout
        self.dial_timeout = dial_timeout
        self._session: aiohttp.ClientSession | None = None
        #: Marks each request as an activity, so one that outlives its own timeouts (a hang)
        #: stops the systemd watchdog pings.
        self.liveness: Liveness | None = None

    def url(self, action: str, *, device_path: bool = True) -> str:
        """``device_path=False`` for certs, register and uuid: never under ``id/<uuid>/``."""
        prefix = f"https://{self.server}{API_PREFIX}"
        if self.device_uuid and device_path:
            prefix += f"id/{self.device_uuid}/"
        return prefix + action

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"X-Request-Id": str(uuidlib.uuid4())}
        if has_body:
            headers["Content-Type"] = PROTO_TYPE
        if not self.device_uuid:
            if self.serial:
                headers["X-Serial-Number"] = self.serial
            if self.soft_serial:
                headers["X-Soft-Serial"] = self.soft_serial
        return headers

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._tls, limit=4)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def request(
        self, action: str, body: bytes | None = None, *, device_path: bool = True
    ) -> Response:
        """GET when ``body`` is None, else POST it.  Raises TransportError only."""
        session = self._ensure_session()
        timeout = aiohttp.ClientTimeout(total=self.send_timeout, sock_connect=self.dial_timeout)
        method = "GET" if body is None else "POST"
        url = self.url(action, device_path=device_path)
        limit = self.send_timeout + self.dial_timeout + 30.0
        try:
            with (
                self.liveness.activity(f"controller request {action}", limit)
                if self.liveness is not None
                else contextlib.nullcontext()
            ):
                async with session.request(
                    method,
                    url,
                    data=body,
                    headers=self._headers(body is not None),
                    timeout=timeout,
                ) as resp:
                    data = await resp.read()
                    return Response(resp.status, data, resp.headers.get("Content-Type", ""))
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            raise TransportError(f"{method} {url}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
