"""Accepting TLS connections within time and number limits.

aiohttp bounds a request once it has started, but not the time a peer may take to complete the
TLS handshake or to send its first request headers, nor the number of connections it may hold:
a thousand TLS connections that never send a request used to hold every file descriptor of the
controller.  This module does its own accepting for the aiohttp server:

* **handshake timeout**: the TLS handshake must finish within ``handshake_timeout``;
* **header timeout**: the first request's headers must be complete within ``header_timeout`` of
  the handshake; later requests on the connection are bounded by aiohttp's keep-alive timeout
  (an idle or half-sent request is closed when it expires), and request bodies by
  ``ApiSettings.body_timeout``;
* **connection limit with back-pressure**: at most ``max_connections`` connections, counted from
  accept (handshakes included).  A connection over the limit makes room by closing the one that
  has waited longest without sending a complete request (the cheapest to lose, and what an
  attacker holds); when every connection is busy with real requests, accepting stops until one
  closes and newcomers wait in the kernel's backlog.  Running out of file descriptors pauses
  accepting briefly instead of spinning;
* **one log line per condition**, throttled (:class:`controller.logsafe.LogThrottle`), never a
  traceback per connection.

Timed-out and evicted connections are aborted (TCP reset), not shut down gracefully: a peer that
does not send will not read a TLS close_notify either.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import re
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from controller.logsafe import LogThrottle, printable

logger = logging.getLogger("controller.server")

_HEADERS_END = re.compile(rb"\n\r?\n")
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class ServerSettings:
    """Connection limits and timeouts of the HTTPS server.

    The defaults are for production: generous for slow links (a node on cellular), short enough
    that an idle connection costs a file descriptor for seconds, not hours.
    """

    handshake_timeout: float = 10.0
    """Seconds from accept to the end of the TLS handshake."""
    header_timeout: float = 30.0
    """Seconds from the handshake to the end of the first request's headers."""
    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open after a response (also bounds a
    half-sent later request).  Longer than Go's default client idle timeout would waste
    descriptors; EVE reconnects when it needs to."""
    tls_shutdown_timeout: float = 5.0
    """Seconds to wait for the peer's TLS close_notify when closing gracefully."""
    lingering_time: float = 5.0
    """Seconds aiohttp keeps reading a request body the handler did not want (a 413, a 404
    with a body) so that the client sees the answer, before closing."""
    shutdown_timeout: float = 10.0
    """Seconds requests in progress get to finish when the server stops."""
    max_connections: int = 1000
    """Open connections at most, handshakes included.  Keep it well under the process's file
    descriptor limit (``LimitNOFILE=`` in the systemd unit)."""
    backlog: int = 128
    """Connections the kernel queues while accepting is paused."""
    max_line_size: int = 8190
    """Longest request line (aiohttp answers 400 beyond)."""
    max_field_size: int = 8190
    """Longest header field."""
    max_headers: int = 64
    """Most header fields in a request."""
    log_interval: float = 60.0
    """Seconds between two log lines about the same condition."""
    accept_pause: float = 0.5
    """Seconds accepting pauses when the process is out of file descriptors."""


