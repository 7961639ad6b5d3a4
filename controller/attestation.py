"""Judging a device's attestation quote.

The request flow (certs, nonce, quote, key escrow) lives in :mod:`controller.api.attest`; this
module only answers "is this quote good?".  It is pure: everything it needs is passed in, so the
real TPM verifier can be tested with recorded quotes and no server.

A quote is *empty* when the device has no TPM: EVE's tpmmgr then sends a ``ZAttestQuote``
without attestData, signature or PCR values (``cmd/tpmmgr/tpmmgr.go`` ``getQuote``).  Whether an
empty quote is acceptable is per-device policy, decided by the caller before it gets here.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from agent.wire.pb.attest import attest_pb2
from controller.records import DeviceCert, NonceRecord


class VerdictCode(enum.Enum):
    """Outcome of a quote check; mapped one to one onto ``ZAttestResponseCode``."""

    SUCCESS = attest_pb2.Z_ATTEST_RESPONSE_CODE_SUCCESS
    NONCE_MISMATCH = attest_pb2.Z_ATTEST_RESPONSE_CODE_NONCE_MISMATCH
    NO_CERT_FOUND = attest_pb2.Z_ATTEST_RESPONSE_CODE_NO_CERT_FOUND
    QUOTE_FAILED = attest_pb2.Z_ATTEST_RESPONSE_CODE_QUOTE_FAILED


@dataclass(frozen=True)
class Verdict:
    """What the verifier concluded, and why, in words fit for ``device show``."""

    code: VerdictCode
    reason: str
    mismatched_pcrs: tuple[int, ...] = ()
    """PCR indexes whose values differ from what was expected (empty when not compared)."""

    @property
    def ok(self) -> bool:
        return self.code is VerdictCode.SUCCESS


def quote_is_empty(quote: attest_pb2.ZAttestQuote) -> bool:
    """True for the quote a device without a TPM sends (no attestData, signature or PCRs)."""
    return not quote.attestData and not quote.signature and len(quote.pcr_values) == 0


def verify_quote(
    *,
    certs: Sequence[DeviceCert],
    nonce: NonceRecord,
    quote: attest_pb2.ZAttestQuote,
    now: float,
) -> Verdict:
    """Check a non-empty TPM quote against the device's certificates and the nonce it was given.

    ``certs`` are the certificates the device sent with ATTEST_REQ_CERT (the attestation key is
    the DEVICE_RESTRICTED_SIGNING one, the EK the DEVICE_ENDORSEMENT_RSA one with its TPM2_PUBLIC
    metadata); ``nonce`` was already taken from the store, so it is spent whatever the verdict;
    ``now`` is the caller's clock, for certificate validity.  Never raises on bad input: any
    problem with the quote is a verdict.

    Not implemented yet: every non-empty quote fails.  The real check will verify the signature
    over attestData with the attestation key, that attestData is a TPMS_ATTEST quote whose
    extraData equals ``nonce.nonce``, that the PCR digest matches ``quote.pcr_values``, and then
    compare PCRs with a reference, listing the indexes that differ in ``mismatched_pcrs``.
    """
    del certs, nonce, quote, now
    return Verdict(VerdictCode.QUOTE_FAILED, "TPM quote verification not implemented yet")
