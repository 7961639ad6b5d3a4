"""agent.wire.tcglog: the crypto-agile TCG event log, written, parsed, replayed and attacked."""

from __future__ import annotations

import contextlib
import hashlib
import random
import struct

import pytest

from agent.wire import tcglog
from agent.wire.tcglog import (
    ALG_SHA1,
    ALG_SHA256,
    EV_EFI_ACTION,
    EV_IPL,
    EV_NO_ACTION,
    EV_POST_CODE,
    EV_SEPARATOR,
    Event,
    SpecIdEvent,
    TcgLogError,
    make_event,
)

SHA1_SHA256 = SpecIdEvent(algorithms=((ALG_SHA1, 20), (ALG_SHA256, 32)))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sample_events() -> list[Event]:
    return [
        make_event(0, EV_POST_CODE, b"POST CODE", digested=b"firmware image"),
        make_event(4, EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
        *[make_event(pcr, EV_SEPARATOR, tcglog.SEPARATOR_DATA) for pcr in range(8)],
        make_event(8, EV_IPL, b"grub_cmd: boot\x00", digested=b"boot"),
        make_event(14, EV_EFI_ACTION, b"file:/config/server exist:true content-hash:00"),
    ]


# --- writing and parsing ------------------------------------------------------------------------


def test_round_trip_keeps_every_field() -> None:
    events = sample_events()
    data = tcglog.write_log(events)
    parsed = tcglog.parse(data)
    assert parsed.spec.algorithms == ((ALG_SHA256, 32),)
    assert parsed.spec.spec_version == (2, 0, 2)
    assert parsed.spec.uintn_size == 2
    assert parsed.events == tuple(events)  # index is not compared
    assert [e.index for e in parsed.events] == list(range(1, len(events) + 1))
    # Re-encoding what was parsed gives the same bytes.
    assert tcglog.write_log(parsed.events, parsed.spec) == data


def test_header_layout_matches_the_specification() -> None:
    data = tcglog.encode_spec_id(SpecIdEvent(vendor_info=b"eve"))
    pcr, event_type, digest, size = struct.unpack_from("<II20sI", data)
    assert (pcr, event_type, digest) == (0, EV_NO_ACTION, bytes(20))
    body = data[32:]
    assert len(body) == size
    assert body[:16] == b"Spec ID Event03\x00"
    platform, minor, major, errata, uintn, count = struct.unpack_from("<IBBBBI", body, 16)
    assert (platform, major, minor, errata, uintn, count) == (0, 2, 0, 2, 2, 1)
    assert struct.unpack_from("<HH", body, 28) == (ALG_SHA256, 32)
    assert body[32:] == b"\x03eve"


def test_event_record_layout() -> None:
    event = make_event(7, EV_SEPARATOR, tcglog.SEPARATOR_DATA)
    record = tcglog.encode_event(event)
    assert record == (
        struct.pack("<III", 7, EV_SEPARATOR, 1)
        + struct.pack("<H", ALG_SHA256)
        + sha256(b"\x00\x00\x00\x00")
        + struct.pack("<I", 4)
        + b"\x00\x00\x00\x00"
    )


def test_two_bank_log_parses_and_replays_each_bank() -> None:
    events = [
        make_event(0, EV_POST_CODE, b"code", algorithms=SHA1_SHA256.algorithms),
        make_event(0, EV_SEPARATOR, tcglog.SEPARATOR_DATA, algorithms=SHA1_SHA256.algorithms),
    ]
    parsed = tcglog.parse(tcglog.write_log(events, SHA1_SHA256))
    assert parsed.spec.algorithms == SHA1_SHA256.algorithms
    assert len(parsed.events[0].digests) == 2
    expected_sha1 = bytes(20)
    expected_sha256 = bytes(32)
    for data in (b"code", tcglog.SEPARATOR_DATA):
        expected_sha1 = hashlib.sha1(expected_sha1 + hashlib.sha1(data).digest()).digest()
        expected_sha256 = sha256(expected_sha256 + sha256(data))
    assert tcglog.replay(parsed, ALG_SHA1)[0] == expected_sha1
    assert tcglog.replay(parsed)[0] == expected_sha256


def test_measure_config_records_appended_to_a_two_bank_log_parse() -> None:
    """EVE appends SHA-256-only measure-config records after the firmware log."""
    firmware = tcglog.write_log(
        [make_event(0, EV_POST_CODE, b"x", algorithms=SHA1_SHA256.algorithms)], SHA1_SHA256
    )
    config = tcglog.encode_events([make_event(14, EV_EFI_ACTION, b"file:/config/server")])
    parsed = tcglog.parse(firmware + config)
    assert [e.pcr for e in parsed.events] == [0, 14]
    assert tcglog.replay(parsed)[14] == sha256(bytes(32) + sha256(b"file:/config/server"))
    # The SHA-1 bank cannot be replayed: the PCR 14 record has no SHA-1 digest.
    with pytest.raises(TcgLogError, match="no sha1 digest"):
        tcglog.replay(parsed, ALG_SHA1)


def test_header_less_records_parse_alone() -> None:
    events = [make_event(14, EV_EFI_ACTION, f"file:{i}".encode()) for i in range(3)]
    assert tcglog.parse_events(tcglog.encode_events(events)) == tuple(events)


# --- replay and diff ------------------------------------------------------------------------


def test_replay_matches_hand_computed_extends() -> None:
    events = sample_events()
    values = tcglog.replay(tcglog.parse(tcglog.write_log(events)))
    assert set(values) == set(range(24))
    pcr4 = bytes(32)
    for data in (b"Calling EFI Application from Boot Option", tcglog.SEPARATOR_DATA):
        pcr4 = sha256(pcr4 + sha256(data))
    assert values[4] == pcr4
    assert values[0] == sha256(
        sha256(bytes(32) + sha256(b"firmware image")) + sha256(tcglog.SEPARATOR_DATA)
    )
    assert values[13] == bytes(32)  # untouched
    assert values[14] != bytes(32)
    assert tcglog.touched_pcrs(events) == frozenset({*range(9), 14})


def test_no_action_events_do_not_extend_but_startup_locality_sets_pcr0() -> None:
    plain = [make_event(0, EV_POST_CODE, b"x")]
    noise = [make_event(0, EV_NO_ACTION, b"anything at all"), *plain]
    assert tcglog.replay(noise) == tcglog.replay(plain)
    assert tcglog.touched_pcrs([make_event(3, EV_NO_ACTION, b"x")]) == frozenset()

    locality = make_event(0, EV_NO_ACTION, tcglog.STARTUP_LOCALITY_SIGNATURE + b"\x03")
    assert locality.digest() == bytes(32)  # EV_NO_ACTION digests are zero
    values = tcglog.replay([locality, *plain])
    assert values[0] == sha256(bytes(31) + b"\x03" + sha256(b"x"))


def test_diff_names_differing_pcrs_and_the_events_that_touched_them() -> None:
    events = sample_events()
    values = tcglog.replay(events)
    assert tcglog.diff(events, values) == []
    tampered = {**values, 8: bytes(32), 4: b"\x01" * 32}
    diffs = tcglog.diff(events, tampered)
    assert [d.pcr for d in diffs] == [4, 8]
    assert [e.event_type for e in diffs[0].events] == [EV_EFI_ACTION, EV_SEPARATOR]
    assert diffs[1].events[0].data == b"grub_cmd: boot\x00"
    assert diffs[1].expected == bytes(32)
    assert diffs[1].replayed == values[8]
    # A PCR with no given value differs too, when asked about.
    assert [d.pcr for d in tcglog.diff(events, {}, pcrs=[14])] == [14]


def test_changed_events_finds_what_a_component_change_added() -> None:
    old = sample_events()
    new = [*old[:-2], make_event(8, EV_IPL, b"grub_cmd: boot fast\x00"), old[-1]]
    changed = tcglog.changed_events(old, new, 8)
    assert [e.data for e in changed] == [b"grub_cmd: boot fast\x00"]
    assert tcglog.changed_events(old, new, 4) == ()
    assert "grub_cmd: boot fast" in changed[0].describe()
    assert changed[0].describe().startswith("PCR 8 EV_IPL sha256:")


# --- hostile input ----------------------------------------------------------------------------


def header(count: int, algs: bytes, vendor: bytes = b"\x00") -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 2, 2, count) + algs + vendor
    return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(body)) + body


