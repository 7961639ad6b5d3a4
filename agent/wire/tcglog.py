"""The TCG PC Client crypto-agile binary event log: writer, parser, replay and diff.

This is the format of ``/sys/kernel/security/tpm0/binary_bios_measurements`` (TCG PC Client
Platform Firmware Profile, "crypto agile log format"), the log EVE gzips into
``ZAttestQuote.tpm_binary_event_log``.  Node and controller share this module: the node writes
logs for its emulated firmware and for the configuration partition, the controller parses and
replays whatever a device sends, so the parser treats its input as hostile.

Layout, all integers little endian:

* the first record is a SHA-1 format ``TCG_PCClientPCREvent`` (pcrIndex 0, ``EV_NO_ACTION``,
  a 20-byte zero digest, eventDataSize, event) whose event is ``TCG_EfiSpecIDEvent``: signature
  ``"Spec ID Event03\\0"``, platformClass u32, specVersionMinor/Major/Errata u8, uintnSize u8,
  numberOfAlgorithms u32, that many ``{algorithmId u16, digestSize u16}``, vendorInfoSize u8,
  vendorInfo;
* then ``TCG_PCR_EVENT2`` records: pcrIndex u32, eventType u32, ``TPML_DIGEST_VALUES`` (count
  u32, then count ``TPMT_HA`` = hashAlg u16 + a digest whose size the header declared),
  eventSize u32, event.

We *write* SHA-256 only.  The agent's TPM driver extends the SHA-256 bank only
(:meth:`agent.drivers.tpm.Tpm.extend_pcr`), EVE quotes and reports SHA-256 PCRs only
(``tpmmgr.go`` ``getQuote``), and EVE's measure-config writes SHA-256-only records
(``pkg/measure-config/src/measurefs.go``).  A SHA-1 digest for an extend that never reached the
SHA-1 bank would be a record that does not replay.  We *parse* any set of banks the header
declares (real firmware commonly logs SHA-1 and SHA-256) and replay SHA-256.

One leniency: an event may carry a subset of the declared banks (Linux's own parser insists on
all of them).  EVE appends its measure-config records, which carry SHA-256 only, to the firmware
log when it keeps a copy (``evetpm/tpm.go`` ``copyMeasurementLog``), and so do we for the
attestation log; that must still parse after a SHA-1 + SHA-256 firmware header.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# --- event types (TCG PC Client PFP, section "Event Types") --------------------------------------

EV_PREBOOT_CERT = 0x00000000
EV_POST_CODE = 0x00000001
EV_UNUSED = 0x00000002
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EVENT_TAG = 0x00000006
EV_S_CRTM_CONTENTS = 0x00000007
EV_S_CRTM_VERSION = 0x00000008
EV_CPU_MICROCODE = 0x00000009
EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
EV_TABLE_OF_DEVICES = 0x0000000B
EV_COMPACT_HASH = 0x0000000C
EV_IPL = 0x0000000D
EV_IPL_PARTITION_DATA = 0x0000000E
EV_NONHOST_CODE = 0x0000000F
EV_NONHOST_CONFIG = 0x00000010
EV_NONHOST_INFO = 0x00000011
EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
EV_EFI_EVENT_BASE = 0x80000000
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_HANDOFF_TABLES = 0x80000009
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2

EVENT_TYPE_NAMES: Mapping[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("EV_") and isinstance(value, int)
}
"""Event type value to its name, for messages."""

# --- digest algorithms (TPM_ALG_ID) -------------------------------------------------------------

ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
ALG_SHA384 = 0x000C
ALG_SHA512 = 0x000D
ALG_SM3_256 = 0x0012
ALG_SHA3_256 = 0x0027
ALG_SHA3_384 = 0x0028
ALG_SHA3_512 = 0x0029

DIGEST_SIZES: Mapping[int, int] = {
    ALG_SHA1: 20,
    ALG_SHA256: 32,
    ALG_SHA384: 48,
    ALG_SHA512: 64,
    ALG_SM3_256: 32,
    ALG_SHA3_256: 32,
    ALG_SHA3_384: 48,
    ALG_SHA3_512: 64,
}
"""Digest sizes of the algorithms we know; a header may declare others (see parse)."""

ALG_NAMES: Mapping[int, str] = {
    ALG_SHA1: "sha1",
    ALG_SHA256: "sha256",
    ALG_SHA384: "sha384",
    ALG_SHA512: "sha512",
    ALG_SM3_256: "sm3_256",
    ALG_SHA3_256: "sha3_256",
    ALG_SHA3_384: "sha3_384",
    ALG_SHA3_512: "sha3_512",
}

_HASHLIB: Mapping[int, str] = {
    ALG_SHA1: "sha1",
    ALG_SHA256: "sha256",
    ALG_SHA384: "sha384",
    ALG_SHA512: "sha512",
    ALG_SHA3_256: "sha3_256",
    ALG_SHA3_384: "sha3_384",
    ALG_SHA3_512: "sha3_512",
}

SHA256_ONLY: tuple[tuple[int, int], ...] = ((ALG_SHA256, 32),)
"""The bank list we write in the Spec ID header."""

NUM_PCRS = 24
"""PC Client TPMs have PCRs 0-23."""

SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
SEPARATOR_DATA = b"\x00\x00\x00\x00"
"""EV_SEPARATOR's event data (and digested data) for a normal, non-error separator."""

