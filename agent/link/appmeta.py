"""App instance metadata to the controller, as EVE sends it (zedagent's
``publishAppInstMetaData``): a ZInfoMsg of type ZiAppInstMetaData carrying
``ZInfoAppInstMetaData{uuid, type, data}``, queued in the info outbox under one key per app and
type (the latest wins; an emptied one says it is gone)."""

from __future__ import annotations

import time

from agent.link.objectinfo import timestamp
from agent.link.reporting import Outbox
from agent.wire.pb.info import info_pb2


def app_meta_info(device_uuid: str, app_id: str, kind: int, data: bytes) -> info_pb2.ZInfoMsg:
    """The info message for app ``app_id``'s metadata of type ``kind`` (empty ``data``: gone)."""
    msg = info_pb2.ZInfoMsg(
        ztype=info_pb2.ZiAppInstMetaData, devId=device_uuid, atTimeStamp=timestamp(time.time())
    )
    msg.amdinfo.uuid = app_id
    msg.amdinfo.type = kind  # type: ignore[assignment]
    msg.amdinfo.data = data
    return msg


def queue_app_meta(outbox: Outbox, device_uuid: str, app_id: str, kind: int, data: bytes) -> bool:
    """Queue it (see :meth:`Outbox.put`: False when kept in memory only)."""
    key = f"appmeta-{app_id}-{kind}"
    return outbox.put(key, app_meta_info(device_uuid, app_id, kind, data).SerializeToString())
