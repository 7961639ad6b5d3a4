"""The cluster composer for ``make bench``: 10,000 tagged nodes and 500 clusters.

Figures, each beside a reference measured in the same run: a full composition from nothing
(every cluster chooses its members) and a steady-state recomposition (every cluster already has
its members, one node lost), beside the bare sort of the same nodes by UUID and grouping by tag
(the least work any composition needs to even find each cluster's candidates).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from operator import attrgetter

from controller.composer import Cluster, Composition, Node, Size, compose

NODES = 10_000
CLUSTERS = 500


def fleet(now: float) -> tuple[list[Node], list[Cluster]]:
    """20 nodes per pool, a few not attested or lost; clusters of 3 servers, 2 to 20 agents."""
    nodes = [
        Node(
            str(uuid.UUID(int=(n * 7919) % (1 << 64))),
            {"ClusterPool": f"pool-{n % CLUSTERS}", "rack": str(n % 40), "site": "sjc"},
            attested=n % 97 != 0,
            last_seen=now - (5000.0 if n % 89 == 0 else 10.0),
        )
        for n in range(NODES)
    ]
    clusters = [
        Cluster(
            id=str(uuid.UUID(int=1_000_000 + c)),
            name=f"c{c}",
            selector=("ClusterPool", f"pool-{c}"),
            servers=Size(3, 3),
            agents=Size(2, 20),
            lost_after=600.0,
            created_at=float(c),
        )
        for c in range(CLUSTERS)
    ]
    return nodes, clusters


def _timeit(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _applied(first: dict[str, Composition], clusters: list[Cluster]) -> list[Cluster]:
    return [
        Cluster(
            c.id, c.name, c.selector, c.servers, c.agents, c.lost_after, c.active,
            first[c.id].members, c.created_at, first[c.id].state, first[c.id].note,
        )
        for c in clusters
    ]  # fmt: skip


def bench_composer(repeat: int) -> list[tuple[str, str, str, str]]:
    now = 100_000.0
    nodes, clusters = fleet(now)
    first = compose(nodes, clusters, now=now)
    steady = _applied(first, clusters)
    # One member lost: its cluster replaces it, the rest stay as they are.
    lost = next(m.node for m in steady[0].members)
    later = [n if n.uuid != lost else Node(n.uuid, n.tags, n.attested, now - 5000) for n in nodes]
    changed = compose(later, steady, now=now)
    assert sum(c.changed for c in changed.values()) == 1

    def reference() -> None:
        groups: dict[tuple[str, str], list[Node]] = {}
        for node in sorted(nodes, key=attrgetter("uuid")):
            for pair in node.tags.items():
                groups.setdefault(pair, []).append(node)

    fresh_t = _timeit(lambda: compose(nodes, clusters, now=now), repeat)
    steady_t = _timeit(lambda: compose(later, steady, now=now), repeat)
    ref_t = _timeit(reference, repeat)
    ms = "{:.1f} ms".format
    members = sum(len(c.members) for c in first.values())
    ref = f"{ms(ref_t * 1e3)} (sort by UUID + group by tag)"
    return [
        (f"cluster composer: {NODES:,} tagged nodes, {CLUSTERS} clusters, from nothing "
         f"({members:,} members)", ms(fresh_t * 1e3), ref, f"{fresh_t / ref_t:.1f}x"),
        ("  same, steady state with one member lost", ms(steady_t * 1e3), ref,
         f"{steady_t / ref_t:.1f}x"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in bench_composer(5):
        print(" | ".join(row))
