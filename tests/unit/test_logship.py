# SPDX-License-Identifier: Apache-2.0
"""agent.link.logship: newlog-style gzip files (RFC 1952 comment), the spool and the uploader."""

from __future__ import annotations

import gzip
import json
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.link import logship
from agent.link.logship import LogSpool, LogUploader, entry_json, gzip_with_comment
from agent.link.transport import ControllerClient, Response, TransportError
from agent.wire import envelope
from agent.wire.envelope import SoftwareSigner

META = {"devID": "11111111-1111-4111-8111-111111111111", "image": "IMGA", "eveVersion": "0.1.0"}
GO_KEYS = {
    "severity", "source", "iid", "content", "msgid", "tags", "timestamp", "filename", "function",
}  # fmt: skip


def gzip_header(blob: bytes) -> tuple[int, int, int, bytes, int]:
    """Parse an RFC 1952 member header by hand: (flags, mtime, os, comment, header length)."""
    id1, id2, cm, flg, mtime, _xfl, os_byte = struct.unpack("<BBBBIBB", blob[:10])
    assert (id1, id2, cm) == (0x1F, 0x8B, 8)
    pos = 10
    if flg & 0x04:  # FEXTRA
        (xlen,) = struct.unpack("<H", blob[pos : pos + 2])
        pos += 2 + xlen
    if flg & 0x08:  # FNAME
        pos = blob.index(b"\0", pos) + 1
    comment = b""
    if flg & 0x10:  # FCOMMENT
        end = blob.index(b"\0", pos)
        comment = blob[pos:end]
        pos = end + 1
    if flg & 0x02:  # FHCRC
        pos += 2
    return flg, mtime, os_byte, comment, pos


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


# ---------------------------------------------------------------- gzip_with_comment


@pytest.mark.parametrize("data", [b"", b"one line\n", b'{"a":1}\n' * 5000, bytes(range(256)) * 40])
def test_gzip_with_comment_round_trip(data: bytes) -> None:
    comment = json.dumps(META, separators=(",", ":"))
    blob = gzip_with_comment(data, comment, 1_700_000_123)
    assert gzip.decompress(blob) == data
    flg, mtime, os_byte, got_comment, header_len = gzip_header(blob)
    assert flg == 0x10  # only FCOMMENT
    assert mtime == 1_700_000_123
    assert os_byte == 255
    assert json.loads(got_comment) == META
    # Body is raw deflate, trailer is CRC32 and ISIZE (little endian).
    crc, isize = struct.unpack("<II", blob[-8:])
    assert crc == zlib.crc32(data)
    assert isize == len(data)
    assert zlib.decompress(blob[header_len:-8], -15) == data


def test_gzip_file_object_reads_it() -> None:
    blob = gzip_with_comment(b"abc\n" * 10, "{}", 0)
    with gzip.GzipFile(fileobj=__import__("io").BytesIO(blob)) as f:
        assert f.read() == b"abc\n" * 10


def test_gzip_comment_is_latin1_without_nul() -> None:
    blob = gzip_with_comment(b"x", "caf\u00e9 \u2603 a\0b", 5)
    _flg, _mtime, _os, comment, _len = gzip_header(blob)
    assert comment == b"caf\xe9 \\u2603 ab"
    assert gzip.decompress(blob) == b"x"


def test_gzip_mtime_wraps_to_32_bits() -> None:
    _flg, mtime, _os, _c, _l = gzip_header(gzip_with_comment(b"", "", 2**32 + 7))
    assert mtime == 7


# ---------------------------------------------------------------- entry_json


def test_entry_json_go_shape() -> None:
    record = logging.LogRecord(
        "agent.x", logging.WARNING, "/src/mod.py", 42, "hi %s", ("you",), None
    )
    record.created = 1_700_000_000.25
    record.funcName = "fn"
    entry = entry_json(record, 7)
    assert entry == {
        "severity": "warning",
        "source": "eve-agent",
        "content": "hi you",
        "msgid": 7,
        "timestamp": {"seconds": 1_700_000_000, "nanos": 250_000_000},
        "filename": "mod.py:42",
        "function": "fn",
        "tags": {"logger": "agent.x"},
    }
    assert set(entry) <= GO_KEYS


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "fatal"),
        (25, "info"),
    ],
)
def test_entry_severity(level: int, severity: str) -> None:
    record = logging.LogRecord("a", level, "p.py", 1, "m", None, None)
    assert entry_json(record, 0)["severity"] == severity


# ---------------------------------------------------------------- LogSpool


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[LogSpool]:
    sp = LogSpool(tmp_path / "newlog", lambda: dict(META))
    logger = logging.getLogger("eve-agent-unit-logship")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(sp)
    try:
        yield sp
    finally:
        logger.removeHandler(sp)


