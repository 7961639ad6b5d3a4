"""Per-object info: what a device says about one app, network instance, volume or content tree.

EVE sends one ``ZInfoMsg`` per object whenever its state changes (``ZInfoApp``,
``ZInfoNetworkInstance``, ``ZInfoVolume``, ``ZInfoContentTree``), and for a deleted object one
that carries only the object's ID (``handlemetrics.go`` ``PublishAppInfoToZedCloud`` and friends,
``handlenetworkinstance.go``).  The controller keeps the last state of each object, and forgets
the object when the deleted message comes.

Everything here is device input: the ID must be a UUID and the ``ztype`` must match the content;
names, error texts and error counts are cut to size; a time outside years 1970-9999 counts as
none; a device may report at most ``ApiSettings.max_objects`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from agent.wire.pb.info import common_pb2, info_pb2
from controller.api.common import ApiError, parse_uuid
from controller.records import ObjectError, ObjectKind, ObjectStatus

MAX_NAME_CHARS = 256
MAX_ERROR_CHARS = 2048
MAX_ERRORS = 16
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z

#: The oneof member of each object kind and the ZInfoTypes value it must come with.
_CONTENT = {
    "ainfo": (ObjectKind.APP, info_pb2.ZiApp),
    "niinfo": (ObjectKind.NETWORK_INSTANCE, info_pb2.ZiNetworkInstance),
    "vinfo": (ObjectKind.VOLUME, info_pb2.ZiVolume),
    "cinfo": (ObjectKind.CONTENT_TREE, info_pb2.ZiContentTree),
}


@dataclass(frozen=True)
class ObjectUpdate:
    """One object's new state; ``status`` None means the device deleted it."""

    kind: ObjectKind
    object_id: str
    status: ObjectStatus | None


def _time(ts: Timestamp) -> float | None:
    if not 0 <= ts.seconds <= _LAST_SECOND or not 0 <= ts.nanos < 1_000_000_000:
        return None
    return ts.seconds + ts.nanos / 1e9


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _enum_name(name: str | None, value: int, prefix: str = "") -> str:
    if name is None:
        return f"UNKNOWN({value})"
    return name.removeprefix(prefix)


def _sw_state(value: int) -> str:
    try:
        return _enum_name(info_pb2.ZSwState.Name(value), value)
    except ValueError:
        return _enum_name(None, value)


def _ni_state(value: int) -> str:
    try:
        name = info_pb2.ZNetworkInstanceState.Name(value)
    except ValueError:
        return _enum_name(None, value)
    return _enum_name(name, value, "ZNETINST_STATE_")


def _errors(reported: list[common_pb2.ErrorInfo]) -> tuple[ObjectError, ...]:
    out = []
    for info in reported[:MAX_ERRORS]:
        try:
            severity = common_pb2.Severity.Name(info.severity).removeprefix("SEVERITY_")
        except ValueError:
            severity = f"UNKNOWN({int(info.severity)})"
        when = _time(info.timestamp) if info.HasField("timestamp") else None
        out.append(ObjectError(_clip(info.description, MAX_ERROR_CHARS), when, severity))
    if len(reported) > MAX_ERRORS:
        out.append(ObjectError(f"{len(reported) - MAX_ERRORS} more not stored", None, "NOTICE"))
    return tuple(out)


def object_update(msg: info_pb2.ZInfoMsg, received_at: float) -> ObjectUpdate | None:
    """What ``msg`` says about one object; None when it is about something else (the device,
    hardware...).  Raises ApiError 400 for an object message that cannot be right."""
    which = msg.WhichOneof("InfoContent")
    if which not in _CONTENT:
        return None
    kind, ztype = _CONTENT[which]
    if msg.ztype != ztype:
        raise ApiError(400, f"ztype {int(msg.ztype)} does not match {which}")
    if which == "ainfo":
        raw_id, name = msg.ainfo.AppID, msg.ainfo.AppName
        state, errors = _sw_state(msg.ainfo.state), list(msg.ainfo.appErr)
        empty = msg.ainfo.state == 0
    elif which == "niinfo":
        raw_id, name = msg.niinfo.networkID, msg.niinfo.displayname
        state, errors = _ni_state(msg.niinfo.state), list(msg.niinfo.networkErr)
        empty = msg.niinfo.state == 0 and not msg.niinfo.activated
    elif which == "vinfo":
        raw_id, name = msg.vinfo.uuid, msg.vinfo.displayName
        state = _sw_state(msg.vinfo.state)
        errors = [msg.vinfo.volumeErr] if msg.vinfo.HasField("volumeErr") else []
        empty = msg.vinfo.state == 0
    else:
        raw_id, name = msg.cinfo.uuid, msg.cinfo.displayName
        state = _sw_state(msg.cinfo.state)
        errors = [msg.cinfo.err] if msg.cinfo.HasField("err") else []
        empty = msg.cinfo.state == 0
    object_id = parse_uuid(raw_id)
    if object_id is None:
        raise ApiError(400, f"{kind} id {_clip(raw_id, 64)!r} is not a UUID")
    if empty and not name and not errors:  # EVE's "deleted": the ID and nothing else
        return ObjectUpdate(kind, object_id, None)
    status = ObjectStatus(
        kind=kind,
        object_id=object_id,
        name=_clip(name, MAX_NAME_CHARS),
        state=state,
        errors=_errors(errors),
        reported_at=_time(msg.atTimeStamp) if msg.HasField("atTimeStamp") else None,
        received_at=received_at,
    )
    return ObjectUpdate(kind, object_id, status)
