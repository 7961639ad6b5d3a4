"""What every request handler gets: the store, the controller's identity, settings and policy.

Handlers find it on the application under :data:`CONTEXT`; nothing is kept in module globals, so
tests can run several controllers side by side with their own stores and fake verifiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from agent.wire.pb.attest import attest_pb2
from controller import attestation
from controller.certpolicy import CertPolicy
from controller.identity import ControllerIdentity
from controller.limits import ReportLimits
from controller.records import DeviceCert, NonceRecord
from controller.store import Store

MIB = 1 << 20


@dataclass(frozen=True)
class ApiSettings:
    """Limits and lifetimes of the device API."""

    max_body_bytes: int = 4 * MIB
    """Largest request body; bigger requests get 413 before anything is parsed."""
    max_log_bytes: int = MIB
    """Largest inflated newlogs upload per request (EVE's files are ~50 KB compressed)."""
    nonce_lifetime: float = 300.0
    """Seconds an attestation nonce stays valid; each is also single use."""
    max_objects: int = 10_000
    """Most apps, network instances, volumes and content trees kept per device (all kinds
    together); info about one more is refused with 400."""
    body_timeout: float = 60.0
    """Seconds to receive a whole request body once its headers are in (408 and close beyond):
    4 MiB in a minute is ~70 kB/s, slower than any link a node should be managed over."""
    seen_interval: float = 5.0
    """Seconds between two writes of a device's ``last_seen``: every authenticated request
    marks the device seen, but writing it each time put a committed (fsync'd) SQLite write on
    the event loop per request, which a device sending requests as fast as it can turned into
    the controller's bottleneck.  Cluster membership counts a node lost after 30 s at least."""
    limits: ReportLimits = field(default_factory=ReportLimits)
    """Per-upload caps, per-device rates and storage quota of reports and logs."""
    cert_policy: CertPolicy = field(default_factory=CertPolicy)
    """Which device certificates registration accepts."""


class QuoteVerifier(Protocol):
    """Signature of :func:`controller.attestation.verify_quote`; tests pass their own."""

    def __call__(
        self,
        *,
        certs: Sequence[DeviceCert],
        nonce: NonceRecord,
        quote: attest_pb2.ZAttestQuote,
        now: float,
    ) -> attestation.Verdict: ...


@dataclass(frozen=True)
class ApiContext:
    """Shared by all handlers of one application."""

    store: Store
    identity: ControllerIdentity
    settings: ApiSettings = field(default_factory=ApiSettings)
    verify_quote: QuoteVerifier = attestation.verify_quote


CONTEXT = web.AppKey("controller", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
