"""Decoding EVE's ``newlogs`` uploads: a gzip file of newline-separated JSON log entries.

What EVE sends (``pkg/newlog/cmd``): the AuthContainer payload is one gzip file whose content is
one ``LogEntry`` per line, serialised by Go's ``encoding/json`` (keys ``severity``, ``source``,
``iid``, ``content``, ``msgid``, ``tags``, ``timestamp`` as ``{"seconds":..,"nanos":..}``,
``filename``, ``function``).  The gzip *header* carries metadata: for device logs the comment
field holds ``{"devID":..,"image":..,"eveVersion":..}``; for app logs the file-name field holds
the app's display name.  Python's gzip module skips both fields, so the header is read here by
hand (RFC 1952 §2.3).

The payload is hostile input: it is inflated as a stream with a hard cap on the output, so a
small "gzip bomb" cannot exhaust memory, and parsing stops at a cap on the number of entries, so
a kilobyte that inflates to a megabyte of ``{}`` lines cannot cost hundreds of thousands of
parses and rows.  Every line must be a JSON object.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MAX_UNCOMPRESSED = 1 << 20
"""Per request.  EVE's own files are at most ~50 KB compressed (65536 hard limit)."""
MAX_ENTRIES = 10_000
"""Per request.  EVE's files hold one to three thousand entries; tiny entries are what make an
upload expensive (each is a JSON parse and a database row), so they are counted, not only bytes."""
_CHUNK = 64 * 1024

_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16


class LogUploadError(ValueError):
    """The upload is not a gzip file, is too big once inflated, has too many entries, or holds a
    bad line.  ``lines`` is the number of entries decoded before the refusal."""

    def __init__(self, message: str, *, lines: int = 0) -> None:
        super().__init__(message)
        self.lines = lines


@dataclass(frozen=True)
class GzipHeader:
    """The parts of the first member's header that EVE uses."""

    mtime: int
    name: str | None
    comment: str | None


@dataclass(frozen=True)
class LogUpload:
    """A decoded upload: header metadata and the entries as compact JSON text, in order."""

    header: GzipHeader
    entries: tuple[str, ...]


def parse_header(data: bytes) -> GzipHeader:
    """Read the RFC 1952 member header at the start of ``data``.

    Header strings are Latin-1 (RFC 1952; EVE escapes other characters).  Raises LogUploadError.
    """
    if len(data) < 10 or data[0:2] != b"\x1f\x8b":
        raise LogUploadError("not a gzip file")
    method, flags, mtime = data[2], data[3], struct.unpack_from("<I", data, 4)[0]
    if method != 8:
        raise LogUploadError(f"unsupported gzip compression method {method}")
    pos = 10
    if flags & _FEXTRA:
        if len(data) < pos + 2:
            raise LogUploadError("truncated gzip header")
        (xlen,) = struct.unpack_from("<H", data, pos)
        pos += 2 + xlen
    name: str | None = None
    comment: str | None = None
    if flags & _FNAME:
        name, pos = _zero_terminated(data, pos)
    if flags & _FCOMMENT:
        comment, pos = _zero_terminated(data, pos)
    if flags & _FHCRC:
        pos += 2
    if pos > len(data):
        raise LogUploadError("truncated gzip header")
    return GzipHeader(mtime=mtime, name=name, comment=comment)


def _zero_terminated(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise LogUploadError("truncated gzip header")
    return data[pos:end].decode("latin-1"), end + 1


def _inflated(data: bytes, limit: int) -> Iterator[bytes]:
    """The decompressed content of every gzip member of ``data``, in chunks of at most ``_CHUNK``.

    Inflation is streamed: it never holds more than one chunk beyond what the caller keeps, and
    it stops as soon as more than ``limit`` bytes come out, without inflating the rest.  Raises
    LogUploadError for corrupt or truncated data and for output over the limit.
    """
    produced = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        while not inflater.eof:
            try:
                # One byte more than allowed proves the limit is exceeded.
                chunk = inflater.decompress(pending, min(_CHUNK, limit + 1 - produced))
            except zlib.error as exc:
                raise LogUploadError(f"corrupt gzip data: {exc}") from exc
            produced += len(chunk)
            if produced > limit:
                raise LogUploadError(f"log upload inflates to more than {limit} bytes")
            progressed = bool(chunk) or len(inflater.unconsumed_tail) < len(pending)
            pending = inflater.unconsumed_tail
            if chunk:
                yield chunk
            if not progressed and not inflater.eof:
                raise LogUploadError("truncated gzip data")
        rest = inflater.unused_data
        if rest.strip(b"\x00") == b"":
            break  # trailing zero padding, as gzip(1) tolerates


def inflate(data: bytes, limit: int = MAX_UNCOMPRESSED) -> bytes:
    """Decompress every gzip member of ``data``, refusing more than ``limit`` bytes of output.

    Raises LogUploadError for corrupt or truncated data and for output over the limit.
    """
    return b"".join(_inflated(data, limit))


def decode_upload(
    data: bytes, limit: int = MAX_UNCOMPRESSED, max_entries: int = MAX_ENTRIES
) -> LogUpload:
    """Decode a newlogs payload into its header and entries.

    Lines are parsed as they are inflated, and decoding stops at the first line past
    ``max_entries`` entries or past ``limit`` inflated bytes, so the work is bounded by the
    caps, not by what the upload claims.  Raises LogUploadError, whose ``lines`` says how many
    entries were decoded before the refusal (the work done, for rate limiting).
    """
    header = parse_header(data)
    entries: list[str] = []
    number = 0
    tail = b""

    def take(line: bytes) -> None:
        nonlocal number
        number += 1
        if not line.strip():
            return
        if len(entries) >= max_entries:
            raise LogUploadError(f"more than {max_entries} entries", lines=len(entries))
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
            raise LogUploadError(f"line {number} is not JSON: {exc}", lines=len(entries)) from exc
        if not isinstance(entry, dict):
            raise LogUploadError(f"line {number} is not a JSON object", lines=len(entries))
        # ASCII escapes keep lone surrogates ("\\ud800") storable as UTF-8 text.
        entries.append(json.dumps(entry, separators=(",", ":")))

    try:
        for chunk in _inflated(data, limit):
            cut = chunk.rfind(b"\n")
            if cut < 0:
                tail += chunk
                continue
            lines = (tail + chunk[:cut]).split(b"\n")
            tail = chunk[cut + 1 :]
            for line in lines:
                take(line)
        take(tail)
    except LogUploadError as exc:
        exc.lines = max(exc.lines, len(entries))
        raise
    return LogUpload(header=header, entries=tuple(entries))


def device_log_meta(header: GzipHeader) -> dict[str, object]:
    """Metadata of a device log upload: the JSON in the gzip comment, kept as sent.

    A comment that is not a JSON object is kept as ``{"comment": "..."}`` rather than refused:
    it is informative only.
    """
    meta: dict[str, object] = {}
    if header.comment:
        try:
            parsed = json.loads(header.comment)
        except (ValueError, RecursionError):
            parsed = None
        meta = parsed if isinstance(parsed, dict) else {"comment": header.comment}
    meta["gzipMtime"] = header.mtime
    return meta


def app_log_meta(header: GzipHeader, app_uuid: str) -> dict[str, object]:
    """Metadata of an app log upload: the app's display name from the gzip file name."""
    return {"appUUID": app_uuid, "appName": header.name or "", "gzipMtime": header.mtime}
