"""Zero-touch onboarding: ``/register`` signed by the onboarding key, ``/uuid`` by the device key.

As EVE's ``client`` agent does it (``pkg/pillar/cmd/client/client.go``): register and uuid are
interleaved with exponential backoff (1 s to 10 min, jittered).  A register answered 200 or 201,
or a uuid that succeeds, means the device is known; 409 means another device certificate holds
this (onboarding certificate, serial) pair and is retried forever, loudly.  Without an onboarding
certificate the device must have been pre-registered, and only ``/uuid`` is tried.

Before the device certificate is first shown to the controller, ``record`` (when given) notes it
durably (:func:`agent.link.identity.record_registration`): what lets a later start tell a
half-made identity that never left the node from one the controller knows.  Nothing is sent
until that record is written (a full disk delays onboarding; it is retried with the backoff).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from agent.link.controllercerts import ControllerCertError, ControllerCertStore
from agent.link.offload import seal_as_device_async
from agent.link.transport import ControllerClient, Response, TransportError
from agent.util.ids import parse_uuid
from agent.util.timing import Backoff, wait_or_stop
from agent.wire import envelope, pki
from agent.wire.envelope import Signer
from agent.wire.pb.eveuuid import eveuuid_pb2
from agent.wire.pb.register import register_pb2

log = logging.getLogger(__name__)


class OnboardingError(Exception):
    """A controller answer that onboarding cannot use; the caller retries with backoff."""


@dataclass(frozen=True)
class UuidResult:
    uuid: str
    manufacturer: str
    product_name: str


def register_body(onboard: Signer, device_cert_pem: bytes, serial: str, soft_serial: str) -> bytes:
    """The signed /register body: pemCert and senderCert are base64 of PEM, as EVE sends them."""
    msg = register_pb2.ZRegisterMsg(
        pemCert=base64.b64encode(device_cert_pem), serial=serial, softSerial=soft_serial
    )
    return envelope.seal_as_device(msg.SerializeToString(), onboard, include_cert=True)


async def register(
    client: ControllerClient, onboard: Signer, device: Signer, serial: str, soft_serial: str
) -> int:
    """POST /register; returns the HTTP status.  Raises TransportError."""
    # Signed in a worker thread: the onboarding key may be RSA, slow to sign with.
    body = await asyncio.to_thread(
        register_body, onboard, pki.cert_pem(device.certificate), serial, soft_serial
    )
    resp = await client.request("register", body, device_path=False)
    return resp.status


async def fetch_uuid(
    client: ControllerClient, device: Signer, certs: ControllerCertStore
) -> UuidResult | None:
    """POST /uuid; the UUID on success, None when the controller does not know this device.

    Raises TransportError, OnboardingError (bad answer) or an EnvelopeError subclass.
    """
    body = await seal_as_device_async(eveuuid_pb2.UuidRequest().SerializeToString(), device)
    resp: Response = await client.request("uuid", body, device_path=False)
    if resp.status in (400, 401, 403, 404):
        return None
    if resp.status != 200:
        raise OnboardingError(f"/uuid answered {resp.status}")
    if certs.current is None:
        raise OnboardingError("no controller certificates to verify the /uuid answer")
    env = envelope.open_signed(resp.body, certs.current.trusted_signers())
    return uuid_answer(env.payload)


def uuid_answer(payload: bytes) -> UuidResult:
    """The verified payload of a /uuid answer.  Raises OnboardingError."""
    msg = eveuuid_pb2.UuidResponse()
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise OnboardingError(f"/uuid answer undecodable: {exc}") from exc
    try:
        device_uuid = parse_uuid(msg.uuid, "uuid from controller")
    except ValueError as exc:
        raise OnboardingError(str(exc)) from exc
    return UuidResult(device_uuid, msg.manufacturer, msg.product_name)


async def onboard(
    client: ControllerClient,
    *,
    device: Signer,
    onboard_signer: Signer | None,
    certs: ControllerCertStore,
    serial: str,
    soft_serial: str,
    stop: asyncio.Event,
    backoff: Backoff | None = None,
    record: Callable[[], None] | None = None,
) -> UuidResult | None:
    """Loop until the controller gives this device a UUID; None if ``stop`` is set first.

    ``record`` (blocking, run in a worker thread) is called before the first request that shows
    the device certificate; it may raise OSError, which delays onboarding.  Never raises for
    controller, network or disk trouble: each failure is logged and retried.
    """
    backoff = backoff or Backoff(initial=1.0, maximum=600.0)
    registered = onboard_signer is None
    refetch_certs = False
    recorded = record is None
    while not stop.is_set():
        try:
            if certs.current is None or refetch_certs:
                await certs.refresh(client)
                refetch_certs = False
            if not recorded and record is not None:
                await asyncio.to_thread(record)
                recorded = True
            if not registered and onboard_signer is not None:
                status = await register(client, onboard_signer, device, serial, soft_serial)
                if status in (200, 201):
                    log.info("registered with the controller (HTTP %d)", status)
                    registered = True
                elif status == 409:
                    log.error(
                        "onboarding conflict: serial %r is registered with another device "
                        "certificate",
                        soft_serial or serial,
                    )
                else:
                    log.warning("register answered HTTP %d; trying /uuid", status)
            result = await fetch_uuid(client, device, certs)
            if result is not None:
                backoff.reset()
                return result
            log.info("controller does not know this device yet")
            # Unknown to the controller although registered: the record may have been deleted.
            registered = onboard_signer is None
        except (
            TransportError,
            OnboardingError,
            envelope.EnvelopeError,
            ControllerCertError,
            OSError,
        ) as exc:
            if isinstance(exc, OSError):
                log.warning("onboarding: cannot record the registration, nothing sent: %s", exc)
            else:
                log.warning("onboarding: %s", exc)
            if isinstance(exc, envelope.UnknownSigner):
                # The controller signs with a certificate we do not have (saved certificates
                # from before a rotation): fetch /certs again before the next attempt.
                refetch_certs = True
        delay = backoff.next()
        log.debug("onboarding retry in %.1f s", delay)
        if await wait_or_stop(stop, delay):
            return None
    return None
