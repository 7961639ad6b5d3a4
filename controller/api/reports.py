"""What devices send about themselves: info, metrics, flow logs, hardware health and logs.

Each accepted upload is stored with its receive time and answered 201 with an empty body.  An
info message about an app, network instance, volume or content tree also updates that object's
last known state (see :mod:`controller.api.objects`).
Protobuf reports are kept twice: the raw bytes (so a newer schema can re-read them) and the
protobuf JSON mapping (what the admin commands print).  Hardware health is kept raw only: its
message is not among the generated bindings.
"""

from __future__ import annotations

import json

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
from controller.api.context import context
from controller.records import ReportKind

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
        message_type = _MESSAGE_TYPES[kind]
        rendered = None
        if message_type is not None:
            message, rendered = _parse(message_type, req.payload, kind)
            if isinstance(message, info_pb2.ZInfoMsg):
                _update_object(request, req.device.uuid, message)
        context(request).store.add_report(req.device.uuid, kind, req.payload, rendered)
        return proto_response(status=201)

    return handle


def _parse(message_type: type[Message], payload: bytes, kind: ReportKind) -> tuple[Message, str]:
    """The message and its protobuf JSON mapping; ApiError 400 when it is not a valid one."""
    message = message_type()
    try:
        message.ParseFromString(payload)
        # Parsing can succeed on values JSON cannot express (a Timestamp out of range).
        return message, json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
    except (DecodeError, json_format.Error, ValueError, TypeError) as exc:
        raise ApiError(400, f"payload is not a valid {kind} message: {exc}") from exc


def _update_object(request: web.Request, device_uuid: str, message: info_pb2.ZInfoMsg) -> None:
    """Keep the last state of the app, network instance, volume or content tree it is about."""
    ctx = context(request)
    update = objects.object_update(message, ctx.store.now())
    if update is None:
        return
    if update.status is None:
        ctx.store.remove_object_status(device_uuid, update.kind, update.object_id)
        note_detail(request, f"{update.kind} {update.object_id} deleted")
        return
    limit = ctx.settings.max_objects
    if not ctx.store.put_object_status(device_uuid, update.status, limit=limit):
        raise ApiError(400, f"more than {limit} objects: {update.kind} {update.object_id} refused")
    note_detail(request, f"{update.kind} {update.object_id} {update.status.state}")


async def device_logs(request: web.Request) -> web.Response:
    """``POST /id/{uuid}/newlogs``: device log file; metadata in the gzip comment."""
    req = await device_request(request, path_uuid=request.match_info["uuid"])
    upload = _decode(request, req.payload)
    meta = newlogs.device_log_meta(upload.header)
    count = context(request).store.add_logs(
        req.device.uuid, None, json.dumps(meta, separators=(",", ":")), upload.entries
    )
    note_detail(request, f"{count} entries")
    return proto_response(status=201)


async def app_logs(request: web.Request) -> web.Response:
    """``POST /id/{uuid}/apps/instanceid/{app}/newlogs``: app console log; name in FNAME."""
    req = await device_request(request, path_uuid=request.match_info["uuid"])
    app_uuid = parse_uuid(request.match_info["app"])
    if app_uuid is None:
        raise ApiError(400, f"not an app instance UUID: {request.match_info['app']!r}")
    upload = _decode(request, req.payload)
    meta = newlogs.app_log_meta(upload.header, app_uuid)
    count = context(request).store.add_logs(
        req.device.uuid, app_uuid, json.dumps(meta, separators=(",", ":")), upload.entries
    )
    note_detail(request, f"{count} entries for app {app_uuid}")
    return proto_response(status=201)


def _decode(request: web.Request, payload: bytes) -> newlogs.LogUpload:
    try:
        return newlogs.decode_upload(payload, context(request).settings.max_log_bytes)
    except newlogs.LogUploadError as exc:
        raise ApiError(400, f"bad log upload: {exc}") from exc
