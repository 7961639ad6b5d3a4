# SPDX-License-Identifier: Apache-2.0
"""agent.link.checkpoint: ``<name>`` plus known-good ``<name>.bak``, as EVE keeps them (§7.1)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from agent.link.checkpoint import CheckpointStore

FIRST = b"first signed config"
SECOND = b"second signed config"
THIRD = b"third signed config"


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoint", "lastconfig")


def names(store: CheckpointStore) -> list[str]:
    return sorted(p.name for p in store.primary.parent.iterdir())


def test_paths(tmp_path: Path) -> None:
    s = CheckpointStore(tmp_path, "controllercerts")
    assert s.primary == tmp_path / "controllercerts"
    assert s.backup == tmp_path / "controllercerts.bak"


def test_empty_store(store: CheckpointStore) -> None:
    assert list(store.candidates()) == []
    assert store.mtime() is None
    store.promote()  # no primary: a no-op
    assert not store.backup.exists()


def test_first_save_seeds_backup(store: CheckpointStore) -> None:
    store.save(FIRST)
    assert store.primary.read_bytes() == FIRST
    assert store.backup.read_bytes() == FIRST
    assert names(store) == ["lastconfig", "lastconfig.bak"]


def test_second_save_leaves_backup(store: CheckpointStore) -> None:
    store.save(FIRST)
    store.save(SECOND)
    assert store.primary.read_bytes() == SECOND
    assert store.backup.read_bytes() == FIRST
    store.save(THIRD)
    assert store.backup.read_bytes() == FIRST


def test_promote_copies_primary(store: CheckpointStore, caplog: pytest.LogCaptureFixture) -> None:
    store.save(FIRST)
    store.save(SECOND)
    with caplog.at_level(logging.INFO, logger="agent.link.checkpoint"):
        store.promote()
    assert store.backup.read_bytes() == SECOND
    assert store.primary.read_bytes() == SECOND
    assert "promoted" in caplog.text
    # Promoting an unchanged primary writes nothing (and logs nothing).
    caplog.clear()
    before = store.backup.stat().st_ino
    with caplog.at_level(logging.INFO, logger="agent.link.checkpoint"):
        store.promote()
    assert store.backup.stat().st_ino == before
    assert caplog.text == ""


def test_backup_not_reseeded_after_promote(store: CheckpointStore) -> None:
    store.save(FIRST)
    store.save(SECOND)
    store.promote()
    store.save(THIRD)
    assert store.backup.read_bytes() == SECOND


def test_backup_seeded_again_if_lost(store: CheckpointStore) -> None:
    store.save(FIRST)
    store.backup.unlink()
    store.save(SECOND)
    assert store.backup.read_bytes() == SECOND


def test_candidates_order(store: CheckpointStore) -> None:
    store.save(FIRST)
    store.save(SECOND)
    assert list(store.candidates()) == [("lastconfig", SECOND), ("lastconfig.bak", FIRST)]


def test_candidates_only_existing(store: CheckpointStore) -> None:
    store.save(FIRST)
    store.primary.unlink()
    assert list(store.candidates()) == [("lastconfig.bak", FIRST)]
    store.backup.unlink()
    store.restore_primary(SECOND)
    assert list(store.candidates()) == [("lastconfig", SECOND)]


def test_restore_primary(store: CheckpointStore) -> None:
    store.save(FIRST)
    store.save(b"\x00corrupt")
    restored = dict(store.candidates())["lastconfig.bak"]
    store.restore_primary(restored)
    assert store.primary.read_bytes() == FIRST
    assert store.backup.read_bytes() == FIRST


def test_files_are_private(store: CheckpointStore) -> None:
    store.save(FIRST)
    assert store.primary.stat().st_mode & 0o777 == 0o600
    assert store.backup.stat().st_mode & 0o777 == 0o600


def test_mtime(store: CheckpointStore) -> None:
    store.save(FIRST)
    os.utime(store.primary, (1_000_000, 1_234_567))
    assert store.mtime() == 1_234_567


def test_interrupted_save_keeps_old_primary(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(FIRST)
    store.save(SECOND)

    def broken_replace(*_args: Any) -> None:
        raise OSError(errno.EIO, "power lost")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="power lost"):
        store.save(THIRD)
    monkeypatch.undo()
    assert store.primary.read_bytes() == SECOND
    assert store.backup.read_bytes() == FIRST
    assert names(store) == ["lastconfig", "lastconfig.bak"]
    assert list(store.candidates()) == [("lastconfig", SECOND), ("lastconfig.bak", FIRST)]


def test_interrupted_first_save_leaves_nothing(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(*_args: Any) -> None:
        raise OSError(errno.EIO, "power lost")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.save(FIRST)
    monkeypatch.undo()
    assert list(store.candidates()) == []
    assert names(store) == []


def test_interrupted_promote_keeps_old_backup(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(FIRST)
    store.save(SECOND)

    def broken_replace(*_args: Any) -> None:
        raise OSError(errno.EIO, "power lost")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.promote()
    monkeypatch.undo()
    assert store.backup.read_bytes() == FIRST
    assert names(store) == ["lastconfig", "lastconfig.bak"]
