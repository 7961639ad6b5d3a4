"""Fast, seeded input generators for the parser fuzzing: byte mutations of valid inputs,
protobuf messages with hostile field values built from a message's descriptor, and nesting.

Everything takes a ``random.Random`` and returns bytes, so the same generator serves the
standalone runner (tools/fuzz.py, a plain seeded loop: millions of inputs) and the Hypothesis
tests (which draw the seed, so a failure names it and replays).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

#: No generated input is larger (parsers have their own caps; this keeps the loop fast).
MAX_INPUT = 256 * 1024

_INTERESTING_8 = (0x00, 0x01, 0x7F, 0x80, 0xFF)
_INTERESTING_16 = (0x0000, 0x0001, 0x7FFF, 0x8000, 0xFFFF)
_INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def _flip_bit(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _set_byte(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice((*_INTERESTING_8, rng.randrange(256)))


def _set_word(data: bytearray, rng: random.Random) -> None:
    """A 2- or 4-byte interesting integer over whatever was there (a length, a count)."""
    if rng.random() < 0.5:
        raw = struct.pack(rng.choice("<>") + "H", rng.choice(_INTERESTING_16))
    else:
        raw = struct.pack(rng.choice("<>") + "I", rng.choice(_INTERESTING_32))
    if len(data) >= len(raw):
        at = rng.randrange(len(data) - len(raw) + 1)
        data[at : at + len(raw)] = raw


def _insert(data: bytearray, rng: random.Random) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, 16, 64)))


def _delete(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.choice((1, 2, 4, 16, 256))]


def _duplicate(data: bytearray, rng: random.Random) -> None:
    """A chunk copied elsewhere, sometimes many times (repeated fields, records, lines)."""
    if not data:
        return
    at = rng.randrange(len(data))
    chunk = bytes(data[at : at + rng.choice((1, 4, 16, 64, 512))])
    times = rng.choice((1, 1, 2, 16, 256))
    dest = rng.randrange(len(data) + 1)
    data[dest:dest] = chunk * times


def _truncate(data: bytearray, rng: random.Random) -> None:
    if data:
        del data[rng.randrange(len(data)) :]


def _overwrite(data: bytearray, rng: random.Random) -> None:
    if data:
        at = rng.randrange(len(data))
        size = min(len(data) - at, rng.choice((1, 2, 4, 8, 32)))
        data[at : at + size] = rng.randbytes(size)


_OPS = (_flip_bit, _set_byte, _set_word, _insert, _delete, _duplicate, _truncate, _overwrite)


def mutate(seeds: Sequence[bytes], rng: random.Random) -> bytes:
    """One seed (or a splice of two) with one to eight random mutations stacked."""
    data = bytearray(rng.choice(seeds))
    if len(seeds) > 1 and rng.random() < 0.1:
        other = rng.choice(seeds)
        data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        rng.choice(_OPS)(data, rng)
        if len(data) > MAX_INPUT:
            del data[MAX_INPUT:]
    return bytes(data)


def random_bytes(rng: random.Random) -> bytes:
    """Random bytes of a random length, short more often than long."""
    return rng.randbytes(rng.choice((0, 1, 2, 4, 8, 16, 64, 256, 1024, 8192)))


#: Text that nests deeply in JSON or YAML (flow and block style), past the recursion limit.
_NESTING = (b"[", b'{"a":', b"- ", b"{a: ", b"[[", b'"a": {')


def nesting(rng: random.Random) -> bytes:
    """A document nested ``depth`` levels deep, depth up to a few thousand."""
    depth = rng.choice((10, 100, 990, 1100, 3000, 6000))
    opener = rng.choice(_NESTING)
    if opener == b"- ":
        return b"".join(b"  " * i + b"- \n" for i in range(min(depth, 400)))
    return opener * depth


# --- protobuf: hostile values on the wire, guided by the message's descriptor --------------------

_VARINTS = (0, 1, 2, 3, 99, 127, 128, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**63 - 1, 2**64 - 1)
_TEXTS = (
    b"",
    b"\x00",
    b"x" * 300,
    b"x" * 70_000,
    b"\xff\xfe",  # not UTF-8: proto3 strings refuse it at parse
    "\u00e9\u2028\U0001f600".encode(),
    b"../../etc/passwd",
    b"6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    b"00000000-0000-0000-0000-000000000000",
    b"10.0.0.1/33",
    b"::1",
    b"-1",
    b"1e999",
    b"nan",
    b"%s%n",
    b"\n\r\t",
)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _delimited(payload: bytes) -> bytes:
    return _varint(len(payload)) + payload


def _scalar(field: FieldDescriptor, rng: random.Random) -> tuple[int, bytes]:
    """(wire type, encoded value) of a hostile value for a non-message field."""
    t = field.type
    if t in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        value = rng.choice(_TEXTS) if rng.random() < 0.8 else rng.randbytes(rng.randrange(64))
        return 2, _delimited(value)
    if t in (
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_FLOAT,
    ):
        return 5, rng.choice((b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", rng.randbytes(4)))
    if t in (
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_DOUBLE,
    ):
        return 1, rng.choice((b"\x00" * 6 + b"\xf8\x7f", b"\xff" * 8, rng.randbytes(8)))
    # Varints: ints, bools, enums (out-of-range enum values decode: proto3 enums are open).
    return 0, _varint(rng.choice(_VARINTS) if rng.random() < 0.8 else rng.getrandbits(64))


def hostile_message(message_type: type[Message], rng: random.Random) -> bytes:
    """Wire bytes of a ``message_type`` message whose fields carry hostile values: extreme integers,
    out-of-range enums, empty, huge or non-UTF-8 strings, NaN floats, repeated fields set
    many times, sub-messages nested as deep as the type allows, unknown fields and now and
    then a wrong wire type.  Most fields are the message's own, so parsing gets deep."""
    return _hostile(cast(Descriptor, message_type.DESCRIPTOR), rng, 0)