def log() -> logging.Logger:
    return logging.getLogger("eve-agent-unit-logship")


def test_spool_collects_and_rolls(spool: LogSpool) -> None:
    log().debug("below the handler level")
    log().info("hello %d", 1)
    log().warning("careful")
    try:
        raise OSError("disk on fire")
    except OSError:
        log().exception("it broke")
    assert spool.roll(force=True) == 1
    (path,) = spool.pending()
    assert path.parent == spool.pending_dir
    assert path.name.startswith("dev.") and path.name.endswith(".gz")
    entries = lines_of(path)
    assert [e["content"] for e in entries] == [
        "hello 1",
        "careful",
        "it broke (OSError: disk on fire)",
    ]
    assert [e["severity"] for e in entries] == ["info", "warning", "error"]
    for e in entries:
        assert set(e) <= GO_KEYS
        assert set(e["timestamp"]) == {"seconds", "nanos"}
        assert isinstance(e["timestamp"]["seconds"], int)
        assert 0 <= e["timestamp"]["nanos"] < 10**9
        assert e["tags"] == {"logger": "eve-agent-unit-logship"}
        assert e["source"] == "eve-agent"
        assert e["filename"].startswith("test_logship.py:")
    msgids = [e["msgid"] for e in entries]
    assert msgids == sorted(msgids) and len(set(msgids)) == 3
    _flg, _mtime, _os, comment, _len = gzip_header(path.read_bytes())
    assert json.loads(comment) == META
    # Memory is empty after a roll.
    assert spool.roll(force=True) == 0
    assert len(spool.pending()) == 1


def test_roll_waits_for_age_or_size(spool: LogSpool) -> None:
    assert spool.roll() == 0  # nothing collected
    log().info("young record")
    assert spool.roll(max_age=3600) == 0
    assert spool.pending() == []
    assert spool.roll(max_age=0) == 1
    assert len(spool.pending()) == 1


def test_roll_when_big_enough(spool: LogSpool) -> None:
    for i in range(400):
        log().info("record %d %s", i, "z" * 200)
    assert spool.roll(max_age=3600) >= 1
    assert sum(len(lines_of(p)) for p in spool.pending()) == 400


def test_large_volume_files_stay_under_50kb(spool: LogSpool) -> None:
    """Incompressible content too (hashes, keys, base64): every file is below 50 KB."""
    count = 4000
    for i in range(count):
        log().info("event %d %s", i, secrets.token_urlsafe(96))
    written = spool.roll(force=True)
    files = spool.pending()
    assert written == len(files) > 1
    sizes = [p.stat().st_size for p in files]
    assert max(sizes) < 50_000, sizes
    contents = [e["content"] for p in files for e in lines_of(p)]
    assert len(contents) == count
    assert [int(c.split()[1]) for c in contents] == list(range(count))  # order kept


def test_large_volume_compressible(spool: LogSpool) -> None:
    for i in range(5000):
        log().info("config poll %d: no change", i)
    written = spool.roll(force=True)
    files = spool.pending()
    assert written == len(files) > 1
    assert all(p.stat().st_size < 50_000 for p in files)
    assert sum(len(lines_of(p)) for p in files) == 5000


def test_pending_sorted_numerically(spool: LogSpool) -> None:
    spool.pending_dir.mkdir(parents=True)
    for name in ("dev.100.gz", "dev.20.gz", "dev.3.gz", "other.txt"):
        (spool.pending_dir / name).write_bytes(b"")
    assert [p.name for p in spool.pending()] == ["dev.3.gz", "dev.20.gz", "dev.100.gz"]


def test_trim_drops_oldest(spool: LogSpool, monkeypatch: pytest.MonkeyPatch) -> None:
    spool.pending_dir.mkdir(parents=True)
    for i in range(1, 6):
        (spool.pending_dir / f"dev.{i}.gz").write_bytes(b"x" * 1000)
    monkeypatch.setattr(logship, "MAX_SPOOL_BYTES", 3500)
    log().info("one more")
    spool.roll(force=True)
    names = [p.name for p in spool.pending()]
    assert "dev.1.gz" not in names and "dev.2.gz" not in names
    assert names[:3] == ["dev.3.gz", "dev.4.gz", "dev.5.gz"]
    assert spool.dropped == 2


def test_emit_never_raises(spool: LogSpool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)
    log().info("%d", "not a number")  # formatting fails inside the handler
    log().info("fine")
    spool.roll(force=True)
    assert [e["content"] for e in lines_of(spool.pending()[0])] == ["fine"]


