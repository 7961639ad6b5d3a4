"""An in-memory :class:`~agent.drivers.conntrack.Conntrack`: the same filtering and errors as
:class:`~agent.drivers.conntrack.NfConntrack`, no kernel.

Test hooks: :meth:`FakeConntrack.add` puts (or replaces, by id) an entry as traffic would,
:meth:`FakeConntrack.remove` lets one expire, :meth:`FakeConntrack.fail_next` makes the next
call of an operation raise the given error.  Counters of entries added before
:meth:`~FakeConntrack.enable_accounting` read 0, as the kernel's do.
"""

from __future__ import annotations

from dataclasses import replace

from agent.drivers.conntrack import CtEntry
from agent.drivers.errors import DriverError, PermanentError


class FakeConntrack:
    def __init__(self) -> None:
        self.entries: dict[int, CtEntry] = {}
        self.accounting = False
        self.closed = False
        self._fail: dict[str, DriverError] = {}
        self._unaccounted: set[int] = set()

    # --- test hooks
    def add(self, entry: CtEntry) -> None:
        if not self.accounting and entry.id not in self.entries:
            self._unaccounted.add(entry.id)
        self.entries[entry.id] = entry

    def remove(self, entry_id: int) -> None:
        self.entries.pop(entry_id, None)
        self._unaccounted.discard(entry_id)

    def fail_next(self, operation: str, error: DriverError) -> None:
        self._fail[operation] = error

    def _check(self, operation: str) -> None:
        if self.closed:
            raise PermanentError("the driver is closed")
        error = self._fail.pop(operation, None)
        if error is not None:
            raise error

    # --- Conntrack
    async def enable_accounting(self) -> None:
        self._check("enable_accounting")
        self.accounting = True

    async def dump(self, mark: int, mask: int) -> list[CtEntry]:
        self._check("dump")
        out = []
        for entry in self.entries.values():
            if entry.mark & mask != mark & mask:
                continue
            if entry.id in self._unaccounted:
                entry = replace(entry, orig_packets=0, orig_bytes=0, reply_packets=0,
                                reply_bytes=0, start=0.0)  # fmt: skip
            out.append(entry)
        return out

    async def close(self) -> None:
        self.closed = True
