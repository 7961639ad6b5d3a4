"""``POST /id/{uuid}/config``: hand a device its current configuration.

* The device must present the integrity token of its last successful attestation
  (``ConfigRequest.integrity_token``) unless its policy says attestation is not required;
  otherwise 403 with the text EVE documents, and EVE restarts attestation.
* When ``ConfigRequest.configHash`` equals the current hash: 304 with an empty body.
* Otherwise: 200 with a signed ``ConfigResponse{config, configHash}``.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from google.protobuf.message import DecodeError

from agent.wire.pb.config import devconfig_pb2
from controller import configs
from controller.api.common import ApiError, device_request, note_detail, proto_response
from controller.api.context import context

TOKEN_MISMATCH = "attestation failure: integrity token mismatch"


async def config(request: web.Request) -> web.Response:
    ctx = context(request)
    req = await device_request(request, path_uuid=request.match_info["uuid"])
    device = req.device
    ask = devconfig_pb2.ConfigRequest()
    try:
        ask.ParseFromString(req.payload)
    except DecodeError as exc:
        raise ApiError(400, f"payload is not a ConfigRequest: {exc}") from exc

    if device.require_attestation and not _token_matches(
        bytes(ask.integrity_token), device.integrity_token
    ):
        raise ApiError(403, TOKEN_MISMATCH)

    current = ctx.store.current_config(device.uuid)
    if current is None:
        # Every registration stores version 0; this only happens to rows made by hand.
        current = ctx.store.add_config(
            device.uuid,
            lambda _version: configs.default_config(
                device.uuid, device.registered_at, ctx.store.default_config()
            ),
        )
    if ask.configHash and ask.configHash == current.config_hash:
        note_detail(request, f"unchanged, version {current.version}")
        return proto_response(status=304)

    response = devconfig_pb2.ConfigResponse(configHash=current.config_hash)
    response.config.MergeFromString(current.config)
    note_detail(request, f"sent version {current.version}")
    return proto_response(ctx.identity.seal(response.SerializeToString()))


def _token_matches(presented: bytes, issued: bytes | None) -> bool:
    if not presented or issued is None:
        return False
    return hmac.compare_digest(presented, issued)