def record(pcr: int, count: int, digests: bytes, size: int, data: bytes) -> bytes:
    return struct.pack("<III", pcr, EV_IPL, count) + digests + struct.pack("<I", size) + data


SHA256_HEADER = header(1, struct.pack("<HH", ALG_SHA256, 32))
DIGEST = struct.pack("<H", ALG_SHA256) + bytes(32)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"\x00" * 10, "truncated"),
        (struct.pack("<II20sI", 0, EV_POST_CODE, bytes(20), 0), "not a crypto-agile"),
        (struct.pack("<II20sI", 1, EV_NO_ACTION, bytes(20), 0), "not a crypto-agile"),
        (
            struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), 0xFFFFFFFF),
            "too large",
        ),
        (
            struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), 100) + b"Spec ID Event03\x00",
            "truncated",
        ),
        (
            header(1, struct.pack("<HH", ALG_SHA256, 32)).replace(b"Event03", b"Event02"),
            "legacy SHA-1 log format",
        ),
        (header(0, b""), "declares 0 digest algorithms"),
        (header(0xFFFFFFFF, b""), "declares 4294967295 digest algorithms"),
        (header(2, struct.pack("<HH", ALG_SHA256, 32)), "truncated"),
        (header(1, struct.pack("<HH", ALG_SHA256, 20)), "digest size of 20, not 32"),
        (header(1, struct.pack("<HH", 0x7777, 0)), "digest size 0"),
        (header(1, struct.pack("<HH", 0x7777, 4096)), "digest size 4096"),
        (
            header(2, struct.pack("<HHHH", ALG_SHA256, 32, ALG_SHA256, 32)),
            "declares algorithm 0x000b twice",
        ),
        (header(1, struct.pack("<HH", ALG_SHA256, 32), b"\x05ab"), "truncated vendorInfo"),
        (header(1, struct.pack("<HH", ALG_SHA256, 32), b"\x00junk"), "stray bytes"),
        (SHA256_HEADER + record(24, 1, DIGEST, 0, b""), "names PCR 24"),
        (SHA256_HEADER + record(0xFFFFFFFF, 1, DIGEST, 0, b""), "names PCR 4294967295"),
        (SHA256_HEADER + record(0, 0, b"", 0, b""), "has 0 digests"),
        (SHA256_HEADER + record(0, 0xFFFFFFFF, DIGEST, 0, b""), "has 4294967295 digests"),
        (
            SHA256_HEADER + record(0, 1, struct.pack("<H", ALG_SHA1) + bytes(20), 0, b""),
            "algorithm 0x0004, which the header does not declare",
        ),
        (
            SHA256_HEADER + record(0, 1, struct.pack("<H", 0x1234) + bytes(32), 0, b""),
            "algorithm 0x1234",
        ),
        (SHA256_HEADER + record(0, 1, DIGEST[:20], 0, b"")[:30], "truncated"),
        (SHA256_HEADER + record(0, 1, DIGEST, 0xFFFFFFF0, b""), "claims 4294967280 bytes"),
        (SHA256_HEADER + record(0, 1, DIGEST, 10, b"short"), "truncated event #1 data"),
    ],
)
def test_hostile_logs_are_rejected_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(TcgLogError, match=message):
        tcglog.parse(data)


