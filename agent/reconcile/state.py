"""Per-item state the engine keeps across reconcile passes, its retry policy, and owner roll-up.

Each item has one :class:`ItemStatus`: where it is (pending with a reason, in progress, created,
failed), its last error with the time, how many attempts failed in a row and when the next retry
is due.  Failures roll up to the item's owner (:class:`OwnerStatus`), which is what the agent
reports to the controller and shows in ``eve-agent status``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.reconcile.items import Action, ItemRef, OwnerRef

_RNG = random.Random()


class ItemState(StrEnum):
    PENDING = "pending"  # wanted, waiting for a dependency or its retry time
    IN_PROGRESS = "in-progress"  # an operation is running
    CREATED = "created"  # exists as desired
    FAILED = "failed"  # the last operation failed
    DELETING = "deleting"  # not wanted any more, waiting for its dependents to go


@dataclass
class ItemStatus:
    """Mutable state of one item, kept by the engine across passes (not across restarts)."""

    state: ItemState = ItemState.PENDING
    #: Why a pending item waits, or what the failure was.
    reason: str = ""
    last_error: str = ""
    error_time: float = 0.0  # wall clock, for reports
    error_action: Action | None = None
    permanent: bool = False
    #: Failed attempts in a row (reset by a success).
    attempts: int = 0
    #: Monotonic time before which a failed operation is not retried.
    next_retry: float = 0.0
    #: The desired item a permanent failure was for; retried when the desired item differs.
    failed_for: Any = None
    #: Monotonic start of the running operation (for liveness).
    started: float = 0.0
    action: Action | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "last_error": self.last_error,
            "error_time": self.error_time,
            "attempts": self.attempts,
            "permanent": self.permanent,
        }


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter in [0.5, 1.0] of the step, capped."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        step = min(self.cap, self.base * 2.0 ** max(0, attempts - 1))
        return step * (rng or _RNG).uniform(0.5, 1.0)


@dataclass(frozen=True)
class ItemError:
    ref: ItemRef
    action: str
    message: str
    time: float
    permanent: bool


@dataclass
class OwnerStatus:
    """Everything the engine knows about the items of one owner (an app, a network...)."""

    owner: OwnerRef
    items: int = 0
    created: int = 0
    in_progress: int = 0
    pending: list[tuple[ItemRef, str]] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)

    @property
    def state(self) -> str:
        """One word: ``error`` wins over ``in-progress`` over ``pending`` over ``ok``."""
        if self.errors:
            return "error"
        if self.in_progress:
            return "in-progress"
        if self.pending:
            return "pending"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "items": self.items,
            "created": self.created,
            "in_progress": self.in_progress,
            "pending": [{"item": f"{k}/{n}", "reason": r} for (k, n), r in self.pending],
            "errors": [
                {
                    "item": f"{e.ref[0]}/{e.ref[1]}",
                    "action": e.action,
                    "error": e.message,
                    "time": e.time,
                    "permanent": e.permanent,
                }
                for e in self.errors
            ],
        }


def roll_up(entries: Iterable[tuple[ItemRef, OwnerRef, ItemStatus]]) -> dict[OwnerRef, OwnerStatus]:
    """Group item states by owner.  Pure."""
    out: dict[OwnerRef, OwnerStatus] = {}
    for ref, owner, st in entries:
        o = out.get(owner)
        if o is None:
            o = out[owner] = OwnerStatus(owner)
        o.items += 1
        if st.state is ItemState.CREATED:
            o.created += 1
        elif st.state is ItemState.IN_PROGRESS:
            o.in_progress += 1
        elif st.state in (ItemState.PENDING, ItemState.DELETING):
            o.pending.append((ref, st.reason))
        if st.state is ItemState.FAILED:
            o.errors.append(
                ItemError(
                    ref,
                    st.error_action.value if st.error_action else "",
                    st.last_error or st.reason,
                    st.error_time,
                    st.permanent,
                )
            )
    for o in out.values():
        o.pending.sort()
        o.errors.sort(key=lambda e: e.ref)
    return out
