# SPDX-License-Identifier: Apache-2.0
"""agent.reconcile.consolelog: incremental reads of a VM's console log file (bounded, partial
lines, truncation, virtlogd's rotation)."""

from __future__ import annotations

import os
from pathlib import Path

from agent.reconcile.consolelog import ConsoleCursor, clean, read_new_lines


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_missing_file_keeps_the_cursor(tmp_path: Path) -> None:
    cursor = ConsoleCursor(5, 10)
    assert read_new_lines(tmp_path / "console.log", cursor, 1000) == ([], cursor)


def test_reads_new_complete_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"boot 1\r\nboot 2\r\nlog")
    lines, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    assert lines == ["boot 1", "boot 2"]
    assert cursor.inode == log.stat().st_ino and cursor.offset == len(b"boot 1\r\nboot 2\r\n")
    # The partial line grows and is completed: returned whole, once.
    append(log, b"ging in\n")
    lines, cursor = read_new_lines(log, cursor, 1000)
    assert lines == ["logging in"]
    assert read_new_lines(log, cursor, 1000) == ([], cursor)


def test_a_partial_line_that_stops_growing_is_returned(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"ok\nlogin: ")
    lines, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    assert lines == ["ok"] and cursor.stale == len(b"login: ")
    lines, cursor = read_new_lines(log, cursor, 1000)  # unchanged for a whole call
    assert lines == ["login: "]
    assert cursor.offset == log.stat().st_size and cursor.stale == 0
    append(log, b"root\n")
    assert read_new_lines(log, cursor, 1000)[0] == ["root"]


def test_a_growing_partial_line_waits(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"abc")
    lines, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    assert lines == []
    append(log, b"def")
    lines, cursor = read_new_lines(log, cursor, 1000)
    assert lines == [] and cursor.stale == 6
    append(log, b"\n")
    assert read_new_lines(log, cursor, 1000)[0] == ["abcdef"]


def test_bounded_reads_catch_up_over_calls(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"".join(b"line %03d\n" % i for i in range(100)))  # 9 bytes each
    seen: list[str] = []
    cursor = ConsoleCursor()
    calls = 0
    while True:
        lines, cursor = read_new_lines(log, cursor, 100)
        calls += 1
        if not lines:
            break
        assert len(lines) <= 11
        seen += lines
    assert seen == [f"line {i:03d}" for i in range(100)]
    assert calls > 9


def test_a_line_longer_than_the_limit_is_split(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"x" * 250 + b"\nend\n")
    cursor = ConsoleCursor()
    out: list[str] = []
    for _ in range(5):
        lines, cursor = read_new_lines(log, cursor, 100)
        out += lines
    assert out == ["x" * 100, "x" * 100, "x" * 50, "end"]


def test_truncated_file_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"old 1\nold 2\n")
    _, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    with open(log, "wb") as f:  # truncated in place (same inode)
        f.write(b"new\n")
    assert read_new_lines(log, cursor, 1000)[0] == ["new"]


def test_rotation_finishes_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"a\nb\n")
    _, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    append(log, b"c\nunfinished")  # written before virtlogd rotated
    os.rename(log, tmp_path / "console.log.0")
    append(log, b"d\n")
    lines, cursor = read_new_lines(log, cursor, 1000)
    assert lines == ["c", "unfinished", "d"]
    assert cursor.inode == log.stat().st_ino and cursor.offset == 2


def test_rotation_with_a_small_limit_resumes_in_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"x\n")
    _, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    old_inode = cursor.inode
    append(log, b"".join(b"old %02d\n" % i for i in range(10)))
    os.rename(log, tmp_path / "console.log.0")
    append(log, b"new\n")
    lines, cursor = read_new_lines(log, cursor, 14)
    assert lines == ["old 00", "old 01"] and cursor.inode == old_inode
    out = lines
    for _ in range(10):
        lines, cursor = read_new_lines(log, cursor, 14)
        out += lines
    assert out == [f"old {i:02d}" for i in range(10)] + ["new"]


def test_a_new_file_under_a_reused_inode_number_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"a\n")
    _, cursor = read_new_lines(log, ConsoleCursor(), 1000)
    log.unlink()
    append(log, b"fresh\n")
    assert read_new_lines(log, cursor, 1000)[0] == ["fresh"]


def test_clean_strips_control_characters_and_bad_utf8() -> None:
    assert clean(b"\x1b\r  hello \t\r") == "  hello "
    assert clean(b"caf\xc3\xa9 \xff") == "caf\u00e9 \ufffd"
    assert clean(b"\r\r") == ""


def test_empty_lines_are_skipped(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    append(log, b"\r\n\r\none\r\n\r\n")
    assert read_new_lines(log, ConsoleCursor(), 1000)[0] == ["one"]
