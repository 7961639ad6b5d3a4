"""Endpoints a device uses before it has a UUID: ping, certs, register, uuid.

Registration follows EVE API v2 and Adam: the device signs ``ZRegisterMsg`` with its onboarding
key and attaches the onboarding certificate (``senderCert``).  The operator allow-lists
onboarding certificates and the serials each may register (``eve-controller onboard add``).
The device is identified by (onboarding certificate, serial), where ``softSerial`` wins over
``serial`` when set, as in Adam:

* new pair -> a device with a random UUID, 201;
* same pair, same device certificate -> 200 (EVE re-registers on every boot);
* same pair, another device certificate, or a device certificate already in use -> 409;
* onboarding certificate not allow-listed, or serial not allowed -> 403;
* device certificate expired, not yet valid, or with a weak key, or an onboarding certificate
  with a weak key -> 400, logged as a warning (see :mod:`controller.certpolicy`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from logging import WARNING

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError

from agent.wire import envelope, pki
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.register import register_pb2
from controller import configs
from controller.api.common import (
    ApiError,
    device_request,
    note_detail,
    note_device,
    proto_response,
    read_body,
)
from controller.api.context import context
from controller.certpolicy import CertRefused, check_device_cert, check_key
from controller.identity import ControllerIdentity
from controller.records import OnboardDecision, RegisterOutcome

_REGISTER_STATUS = {
    RegisterOutcome.CREATED: 201,
    RegisterOutcome.ALREADY_REGISTERED: 200,
    RegisterOutcome.SERIAL_CONFLICT: 409,
    RegisterOutcome.CERT_CONFLICT: 409,
}


def controller_certs(identity: ControllerIdentity) -> bytes:
    """The signed ``ZControllerCert`` that ``/certs`` returns.

    Each ``certHash`` is the first 16 bytes of SHA-256 over the PEM exactly as in ``cert``
    (``HASH_ALGORITHM_SHA256_16BYTES``), which is how EVE matches a response's senderCertHash.
    """
    message = certs_pb2.ZControllerCert()
    for pem, cert_type in (
        (identity.signing_pem, certs_pb2.CERT_TYPE_CONTROLLER_SIGNING),
        (identity.ecdh_pem, certs_pb2.CERT_TYPE_CONTROLLER_ECDH_EXCHANGE),
    ):
        zcert = message.certs.add()
        zcert.hashAlgo = envelope.HASH_SHA256_16
        zcert.certHash = envelope.pem_cert_hash(pem, envelope.HASH_SHA256_16)
        zcert.type = cert_type
        zcert.cert = pem
    return identity.seal(message.SerializeToString())


async def ping(request: web.Request) -> web.Response:
    return proto_response()


async def certs(request: web.Request) -> web.Response:
    return proto_response(controller_certs(context(request).identity))


async def register(request: web.Request) -> web.Response:
    """``POST /register``: see the module docstring for the outcomes."""
    store = context(request).store
    try:
        env = envelope.parse(await read_body(request))
    except envelope.MalformedEnvelope as exc:
        raise ApiError(400, f"malformed envelope: {exc}") from exc
    if env.sender_cert_pem is None:
        raise ApiError(400, "register needs senderCert (the onboarding certificate)")
    try:
        onboard_cert = pki.load_cert(env.sender_cert_pem)
    except ValueError as exc:
        raise ApiError(400, f"senderCert is not a certificate: {exc}") from exc
    try:
        envelope.verify_signature(env, onboard_cert)
    except envelope.BadSignature as exc:
        raise ApiError(401, f"bad signature: {exc}") from exc

    message = register_pb2.ZRegisterMsg()
    try:
        message.ParseFromString(env.payload)
    except DecodeError as exc:
        raise ApiError(400, f"payload is not a ZRegisterMsg: {exc}") from exc
    serial = message.softSerial or message.serial
    if not serial:
        raise ApiError(400, "ZRegisterMsg has neither softSerial nor serial")

    onboard_sha256 = hashlib.sha256(onboard_cert.public_bytes(Encoding.DER)).hexdigest()
    decision = store.onboard_decision(onboard_sha256, serial)
    if decision is not OnboardDecision.ALLOWED:
        raise ApiError(403, f"{decision.value} (serial {serial!r}, onboarding {onboard_sha256})")

    policy = context(request).settings.cert_policy
    try:
        check_key(onboard_cert, policy)
    except CertRefused as exc:
        raise ApiError(400, f"onboarding certificate refused: {exc}", level=WARNING) from exc
    device_pem, device_cert = _device_cert(bytes(message.pemCert))
    try:
        check_device_cert(device_cert, store.now(), policy)
    except CertRefused as exc:
        raise ApiError(
            400, f"device certificate refused (serial {serial!r}): {exc}", level=WARNING
        ) from exc
    outcome, device = store.register_device(
        onboard_sha256=onboard_sha256,
        serial=serial,
        cert_pem=device_pem,
        cert_sha256=envelope.device_cert_hash(device_cert),
        default_config=configs.default_config,
    )
    note_device(request, device.uuid)
    if outcome is not RegisterOutcome.CREATED:
        note_detail(request, outcome.value)
    status = _REGISTER_STATUS[outcome]
    if status == 409:
        raise ApiError(409, outcome.value)
    return proto_response(status=status)


def _device_cert(pem_cert: bytes) -> tuple[bytes, x509.Certificate]:
    """The device certificate from ``ZRegisterMsg.pemCert``: base64 of a PEM (what EVE sends,
    despite the proto comment) or the PEM itself.  Raises ApiError 400."""
    pem = pem_cert
    if b"-----BEGIN" not in pem_cert:
        try:
            pem = base64.b64decode(pem_cert, validate=True)
        except binascii.Error as exc:
            raise ApiError(400, "pemCert is neither PEM nor base64 of PEM") from exc
    try:
        cert = pki.load_cert(pem)
    except ValueError as exc:
        raise ApiError(400, f"pemCert is not a certificate: {exc}") from exc
    # Store one canonical PEM, whatever framing or extra blocks the device sent.
    return cert.public_bytes(Encoding.PEM), cert


async def uuid(request: web.Request) -> web.Response:
    """``POST /uuid``: tell a registered device its UUID."""
    req = await device_request(request)
    try:
        eveuuid_pb2.UuidRequest().ParseFromString(req.payload)
    except DecodeError as exc:
        raise ApiError(400, f"payload is not a UuidRequest: {exc}") from exc
    response = eveuuid_pb2.UuidResponse(uuid=req.device.uuid)
    return proto_response(context(request).identity.seal(response.SerializeToString()))