# --- limits for hostile input -------------------------------------------------------------------

MAX_LOG_BYTES = 4 << 20
"""A firmware log is tens of KB; EVE does not even send one over ~62 KB compressed."""
MAX_EVENTS = 65536
MAX_EVENT_DATA = 1 << 20
"""Largest event data accepted (a big dbx update is ~15 KB; be generous, but bounded)."""
MAX_ALGORITHMS = 16
MAX_DIGEST_SIZE = 64

_PCR_EVENT_HEADER = struct.Struct("<II20sI")  # TCG_PCClientPCREvent without the event data
_SPEC_ID_FIXED = struct.Struct("<16sIBBBBI")


class TcgLogError(ValueError):
    """The event log is malformed, truncated, too large, or uses something we cannot replay."""


@dataclass(frozen=True)
class SpecIdEvent:
    """The ``TCG_EfiSpecIDEvent`` header: which banks every later record carries."""

    algorithms: tuple[tuple[int, int], ...] = SHA256_ONLY
    """``(algorithmId, digestSize)`` in header order."""
    platform_class: int = 0
    spec_version: tuple[int, int, int] = (2, 0, 2)
    """(major, minor, errata); PFP 1.05 logs say 2.0 errata 2."""
    uintn_size: int = 2
    """1 = UINTN is 32 bits, 2 = 64 bits."""
    vendor_info: bytes = b""

    def digest_size(self, alg: int) -> int | None:
        for alg_id, size in self.algorithms:
            if alg_id == alg:
                return size
        return None


@dataclass(frozen=True)
class Event:
    """One ``TCG_PCR_EVENT2`` record."""

    pcr: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    """``(hashAlg, digest)`` pairs, in record order."""
    data: bytes
    index: int = field(default=-1, compare=False)
    """Position in the log (1 = the first record after the header); -1 when not from a log."""

    def digest(self, alg: int = ALG_SHA256) -> bytes | None:
        for alg_id, value in self.digests:
            if alg_id == alg:
                return value
        return None

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    def describe(self, *, pcr: bool = True) -> str:
        """One line for people: ``#12 PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION sha256:1a2b3c4d``
        (without ``PCR 4`` when ``pcr`` is false).

        Textual event data (GRUB's ``grub_cmd: ...``, measure-config's ``file:...``) is appended,
        shortened.
        """
        where = f"#{self.index} " if self.index >= 0 else ""
        digest = self.digest(ALG_SHA256)
        text = f"{where}PCR {self.pcr} {self.type_name}" if pcr else f"{where}{self.type_name}"
        if digest is not None:
            text += f" sha256:{digest.hex()[:16]}"
        shown = _printable(self.data)
        if shown:
            text += f" {shown!r}"
        return text


@dataclass(frozen=True)
class EventLog:
    """A parsed log: its header and its records in order."""

    spec: SpecIdEvent
    events: tuple[Event, ...]


def event_type_name(event_type: int) -> str:
    return EVENT_TYPE_NAMES.get(event_type, f"0x{event_type:08x}")


def _printable(data: bytes, limit: int = 80) -> str:
    text = data.rstrip(b"\x00")
    if not text or any(b < 0x20 or b > 0x7E for b in text):
        return ""
    decoded = text.decode("ascii")
    return decoded if len(decoded) <= limit else decoded[: limit - 3] + "..."


# --- writing ------------------------------------------------------------------------------------


def hash_data(alg: int, data: bytes) -> bytes:
    """``data`` hashed with TPM algorithm ``alg``; raises TcgLogError for one we cannot compute."""
    name = _HASHLIB.get(alg)
    if name is None:
        raise TcgLogError(f"cannot compute digests with algorithm 0x{alg:04x}")
    return hashlib.new(name, data).digest()