def test_an_unknown_algorithm_in_the_header_is_allowed_but_not_replayable() -> None:
    """Headers may list banks we do not know (SM3, vendor ones); their size comes from there."""
    spec = SpecIdEvent(algorithms=((0x7777, 16), (ALG_SHA256, 32)))
    event = Event(0, EV_IPL, ((0x7777, b"\x01" * 16), (ALG_SHA256, sha256(b"x"))), b"x")
    data = tcglog.write_log([event], spec)
    with pytest.raises(TcgLogError, match="0x7777"):
        tcglog.encode_event(event)  # without the header, its size is unknown
    parsed = tcglog.parse(data)
    assert parsed.events[0].digest(0x7777) == b"\x01" * 16
    assert tcglog.replay(parsed)[0] == sha256(bytes(32) + sha256(b"x"))
    with pytest.raises(TcgLogError, match="cannot replay algorithm 0x7777"):
        tcglog.replay(parsed, 0x7777)


def test_event_and_size_limits() -> None:
    many = tcglog.write_log([make_event(1, EV_IPL, b"")] * 20)
    assert len(tcglog.parse(many, max_events=20).events) == 20
    with pytest.raises(TcgLogError, match="more than 10 events"):
        tcglog.parse(many, max_events=10)
    with pytest.raises(TcgLogError, match="larger than"):
        tcglog.parse(bytes(tcglog.MAX_LOG_BYTES + 1))


def test_every_truncation_is_an_error_or_a_shorter_log() -> None:
    events = sample_events()
    data = tcglog.write_log(events)
    boundaries = {len(tcglog.write_log(events[:n])): n for n in range(len(events) + 1)}
    for cut in range(len(data)):
        if cut in boundaries:
            assert len(tcglog.parse(data[:cut]).events) == boundaries[cut]
        else:
            with pytest.raises(TcgLogError):
                tcglog.parse(data[:cut])


def test_random_corruption_only_ever_raises_tcglogerror() -> None:
    rng = random.Random(1234)
    data = bytearray(tcglog.write_log(sample_events(), SHA1_SHA256))
    for _ in range(3000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            parsed = tcglog.parse(bytes(mutated))
        except TcgLogError:
            continue
        with contextlib.suppress(TcgLogError):
            tcglog.replay(parsed)
    for _ in range(500):
        with contextlib.suppress(TcgLogError):
            tcglog.parse(rng.randbytes(rng.randint(0, 200)))


def test_writer_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(TcgLogError, match="PCR index 24"):
        make_event(24, EV_IPL, b"")
    with pytest.raises(TcgLogError, match="wrong size"):
        tcglog.encode_event(Event(0, EV_IPL, ((ALG_SHA256, b"short"),), b""))
    with pytest.raises(TcgLogError, match="at least one digest"):
        tcglog.encode_event(Event(0, EV_IPL, (), b""))
    with pytest.raises(TcgLogError, match="between 1 and 16"):
        tcglog.encode_spec_id(SpecIdEvent(algorithms=()))
    with pytest.raises(TcgLogError, match="cannot compute"):
        tcglog.hash_data(0x7777, b"")


def test_event_type_names() -> None:
    assert tcglog.event_type_name(EV_SEPARATOR) == "EV_SEPARATOR"
    assert tcglog.event_type_name(tcglog.EV_EFI_BOOT_SERVICES_APPLICATION) == (
        "EV_EFI_BOOT_SERVICES_APPLICATION"
    )
    assert tcglog.event_type_name(0x12345678) == "0x12345678"