class _Conn:
    """One accepted connection, from accept to close."""

    __slots__ = ("closed", "id", "peer", "sock", "transport", "waiting")

    def __init__(self, conn_id: int, peer: str, sock: socket.socket) -> None:
        self.id = conn_id
        self.peer = peer
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.waiting = True  # no complete request headers yet
        self.closed = False

    def abort(self) -> None:
        """Drop the connection now.  During the handshake the socket is only shut down: asyncio
        owns it and closes it when the handshake fails (closing it here could close a
        descriptor number that a newer connection already reuses)."""
        if self.transport is not None:
            self.transport.abort()
        else:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class Listener:
    """Accepts TLS connections for ``protocol_factory`` (aiohttp's ``runner.server``).

    Use :meth:`start` then :meth:`stop`; connections still open at stop belong to aiohttp,
    which closes them in ``runner.cleanup()``.
    """

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext,
        settings: ServerSettings,
        log: LogThrottle,
    ) -> None:
        self._factory = protocol_factory
        self._tls = tls
        self._settings = settings
        self._log = log
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()
        self._conns: dict[int, _Conn] = {}
        self._waiting: OrderedDict[int, _Conn] = OrderedDict()  # oldest first
        self._room = asyncio.Event()
        self._ids = itertools.count(1)

    @property
    def connections(self) -> int:
        """Connections open now (handshakes included)."""
        return len(self._conns)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Host and port of each listening socket."""
        return [sock.getsockname()[:2] for sock in self._sockets]

    async def start(self, host: str, port: int) -> None:
        """Bind every address ``host`` resolves to and start accepting.  Raises OSError."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._settings.backlog)
                sock.setblocking(False)
        except BaseException:
            self._close_sockets()
            raise
        self._room.set()
        self._accepting = [asyncio.create_task(self._accept_loop(s)) for s in self._sockets]

    async def stop(self) -> None:
        """Stop accepting, close the listening sockets and abort unfinished handshakes."""
        for task in self._accepting:
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        self._accepting = []
        self._close_sockets()
        for conn in list(self._conns.values()):
            if conn.transport is None:
                conn.abort()
        if self._handshakes:
            await asyncio.wait(set(self._handshakes), timeout=self._settings.handshake_timeout)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_room()
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._log.warning_for(
                        "accept resources",
                        "cannot accept connections (%s, %d open): closing the oldest idle one "
                        "and pausing %g s",
                        exc.strerror,
                        len(self._conns),
                        self._settings.accept_pause,
                    )
                    self._evict_oldest_waiting()
                    await asyncio.sleep(self._settings.accept_pause)
                # Anything else (the peer reset before accept) concerns that peer only.
                continue
            try:
                await self._admit(sock, _peer(address))
            except asyncio.CancelledError:
                sock.close()  # still ours: not handed to asyncio yet
                raise
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop all accepting
                sock.close()
                self._log.emit(
                    logging.ERROR, "accept bug", "error admitting a connection", exc_info=exc
                )

    async def _admit(self, sock: socket.socket, peer: str) -> None:
        """Make room for an accepted connection if need be, then start its handshake."""
        if len(self._conns) >= self._settings.max_connections:
            if self._waiting:
                self._log.warning_for(
                    "connection limit",
                    "connection limit of %d reached: closing the connection that waited "
                    "longest without sending a request (from %s) to let one from %s in",
                    self._settings.max_connections,
                    next(iter(self._waiting.values())).peer,
                    peer,
                )
                self._evict_oldest_waiting()
            else:
                # Accepted as the last slot filled: it waits here, unread, for room.
                await self._wait_for_room()
        self._open(sock, peer)

    async def _wait_for_room(self) -> None:
        """Return at once while under the limit, or while an idle connection can make room;
        otherwise stop accepting (newcomers wait in the kernel's backlog) until one closes."""
        limit = self._settings.max_connections
        while len(self._conns) >= limit and not self._waiting:
            self._log.warning_for(
                "connection limit busy",
                "connection limit of %d reached and every connection is in a request: "
                "not accepting until one closes",
                limit,
            )
            self._room.clear()
            await self._room.wait()

    def _evict_oldest_waiting(self) -> None:
        if self._waiting:
            conn = next(iter(self._waiting.values()))
            self.release(conn)
            conn.abort()

    def _open(self, sock: socket.socket, peer: str) -> None:
        conn = _Conn(next(self._ids), peer, sock)
        self._conns[conn.id] = conn
        self._waiting[conn.id] = conn
        task = asyncio.create_task(self._handshake(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: _Conn) -> None:
        settings = self._settings
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _GuardedProtocol(self._factory(), conn, self),
                conn.sock,
                ssl=self._tls,
                ssl_handshake_timeout=settings.handshake_timeout,
                ssl_shutdown_timeout=settings.tls_shutdown_timeout,
            )
        except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
            if not conn.closed:
                self._log.emit(
                    logging.INFO,
                    "tls handshake",
                    "TLS handshakes failing or timing out (%g s); the latest from %s: %s",
                    settings.handshake_timeout,
                    conn.peer,
                    printable(f"{type(exc).__name__}: {exc}"),
                )
            self.release(conn)
        except BaseException:
            self.release(conn)
            raise

    # --- called by the connection's protocol ---------------------------------------------------

    def start_header_timer(self, conn: _Conn) -> asyncio.TimerHandle:
        """Start the first request's header timeout (at the end of the handshake)."""
        loop = asyncio.get_running_loop()
        return loop.call_later(self._settings.header_timeout, self._header_timeout, conn)

    def headers_complete(self, conn: _Conn) -> None:
        """The connection sent a complete request head: it is no longer idle, nor evictable."""
        conn.waiting = False
        self._waiting.pop(conn.id, None)

    def _header_timeout(self, conn: _Conn) -> None:
        if conn.closed or not conn.waiting:
            return
        self._log.emit(
            logging.INFO,
            "header timeout",
            "closing connections that sent no complete request within %g s of the handshake; "
            "the latest from %s",
            self._settings.header_timeout,
            conn.peer,
        )
        self.release(conn)
        conn.abort()

    def release(self, conn: _Conn) -> None:
        """The connection is gone (or going): free its slot.  Idempotent."""
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.id, None)
        self._waiting.pop(conn.id, None)
        if len(self._conns) < self._settings.max_connections:
            self._room.set()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol, watched: first-request header timeout, and the listener's accounting.

    Everything is passed on to the wrapped protocol unchanged.
    """

    def __init__(self, inner: asyncio.Protocol, conn: _Conn, listener: Listener) -> None:
        self._inner = inner
        self._conn = conn
        self._listener = listener
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        conn = self._conn
        conn.transport = cast(asyncio.Transport, transport)  # a TLS transport: it can abort
        if conn.closed:  # evicted while the handshake finished
            conn.transport.abort()
            return
        self._timer = self._listener.start_header_timer(conn)
        self._made = True
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn.waiting:
            seen = self._tail + data
            if _HEADERS_END.search(seen):
                self._stop_timer()
                self._listener.headers_complete(self._conn)
            else:
                self._tail = seen[-3:]
        if self._made:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._made else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._listener.release(self._conn)
        if self._made:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return printable(address)
