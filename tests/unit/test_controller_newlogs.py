"""Decoding newlogs uploads: the RFC 1952 header fields EVE uses, limits, bad lines."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import pytest

from controller import newlogs

ENTRY = {
    "severity": "info",
    "source": "zedagent",
    "content": "hello",
    "msgid": 7,
    "timestamp": {"seconds": 1800000000, "nanos": 5},
}


def make_gzip(
    data: bytes,
    *,
    name: str | None = None,
    comment: str | None = None,
    extra: bytes | None = None,
    header_crc: bool = False,
    mtime: int = 1234,
) -> bytes:
    """A gzip member built by hand, since Python's gzip module cannot write a comment."""
    flags = 0
    fields = b""
    if extra is not None:
        flags |= 4
        fields += struct.pack("<H", len(extra)) + extra
    if name is not None:
        flags |= 8
        fields += name.encode("latin-1") + b"\x00"
    if comment is not None:
        flags |= 16
        fields += comment.encode("latin-1") + b"\x00"
    header = b"\x1f\x8b\x08" + bytes([flags | (2 if header_crc else 0)])
    header += struct.pack("<I", mtime) + b"\x00\xff" + fields
    if header_crc:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def lines(*entries: dict[str, object]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in entries)


def test_device_upload_metadata_comes_from_the_comment() -> None:
    meta = {"devID": "d1", "image": "IMGA", "eveVersion": "0.0.0-test"}
    upload = newlogs.decode_upload(make_gzip(lines(ENTRY, ENTRY), comment=json.dumps(meta)))
    assert len(upload.entries) == 2
    assert json.loads(upload.entries[0]) == ENTRY
    assert upload.header.comment is not None
    described = newlogs.device_log_meta(upload.header)
    assert described == {**meta, "gzipMtime": 1234}


def test_app_upload_name_comes_from_fname() -> None:
    upload = newlogs.decode_upload(make_gzip(lines(ENTRY), name="my-app"))
    assert newlogs.app_log_meta(upload.header, "a-uuid")["appName"] == "my-app"


def test_header_with_extra_field_and_header_crc() -> None:
    data = make_gzip(lines(ENTRY), extra=b"XY\x02\x00ab", name="n", comment="c", header_crc=True)
    upload = newlogs.decode_upload(data)
    assert (upload.header.name, upload.header.comment) == ("n", "c")
    assert len(upload.entries) == 1


def test_python_gzip_output_and_several_members_are_accepted() -> None:
    data = gzip.compress(lines(ENTRY)) + gzip.compress(lines(ENTRY, ENTRY))
    assert len(newlogs.decode_upload(data).entries) == 3


def test_comment_that_is_not_json_is_kept_as_text() -> None:
    upload = newlogs.decode_upload(make_gzip(lines(ENTRY), comment="plain words"))
    assert newlogs.device_log_meta(upload.header)["comment"] == "plain words"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a gzip file"),
        (b"plain text, not gzip", "not a gzip file"),
        (b"\x1f\x8b\x07\x00" + b"\x00" * 6, "compression method"),
        (make_gzip(b"x", comment="c")[:11], "truncated gzip header"),
        (make_gzip(lines(ENTRY))[:-12], "truncated gzip data"),
        (make_gzip(lines(ENTRY))[:12] + b"\xff" * 20, "corrupt gzip data"),
        (make_gzip(b"{not json}\n"), "line 1 is not JSON"),
        (make_gzip(b"[1, 2]\n"), "line 1 is not a JSON object"),
        (make_gzip(b"\xff\xfe\n"), "line 1 is not JSON"),
        (make_gzip(b"[" * 100_000), "line 1 is not JSON"),
    ],
)
def test_bad_uploads_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(newlogs.LogUploadError, match=message):
        newlogs.decode_upload(data)


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = make_gzip(b"\x00" * (64 << 20))  # 64 MiB of zeros, ~64 KB compressed
    assert len(bomb) < 100_000
    with pytest.raises(newlogs.LogUploadError, match="more than"):
        newlogs.inflate(bomb, limit=1 << 20)


def test_limit_counts_all_members() -> None:
    member = make_gzip(b"a" * 600_000)
    newlogs.inflate(member, limit=1 << 20)
    with pytest.raises(newlogs.LogUploadError, match="more than"):
        newlogs.inflate(member + member, limit=1 << 20)


def test_lone_surrogates_are_stored_as_ascii_escapes() -> None:
    upload = newlogs.decode_upload(make_gzip(b'{"content": "\\ud800"}\n'))
    upload.entries[0].encode("utf-8")  # would raise if a raw surrogate slipped through
