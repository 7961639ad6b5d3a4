"""The metadata HTTP server apps reach at 169.254.169.254 (EVE's msrv), in the node's namespace.

The server only carries bytes: the answer to each request comes from a handler the layer above
gives (``handler(path, caller_ip, caller_port) -> Answer | None``; None is a 404), which
identifies the app by the caller's address.  The listening socket is made in the node's network
namespace (a short-lived thread enters it; the socket stays there), bound with IP_FREEBIND so it
can exist before any bridge holds the address, and served by aiohttp on the agent's loop.

Bounded: requests are GET (or HEAD) with small headers, or a POST the layer above takes
(``poster(path, caller_ip, content_type, body) -> Answer | None``; without one a POST is a
405) whose body is read up to ``max_post`` bytes (more: 500, as EVE's msrv answers an
oversized kubeconfig, and nothing reaches the poster); responses carry ``Cache-Control:
no-store``.  ``start`` and ``stop`` are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from agent.drivers.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

METADATA_ADDRESS = "169.254.169.254"
_IP_FREEBIND = 15


@dataclass(frozen=True)
class Answer:
    body: bytes
    content_type: str = "application/json"
    status: int = 200


Handler = Callable[[str, str, int], Awaitable[Answer | None]]
#: (path, caller's address, the request's content type, its body) -> Answer, None a 404.
PostHandler = Callable[[str, str, str, bytes], Awaitable[Answer | None]]
#: EVE's KubeconfigFileSizeLimitInBytes: the largest body an app may post.
MAX_POST = 32768


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((address, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _listen_in(netns: str | None, address: str, port: int) -> socket.socket:
    """The listening socket, made in ``netns`` (a name under /run/netns or a path)."""
    if netns is None:
        return _listen(address, port)
    from pyroute2 import netns as pnetns

    path = netns if netns.startswith("/") else f"/run/netns/{netns}"
    result: list[socket.socket | BaseException] = []

    def inside() -> None:
        # This thread alone moves into the namespace, and ends right after.
        try:
            pnetns.setns(path)
            result.append(_listen(address, port))
        except (OSError, ValueError) as exc:  # handed to the caller
            result.append(exc)

    thread = threading.Thread(target=inside, name="metadata-listen", daemon=True)
    thread.start()
    thread.join(10)
    if not result:
        raise TemporaryError(f"metadata server: no socket in {path} within 10 s")
    got = result[0]
    if isinstance(got, BaseException):
        raise got
    return got


class MetadataServer:
    """One node's metadata server; see the module docstring."""

    def __init__(
        self, handler: Handler, *, netns: str | None = None, port: int = 80,
        address: str = METADATA_ADDRESS, poster: PostHandler | None = None,
        max_post: int = MAX_POST,
    ) -> None:  # fmt: skip
        self.handler = handler
        self.poster = poster
        self.max_post = max_post
        self.netns = netns
        self.port = port
        self.address = address
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            return web.Response(status=400)
        if request.method == "POST" and self.poster is not None:
            return await self._post(request, str(peer[0]))
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        try:
            answer = await self.handler(request.path, str(peer[0]), int(peer[1]))
        except Exception:  # a handler bug is a 500 for that request, not a dead server
            log.exception("metadata request %s from %s failed", request.path, peer[0])
            return web.Response(status=500)
        if answer is None:
            return web.Response(status=404, text="not found\n")
        return web.Response(
            status=answer.status, body=answer.body, content_type=answer.content_type,
            headers={"Cache-Control": "no-store"},
        )  # fmt: skip

    async def _post(self, request: web.Request, caller: str) -> web.StreamResponse:
        assert self.poster is not None
        body = bytearray()
        while len(body) <= self.max_post:
            chunk = await request.content.read(self.max_post + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > self.max_post:
            log.warning("metadata POST %s from %s: body over %d bytes, refused",
                        request.path[:80], caller, self.max_post)  # fmt: skip
            return web.Response(status=500, text="size exceeds limit\n")
        try:
            answer = await self.poster(request.path, caller, request.content_type, bytes(body))
        except Exception:  # a handler bug is a 500 for that request, not a dead server
            log.exception("metadata POST %s from %s failed", request.path[:80], caller)
            return web.Response(status=500)
        if answer is None:
            return web.Response(status=404, text="not found\n")
        return web.Response(status=answer.status, body=answer.body,
                            content_type=answer.content_type,
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    async def start(self) -> None:
        """Listen (idempotent).  TemporaryError when the port is taken or the namespace is
        missing; PermanentError for an address the kernel refuses."""
        if self._runner is not None:
            return
        try:
            sock = await asyncio.to_thread(_listen_in, self.netns, self.address, self.port)
        except OSError as exc:
            message = f"metadata server on {self.address}:{self.port}: {exc.strerror or exc}"
            if exc.errno in (98, 2, 19):  # EADDRINUSE, ENOENT, ENODEV
                raise TemporaryError(message) from exc
            raise PermanentError(message) from exc
        app = web.Application(client_max_size=self.max_post + 1)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
                               max_line_size=2048, max_field_size=2048)  # fmt: skip
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        log.info("metadata server listening on %s:%d", self.address, self.port)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
