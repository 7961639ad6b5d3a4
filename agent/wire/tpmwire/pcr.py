"""``TPML_PCR_SELECTION`` and the digests over selected PCR values: the quote's pcrDigest and
the ``TPM2_PolicyPCR`` policy digest."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.wire.tpmwire._codec import Alg, TpmWireError, _read_with, _Reader, digest

#: TPM_CC_PolicyPCR, which goes into the policy digest.
CC_POLICY_PCR = 0x0000017F
#: Size of pcrSelect a TPM with 24 PCRs uses (PCR_SELECT_MIN), and what go-tpm sends.
PCR_SELECT_SIZE = 3

_DIGEST_SIZES: dict[int, int] = {Alg.SHA1: 20, Alg.SHA256: 32, Alg.SHA384: 48, Alg.SHA512: 64}
_MAX_SELECTIONS = 16  # HASH_COUNT is a handful; anything past this is hostile
_MAX_SELECT_SIZE = 32  # 256 PCRs


@dataclass(frozen=True)
class PcrSelection:
    """One ``TPMS_PCR_SELECTION``: a hash bank and the PCR indexes selected in it."""

    hash_alg: int
    pcrs: tuple[int, ...]
    select_size: int = PCR_SELECT_SIZE

    def __post_init__(self) -> None:
        ordered = tuple(sorted(set(self.pcrs)))
        if ordered and (ordered[0] < 0 or ordered[-1] >= 8 * _MAX_SELECT_SIZE):
            raise TpmWireError(f"PCR index out of range in {self.pcrs}")
        size = max(self.select_size, (ordered[-1] // 8 + 1) if ordered else 0)
        object.__setattr__(self, "pcrs", ordered)
        object.__setattr__(self, "select_size", size)

    def marshal(self) -> bytes:
        bitmap = bytearray(self.select_size)
        for pcr in self.pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        return struct.pack(">HB", self.hash_alg, self.select_size) + bytes(bitmap)

    @classmethod
    def _read(cls, r: _Reader) -> PcrSelection:
        hash_alg = r.u16("pcrSelection hash")
        size = r.u8("sizeofSelect")
        if size > _MAX_SELECT_SIZE:
            raise TpmWireError(f"sizeofSelect {size} is more than {_MAX_SELECT_SIZE}")
        bitmap = r.take(size, "pcrSelect")
        pcrs = tuple(i for i in range(8 * size) if bitmap[i // 8] & (1 << (i % 8)))
        return cls(hash_alg, pcrs, size)


def sha256_selection(pcrs: Iterable[int]) -> tuple[PcrSelection, ...]:
    """The one-bank SHA-256 selection EVE uses for quotes and sealing."""
    return (PcrSelection(Alg.SHA256, tuple(pcrs)),)


def marshal_pcr_selection(selections: Sequence[PcrSelection]) -> bytes:
    """``TPML_PCR_SELECTION``: a count, then each selection."""
    if len(selections) > _MAX_SELECTIONS:
        raise TpmWireError(f"{len(selections)} PCR selections, at most {_MAX_SELECTIONS}")
    return struct.pack(">I", len(selections)) + b"".join(s.marshal() for s in selections)


def _read_pcr_selection(r: _Reader) -> tuple[PcrSelection, ...]:
    count = r.u32("TPML_PCR_SELECTION count")
    if count > _MAX_SELECTIONS:
        raise TpmWireError(f"TPML_PCR_SELECTION claims {count} selections")
    return tuple(PcrSelection._read(r) for _ in range(count))


def unmarshal_pcr_selection(data: bytes) -> tuple[PcrSelection, ...]:
    return _read_with(data, "TPML_PCR_SELECTION", _read_pcr_selection)


def pcr_digest(values: Mapping[int, bytes], selections: Sequence[PcrSelection]) -> bytes:
    """The digest TPM2_Quote and TPM2_PolicyPCR compute: the hash of the selected PCR values
    concatenated in selection order (banks in list order, indexes ascending).

    ``values`` are the values of the one bank selected (the agent only uses SHA-256).  Raises
    TpmWireError when a selected PCR has no value or a value of the wrong size, or when more
    than one bank is selected.
    """
    banks = [s for s in selections if s.pcrs]
    if len(banks) != 1:
        raise TpmWireError(f"expected exactly one PCR bank in the selection, got {len(banks)}")
    bank = banks[0]
    size = _DIGEST_SIZES.get(bank.hash_alg)
    if size is None:
        raise TpmWireError(f"unsupported PCR bank 0x{bank.hash_alg:04x}")
    parts = []
    for pcr in bank.pcrs:
        value = values.get(pcr)
        if value is None:
            raise TpmWireError(f"no value for selected PCR {pcr}")
        if len(value) != size:
            raise TpmWireError(f"PCR {pcr} value is {len(value)} bytes, expected {size}")
        parts.append(bytes(value))
    return digest(bank.hash_alg, b"".join(parts))


def policy_pcr_digest(
    values: Mapping[int, bytes],
    selections: Sequence[PcrSelection],
    *,
    previous: bytes = bytes(32),
) -> bytes:
    """The SHA-256 policy digest after ``TPM2_PolicyPCR(selections)`` with the given values:
    ``SHA-256(previous || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || pcrDigest)`` (Part 3, 23.7).

    This is the ``authPolicy`` of an object sealed to those PCR values.
    """
    if len(previous) != 32:
        raise TpmWireError("previous policy digest must be 32 bytes")
    pcrs = pcr_digest(values, selections)
    body = struct.pack(">I", CC_POLICY_PCR) + marshal_pcr_selection(selections) + pcrs
    return hashlib.sha256(previous + body).digest()