def make_event(
    pcr: int,
    event_type: int,
    data: bytes,
    *,
    digested: bytes | None = None,
    algorithms: Sequence[tuple[int, int]] = SHA256_ONLY,
) -> Event:
    """A record whose digests are the hash of ``digested`` (default: of ``data`` itself).

    Firmware often digests something other than the event data: an image's contents while the
    event holds its load address and device path.  ``EV_NO_ACTION`` records get zero digests, as
    the specification requires.
    """
    _check_pcr(pcr)
    if event_type == EV_NO_ACTION:
        digests = tuple((alg, bytes(size)) for alg, size in algorithms)
    else:
        source = data if digested is None else digested
        digests = tuple((alg, hash_data(alg, source)) for alg, _ in algorithms)
    return Event(pcr=pcr, event_type=event_type, digests=digests, data=bytes(data))


def encode_spec_id(spec: SpecIdEvent = SpecIdEvent()) -> bytes:
    """The SHA-1 format first record carrying the ``TCG_EfiSpecIDEvent``."""
    if not spec.algorithms or len(spec.algorithms) > MAX_ALGORITHMS:
        raise TcgLogError("a log header declares between 1 and 16 algorithms")
    if len(spec.vendor_info) > 255:
        raise TcgLogError("vendor info is at most 255 bytes")
    major, minor, errata = spec.spec_version
    body = _SPEC_ID_FIXED.pack(
        SPEC_ID_SIGNATURE,
        spec.platform_class,
        minor,
        major,
        errata,
        spec.uintn_size,
        len(spec.algorithms),
    )
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in spec.algorithms)
    body += bytes([len(spec.vendor_info)]) + spec.vendor_info
    return _PCR_EVENT_HEADER.pack(0, EV_NO_ACTION, bytes(20), len(body)) + body


def encode_event(event: Event, spec: SpecIdEvent | None = None) -> bytes:
    """One ``TCG_PCR_EVENT2`` record.  With ``spec``, its digests must be banks it declares."""
    _check_pcr(event.pcr)
    if not event.digests:
        raise TcgLogError("an event needs at least one digest")
    parts = [struct.pack("<III", event.pcr, event.event_type, len(event.digests))]
    for alg, digest in event.digests:
        size = spec.digest_size(alg) if spec is not None else DIGEST_SIZES.get(alg)
        if size is None:
            raise TcgLogError(f"digest algorithm 0x{alg:04x} is not declared")
        if size != len(digest):
            raise TcgLogError(f"digest for algorithm 0x{alg:04x} has the wrong size")
        parts.append(struct.pack("<H", alg) + digest)
    parts.append(struct.pack("<I", len(event.data)))
    parts.append(event.data)
    return b"".join(parts)


def encode_events(events: Iterable[Event], spec: SpecIdEvent | None = None) -> bytes:
    """Records without a header: what measure-config writes, and what is appended to a log."""
    return b"".join(encode_event(e, spec) for e in events)


def write_log(events: Iterable[Event], spec: SpecIdEvent = SpecIdEvent()) -> bytes:
    """A complete log: the Spec ID header, then ``events``."""
    return encode_spec_id(spec) + encode_events(events, spec)


