"""What devices send about themselves: info, metrics, flow logs, hardware health and logs.

Each accepted upload is stored with its receive time and answered 201 with an empty body.  An
info message about an app, network instance, volume or content tree also updates that object's
last known state (see :mod:`controller.api.objects`).
Protobuf reports are kept twice: the raw bytes (so a newer schema can re-read them) and the
protobuf JSON mapping (what the admin commands print).  Hardware health is kept raw only: its
message is not among the generated bindings.

Uploads are hostile input from a device that is trusted only to be itself: each is capped (bytes
and elements of a report, inflated bytes and entries of a log upload), admitted by the device's
rate limits and storage quota, and decoded and stored in the guard's worker thread, never on the
event loop (see :mod:`controller.api.guard`).
"""

from __future__ import annotations

import json
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Handler
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from agent.wire.pb.flowlog import flowlog_pb2
from agent.wire.pb.info import info_pb2
from agent.wire.pb.metrics import metrics_pb2
from controller import newlogs
from controller.api import objects
from controller.api.common import ApiError, device_request, note_detail, parse_uuid, proto_response
from controller.api.context import ApiSettings, context
from controller.api.guard import Worker, guard_of
from controller.pbcount import TooManyElements, count_elements
from controller.records import ReportKind
from controller.store import Store

_MESSAGE_TYPES: dict[ReportKind, type[Message] | None] = {
    ReportKind.INFO: info_pb2.ZInfoMsg,
    ReportKind.METRICS: metrics_pb2.ZMetricMsg,
    ReportKind.FLOWLOG: flowlog_pb2.FlowMessage,
    ReportKind.HARDWAREHEALTH: None,
}


def report_handler(kind: ReportKind) -> Handler:
    """The handler for ``POST /id/{uuid}/<kind>``."""

    async def handle(request: web.Request) -> web.Response:
        req = await device_request(request, path_uuid=request.match_info["uuid"])
        job = partial(_store_report, kind, req.payload, context(request).settings)
        detail = await guard_of(request).run(req.device.uuid, job, logs=False)
        if detail:
            note_detail(request, detail)
        return proto_response(status=201)

    return handle


def _store_report(kind: ReportKind, payload: bytes, settings: ApiSettings, worker: Worker) -> str:
    """In the worker thread: check, decode and store one report; a detail for the request log.

    Raises ApiError 400 for a message that is too big, too complex or invalid, and the guard's
    QuotaFull when the device has no room left.
    """
    limits = settings.limits
    if len(payload) > limits.max_report_bytes:
        raise ApiError(
            400, f"{kind} message of {len(payload)} bytes (at most {limits.max_report_bytes})"
        )
    worker.check_quota()
    message_type = _MESSAGE_TYPES[kind]
    rendered = None
    detail = ""
    if message_type is not None:
        message, rendered = _parse(message_type, payload, kind, limits.max_report_elements)
        if isinstance(message, info_pb2.ZInfoMsg):
            detail = _update_object(worker.store, worker.device_uuid, message, settings.max_objects)
    worker.store.add_report(worker.device_uuid, kind, payload, rendered)
    worker.stored(len(payload) + len((rendered or "").encode()), rows=1)
    return detail


def _parse(
    message_type: type[Message], payload: bytes, kind: ReportKind, max_elements: int
) -> tuple[Message, str]:
    """The message and its protobuf JSON mapping; ApiError 400 when it is not a valid one, or
    holds more than ``max_elements`` fields and elements (rendering those would be the work)."""
    message = message_type()
    try:
        message.ParseFromString(payload)
    except (DecodeError, ValueError, TypeError) as exc:
        raise ApiError(400, f"payload is not a valid {kind} message: {exc}") from exc
    try:
        count_elements(message, max_elements)
    except TooManyElements as exc:
        raise ApiError(400, f"{kind} message refused: {exc}") from exc
    try:
        # Parsing can succeed on values JSON cannot express (a Timestamp out of range).
        return message, json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
    except (json_format.Error, ValueError, TypeError) as exc:
        raise ApiError(400, f"payload is not a valid {kind} message: {exc}") from exc


def _update_object(store: Store, device_uuid: str, message: info_pb2.ZInfoMsg, limit: int) -> str:
    """Keep the last state of the app, network instance, volume or content tree it is about;
    the detail for the request log ("" when the message is about none)."""
    update = objects.object_update(message, store.now())
    if update is None:
        return ""
    if update.status is None:
        store.remove_object_status(device_uuid, update.kind, update.object_id)
        return f"{update.kind} {update.object_id} deleted"
    if not store.put_object_status(device_uuid, update.status, limit=limit):
        raise ApiError(400, f"more than {limit} objects: {update.kind} {update.object_id} refused")
    return f"{update.kind} {update.object_id} {update.status.state}"


async def device_logs(request: web.Request) -> web.Response:
    """``POST /id/{uuid}/newlogs``: device log file; metadata in the gzip comment."""
    req = await device_request(request, path_uuid=request.match_info["uuid"])
    job = partial(_store_logs, None, req.payload, context(request).settings)
    count = await guard_of(request).run(req.device.uuid, job, logs=True)
    note_detail(request, f"{count} entries")
    return proto_response(status=201)


async def app_logs(request: web.Request) -> web.Response:
    """``POST /id/{uuid}/apps/instanceid/{app}/newlogs``: app console log; name in FNAME."""
    req = await device_request(request, path_uuid=request.match_info["uuid"])
    app_uuid = parse_uuid(request.match_info["app"])
    if app_uuid is None:
        raise ApiError(400, f"not an app instance UUID: {request.match_info['app']!r}")
    job = partial(_store_logs, app_uuid, req.payload, context(request).settings)
    count = await guard_of(request).run(req.device.uuid, job, logs=True)
    note_detail(request, f"{count} entries for app {app_uuid}")
    return proto_response(status=201)


def _store_logs(app_uuid: str | None, payload: bytes, settings: ApiSettings, worker: Worker) -> int:
    """In the worker thread: decode one newlogs upload (bounded) and store it; the entry count.

    The entries decoded are charged to the device's log-entry rate, also when the upload is
    refused part way (that work was done).  Raises ApiError 400 for a bad or oversized upload.
    """
    worker.check_quota()
    try:
        upload = newlogs.decode_upload(
            payload, settings.max_log_bytes, settings.limits.max_log_entries
        )
    except newlogs.LogUploadError as exc:
        worker.charge_entries(exc.lines)
        raise ApiError(400, f"bad log upload: {exc}") from exc
    worker.charge_entries(len(upload.entries))
    if app_uuid is None:
        meta = newlogs.device_log_meta(upload.header)
    else:
        meta = newlogs.app_log_meta(upload.header, app_uuid)
    meta_json = json.dumps(meta, separators=(",", ":"))
    count = worker.store.add_logs(worker.device_uuid, app_uuid, meta_json, upload.entries)
    # Entries are ASCII (json.dumps escapes the rest), so characters are bytes.
    worker.stored(len(meta_json) + sum(len(e) for e in upload.entries), rows=count + 1)
    return count
