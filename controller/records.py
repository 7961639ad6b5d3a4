"""Typed records the store hands out; nothing here touches SQLite or protobuf.

Times are UNIX seconds (float) as stored; :func:`rfc3339` formats them for people and JSON.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509

from agent.wire import pki

Clock = Callable[[], float]
"""Returns the current UNIX time; injected so tests can move time (nonce expiry)."""


def rfc3339(ts: float | None) -> str | None:
    """``2026-11-26T13:08:54.226Z`` (UTC, milliseconds), or None for None."""
    if ts is None:
        return None
    when = dt.datetime.fromtimestamp(ts, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AttestState(enum.StrEnum):
    """Where a device stands in attestation, as shown by ``device show``."""

    UNATTESTED = "unattested"
    NONCE_ISSUED = "nonce issued"
    ATTESTED = "attested"
    ATTESTED_NO_TPM = "attested (no TPM)"
    FAILED = "failed"


class OnboardDecision(enum.Enum):
    """Whether an (onboarding certificate, serial) pair may register."""

    ALLOWED = "allowed"
    CERT_NOT_LISTED = "onboarding certificate is not on the allow-list"
    SERIAL_NOT_ALLOWED = "serial is not allowed for this onboarding certificate"


class RegisterOutcome(enum.Enum):
    """Result of a registration attempt; the API maps these to 201 / 200 / 409."""

    CREATED = "created"
    ALREADY_REGISTERED = "already registered with this device certificate"
    SERIAL_CONFLICT = "serial already registered with a different device certificate"
    CERT_CONFLICT = "device certificate already registered for another device"


@dataclass(frozen=True)
class OnboardEntry:
    """One allow-listed onboarding certificate and the serials it may register."""

    cert_sha256: str
    """Hex SHA-256 of the certificate's DER: the allow-list key."""
    subject: str
    cert_pem: bytes
    any_serial: bool
    serials: tuple[str, ...]
    added_at: float


@dataclass(frozen=True)
class Device:
    """A registered device and its per-device policy and attestation state."""

    uuid: str
    cert_pem: bytes
    cert_sha256: bytes
    """SHA-256 of the device certificate's DER: what the device sends as senderCertHash."""
    onboard_sha256: str | None
    serial: str | None
    registered_at: float
    last_seen: float | None
    require_attestation: bool
    allow_no_tpm: bool
    attest_state: AttestState
    attest_reason: str
    attest_at: float | None
    integrity_token: bytes | None

    @cached_property
    def cert(self) -> x509.Certificate:
        return pki.load_cert(self.cert_pem)


@dataclass(frozen=True)
class DeviceCert:
    """One certificate the device sent with ATTEST_REQ_CERT (a ``certs.ZCert``)."""

    cert_type: int
    """``certs.ZCertType`` value (DEVICE_ECDH_EXCHANGE, DEVICE_RESTRICTED_SIGNING, ...)."""
    hash_algo: int
    cert_hash: bytes
    pem: bytes
    is_mutable: bool
    is_tpm: bool
    zcert: bytes
    """The serialised ZCert as received, metadata (TPM2_PUBLIC) included."""


@dataclass(frozen=True)
class NonceRecord:
    """An attestation nonce handed to a device; single use."""

    nonce: bytes
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class ConfigVersion:
    """One stored EdgeDevConfig version; ``config`` is exactly the bytes that are hashed/sent."""

    device_uuid: str
    version: int
    config: bytes
    config_hash: str
    config_timestamp: str
    created_at: float


@dataclass(frozen=True)
class NewConfig:
    """What a config renderer returns for a given version number (see Store.add_config)."""

    config: bytes
    config_hash: str
    config_timestamp: str


class ReportKind(enum.StrEnum):
    """The POSTed device reports stored as one message each."""

    INFO = "info"
    METRICS = "metrics"
    FLOWLOG = "flowlog"
    HARDWAREHEALTH = "hardwarehealth"


@dataclass(frozen=True)
class Report:
    """A stored info / metrics / flowlog / hardware-health message."""

    id: int
    device_uuid: str
    kind: ReportKind
    received_at: float
    raw: bytes
    json: str | None
    """The protobuf JSON mapping, or None when only the raw bytes were kept."""


@dataclass(frozen=True)
class LogRecord:
    """One stored log entry with the metadata of the upload it came in."""

    id: int
    device_uuid: str
    app_uuid: str | None
    received_at: float
    entry: str
    """The LogEntry JSON object as the device wrote it (Go encoding/json keys)."""
    meta: str
    """JSON object with the gzip header metadata of its upload."""


DEFAULT_POLICY_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14)
"""PCRs a device's policy checks unless the admin says otherwise: EVE's vault sealing set
(``DefaultDiskKeySealingPCRs``, SHA-256 0-14 without 5, the GPT)."""


class GoldenSource(enum.StrEnum):
    """Where a device's golden PCR values came from."""

    FIRST_USE = "first use"
    ADMIN = "admin"


@dataclass(frozen=True)
class PcrPolicy:
    """What a device's quoted PCRs must equal.  No golden values: learn them (trust on first use)
    at the next verified quote."""

    pcrs: tuple[int, ...] = DEFAULT_POLICY_PCRS
    """The PCR indexes compared."""
    custom_pcrs: bool = False
    """Whether ``pcrs`` was set by the admin rather than being the default."""
    golden: Mapping[int, bytes] | None = None
    """SHA-256 values of every quoted PCR when they were learnt or accepted."""
    golden_log: bytes | None = None
    """The event log that came with the golden values (to name the events that changed)."""
    golden_source: GoldenSource | None = None
    golden_at: float | None = None


@dataclass(frozen=True)
class PcrReport:
    """The PCRs of the device's last verified quote, and how they compared with the policy."""

    pcrs: Mapping[int, bytes]
    """SHA-256 values reported with the quote (the quoted ones are covered by its signature)."""
    quoted: tuple[int, ...]
    """The PCR indexes the quote's signed digest covers."""
    event_log: bytes | None
    """The event log sent with the quote, inflated; None when none was sent."""
    versions: tuple[tuple[str, str], ...]
    """``(version type, version)`` from the quote (EVE, FIRMWARE...)."""
    reported_at: float
    mismatched: tuple[int, ...] = ()
    """PCR indexes that differed from the golden values (empty when they matched)."""
    detail: str = ""
    """The events that touched the differing PCRs, one per line."""


class ObjectKind(enum.StrEnum):
    """The objects a device reports one info message each for (EVE's ZInfoTypes)."""

    APP = "app"
    NETWORK_INSTANCE = "networkinstance"
    VOLUME = "volume"
    CONTENT_TREE = "contenttree"


@dataclass(frozen=True)
class ObjectError:
    """One ``ErrorInfo`` a device reported for an object."""

    description: str
    time: float | None
    """When it happened, by the device's clock; None when not given (or not a usable time)."""
    severity: str
    """``ERROR``, ``WARNING``, ``NOTICE`` or ``UNSPECIFIED`` (``UNKNOWN(n)`` for other values)."""


@dataclass(frozen=True)
class ObjectStatus:
    """The last state a device reported for one app, network instance, volume or content tree."""

    kind: ObjectKind
    object_id: str
    """The object's UUID, canonical lower-case."""
    name: str
    state: str
    """The state enum's name as sent: ``RUNNING``, ``ERROR``, ... (``ONLINE``, ``INIT`` for a
    network instance, without EVE's ``ZNETINST_STATE_`` prefix)."""
    errors: tuple[ObjectError, ...]
    reported_at: float | None
    """The message's ``atTimeStamp`` (device clock)."""
    received_at: float
