"""Measured boot on the node: what firmware, boot loader and EVE's measure-config would extend.

On EVE, UEFI firmware and GRUB measure the boot chain into PCRs 0-9 and 13 and the kernel
exposes their log as ``/sys/kernel/security/tpm0/binary_bios_measurements``; then
``measure-config`` measures ``/config`` into PCR 14 and keeps its own log
(``/persist/status/measurefs_tpm_event_log``).  An emulated node has no firmware, so
:mod:`agent.measure.boot` plays firmware and boot loader once per TPM power cycle, and
:mod:`agent.measure.configfs` plays measure-config.  Both write logs that replay exactly to
the TPM's PCRs; :func:`attestation_log` joins them into the one log sent with a quote.

Every step measures only once per TPM power cycle: a PCR that is no longer zero means the
measurement already happened, and then the saved log is checked against the TPM instead.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

ZERO_PCR = bytes(32)


class PcrBank(Protocol):
    """The part of :class:`agent.drivers.tpm.Tpm` that measuring needs (SHA-256 bank)."""

    def read_pcrs(self, pcrs: Sequence[int]) -> dict[int, bytes]: ...

    def extend_pcr(self, index: int, digest: bytes) -> None: ...


class MeasureState(StrEnum):
    MEASURED = "measured"
    """Fresh power cycle: the events were extended and the log written."""
    ALREADY_MEASURED = "already measured"
    """Measured earlier in this power cycle; the saved log still replays to the TPM."""
    VERIFIED = "verified"
    """A log we did not write (real firmware's) replays to the TPM."""
    MISMATCH = "mismatch"
    """The TPM and the log disagree, or the log is missing or corrupt.  Attestation will fail."""


@dataclass(frozen=True)
class MeasureResult:
    """What a measurement step found or did."""

    state: MeasureState
    log_path: Path
    pcrs: Mapping[int, bytes]
    """The TPM's SHA-256 values of the PCRs this step owns, read after the step."""
    problem: str = ""
    """Why the state is MISMATCH, in words for logs and status."""
    differing: tuple[int, ...] = ()
    """PCRs whose TPM value the log does not replay to (MISMATCH only)."""
    stale: str = ""
    """When set: what changed since this power cycle was measured (takes effect after a TPM
    reset, as on EVE a change takes effect at the next boot)."""

    @property
    def ok(self) -> bool:
        return self.state is not MeasureState.MISMATCH


def attestation_log(boot_log: Path, config_log: Path | None = None) -> bytes | None:
    """The event log to send with a quote: the boot log with the configuration records appended.

    This is how EVE joins the two logs when it keeps a copy (``evetpm/tpm.go``
    ``copyMeasurementLog``): measure-config's records have no header of their own, so the result
    is one crypto-agile log that replays to PCRs 0-23.  (EVE itself sends only the firmware log
    with a quote; ``attesttask.go`` has "XXX : add the measurefs eventlog in another field".)
    None when there is no boot log; a missing configuration log is left out.
    """
    try:
        data = boot_log.read_bytes()
    except FileNotFoundError:
        return None
    if config_log is not None:
        with contextlib.suppress(FileNotFoundError):
            data += config_log.read_bytes()
    return data


def gzip_log(data: bytes) -> bytes:
    """``ZAttestQuote.tpm_binary_event_log`` is the log gzipped (``attesttask.go``)."""
    return gzip.compress(data, mtime=0)
