"""Checkpoint files as EVE keeps them: ``<name>`` plus a known-good ``<name>.bak``.

The primary holds the last thing received (for config: the signed response, byte for byte); the
``.bak`` is the last one that stayed good for a while.  Both are written atomically, so an
interrupted write leaves the previous file whole.  Whoever reads a checkpoint re-verifies it: a
file on disk is never trusted just because we wrote it.

Writes raise OSError (:class:`agent.util.atomicfile.StorageError` when the disk is full or
failing); callers keep what they could not save in memory and try again later, so a full disk
never stops the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from agent.util.atomicfile import read_optional, write_atomic

log = logging.getLogger(__name__)


class CheckpointStore:
    """One named checkpoint under a directory.  Methods raise OSError on I/O failure."""

    def __init__(self, directory: Path, name: str) -> None:
        self.primary = directory / name
        self.backup = directory / f"{name}.bak"

    def save(self, data: bytes) -> None:
        """Write the primary; the first save also seeds the .bak (EVE does the same)."""
        write_atomic(self.primary, data)
        if not self.backup.exists():
            write_atomic(self.backup, data)

    def promote(self) -> None:
        """Make the current primary the known-good copy.  No-op when there is no primary."""
        data = read_optional(self.primary)
        if data is not None and data != read_optional(self.backup):
            write_atomic(self.backup, data)
            log.info("checkpoint %s promoted to %s", self.primary.name, self.backup.name)

    def restore_primary(self, data: bytes) -> None:
        """Replace a corrupt primary with ``data`` (normally the .bak's content)."""
        write_atomic(self.primary, data)

    def replace_backup(self, data: bytes) -> None:
        """Replace a .bak that no longer verifies with ``data`` (a primary that does)."""
        write_atomic(self.backup, data)
        log.warning("checkpoint %s replaced (it did not verify)", self.backup.name)

    def candidates(self) -> Iterator[tuple[str, bytes]]:
        """Yield (file name, bytes) for the primary, then the .bak, for those that exist."""
        for path in (self.primary, self.backup):
            data = read_optional(path)
            if data is not None:
                yield path.name, data

    def mtime(self) -> float | None:
        try:
            return self.primary.stat().st_mtime
        except FileNotFoundError:
            return None
