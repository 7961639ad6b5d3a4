"""Reading a VM's serial console log file incrementally: new complete lines since the last read.

virtlogd appends what the guest prints on its serial port to the domain's console log file and
rotates it past its size limit (``console.log`` is renamed ``console.log.0``, older ones shift
up, a new ``console.log`` starts).  The reader remembers where it stopped as a
:class:`ConsoleCursor` (the file's inode and the offset of the first unread byte) and, each call:

- reads at most ``limit`` bytes, so one chatty guest costs a bounded amount per round and a
  backlog (the whole log at the first read) is caught up over several rounds;
- after a rotation, first finishes the old file (found by its inode among the rotated names),
  then starts the new one at its beginning; a file that shrank (truncated in place) is read from
  its beginning again;
- tells a new file that got the old one's inode number (the file system reuses them) by its
  first bytes, which the cursor remembers;
- returns only complete lines: an incomplete last line stays unread for the next call, unless
  it did not grow for a whole call (a prompt that waits for input: it is returned then), or it
  fills ``limit`` alone (split there), or its file was rotated away (nothing more will come).

Lines are decoded as UTF-8 (invalid bytes replaced) and stripped of control characters at both
ends (serial consoles end lines with ``\\r\\n``), as EVE's newlogd trims non-graphic characters;
empty lines are skipped.  Blocking file I/O: call it in a worker thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Rotated names searched for a file that was rotated away (virtlogd keeps 3 by default).
ROTATED_SUFFIXES = (".0", ".1", ".2")
#: Leading bytes remembered to recognise a file.
HEAD_BYTES = 64


@dataclass(frozen=True)
class ConsoleCursor:
    """Where the next read starts: in the file with ``inode`` (0: none read yet) that begins
    with ``head`` (its first :data:`HEAD_BYTES` bytes, fewer while it is shorter), at
    ``offset``.

    ``stale`` is the length of the incomplete last line the previous read left unread, to tell a
    line being written from one that waits for input."""

    inode: int = 0
    offset: int = 0
    head: bytes = b""
    stale: int = 0


def clean(raw: bytes) -> str:
    """One line's text: UTF-8 with replacement, control characters stripped at both ends."""
    text = raw.decode("utf-8", "replace")
    start, end = 0, len(text)
    while start < end and _control(text[start]):
        start += 1
    while end > start and _control(text[end - 1]):
        end -= 1
    return text[start:end]


def _control(char: str) -> bool:
    return char != " " and not char.isprintable()


def _split(data: bytes) -> list[str]:
    return [text for raw in data.split(b"\n") if (text := clean(raw))]


def _read(
    path: Path, cursor: ConsoleCursor, limit: int, *, final: bool
) -> tuple[list[str], ConsoleCursor, bool] | None:
    """Lines of the file at ``path`` from ``cursor``: the lines, the new cursor and whether the
    file was read to its end; None when the file is not the cursor's (another inode or other
    first bytes).  ``final``: nothing more will be appended (a rotated file), so an incomplete
    last line is returned too."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_ino != cursor.inode:
            return None
        head = f.read(HEAD_BYTES)
        if not head.startswith(cursor.head):
            return None
        f.seek(cursor.offset)
        data = f.read(limit)
        at_end = len(data) < limit or not f.read(1)
    cut = data.rfind(b"\n") + 1  # 0 when there is no newline
    rest = data[cut:]
    waited = at_end and cursor.stale == len(rest)
    if rest and (final or (not cut and len(data) >= limit) or waited):
        cut = len(data)  # see the module docstring: returned although incomplete
    stale = len(data) - cut if at_end else 0
    after = ConsoleCursor(cursor.inode, cursor.offset + cut, head, stale)
    return _split(data[:cut]), after, at_end


def _rotated(path: Path, inode: int) -> Path | None:
    """The rotated name the file with ``inode`` has now, if any."""
    for suffix in ROTATED_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        try:
            if candidate.stat().st_ino == inode:
                return candidate
        except FileNotFoundError:
            continue
    return None


def read_new_lines(
    path: Path, cursor: ConsoleCursor, limit: int
) -> tuple[list[str], ConsoleCursor]:
    """The complete lines appended to the console log at ``path`` since ``cursor`` (at most
    ``limit`` bytes read), and the cursor for the next call.  A missing file gives no lines and
    the cursor unchanged.  Raises OSError for other trouble reading it."""
    try:
        inode, size = (st := path.stat()).st_ino, st.st_size
    except FileNotFoundError:
        return [], cursor
    lines: list[str] = []
    if cursor.inode and cursor.inode != inode:
        old = _rotated(path, cursor.inode)
        done = old is None
        if old is not None:
            got = _read(old, cursor, limit, final=True)
            if got is not None:
                lines, after, done = got
                limit -= after.offset - cursor.offset
                if not done or limit <= 0:
                    return lines, after
        cursor = ConsoleCursor(inode)
    elif size < cursor.offset:
        cursor = ConsoleCursor(inode)  # truncated in place
    cursor = ConsoleCursor(inode) if not cursor.inode else cursor
    if limit <= 0:
        return lines, cursor
    got = _read(path, cursor, limit, final=False)
    if got is None:  # another file under the same inode number, or replaced meanwhile
        got = _read(path, ConsoleCursor(inode), limit, final=False)
    if got is None:
        return lines, cursor
    more, cursor, _done = got
    return lines + more, cursor
