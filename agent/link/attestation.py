"""Attestation client: EVE's state machine from device certificates to an integrity token.

Steps (``pkg/pillar/attest/attest.go``, ``cmd/zedagent/attesttask.go``): send the attestation
certificates (``ATTEST_REQ_CERT``), ask for a nonce, send a quote over it, receive the verdict and
an integrity token; then escrow storage keys.  The token goes into every ``ConfigRequest``; a 403
on ``/config`` means the controller no longer accepts it and attestation starts again.

Without a TPM the quote is empty, exactly as EVE's tpmmgr sends it, and the controller decides
whether a TPM-less device gets a token (Adam does).  The TPM issue plugs a real
:class:`QuoteSource` in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from google.protobuf.message import DecodeError

from agent.link.controllercerts import ControllerCertError, ControllerCertStore
from agent.link.offload import seal_as_device_async
from agent.link.transport import ControllerClient, TransportError
from agent.util.timing import Backoff, wait_or_stop
from agent.wire import envelope
from agent.wire.envelope import Signer
from agent.wire.pb.attest import attest_pb2
from agent.wire.pb.certs import certs_pb2

log = logging.getLogger(__name__)


class AttestState(StrEnum):
    """Mirrors ``info.AttestationState`` (names without the prefix)."""

    UNSPECIFIED = "unspecified"
    NONCE_WAIT = "nonce-wait"
    TPM_QUOTE_WAIT = "tpm-quote-wait"
    ATTEST_WAIT = "attest-wait"
    ATTEST_ESCROW_WAIT = "attest-escrow-wait"
    RESTART_WAIT = "restart-wait"
    COMPLETE = "complete"


class AttestationRejected(Exception):
    """The controller answered the quote with something other than SUCCESS."""


class QuoteSource(Protocol):
    """What attestation needs from the platform (the TPM, or nothing)."""

    def attestation_certs(self) -> list[certs_pb2.ZCert]:
        """Certificates for ATTEST_REQ_CERT; empty when there is nothing to send."""
        ...

    def quote(self, nonce: bytes) -> attest_pb2.ZAttestQuote:
        """A quote over ``nonce``; an empty message without a TPM.  May block (the TPM, the
        event log files): the attestor calls it in a worker thread."""
        ...


class KeyEscrow(Protocol):
    """The vault's side of attestation: keys coming back, and the key to escrow.

    Both calls may block (they use the TPM); the attestor runs them in a worker thread.
    """

    def keys_received(self, keys: list[bytes], policy_pcrs: list[int] | None) -> None:
        """The controller accepted the quote and returned these escrowed keys (maybe none)."""
        ...

    def escrow_blob(self) -> bytes | None:
        """The wrapped vault key the controller should keep, or None when it already has it."""
        ...

    def escrow_stored(self) -> None:
        """The controller confirmed it stored the blob."""
        ...


class NoTpmQuotes:
    """The explicit software-only mode: an empty quote (EVE's no-TPM case).

    ``certs`` are still sent with ATTEST_REQ_CERT: the software ECDH certificate, so that the
    controller can encrypt config secrets for a node without a TPM too.
    """

    def __init__(self, certs: Sequence[certs_pb2.ZCert] = ()) -> None:
        self._certs = list(certs)

    def attestation_certs(self) -> list[certs_pb2.ZCert]:
        return list(self._certs)

    def quote(self, nonce: bytes) -> attest_pb2.ZAttestQuote:
        return attest_pb2.ZAttestQuote()


@dataclass(frozen=True)
class QuoteOutcome:
    """What a successful quote verdict brought: the token and the escrowed vault keys (VSK)."""

    token: bytes
    escrowed_keys: list[bytes]
    #: The PCRs the first VSK's policy names, None when it names none.
    policy_pcrs: list[int] | None


def _code_name(names: dict[int, str], value: int) -> str:
    """An enum value's name, or ``UNKNOWN(value)`` for one this agent's schema lacks (proto3
    enums are open: the controller may send any number)."""
    return names.get(value, f"UNKNOWN({value})")


def quote_outcome(resp: attest_pb2.ZAttestResponse) -> QuoteOutcome:
    """The controller's answer to a quote.  Raises AttestationRejected unless it is a success
    carrying an integrity token."""
    verdict = resp.quoteResp
    if verdict.response != attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS:
        name = _code_name(_RESPONSE_CODES, verdict.response)
        raise AttestationRejected(f"controller rejected the quote: {name}")
    if not verdict.integrity_token:
        raise AttestationRejected("controller accepted the quote but sent no integrity token")
    vsk = [k for k in verdict.keys if k.key_type == attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK]
    policy = next((list(k.policy_pcr_list.pcr_indices) for k in vsk if k.has_policy_pcr_list), None)
    return QuoteOutcome(
        bytes(verdict.integrity_token), [bytes(k.key) for k in vsk if k.key], policy
    )


_RESPONSE_CODES = {v.number: v.name for v in attest_pb2.ZAttestResponseCode.DESCRIPTOR.values}
_STORAGE_CODES = {
    v.number: v.name for v in attest_pb2.AttestStorageKeysResponseCode.DESCRIPTOR.values
}


@dataclass
class AttestStatus:
    state: AttestState = AttestState.UNSPECIFIED
    error: str = ""
    attempts: int = 0
    escrowed_keys: list[bytes] = field(default_factory=list)


class Attestor:
    """Owns the integrity token.  ``token()`` waits for one; ``restart()`` drops it (after 403)."""

    def __init__(
        self,
        client: ControllerClient,
        *,
        device: Signer,
        certs: ControllerCertStore,
        quotes: QuoteSource,
        escrow: KeyEscrow | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._client = client
        self._device = device
        self._certs = certs
        self._quotes = quotes
        self._escrow = escrow
        self._backoff = backoff or Backoff(initial=15.0, maximum=300.0)
        self._token: bytes | None = None
        self._certs_sent = False
        self.status = AttestStatus()

    @property
    def current_token(self) -> bytes | None:
        return self._token

    def restart(self, reason: str) -> None:
        """Forget the token; the next ``token()`` runs the state machine again."""
        if self._token is not None:
            log.info("attestation restarts: %s", reason)
        self._token = None
        self.status.state = AttestState.RESTART_WAIT
        self.status.error = reason

    async def token(self, stop: asyncio.Event) -> bytes | None:
        """The integrity token, attesting first if needed; None if ``stop`` is set before.

        Failures are logged, recorded in ``status`` and retried with backoff; never raises.
        """
        while self._token is None and not stop.is_set():
            self.status.attempts += 1
            try:
                self._token = await self._attest_once()
                self._backoff.reset()
                self.status.state = AttestState.COMPLETE
                self.status.error = ""
                log.info("attestation complete")
            except (
                TransportError,
                AttestationRejected,
                envelope.EnvelopeError,
                ControllerCertError,
                DecodeError,
            ) as exc:
                self.status.state = AttestState.RESTART_WAIT
                self.status.error = str(exc)
                log.warning("attestation failed: %s", exc)
                if await wait_or_stop(stop, self._backoff.next()):
                    return None
        return self._token

    async def _exchange(self, req: attest_pb2.ZAttestReq) -> attest_pb2.ZAttestResponse:
        body = await seal_as_device_async(req.SerializeToString(), self._device)
        resp = await self._client.request("attest", body)
        if resp.status not in (200, 201):
            raise AttestationRejected(f"/attest answered HTTP {resp.status}")
        if self._certs.current is None:
            await self._certs.refresh(self._client)
        assert self._certs.current is not None
        try:
            env = envelope.open_signed(resp.body, self._certs.current.trusted_signers())
        except envelope.UnknownSigner:
            await self._certs.refresh(self._client)
            assert self._certs.current is not None
            env = envelope.open_signed(resp.body, self._certs.current.trusted_signers())
        out = attest_pb2.ZAttestResponse()
        out.ParseFromString(env.payload)
        return out

    async def _attest_once(self) -> bytes:
        certs = self._quotes.attestation_certs()
        if certs and not self._certs_sent:
            req = attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_CERT, certs=certs)
            await self._exchange(req)
            self._certs_sent = True

        self.status.state = AttestState.NONCE_WAIT
        resp = await self._exchange(attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_NONCE))
        nonce = bytes(resp.nonce.nonce)
        if resp.respType != attest_pb2.ATTEST_RESP_NONCE or not nonce:
            raise AttestationRejected("controller sent no nonce")
        if len(nonce) > 64:
            raise AttestationRejected(f"nonce of {len(nonce)} bytes refused")

        self.status.state = AttestState.TPM_QUOTE_WAIT
        # A TPM quote, PCR reads and the event log: blocking, and behind the TPM lock.
        quote = await asyncio.to_thread(self._quotes.quote, nonce)
        self.status.state = AttestState.ATTEST_WAIT
        resp = await self._exchange(
            attest_pb2.ZAttestReq(reqType=attest_pb2.ATTEST_REQ_QUOTE, quote=quote)
        )
        outcome = quote_outcome(resp)
        token = outcome.token
        self.status.escrowed_keys = outcome.escrowed_keys
        if self._escrow is not None:
            await asyncio.to_thread(
                self._escrow.keys_received, outcome.escrowed_keys, outcome.policy_pcrs
            )
            await self._store_keys(token)
        return token

    async def _store_keys(self, token: bytes) -> None:
        """EVE's escrow step: hand the wrapped vault key to the controller with the token."""
        assert self._escrow is not None
        blob = await asyncio.to_thread(self._escrow.escrow_blob)
        if blob is None:
            return
        self.status.state = AttestState.ATTEST_ESCROW_WAIT
        req = attest_pb2.ZAttestReq(reqType=attest_pb2.Z_ATTEST_REQ_TYPE_STORE_KEYS)
        req.storage_keys.integrity_token = token
        req.storage_keys.keys.add(key_type=attest_pb2.ATTEST_VOLUME_KEY_TYPE_VSK, key=blob)
        resp = await self._exchange(req)
        code = resp.storage_keys_resp.response
        if code == attest_pb2.ATTEST_STORAGE_KEYS_RESPONSE_CODE_SUCCESS:
            await asyncio.to_thread(self._escrow.escrow_stored)
            log.info("vault key escrowed with the controller")
            return
        name = _code_name(_STORAGE_CODES, code)
        raise AttestationRejected(f"controller did not store the vault key: {name}")
