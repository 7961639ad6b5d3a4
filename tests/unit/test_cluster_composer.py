# SPDX-License-Identifier: Apache-2.0
"""controller.composer: roles, minimums, maximums, replacement, untagging, exclusivity."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.composer import (
    Cluster,
    Composition,
    Member,
    Node,
    Role,
    Size,
    State,
    compose,
)

NOW = 10_000.0
POOL = ("ClusterPool", "SJC_Store_1")


def node(n: int, *, tag: str = "SJC_Store_1", attested: bool = True, seen: float = NOW) -> Node:
    return Node(f"node-{n:03d}", {"ClusterPool": tag}, attested, seen)


def cluster(
    members: Sequence[Member] = (),
    *,
    id: str = "c1",
    servers: tuple[int, int] = (3, 3),
    agents: tuple[int, int] = (0, 2),
    selector: tuple[str, str] = POOL,
    active: bool = True,
    created_at: float = 0.0,
) -> Cluster:
    return Cluster(
        id=id,
        name=id,
        selector=selector,
        servers=Size(*servers),
        agents=Size(*agents),
        lost_after=300.0,
        active=active,
        members=tuple(members),
        created_at=created_at,
    )


def one(nodes: Sequence[Node], c: Cluster, now: float = NOW) -> Composition:
    return compose(nodes, [c], now=now)[c.id]


def roles(comp: Composition) -> dict[str, Role]:
    return {m.node: m.role for m in comp.members}


def again(comp: Composition, c: Cluster) -> Cluster:
    """The cluster as stored after ``comp`` was applied."""
    return Cluster(
        c.id, c.name, c.selector, c.servers, c.agents, c.lost_after, c.active,
        comp.members, c.created_at, comp.state, comp.note,
    )  # fmt: skip


def test_minimum_not_reached_nothing_starts() -> None:
    nodes = [node(1), node(2), node(3, attested=False), node(4, seen=NOW - 301)]
    comp = one(nodes, cluster())
    assert comp.state is State.WAITING and comp.members == () and not comp.changed
    assert "2 of 3:3 servers" in comp.note
    assert "1 lost" in comp.note and "1 not attested" in comp.note
    assert [e.text for e in comp.events] == ["cluster waiting"]


def test_minimum_reached_roles_assigned() -> None:
    comp = one([node(3), node(1), node(2)], cluster())
    assert comp.state is State.UP and comp.changed
    assert roles(comp) == {"node-001": Role.INIT, "node-002": Role.SERVER, "node-003": Role.SERVER}
    assert comp.join_server == "node-001"
    assert [m.slot for m in comp.members] == [0, 1, 2]
    joined = [e for e in comp.events if "joined" in e.text]
    assert len(joined) == 3 and "ClusterPool=SJC_Store_1" in joined[0].reason


def test_minimum_of_both_roles_comes_before_the_maximums() -> None:
    # 3 nodes, servers 1:3, agents 1:3: one server, one agent, then one more server.
    comp = one([node(1), node(2), node(3)], cluster(servers=(1, 3), agents=(1, 3)))
    assert sorted(roles(comp).values()) == sorted([Role.INIT, Role.SERVER, Role.AGENT])
    assert roles(comp)["node-003"] is Role.AGENT  # servers are chosen first, by UUID


def test_maximum_is_capped() -> None:
    nodes = [node(n) for n in range(10)]
    comp = one(nodes, cluster(servers=(1, 3), agents=(0, 2)))
    assert len(comp.members) == 5
    assert sum(m.role.is_server for m in comp.members) == 3


def test_a_node_tagged_later_joins_and_nobody_moves() -> None:
    c = cluster(servers=(1, 3), agents=(0, 2))
    first = one([node(1), node(2)], c)
    c = again(first, c)
    second = one([node(1), node(2), node(0)], c)
    # node-000 sorts first but the existing init server keeps its role.
    assert roles(second) == {
        "node-001": Role.INIT,
        "node-002": Role.SERVER,
        "node-000": Role.SERVER,
    }
    assert [e.text for e in second.events if "joined" in e.text] == [
        "node node-000 joined as a server"
    ]
    assert {m.node: m.slot for m in second.members}["node-000"] == 2
    # Unchanged inputs: same composition, no events.
    third = one([node(1), node(2), node(0)], again(second, c))
    assert not third.changed and third.events == ()


def test_a_lost_member_is_replaced() -> None:
    c = cluster(servers=(3, 3), agents=(0, 0))
    up = one([node(1), node(2), node(3), node(4)], c)
    assert "node-004" not in roles(up)
    c = again(up, c)
    # node-002 is seen no more; within lost_after it stays.
    nodes = [node(1, seen=NOW + 300), node(2), node(3, seen=NOW + 300), node(4, seen=NOW + 200)]
    later = one(nodes, c, now=NOW + 200)
    assert not later.changed
    # Past lost_after it leaves and the spare node takes its place (and its slot).
    gone = one(nodes, c, now=NOW + 301)
    assert "node-002" not in roles(gone) and roles(gone)["node-004"] is Role.SERVER
    assert {m.node: m.slot for m in gone.members}["node-004"] == 1
    left = next(e for e in gone.events if "left" in e.text)
    assert left.text == "node node-002 left (server)" and left.reason.startswith("lost: last seen")
    assert gone.state is State.UP


def test_the_init_server_lost_hands_over_to_the_longest_standing_server() -> None:
    c = cluster(
        [
            Member("node-001", Role.INIT, 0, 1.0),
            Member("node-002", Role.SERVER, 1, 3.0),
            Member("node-003", Role.SERVER, 2, 2.0),
        ],
        servers=(1, 3),
    )
    comp = one([node(1, seen=0.0), node(2), node(3)], c)
    assert roles(comp) == {"node-003": Role.INIT, "node-002": Role.SERVER}
    assert comp.join_server == "node-003"
    assert any("join server" in e.text for e in comp.events)


def test_untag_removes_a_member_and_below_minimum_is_degraded() -> None:
    c = cluster(servers=(3, 3))
    c = again(one([node(1), node(2), node(3)], c), c)
    comp = one([node(1), node(2, tag="elsewhere"), node(3)], c)
    assert "node-002" not in roles(comp)
    assert comp.state is State.DEGRADED and comp.note.startswith("below the minimum")
    left = next(e for e in comp.events if "left" in e.text)
    assert left.reason == "untagged: ClusterPool=SJC_Store_1 is no longer set on it"


def test_two_clusters_never_share_a_node() -> None:
    older = cluster(id="a", servers=(1, 2), agents=(0, 0), created_at=1.0)
    newer = cluster(id="b", servers=(1, 2), agents=(0, 0), created_at=2.0)
    nodes = [node(n) for n in range(3)]
    result = compose(nodes, [newer, older], now=NOW)
    assert set(roles(result["a"])) == {"node-000", "node-001"}
    assert set(roles(result["b"])) == {"node-002"}
    # A node both clusters claim as a member (odd input) stays with the older one only.
    a = again(result["a"], older)
    b = again(result["b"], newer)
    b = Cluster(
        b.id, b.name, b.selector, b.servers, b.agents, b.lost_after, b.active,
        (*b.members, Member("node-000", Role.SERVER, 5, 0.0)), b.created_at,
    )  # fmt: skip
    result = compose(nodes, [a, b], now=NOW)
    assert "node-000" in roles(result["a"]) and "node-000" not in roles(result["b"])


def test_a_waiting_cluster_claims_nobody() -> None:
    big = cluster(id="big", servers=(5, 5), created_at=1.0)
    small = cluster(id="small", servers=(1, 1), agents=(0, 0), created_at=2.0)
    result = compose([node(1), node(2)], [big, small], now=NOW)
    assert result["big"].state is State.WAITING
    assert roles(result["small"]) == {"node-001": Role.INIT}


def test_deactivated_cluster_keeps_its_members_and_takes_nobody() -> None:
    c = cluster(servers=(1, 3))
    c = again(one([node(1), node(2)], c), c)
    off = Cluster(
        c.id, c.name, c.selector, c.servers, c.agents, c.lost_after, False, c.members,
        c.created_at, c.state, c.note,
    )  # fmt: skip
    comp = one([node(1, seen=0.0), node(2, attested=False), node(3)], off)
    assert comp.state is State.DEACTIVATED and not comp.changed
    assert set(roles(comp)) == {"node-001", "node-002"}
    other = cluster(id="other", servers=(1, 3), created_at=5.0)
    result = compose([node(1), node(2), node(3)], [off, other], now=NOW)
    assert set(roles(result["other"])) == {"node-003"}


def test_unregistered_member_leaves_even_a_deactivated_cluster() -> None:
    c = cluster([Member("node-001", Role.INIT, 0, 1.0)], servers=(1, 1), active=False)
    comp = one([], c)
    assert comp.members == () and comp.changed
    assert comp.events[0].reason == "the node is no longer registered"


# --- properties ------------------------------------------------------------------------------

TAGS = ("p0", "p1", "p2")


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Node], list[Cluster], float]:
    count = draw(st.integers(0, 14))
    nodes = [
        Node(
            f"n{i:02d}",
            {"pool": draw(st.sampled_from(TAGS))} if draw(st.booleans()) else {},
            draw(st.booleans()),
            draw(st.one_of(st.none(), st.floats(0, NOW))),
        )
        for i in range(count)
    ]
    clusters = []
    for c in range(draw(st.integers(1, 4))):
        smin = draw(st.integers(1, 3))
        amin = draw(st.integers(0, 2))
        members = []
        for i, n in enumerate(
            draw(st.lists(st.sampled_from(nodes), unique_by=lambda n: n.uuid)) if nodes else []
        ):
            role = draw(st.sampled_from(list(Role)))
            members.append(Member(n.uuid, role, i, draw(st.floats(0, NOW))))
        clusters.append(
            Cluster(
                id=f"c{c}",
                name=f"c{c}",
                selector=("pool", draw(st.sampled_from(TAGS))),
                servers=Size(smin, smin + draw(st.integers(0, 2))),
                agents=Size(amin, amin + draw(st.integers(0, 2))),
                lost_after=draw(st.sampled_from([100.0, 5000.0])),
                active=draw(st.booleans()),
                members=tuple(members),
                created_at=float(c),
            )
        )
    return nodes, clusters, NOW


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_properties(case: tuple[list[Node], list[Cluster], float]) -> None:
    nodes, clusters, now = case
    result = compose(nodes, clusters, now=now)
    assert set(result) == {c.id for c in clusters}
    by_uuid = {n.uuid: n for n in nodes}
    seen: set[str] = set()
    for c in clusters:
        comp = result[c.id]
        members = comp.members
        nodes_in = [m.node for m in members]
        # No node in two clusters, nor twice in one.
        assert not seen & set(nodes_in) and len(set(nodes_in)) == len(nodes_in)
        seen |= set(nodes_in)
        servers = [m for m in members if m.role.is_server]
        agents = [m for m in members if m.role is Role.AGENT]
        # Never over the maximum.
        assert len(servers) <= c.servers.max and len(agents) <= c.agents.max
        # Every member carries the tag; slots are unique.
        assert all(by_uuid[m].tags.get("pool") == c.selector[1] for m in nodes_in)
        assert len({m.slot for m in members}) == len(members)
        if comp.state is State.WAITING:
            assert members == ()
        if c.active and not c.members and members:
            # Started from nothing: the whole minimum at once.
            assert len(servers) >= c.servers.min and len(agents) >= c.agents.min
        if servers and c.active:
            assert sum(m.role is Role.INIT for m in servers) == 1
        # Existing members still eligible stay (unless another cluster held them first or
        # the input had them over the maximum or in a duplicate slot).
        before = {m.node for m in c.members}
        others = {m.node for o in clusters if o is not c for m in o.members}
        fits = (
            sum(m.role.is_server for m in c.members) <= c.servers.max
            and sum(m.role is Role.AGENT for m in c.members) <= c.agents.max
            and len({m.slot for m in c.members}) == len(c.members)
        )
        for m in c.members:
            nd = by_uuid[m.node]
            eligible = nd.tags.get("pool") == c.selector[1] and (
                not c.active
                or (nd.attested and nd.last_seen is not None and now - nd.last_seen <= c.lost_after)
            )
            if eligible and fits and m.node not in others:
                assert m.node in nodes_in, f"{m.node} was eligible but left {c.id}"
        for n in before - set(nodes_in):
            left = [e for e in comp.events if e.text.startswith(f"node {n} left")]
            assert left, f"{n} left {c.id} without an event"
    # Deterministic.
    assert compose(nodes, list(reversed(clusters)), now=now) == result


@settings(max_examples=100, deadline=None)
@given(scenario())
def test_composition_is_a_fixed_point(case: tuple[list[Node], list[Cluster], float]) -> None:
    """Applying a composition and composing again changes nothing and says nothing."""
    nodes, clusters, now = case
    first = compose(nodes, clusters, now=now)
    applied = [again(first[c.id], c) for c in clusters]
    second = compose(nodes, applied, now=now)
    for c in applied:
        assert second[c.id].members == c.members
        assert second[c.id].events == ()
