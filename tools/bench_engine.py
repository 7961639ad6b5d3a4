"""Reconcile engine overhead for ``make bench``: 5,000 items with a no-op configurator.

Figures, each beside a reference measured in the same run:

- plan and apply the whole graph from nothing, beside running the same 5,000 no-op operations
  as plain asyncio tasks, level by level in dependency order (what one task per operation costs);
- a one-item change in that graph (new desired graph, one item modified), beside a plain dict
  comparison of the two graphs (the least work to even find the change).  Goal: under 5 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from agent.reconcile.engine import Engine
from agent.reconcile.items import BaseConfigurator, Item, ItemRef, OwnerRef

NETWORKS = 100
APPS = 1225  # 100 networks + 1,225 apps x (volume, veth, container, acl) = 5,000 items


@dataclass(frozen=True)
class BenchItem:
    kind: str
    key: str
    value: int = 0
    depends: tuple[ItemRef, ...] = ()
    app: str = ""

    @property
    def ref(self) -> ItemRef:
        return (self.kind, self.key)

    @property
    def owner(self) -> OwnerRef:
        return ("app", self.app) if self.app else ("networkinstance", self.key)

    def deps(self) -> Iterable[ItemRef]:
        return self.depends

    def needs_recreate(self, old: Any) -> bool:
        return False


class NoOp(BaseConfigurator):
    async def create(self, item: Any) -> None:
        return None

    async def modify(self, old: Any, new: Any) -> None:
        return None

    async def delete(self, item: Any) -> None:
        return None


def build_graph(salt: int = 0) -> dict[ItemRef, Item]:
    """The desired graph: networks, and per app a volume, a veth on a network, a container on
    both and an ACL on the veth.  A fresh set of objects on every call, as a render makes."""
    items: list[BenchItem] = [BenchItem("net", f"n{n}") for n in range(NETWORKS)]
    for a in range(APPS):
        app = f"a{a}"
        vol = BenchItem("vol", app, app=app)
        veth = BenchItem("veth", app, depends=(("net", f"n{a % NETWORKS}"),), app=app)
        ctr = BenchItem("ctr", app, value=salt, depends=(vol.ref, veth.ref), app=app)
        acl = BenchItem("acl", app, depends=(veth.ref,), app=app)
        items += [vol, veth, ctr, acl]
    return {i.ref: i for i in items}


async def _full_apply(graph: dict[ItemRef, Item]) -> tuple[float, Engine]:
    noop = NoOp()
    engine = Engine({k: noop for k in ("net", "vol", "veth", "ctr", "acl")})
    await engine.resync()
    t0 = time.perf_counter()
    engine.set_desired(graph)
    await engine.settle(within=120)
    elapsed = time.perf_counter() - t0
    assert len(engine.actual) == len(graph), "not everything was applied"
    return elapsed, engine


async def _plain_tasks(graph: dict[ItemRef, Item]) -> float:
    """One task per item, level by level in dependency order: the bare asyncio cost of running
    each operation in its own task, as the engine does."""
    noop = NoOp()
    t0 = time.perf_counter()
    for kinds in (("net", "vol"), ("veth",), ("ctr", "acl")):
        level = [i for i in graph.values() if i.ref[0] in kinds]
        await asyncio.gather(*(asyncio.create_task(noop.create(i)) for i in level))
    return time.perf_counter() - t0


async def _one_change(engine: Engine, graph: dict[ItemRef, Item], n: int) -> float:
    ref = ("ctr", f"a{n % APPS}")
    new = dict(graph)
    old = new[ref]
    assert isinstance(old, BenchItem)
    new[ref] = replace(old, value=old.value + n + 1)
    t0 = time.perf_counter()
    changed = engine.set_desired(new)
    await engine.settle(within=10)
    elapsed = time.perf_counter() - t0
    assert changed == 1 and engine.actual[ref] == new[ref]
    graph.clear()
    graph.update(new)
    return elapsed


def _dict_compare(a: dict[ItemRef, Item], b: dict[ItemRef, Item]) -> float:
    t0 = time.perf_counter()
    diff = [r for r, i in b.items() if a.get(r) != i]
    elapsed = time.perf_counter() - t0
    assert len(diff) <= 1
    return elapsed


def bench_engine(repeat: int) -> list[tuple[str, str, str, str]]:
    async def go() -> tuple[float, float, float, float, float]:
        full = statistics.median([(await _full_apply(build_graph()))[0] for _ in range(3)])
        plain = statistics.median([await _plain_tasks(build_graph()) for _ in range(3)])
        _, engine = await _full_apply(build_graph())
        graph = dict(engine.desired)
        same = statistics.median([await _one_change(engine, graph, n) for n in range(repeat)])
        # The same change arriving as a freshly rendered graph (every object new, equal).
        fresh_times = []
        for n in range(repeat):
            fresh = build_graph(salt=0)
            for ref, item in graph.items():
                if ref[0] == "ctr":
                    fresh[ref] = item
            fresh_times.append(await _one_change(engine, fresh, n))
            graph = dict(engine.desired)
        fresh = statistics.median(fresh_times)
        ref = statistics.median(
            [_dict_compare(build_graph(), build_graph()) for _ in range(repeat)]
        )
        return full, plain, same, fresh, ref

    full, plain, same, fresh, ref = asyncio.run(go())
    ms = "{:.2f} ms".format
    n = NETWORKS + 4 * APPS
    return [
        (f"engine: plan + apply {n:,} items (no-op configurator)", ms(full * 1e3),
         f"{ms(plain * 1e3)} ({n:,} no-op tasks, level by level)", f"{full / plain:.1f}x"),
        (f"engine: one-item change in {n:,} (goal < 5 ms)", ms(same * 1e3),
         f"{ms(ref * 1e3)} (dict compare of the graphs)", f"{same / ref:.1f}x"),
        ("engine: same, every object freshly rendered", ms(fresh * 1e3),
         f"{ms(ref * 1e3)} (dict compare of the graphs)", f"{fresh / ref:.1f}x"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in bench_engine(15):
        print(" | ".join(row))
