"""``POST /id/{uuid}/attest``: the attestation exchange, one request type at a time.

EVE's attestation state machine (``pkg/pillar/attest/attest.go``) sends, in order:

1. ``ATTEST_REQ_CERT`` - its ECDH, attestation and EK certificates.  They replace the stored set,
   except that a stored certificate marked ``is_mutable = false`` is never replaced; the refusal
   is recorded on the device and the usual cert response is still sent.
2. ``ATTEST_REQ_NONCE`` - a fresh 32-byte nonce, single use, valid ``nonce_lifetime`` seconds.
3. ``ATTEST_REQ_QUOTE`` - spends the nonce.  An empty quote (no TPM) succeeds when the device may
   run without a TPM; a real quote goes to the verifier.  Success issues a new integrity token,
   which ``/config`` then requires; failure revokes the token.
4. ``Z_ATTEST_REQ_TYPE_STORE_KEYS`` - escrow of the vault key, accepted only with the current
   integrity token.

Escrowed keys go back in ``quoteResp.keys`` only after a *verified* quote: a TPM-less success
proves nothing about the device's state, so it must not unlock a vault sealed by a TPM.

Every answer is 201 with a signed ``ZAttestResponse``; outcomes are in its response codes.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web
from google.protobuf.message import DecodeError

from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2
from controller.api.common import (
    ApiError,
    DeviceRequest,
    device_request,
    note_detail,
    proto_response,
)
from controller.api.context import ApiContext, context
from controller.attestation import (
    Verdict,
    VerdictCode,
    apply_policy,
    pcr_report,
    quote_is_empty,
)
from controller.records import AttestState, DeviceCert

NONCE_BYTES = 32
TOKEN_BYTES = 32


async def attest(request: web.Request) -> web.Response:
    ctx = context(request)
    req = await device_request(request, path_uuid=request.match_info["uuid"])
    ask = attest_pb2.ZAttestReq()
    try:
        ask.ParseFromString(req.payload)
    except DecodeError as exc:
        raise ApiError(400, f"payload is not a ZAttestReq: {exc}") from exc

    if ask.reqType == attest_pb2.ATTEST_REQ_CERT:
        answer, note = _store_certs(ctx, req, ask)
    elif ask.reqType == attest_pb2.ATTEST_REQ_NONCE:
        answer, note = _issue_nonce(ctx, req)
    elif ask.reqType == attest_pb2.ATTEST_REQ_QUOTE:
        answer, note = _check_quote(ctx, req, ask.quote)
    elif ask.reqType == attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS:
        answer, note = _store_keys(ctx, req, ask.storage_keys)
    else:
        raise ApiError(400, f"unsupported attest request type {int(ask.reqType)}")
    note_detail(request, note)
    return proto_response(ctx.identity.seal(answer.SerializeToString()), status=201)


def _store_certs(
    ctx: ApiContext, req: DeviceRequest, ask: attest_pb2.ZAttestReq
) -> tuple[attest_pb2.ZAttestResponse, str]:
    device_uuid = req.device.uuid
    stored = ctx.store.device_certs(device_uuid)
    immutable = {c.cert_type: c for c in stored if not c.is_mutable}
    kept: list[DeviceCert] = []
    refused: list[str] = []
    for zcert in ask.certs:
        incoming = DeviceCert(
            cert_type=int(zcert.type),
            hash_algo=int(zcert.hashAlgo),
            cert_hash=bytes(zcert.certHash),
            pem=bytes(zcert.cert),
            is_mutable=zcert.attributes.is_mutable,
            is_tpm=zcert.attributes.is_tpm,
            zcert=zcert.SerializeToString(),
        )
        pinned = immutable.get(incoming.cert_type)
        if pinned is not None and pinned.pem != incoming.pem:
            refused.append(_cert_type_name(incoming.cert_type))
            continue
        kept.append(incoming)
    # An immutable certificate also survives being left out of a later upload.
    present = {c.cert_type for c in kept}
    kept += [c for t, c in immutable.items() if t not in present]
    ctx.store.set_device_certs(device_uuid, kept)
    if refused:
        note = f"refused to replace immutable certificate(s): {', '.join(refused)}"
        ctx.store.note_attestation(device_uuid, req.device.attest_state, note)
    else:
        note = f"stored {len(kept)} certificate(s)"
    return attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_CERT), note


def _cert_type_name(cert_type: int) -> str:
    try:
        return certs_pb2.ZCertType.Name(cert_type)
    except ValueError:
        return str(cert_type)


def _issue_nonce(ctx: ApiContext, req: DeviceRequest) -> tuple[attest_pb2.ZAttestResponse, str]:
    record = ctx.store.put_nonce(
        req.device.uuid, secrets.token_bytes(NONCE_BYTES), ctx.settings.nonce_lifetime
    )
    ctx.store.note_attestation(req.device.uuid, AttestState.NONCE_ISSUED, "")
    answer = attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_NONCE)
    answer.nonce.nonce = record.nonce
    return answer, "nonce issued"


def _check_quote(
    ctx: ApiContext, req: DeviceRequest, quote: attest_pb2.ZAttestQuote
) -> tuple[attest_pb2.ZAttestResponse, str]:
    device = req.device
    store = ctx.store
    nonce = store.take_nonce(device.uuid)
    now = store.now()
    no_tpm = quote_is_empty(quote)
    verdict: Verdict
    if nonce is None:
        verdict = Verdict(
            VerdictCode.NONCE_MISMATCH, "no nonce outstanding (nonces are single use)"
        )
    elif now > nonce.expires_at:
        verdict = Verdict(VerdictCode.NONCE_MISMATCH, "nonce expired")
    elif no_tpm and device.allow_no_tpm:
        verdict = Verdict(VerdictCode.SUCCESS, "empty quote accepted: device may run without a TPM")
    elif no_tpm:
        verdict = Verdict(VerdictCode.QUOTE_FAILED, "device requires a TPM but sent an empty quote")
    else:
        verdict = ctx.verify_quote(
            certs=store.device_certs(device.uuid), nonce=nonce, quote=quote, now=now
        )
        verdict = apply_policy(
            verdict, device_cert=device.cert, policy=store.pcr_policy(device.uuid)
        )
        report = pcr_report(verdict, now)
        if report is not None:
            store.record_pcr_report(device.uuid, report, learn=verdict.learn)

    answer = attest_pb2.ZAttestResponse(respType=attest_pb2.ATTEST_RESP_QUOTE_RESP)
    answer.quoteResp.response = verdict.code.value
    reason = verdict.reason
    if verdict.mismatched_pcrs:
        reason += f" (PCRs differing: {', '.join(map(str, verdict.mismatched_pcrs))})"
    if not verdict.ok:
        store.set_attestation(device.uuid, AttestState.FAILED, reason, integrity_token=None)
        return answer, f"{verdict.code.name}: {reason}"

    token = secrets.token_urlsafe(TOKEN_BYTES).encode("ascii")
    state = AttestState.ATTESTED_NO_TPM if no_tpm else AttestState.ATTESTED
    store.set_attestation(device.uuid, state, reason, integrity_token=token)
    answer.quoteResp.integrity_token = token
    if not no_tpm:
        for stored_key in store.storage_keys(device.uuid):
            key = answer.quoteResp.keys.add()
            key.ParseFromString(stored_key)
    return answer, str(state)


def _store_keys(
    ctx: ApiContext, req: DeviceRequest, storage: attest_pb2.AttestStorageKeys
) -> tuple[attest_pb2.ZAttestResponse, str]:
    answer = attest_pb2.ZAttestResponse(respType=attest_pb2.Z_ATTEST_RESP_TYPE_STORE_KEYS)
    issued = req.device.integrity_token
    presented = bytes(storage.integrity_token)
    if issued is None or not presented or not hmac.compare_digest(presented, issued):
        answer.storage_keys_resp.response = (
            attest_pb2.ATTEST_STORAGE_KEYS_RESPONSE_CODE_ITOKEN_MISMATCH
        )
        return answer, "store keys refused: integrity token mismatch"
    ctx.store.set_storage_keys(req.device.uuid, [k.SerializeToString() for k in storage.keys])
    answer.storage_keys_resp.response = attest_pb2.ATTEST_STORAGE_KEYS_RESPONSE_CODE_SUCCESS
    return answer, f"stored {len(storage.keys)} key(s)"
