"""HTTPS transport to the controller (EVE API v2).

URLs are built like EVE's ``URLPathString``: ``https://<server>/api/v2/edgedevice/`` then
``id/<uuid>/`` once the device UUID is known, then the action.

TLS trusts the node's own roots only: ``/config/root-certificate.pem`` and, when present,
``/config/v2tlsbaseroot-certificates.pem`` (EVE's documented "TLS root of trust" file,
``eve:docs/CONFIG.md``, ``docs/KEYS-AND-CERTS.md``), never the host's system store.  EVE's code
(``eve:pkg/pillar/controllerconn/tls.go`` ``GetTLSConfig``, read at lf-edge/eve
2c6b41543bd3) builds its pool from ``x509.SystemCertPool()`` plus the root certificate and proxy
certificates; on EVE that system pool is the integrity-protected rootfs bundle shipped as
``conf/v2tlsbaseroot-certificates.pem``.  On a general-purpose host the system store is not the
node's to vouch for, so a controller whose TLS certificate comes from a public CA is trusted by
putting that CA (or a bundle) in ``v2tlsbaseroot-certificates.pem``.  TLS 1.2 at least.  The
controller's identity for *config* comes from the signing certificate, checked separately.

Every answer is read as a stream and stopped at the most its endpoint's message may be
(:data:`ANSWER_LIMITS`, :data:`DEFAULT_ANSWER_LIMIT` for the rest): a declared
``Content-Length`` past it is refused before any byte is read, an undeclared or lying one when the
count passes it.  Content codings are refused (``Accept-Encoding: identity``, no decompression):
a compressed answer could hide any size.

Errors are typed: :class:`TransportError` for anything that never produced a usable HTTP answer
(temporary; :class:`AnswerTooLarge` among them), :class:`Response` for every HTTP answer whatever
its status; callers decide what a status means for their endpoint.
"""

from __future__ import annotations

import contextlib
import ssl
import time
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass

import aiohttp

from agent.util.liveness import Liveness

PROTO_TYPE = "application/x-proto-binary"
API_PREFIX = "/api/v2/edgedevice/"


MiB = 1024 * 1024

#: The largest answer each endpoint may send, by the last component of its action.  A config
#: can be large (thousands of objects, inline cloud-init); certificates, UUIDs, registration and
#: report acknowledgements are a few kilobytes; an attestation answer carries a nonce, a token and
#: escrowed keys.
ANSWER_LIMITS = {
    "config": 32 * MiB,
    "attest": 1 * MiB,
    "certs": 256 * 1024,
    "uuid": 64 * 1024,
    "register": 64 * 1024,
    "ping": 64 * 1024,
    "info": 64 * 1024,
    "metrics": 64 * 1024,
    "newlogs": 64 * 1024,
    "flowlog": 64 * 1024,
}
DEFAULT_ANSWER_LIMIT = 1 * MiB
_CHUNK = 64 * 1024


def answer_limit(action: str) -> int:
    """The cap for ``action``'s answer (``apps/instanceid/<uuid>/newlogs`` counts as newlogs)."""
    return ANSWER_LIMITS.get(action.rsplit("/", 1)[-1], DEFAULT_ANSWER_LIMIT)


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB and n % (MiB // 4) == 0 else f"{n} bytes"


class TransportError(Exception):
    """No usable HTTP answer: DNS, connect, TLS, timeout, a dropped connection, an answer too
    large.  Always temporary."""


class AnswerTooLarge(TransportError):
    """The answer is larger than its endpoint's message may be; reading stopped at the cap."""


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


def make_tls_context(root_pem: bytes, tls_roots_pem: bytes = b"") -> ssl.SSLContext:
    """Client TLS context trusting the node's root certificate and ``tls_roots_pem`` (the
    ``v2tlsbaseroot-certificates.pem`` bundle) only, never the system store; TLS 1.2 at least,
    host names checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname; no CAs
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=root_pem.decode("ascii"))
    if tls_roots_pem.strip():
        ctx.load_verify_locations(cadata=tls_roots_pem.decode("ascii"))
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
        tls_roots_pem: bytes = b"",
    ) -> None:
        self.server = normalise_server(server)
        self._tls = make_tls_context(root_pem, tls_roots_pem)
        self.serial = serial
        self.soft_serial = soft_serial
        self.device_uuid: str | None = None
        self.send_timeout = send_timeout
        self.dial_timeout = dial_timeout
        self._session: aiohttp.ClientSession | None = None
        #: Marks each request as an activity, so one that outlives its own timeouts (a hang)
        #: stops the systemd watchdog pings.
        self.liveness: Liveness | None = None
        #: Wall time of the controller's last answer below 500 (it was reached and answered,
        #: whatever it said): a base OS trial counts it as contact.
        self.last_answer = 0.0

    def url(self, action: str, *, device_path: bool = True) -> str:
        """``device_path=False`` for certs, register and uuid: never under ``id/<uuid>/``."""
        prefix = f"https://{self.server}{API_PREFIX}"
        if self.device_uuid and device_path:
            prefix += f"id/{self.device_uuid}/"
        return prefix + action

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"X-Request-Id": str(uuidlib.uuid4()), "Accept-Encoding": "identity"}
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
            # No transparent decompression: a gzip bomb would pass any cap on the wire.
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def request(
        self,
        action: str,
        body: bytes | None = None,
        *,
        device_path: bool = True,
        max_answer: int | None = None,
    ) -> Response:
        """GET when ``body`` is None, else POST it.  The answer is read up to ``max_answer``
        bytes (default: :func:`answer_limit` of the action).  Raises TransportError only
        (AnswerTooLarge past the cap)."""
        session = self._ensure_session()
        timeout = aiohttp.ClientTimeout(total=self.send_timeout, sock_connect=self.dial_timeout)
        method = "GET" if body is None else "POST"
        url = self.url(action, device_path=device_path)
        cap = answer_limit(action) if max_answer is None else max_answer
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
                    data = await self._read(resp, action, cap)
                    if resp.status < 500:
                        self.last_answer = time.time()
                    return Response(resp.status, data, resp.headers.get("Content-Type", ""))
        except TimeoutError as exc:
            # asyncio's TimeoutError carries no text: say what timed out, and after how long.
            raise TransportError(
                f"{method} {url}: timed out after {self.send_timeout:g} s"
                f" (connect limit {self.dial_timeout:g} s)"
            ) from exc
        except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
            raise TransportError(f"{method} {url}: {str(exc) or type(exc).__name__}") from exc

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse, action: str, cap: int) -> bytes:
        """The body, streamed and stopped at ``cap``.  Raises AnswerTooLarge."""
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise TransportError(f"/{action} answer has Content-Encoding {encoding!r}: refused")
        too_large = f"/{action} answer is larger than its {_size(cap)} cap"
        declared = resp.content_length
        if declared is not None and declared > cap:
            raise AnswerTooLarge(f"{too_large} (Content-Length {declared})")
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await resp.content.read(min(_CHUNK, cap + 1 - size))
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > cap:
                raise AnswerTooLarge(f"{too_large}; stopped reading")
            parts.append(chunk)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
