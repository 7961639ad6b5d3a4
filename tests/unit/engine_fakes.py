"""A recording fake configurator over a fake system, for the engine's tests.

The fake system behaves as the kernel or libvirt would: creating an object whose dependency is
absent, or deleting one that something still sits on, fails and is recorded as a violation, so
a test sees ordering bugs as the real system would show them.  Objects can be *unmarked* (not
the agent's: ``observe`` never lists them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.drivers.errors import NotFoundError, PermanentError, TemporaryError
from agent.reconcile.items import BaseConfigurator, Item, ItemRef, Op, OwnerRef


@dataclass(frozen=True)
class Thing:
    """A test item: ``value`` changes in place, ``shape`` forces a recreate."""

    kind: str
    key: str
    value: int = 0
    shape: str = ""
    depends: tuple[ItemRef, ...] = ()
    owned_by: OwnerRef = ("app", "a1")

    @property
    def ref(self) -> ItemRef:
        return (self.kind, self.key)

    @property
    def owner(self) -> OwnerRef:
        return self.owned_by

    def deps(self) -> Iterable[ItemRef]:
        return self.depends

    def needs_recreate(self, old: Any) -> bool:
        assert isinstance(old, Thing)
        return old.shape != self.shape


def t(name: str, *deps: str, value: int = 0, shape: str = "", kind: str = "x") -> Thing:
    """``t("veth", "br")``: item x/veth depending on x/br.  A dep "condition:vault" is the
    external ref ("condition", "vault")."""
    refs = tuple(tuple(d.split(":", 1)) if ":" in d else (kind, d) for d in deps)
    return Thing(kind, name, value, shape, refs)  # type: ignore[arg-type]


def graph(*things: Thing) -> dict[ItemRef, Item]:
    return {th.ref: th for th in things}


@dataclass
class Recorder(BaseConfigurator):
    """Configurator of kind ``x`` over ``system`` (key -> Thing), recording every call."""

    system: dict[str, Thing] = field(default_factory=dict)
    #: Keys of objects on the system that are not ours (observe does not list them).
    unmarked: set[str] = field(default_factory=set)
    log: list[tuple[str, str]] = field(default_factory=list)
    #: (action, key) -> exception to raise (each time), or a list of them (one per call).
    fail: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: key -> event the operation waits for before it completes.
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    #: Ordering violations the fake system saw.
    violations: list[str] = field(default_factory=list)
    #: Concurrency: currently running per key and overall, and the maximum seen.
    running: dict[str, int] = field(default_factory=dict)
    max_running: int = 0
    op_timeout: float | None = None
    kind: str = "x"
    externals: Mapping[ItemRef, bool] = field(default_factory=dict)
    #: Skip the O(n) "does anything sit on it" check of deletes (for big graphs).
    trust_deletes: bool = False
    #: Keys whose operations are long-running (the engine's separate limit).
    long: set[str] = field(default_factory=set)

    async def _step(self, action: str, key: str) -> None:
        self.log.append((action, key))
        self.running[key] = self.running.get(key, 0) + 1
        if self.running[key] > 1:
            self.violations.append(f"two operations at once on {key}")
        self.max_running = max(self.max_running, sum(self.running.values()))
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            else:
                await asyncio.sleep(0)
            planned = self.fail.get((action, key))
            if isinstance(planned, list):
                planned = planned.pop(0) if planned else None
            if planned is not None:
                raise planned
        finally:
            self.running[key] -= 1
            if not self.running[key]:
                del self.running[key]

    def _present(self, ref: ItemRef) -> bool:
        if ref[0] != self.kind:
            return self.externals.get(ref, True)
        return ref[1] in self.system

    async def create(self, item: Thing) -> None:
        await self._step("create", item.key)
        missing = [d for d in item.deps() if not self._present(d)]
        if missing:
            self.violations.append(f"created {item.key} before {missing}")
        self.system[item.key] = item

    async def modify(self, old: Thing, new: Thing) -> None:
        await self._step("modify", new.key)
        if new.key not in self.system:
            raise NotFoundError(f"{new.key} is not there")
        self.system[new.key] = new

    async def delete(self, item: Thing) -> None:
        await self._step("delete", item.key)
        users = [] if self.trust_deletes else [
            k for k, o in self.system.items() if item.ref in set(o.deps())
        ]  # fmt: skip
        if users:
            self.violations.append(f"deleted {item.key} under {users}")
        self.system.pop(item.key, None)

    async def observe(self) -> Mapping[ItemRef, Item]:
        return {(self.kind, k): v for k, v in self.system.items() if k not in self.unmarked}

    def timeout(self, op: Op) -> float | None:
        return self.op_timeout

    def long_running(self, op: Op) -> bool:
        return op.ref[1] in self.long

    def steps(self, *actions: str) -> list[tuple[str, str]]:
        """The log, only the given actions (all when none)."""
        return [e for e in self.log if not actions or e[0] in actions]


TEMP = TemporaryError("busy")
PERM = PermanentError("refused")
GONE = NotFoundError("gone")
