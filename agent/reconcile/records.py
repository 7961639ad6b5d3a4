"""What the workload kinds made, written down before they make it, so a restart can adopt it.

A container, a domain, a volume file or a verified blob says little about the config item it was
made for (a label holds a hash, a file name an ID).  Each workload configurator therefore writes
a small JSON *record* of the item (its compared fields; never a secret) before it creates the
object, and removes it after the object is deleted.  ``observe`` joins the records with what the
drivers see: a record whose object exists is the item as it was made; an object with our mark
and no record (a crash between the two) is adopted as an item that compares unequal, so the
engine repairs or deletes it.  A record whose object is gone is forgotten.

Records live inside the vault (they name apps and images) as ``<root>/<kind>/<key>.json``,
written atomically.  Blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from agent.util.atomicfile import fsync_dir, write_atomic

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A record larger than this is corrupt (they hold a few hundred bytes).
MAX_RECORD = 64 * 1024


class RecordBook:
    """The records of one node's workloads under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, kind: str, key: str) -> Path:
        if not _KEY.match(kind) or not _KEY.match(key):
            raise ValueError(f"bad record name {kind!r}/{key!r}")
        return self.root / kind / f"{key}.json"

    async def save(self, kind: str, key: str, record: dict[str, Any]) -> None:
        """Write the record of ``kind``/``key`` (replaces it).  Raises OSError."""
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        await asyncio.to_thread(write_atomic, self._path(kind, key), data)

    async def remove(self, kind: str, key: str) -> None:
        """Forget the record; absent is fine.  Raises OSError."""
        await asyncio.to_thread(_unlink, self._path(kind, key))

    async def load(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every readable record of ``kind`` by key.  Unreadable ones are logged and skipped
        (the object they describe is then adopted as unknown, never lost)."""
        return await asyncio.to_thread(self._load, kind)

    def _load(self, kind: str) -> dict[str, dict[str, Any]]:
        directory = self.root / kind
        out: dict[str, dict[str, Any]] = {}
        try:
            entries = sorted(directory.iterdir())
        except FileNotFoundError:
            return out
        for path in entries:
            key = path.name.removesuffix(".json")
            if not path.name.endswith(".json") or not _KEY.match(key):
                continue  # temporary files of an interrupted write, foreign files
            try:
                if path.stat().st_size > MAX_RECORD:
                    raise ValueError("too large")
                data = json.loads(path.read_bytes())
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting
                log.warning("record %s/%s unreadable (%s); ignored", kind, key, exc)
                continue
            out[key] = data
        return out


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)
