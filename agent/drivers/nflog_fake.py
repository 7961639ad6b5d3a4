"""An in-memory :class:`~agent.drivers.nflog.Nflog`: the same binding rule (one listener per
group and namespace), bounds and errors as :class:`~agent.drivers.nflog.NflogListener`.

Test hooks: :meth:`FakeNflog.log` is a packet a rule logged (kept only while bound, as the
kernel sends nothing to a group nobody bound); :meth:`FakeNflog.fail_next` makes the next
:meth:`~FakeNflog.start` raise the given error.
"""

from __future__ import annotations

from typing import ClassVar

from agent.drivers.errors import DriverError, PermanentError, TemporaryError
from agent.drivers.nflog import MAX_PENDING, LoggedPacket


class FakeNflog:
    #: (namespace, group) -> the fake bound to it: the kernel's one listener per group.
    _bound: ClassVar[dict[tuple[str | None, int], FakeNflog]] = {}

    def __init__(
        self, group: int, netns: str | None = None, *, max_pending: int = MAX_PENDING
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group} outside 0..65535")
        self.group = group
        self.netns = netns
        self.max_pending = max_pending
        self._pending: list[LoggedPacket] = []
        self._lost = 0
        self._running = False
        self._closed = False
        self._fail: DriverError | None = None

    @property
    def running(self) -> bool:
        return self._running

    @property
    def lost(self) -> int:
        return self._lost

    # --- test hooks
    def log(self, packet: LoggedPacket) -> None:
        if not self._running:
            return
        if len(self._pending) >= self.max_pending:
            self._lost += 1
            return
        self._pending.append(packet)

    def fail_next(self, error: DriverError) -> None:
        self._fail = error

    # --- Nflog
    async def start(self) -> None:
        if self._closed:
            raise PermanentError("the driver is closed")
        if self._running:
            return
        error, self._fail = self._fail, None
        if error is not None:
            raise error
        key = (self.netns, self.group)
        if key in self._bound:
            taken = f"NFLOG group {self.group} is bound by another listener here"
            raise TemporaryError(taken, retry_after=10.0)
        self._bound[key] = self
        self._running = True

    def drain(self) -> list[LoggedPacket]:
        out, self._pending = self._pending, []
        return out

    async def stop(self) -> None:
        if self._closed:
            raise PermanentError("the driver is closed")
        self._unbind()

    def _unbind(self) -> None:
        if self._running:
            self._running = False
            self._bound.pop((self.netns, self.group), None)

    async def close(self) -> None:
        self._unbind()
        self._closed = True
