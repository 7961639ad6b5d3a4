"""Pieces every device endpoint uses: responses, errors, the request log, device authentication.

Status codes for a request that fails authentication (EVE API v2 leaves a choice between 400 and
401; these follow the spec's per-endpoint tables):

* 400 - the body is not an AuthContainer, or names a signer certificate nobody registered
  ("400 unknown" in the spec; EVE treats 400 on ``/config`` like 404 and re-checks its UUID);
* 401 - the signer is known but the signature does not verify;
* 403 - a valid device asks about another device's UUID;
* 404 - the UUID in the path is not a device.

Every response carries a Content-Type, even when its body is empty: EVE retries responses
without one (``cmd/client/client.go`` ``myPost``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid as uuidlib
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from agent.wire import envelope
from controller.api.context import context
from controller.api.errors import ApiError as ApiError  # re-exported: handlers raise it
from controller.api.guard import guard_of
from controller.logsafe import printable
from controller.records import Device

PROTO = "application/x-proto-binary"
TEXT = "text/plain"

logger = logging.getLogger("controller.api")

# What the request log line says besides method, path and status.
DEVICE_UUID = web.RequestKey("device_uuid", str)
DETAIL = web.RequestKey("detail", str)


def proto_response(body: bytes = b"", *, status: int = 200) -> web.Response:
    """A protobuf (usually signed AuthContainer) response, or an empty one with the proto type."""
    return web.Response(status=status, body=body, content_type=PROTO)


def note_device(request: web.Request, device_uuid: str) -> None:
    """Name the device in this request's log line."""
    request[DEVICE_UUID] = device_uuid


def note_detail(request: web.Request, detail: str) -> None:
    """Add a detail to this request's log line: why it failed, or what was done."""
    request[DETAIL] = detail


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One log line per request: method, path, status, device UUID, and a detail (why it failed).

    Turns ApiError into its text response, and any other exception into a logged 500: bad input
    must never get here (the garbage test checks that), so a 500 is always a controller bug.
    What the peer chose (method, path, detail) is escaped, so it cannot add lines to the log.
    """
    level = logging.INFO
    try:
        response = await handler(request)
    except ApiError as exc:
        note_detail(request, exc.reason)
        response = web.Response(
            status=exc.status, text=exc.reason, content_type=TEXT, headers=exc.headers
        )
        level = exc.level
        if exc.close:
            # Answer, then drop the connection at once: aiohttp would otherwise keep reading the
            # unwanted rest of the body for its lingering time, holding the connection.
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
    except web.HTTPException as exc:  # routing (404/405) and aiohttp's own 413
        note_detail(request, exc.reason)
        response = web.Response(status=exc.status, text=exc.text or exc.reason, content_type=TEXT)
        if "Allow" in exc.headers:  # a 405 must say what is allowed
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        logger.exception(
            "internal error on %s %s", printable(request.method), printable(request.path)
        )
        response = web.Response(status=500, text="internal error", content_type=TEXT)
    detail = request.get(DETAIL)
    logger.log(
        level,
        "%s %s %d device=%s%s",
        printable(request.method, 16),
        printable(request.path),
        response.status,
        request.get(DEVICE_UUID, "-"),
        f" detail={_cut(detail)!r}" if detail else "",
    )
    return response


def _cut(text: str, limit: int = 500) -> str:
    """``text`` cut to ``limit`` characters (repr() then escapes it for the log line)."""
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


@dataclass(frozen=True)
class DeviceRequest:
    """A verified request from a registered device."""

    device: Device
    payload: bytes


async def read_body(request: web.Request) -> bytes:
    """The whole body, within ``ApiSettings.body_timeout`` seconds.

    aiohttp answers 413 itself past ``client_max_size``.  A body that does not arrive in time
    (a client trickling bytes to hold the connection) gets 408 and the connection is closed.
    """
    timeout = context(request).settings.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        guard_of(request).log.warning_for(
            "slow body",
            "request bodies not received within %g s (from %s, for example); answered 408",
            timeout,
            printable(request.remote),
        )
        raise ApiError(
            408, f"request body not received within {timeout:g} s", quiet=True, close=True
        ) from None


async def device_request(request: web.Request, *, path_uuid: str | None = None) -> DeviceRequest:
    """Authenticate the body as an AuthContainer signed by a registered device.

    With ``path_uuid`` (the ``/id/{uuid}/...`` endpoints) the signer must be that device.
    Records the device as seen (at most once per ``ApiSettings.seen_interval``).  Raises
    ApiError 400 / 401 / 403 / 404 as the module says, and 429 (after a delay) when the device
    is over its request rate (``ReportLimits.device_requests_per_second``).
    """
    ctx = context(request)
    body = await read_body(request)
    try:
        env = envelope.parse(body)
    except envelope.MalformedEnvelope as exc:
        raise ApiError(400, f"malformed envelope: {exc}") from exc
    lengths: dict[int, int] = {envelope.HASH_SHA256_16: 16, envelope.HASH_SHA256_32: 32}
    expected = lengths.get(env.algo)
    if expected is None or len(env.sender_cert_hash) != expected:
        raise ApiError(400, f"malformed envelope: bad senderCertHash (algo {env.algo})")
    device = ctx.store.device_by_cert_hash(env.sender_cert_hash)
    if device is None:
        raise ApiError(400, f"unknown device certificate {env.sender_cert_hash.hex()}")
    try:
        envelope.verify_signature(env, device.cert)
    except envelope.BadSignature as exc:
        raise ApiError(401, f"bad signature for device {device.uuid}: {exc}") from exc
    note_device(request, device.uuid)
    await guard_of(request).check_rate(device.uuid)
    if path_uuid is not None:
        _authorise_path(request, device, path_uuid)
    seen = device.last_seen
    if seen is None or abs(ctx.store.now() - seen) >= ctx.settings.seen_interval:
        ctx.store.touch(device.uuid)
    return DeviceRequest(device=device, payload=env.payload)


def _authorise_path(request: web.Request, device: Device, path_uuid: str) -> None:
    wanted = parse_uuid(path_uuid)
    if wanted == device.uuid:
        return
    if wanted is None or context(request).store.device(wanted) is None:
        raise ApiError(404, f"no device {path_uuid}")
    raise ApiError(403, f"device {device.uuid} may not act for device {wanted}")


def parse_uuid(text: str) -> str | None:
    """Canonical lower-case form of a UUID, or None when ``text`` is not one."""
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        return None