def _hostile(desc: Descriptor, rng: random.Random, depth: int) -> bytes:
    out = bytearray()
    fields = desc.fields
    for _ in range(rng.choice((0, 1, 2, 3, 4, 6, 10))):
        if not fields or rng.random() < 0.05:  # an unknown field
            out += _key(rng.randrange(1, 2**29), 2) + _delimited(rng.randbytes(rng.randrange(9)))
            continue
        field = rng.choice(fields)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type
            inner = b"" if depth > 7 or sub is None else _hostile(sub, rng, depth + 1)
            wire, value = 2, _delimited(inner)
        else:
            wire, value = _scalar(field, rng)
        if rng.random() < 0.03:
            wire = rng.choice((0, 1, 2, 5))  # a wrong wire type: DecodeError or unknown field
            value = rng.randbytes(rng.randrange(1, 9)) if wire != 2 else _delimited(b"")
        item = _key(field.number, wire) + value
        times = 1
        if field.is_repeated and rng.random() < 0.3:
            times = rng.choice((2, 10, 100, 1000, 5000))
        # Never past the cap: 5,000 copies of a 70 kB string would take seconds to build.
        out += item * max(1, min(times, (MAX_INPUT - len(out)) // len(item)))
        if len(out) >= MAX_INPUT:
            break
    return bytes(out[:MAX_INPUT])


def nested_message(message_type: type[Message], rng: random.Random) -> bytes:
    """A chain of sub-messages as deep as the schema allows, past protobuf's own depth limit
    when the type is recursive (a Struct/Value inside, for example), else as deep as it goes."""
    path: list[FieldDescriptor] = []
    current: Descriptor | None = cast(Descriptor, message_type.DESCRIPTOR)
    for _ in range(rng.choice((50, 101, 200))):
        if current is None:
            break
        subs = [f for f in current.fields if f.type == FieldDescriptor.TYPE_MESSAGE]
        if not subs:
            break
        field = rng.choice(subs)
        path.append(field)
        current = field.message_type
    data = b""
    for field in reversed(path):
        data = _key(field.number, 2) + _delimited(data)
    return data