# ---------------------------------------------------------------- LogUploader


class FakeClient:
    """Stands in for ControllerClient: scripted answers, records what was sent."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes | None]] = []

    async def request(self, action: str, body: bytes | None = None) -> Response:
        self.sent.append((action, body))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return Response(answer, b"", "")


def make_files(spool: LogSpool, count: int) -> list[Path]:
    spool.pending_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = spool.pending_dir / f"dev.{1000 + i}.gz"
        path.write_bytes(gzip_with_comment(f"line {i}\n".encode(), "{}", 0))
        paths.append(path)
    return paths


def uploader(client: FakeClient, spool: LogSpool, signer: SoftwareSigner) -> LogUploader:
    return LogUploader(cast(ControllerClient, client), device=signer, spool=spool)


@pytest.mark.parametrize("status", [200, 201])
async def test_upload_deletes_on_success(
    spool: LogSpool, device_signer: SoftwareSigner, status: int
) -> None:
    files = make_files(spool, 3)
    contents = [p.read_bytes() for p in files]
    client = FakeClient(status, status, status)
    up = uploader(client, spool, device_signer)
    assert await up.upload_pending() is True
    assert spool.pending() == []
    assert up.uploaded == 3
    trusted = {envelope.device_cert_hash(device_signer.cert): device_signer.cert}
    assert [a for a, _ in client.sent] == ["newlogs"] * 3
    payloads = []
    for _action, body in client.sent:
        assert body is not None
        payloads.append(envelope.open_signed(body, trusted).payload)
    assert payloads == contents  # oldest first, bytes as on disk


async def test_upload_keeps_files_on_transport_error(
    spool: LogSpool, device_signer: SoftwareSigner
) -> None:
    files = make_files(spool, 3)
    client = FakeClient(200, TransportError("connection refused"))
    up = uploader(client, spool, device_signer)
    assert await up.upload_pending() is False
    assert not files[0].exists()
    assert files[1].exists() and files[2].exists()
    assert len(client.sent) == 2  # stopped at the first failure
    assert up.uploaded == 1


@pytest.mark.parametrize("status", [204, 429, 500, 503, 302])
async def test_upload_keeps_files_on_other_status(
    spool: LogSpool, device_signer: SoftwareSigner, status: int
) -> None:
    files = make_files(spool, 2)
    client = FakeClient(*([status] * 20))
    up = uploader(client, spool, device_signer)
    for _ in range(12):
        assert await up.upload_pending() is False
    assert all(p.exists() for p in files)
    assert not spool.failed_dir.exists()
    assert len(client.sent) == 12


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_file_refused_for_good_moves_to_failed_at_once(
    spool: LogSpool, device_signer: SoftwareSigner, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    files = make_files(spool, 2)
    client = FakeClient(status, 200)
    up = uploader(client, spool, device_signer)
    # The first refusal moves it aside (logged) and the queue goes on with the next file.
    assert await up.upload_pending() is True
    assert not files[0].exists()
    assert (spool.failed_dir / files[0].name).read_bytes() == gzip_with_comment(
        b"line 0\n", "{}", 0
    )
    assert not files[1].exists()
    assert (up.uploaded, up.moved_aside) == (1, 1)
    assert len(client.sent) == 2
    assert f"file {files[0].name} refused for good (HTTP {status})" in caplog.text


@pytest.mark.parametrize("status", [401, 403, 408, 429, 500])
async def test_a_retriable_answer_keeps_the_file(
    spool: LogSpool, device_signer: SoftwareSigner, status: int
) -> None:
    files = make_files(spool, 1)
    client = FakeClient(status, 201)
    up = uploader(client, spool, device_signer)
    assert await up.upload_pending() is False
    assert files[0].exists() and not spool.failed_dir.exists()
    assert await up.upload_pending() is True
    assert not files[0].exists() and not spool.failed_dir.exists()


async def test_upload_nothing_pending(spool: LogSpool, device_signer: SoftwareSigner) -> None:
    client = FakeClient()
    assert await uploader(client, spool, device_signer).upload_pending() is True
    assert client.sent == []


async def test_file_vanishing_is_skipped(
    spool: LogSpool, device_signer: SoftwareSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = make_files(spool, 2)
    real_pending = spool.pending

    def pending_then_vanish() -> list[Path]:
        result = real_pending()
        os.unlink(files[0])
        return result

    monkeypatch.setattr(spool, "pending", pending_then_vanish)
    client = FakeClient(200)
    assert await uploader(client, spool, device_signer).upload_pending() is True
    assert len(client.sent) == 1
    assert not files[1].exists()