# --- parsing ------------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked little-endian reads; every shortfall is a TcgLogError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or size > self.left:
            raise TcgLogError(f"truncated {what} at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


def parse(data: bytes, *, max_events: int = MAX_EVENTS) -> EventLog:
    """Parse a crypto-agile log (header, then records).  Raises TcgLogError.

    Every length is checked against what is left, counts are bounded, each record's digests must
    be banks the header declared (no bank twice), and PCR indexes must be 0-23.
    """
    if len(data) > MAX_LOG_BYTES:
        raise TcgLogError(f"event log is larger than {MAX_LOG_BYTES} bytes")
    reader = _Reader(bytes(data))
    spec = _parse_spec_id(reader)
    events: list[Event] = []
    while reader.left:
        if len(events) >= max_events:
            raise TcgLogError(f"event log has more than {max_events} events")
        events.append(_parse_event(reader, spec, len(events) + 1))
    return EventLog(spec=spec, events=tuple(events))


def parse_events(
    data: bytes, spec: SpecIdEvent = SpecIdEvent(), *, max_events: int = MAX_EVENTS
) -> tuple[Event, ...]:
    """Parse header-less records (a measure-config log) whose banks ``spec`` declares."""
    if len(data) > MAX_LOG_BYTES:
        raise TcgLogError(f"event log is larger than {MAX_LOG_BYTES} bytes")
    reader = _Reader(bytes(data))
    events: list[Event] = []
    while reader.left:
        if len(events) >= max_events:
            raise TcgLogError(f"event log has more than {max_events} events")
        events.append(_parse_event(reader, spec, len(events) + 1))
    return tuple(events)


def _parse_spec_id(reader: _Reader) -> SpecIdEvent:
    pcr = reader.u32("header pcrIndex")
    event_type = reader.u32("header eventType")
    digest = reader.take(20, "header digest")
    size = reader.u32("header eventDataSize")
    if pcr != 0 or event_type != EV_NO_ACTION:
        raise TcgLogError(
            "not a crypto-agile TCG log: the first record must be EV_NO_ACTION on PCR 0"
        )
    if digest != bytes(20):
        raise TcgLogError("the Spec ID record's digest must be zero")
    if size > MAX_EVENT_DATA:
        raise TcgLogError(f"Spec ID record of {size} bytes is too large")
    body = _Reader(reader.take(size, "Spec ID event"))
    signature = body.take(16, "Spec ID signature")
    if signature != SPEC_ID_SIGNATURE:
        if signature.startswith(b"Spec ID Event0"):
            raise TcgLogError(
                f"legacy SHA-1 log format {signature.rstrip(bytes(1))!r} is not supported"
            )
        raise TcgLogError("the first record is not a 'Spec ID Event03' header")
    platform_class = body.u32("platformClass")
    minor = body.u8("specVersionMinor")
    major = body.u8("specVersionMajor")
    errata = body.u8("specErrata")
    uintn_size = body.u8("uintnSize")
    count = body.u32("numberOfAlgorithms")
    if count == 0 or count > MAX_ALGORITHMS:
        raise TcgLogError(f"header declares {count} digest algorithms (1-{MAX_ALGORITHMS})")
    algorithms: list[tuple[int, int]] = []
    for _ in range(count):
        alg = body.u16("algorithmId")
        digest_size = body.u16("digestSize")
        known = DIGEST_SIZES.get(alg)
        if known is not None and known != digest_size:
            raise TcgLogError(
                f"header gives algorithm 0x{alg:04x} a digest size of {digest_size}, not {known}"
            )
        if not 1 <= digest_size <= MAX_DIGEST_SIZE:
            raise TcgLogError(f"header gives algorithm 0x{alg:04x} digest size {digest_size}")
        if any(a == alg for a, _ in algorithms):
            raise TcgLogError(f"header declares algorithm 0x{alg:04x} twice")
        algorithms.append((alg, digest_size))
    vendor_size = body.u8("vendorInfoSize")
    vendor_info = body.take(vendor_size, "vendorInfo")
    if body.left:
        raise TcgLogError(f"{body.left} stray bytes after the Spec ID header")
    return SpecIdEvent(
        algorithms=tuple(algorithms),
        platform_class=platform_class,
        spec_version=(major, minor, errata),
        uintn_size=uintn_size,
        vendor_info=vendor_info,
    )


def _parse_event(reader: _Reader, spec: SpecIdEvent, index: int) -> Event:
    start = reader.pos
    pcr = reader.u32("pcrIndex")
    event_type = reader.u32("eventType")
    if pcr >= NUM_PCRS:
        raise TcgLogError(f"event #{index} at offset {start} names PCR {pcr} (0-23 exist)")
    count = reader.u32("digest count")
    if count == 0 or count > len(spec.algorithms):
        raise TcgLogError(
            f"event #{index} at offset {start} has {count} digests; the header declares "
            f"{len(spec.algorithms)} algorithm(s)"
        )
    digests: list[tuple[int, bytes]] = []
    for _ in range(count):
        alg = reader.u16("hashAlg")
        size = spec.digest_size(alg)
        if size is None:
            raise TcgLogError(
                f"event #{index} at offset {start} uses algorithm 0x{alg:04x}, "
                "which the header does not declare"
            )
        if any(a == alg for a, _ in digests):
            raise TcgLogError(f"event #{index} at offset {start} repeats algorithm 0x{alg:04x}")
        digests.append((alg, reader.take(size, "digest")))
    size = reader.u32("eventSize")
    if size > MAX_EVENT_DATA:
        raise TcgLogError(f"event #{index} at offset {start} claims {size} bytes of data")
    data = reader.take(size, f"event #{index} data")
    return Event(pcr=pcr, event_type=event_type, digests=tuple(digests), data=data, index=index)


def _check_pcr(pcr: int) -> None:
    if not 0 <= pcr < NUM_PCRS:
        raise TcgLogError(f"PCR index {pcr} is out of range (0-23)")


# --- replay and diff ----------------------------------------------------------------------------


def initial_pcrs(events: Iterable[Event] = (), alg: int = ALG_SHA256) -> dict[int, bytes]:
    """PCR values at TPM2_Startup: zeros, except PCR 0 after an H-CRTM ``StartupLocality``.

    A ``StartupLocality`` EV_NO_ACTION record on PCR 0 says the TPM was started from locality 3
    or 4, which makes PCR 0 start as ``00..0L`` rather than zero (PFP "Startup Locality Event").
    """
    size = DIGEST_SIZES.get(alg)
    if size is None:
        raise TcgLogError(f"cannot replay algorithm 0x{alg:04x}")
    values = {i: bytes(size) for i in range(NUM_PCRS)}
    for event in events:
        if (
            event.event_type == EV_NO_ACTION
            and event.pcr == 0
            and event.data.startswith(STARTUP_LOCALITY_SIGNATURE)
            and len(event.data) == len(STARTUP_LOCALITY_SIGNATURE) + 1
        ):
            values[0] = bytes(size - 1) + event.data[-1:]
            break
    return values


def extend(value: bytes, digest: bytes, alg: int = ALG_SHA256) -> bytes:
    """``PCR := H(PCR || digest)``, what TPM2_PCR_Extend does to one bank."""
    return hash_data(alg, value + digest)


def replay(events: Iterable[Event] | EventLog, alg: int = ALG_SHA256) -> dict[int, bytes]:
    """Final values of PCRs 0-23 in bank ``alg`` after every extending record, from startup.

    EV_NO_ACTION records are not extended.  A record without a digest for ``alg`` is an error:
    the bank's value cannot be known.  Raises TcgLogError.
    """
    seq = list(events.events if isinstance(events, EventLog) else events)
    values = initial_pcrs(seq, alg)
    for event in seq:
        if event.event_type == EV_NO_ACTION:
            continue
        digest = event.digest(alg)
        if digest is None:
            raise TcgLogError(
                f"event #{event.index} on PCR {event.pcr} has no {ALG_NAMES.get(alg, hex(alg))} "
                "digest, so that bank cannot be replayed"
            )
        values[event.pcr] = extend(values[event.pcr], digest, alg)
    return values


def touched_pcrs(events: Iterable[Event] | EventLog) -> frozenset[int]:
    """PCR indexes that at least one extending record changes."""
    seq = events.events if isinstance(events, EventLog) else events
    return frozenset(e.pcr for e in seq if e.event_type != EV_NO_ACTION)


def events_for(events: Iterable[Event] | EventLog, pcr: int) -> tuple[Event, ...]:
    """The extending records of one PCR, in order."""
    seq = events.events if isinstance(events, EventLog) else events
    return tuple(e for e in seq if e.pcr == pcr and e.event_type != EV_NO_ACTION)


@dataclass(frozen=True)
class PcrDiff:
    """A PCR whose replayed value differs from the value it was compared with."""

    pcr: int
    replayed: bytes
    expected: bytes | None
    """The value compared with; None when none was given for this PCR."""
    events: tuple[Event, ...]
    """The records that extended this PCR."""


def diff(
    events: Iterable[Event] | EventLog,
    values: Mapping[int, bytes],
    *,
    pcrs: Iterable[int] | None = None,
    alg: int = ALG_SHA256,
) -> list[PcrDiff]:
    """Which PCRs replay to something other than ``values``, and which records touched them.

    Compares ``pcrs`` (default: every PCR the log touches).  Raises TcgLogError when the log
    cannot be replayed.
    """
    seq = list(events.events if isinstance(events, EventLog) else events)
    replayed = replay(seq, alg)
    which = touched_pcrs(seq) if pcrs is None else frozenset(pcrs)
    out = []
    for pcr in sorted(which):
        _check_pcr(pcr)
        expected = values.get(pcr)
        if expected != replayed[pcr]:
            out.append(PcrDiff(pcr, replayed[pcr], expected, events_for(seq, pcr)))
    return out


def changed_events(
    reference: Iterable[Event] | EventLog, current: Iterable[Event] | EventLog, pcr: int
) -> tuple[Event, ...]:
    """Records of ``current`` on ``pcr`` that ``reference`` does not have (same type, data and
    SHA-256 digest), counting repeats: what a component change added to that PCR."""
    remaining: dict[tuple[int, bytes | None, bytes], int] = {}
    for event in events_for(reference, pcr):
        key = (event.event_type, event.digest(), event.data)
        remaining[key] = remaining.get(key, 0) + 1
    out = []
    for event in events_for(current, pcr):
        key = (event.event_type, event.digest(), event.data)
        if remaining.get(key, 0) > 0:
            remaining[key] -= 1
        else:
            out.append(event)
    return tuple(out)
