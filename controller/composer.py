"""The cluster composer: which nodes are in which K3s cluster, in which role.  Pure: no I/O.

Inputs are immutable values: every node with its tags, whether it is attested and when it was
last seen; every cluster with its selector (one tag ``key=value``), its sizes (servers and agents,
each ``min:max``), whether it is active, and its current members with their roles.  Together with
the time ``now`` they decide, deterministically (same inputs, same output):

* **eligible**: a node is a candidate for a cluster when it carries the cluster's tag, is attested
  (the caller says what that means: the controller requires a current integrity token and an
  ECDH certificate, so the join token can be encrypted for it) and was seen within the cluster's
  ``lost_after`` seconds;
* **existing members first**: a member stays while it is still registered and tagged and, for an
  active cluster, attested and not lost.  Members are kept before any cluster takes new nodes, so
  growth never steals a node from another cluster;
* **never shared**: a node is in at most one cluster.  Clusters are served oldest first
  (``created_at``, then id): when two selectors match the same free node, the older one gets it;
* **minimum before anything starts**: a cluster without members starts only when its minimum
  servers *and* agents can all be chosen at once; until then it gets nobody (and claims nobody);
* **filling**: new nodes (by UUID order) go first to the missing minimum servers, then to the
  missing minimum agents, then to servers up to the maximum, then to agents up to the maximum;
* **roles**: the first server is ``init`` (it initialises the cluster: the join server), other
  servers join it, agents join it too.  When the init server leaves, the longest-standing server
  left becomes the join server (K3s with embedded etcd accepts joins at any server); roles are
  otherwise never changed (an agent is never turned into a server);
* **capped**: never more than the maximum of either role; extra members (only possible with odd
  input) leave, newest first;
* **deactivated** clusters keep their members (their volumes stay) and take nobody new; only a
  node that is unregistered or untagged leaves them.

Every change comes with events (text and reason) for the cluster's history.  A started cluster
that falls below its minimum keeps running with what it has ("degraded") and takes replacements
as they become eligible.  Each member has a ``slot``, the smallest number free in its cluster when
it joined and kept while it stays: the caller derives the member's addresses from it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class Role(enum.StrEnum):
    INIT = "init"
    """The server that initialises the cluster; the others join it (the join server)."""
    SERVER = "server"
    AGENT = "agent"

    @property
    def is_server(self) -> bool:
        return self is not Role.AGENT


class State(enum.StrEnum):
    WAITING = "waiting"
    """Not started: the minimum cannot be chosen yet; nobody runs anything."""
    UP = "up"
    DEGRADED = "degraded"
    """Started, and now below its minimum: runs with what it has, takes replacements."""
    DEACTIVATED = "deactivated"


@dataclass(frozen=True)
class Node:
    """A registered node as the composer sees it."""

    uuid: str
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)
    attested: bool = False
    last_seen: float | None = None


@dataclass(frozen=True)
class Size:
    """``min:max`` of one role."""

    min: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"size {self.min}:{self.max}: need 0 <= min <= max")

    def __str__(self) -> str:
        return f"{self.min}:{self.max}"


@dataclass(frozen=True)
class Member:
    node: str
    role: Role
    slot: int
    since: float


@dataclass(frozen=True)
class Cluster:
    """A cluster as the composer sees it: its rules and current members."""

    id: str
    name: str
    selector: tuple[str, str]
    servers: Size
    agents: Size
    lost_after: float
    active: bool = True
    members: tuple[Member, ...] = ()
    created_at: float = 0.0
    state: State | None = None
    note: str = ""
    """The previous composition's summary: an event is written only when it changes."""


@dataclass(frozen=True)
class Event:
    text: str
    reason: str


@dataclass(frozen=True)
class Composition:
    """What one cluster should be now."""

    cluster_id: str
    state: State
    members: tuple[Member, ...]
    """Init first, then servers, then agents, each by slot."""
    note: str
    events: tuple[Event, ...]
    changed: bool
    """Whether the members or their roles differ from the cluster's input."""

    @property
    def join_server(self) -> str | None:
        """The node the others join (the init server), if any."""
        return next((m.node for m in self.members if m.role is Role.INIT), None)


_RANK = {Role.INIT: 0, Role.SERVER: 1, Role.AGENT: 2}


def _order(member: Member) -> tuple[int, int]:
    return (_RANK[member.role], member.slot)


def _seniority(member: Member) -> tuple[int, float, str]:
    """Who stays first: the init server, then the longest-standing."""
    return (0 if member.role is Role.INIT else 1, member.since, member.node)


def _ago(now: float, then: float | None) -> str:
    if then is None:
        return "never seen"
    return f"last seen {max(0, round(now - then))} s ago"


def _ineligible(node: Node, cluster: Cluster, now: float) -> str | None:
    """Why ``node`` (which carries the cluster's tag) cannot be in it now, or None."""
    if not node.attested:
        return "not attested"
    if node.last_seen is None or now - node.last_seen > cluster.lost_after:
        return "lost"
    return None


def index_by_tag(
    nodes: Iterable[Node], wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[Node]]:
    """The nodes carrying each of the ``wanted`` ``(key, value)`` tags, each group by UUID."""
    groups: dict[tuple[str, str], list[Node]] = {pair: [] for pair in wanted}
    keys = {key for key, _ in groups}
    for node in nodes:
        for key in keys:
            value = node.tags.get(key)
            if value is not None and (group := groups.get((key, value))) is not None:
                group.append(node)
    for group in groups.values():
        group.sort(key=lambda n: n.uuid)
    return groups


def compose(
    nodes: Sequence[Node], clusters: Sequence[Cluster], *, now: float
) -> dict[str, Composition]:
    """The composition of every cluster, by cluster id (see the module docstring)."""
    by_uuid = {n.uuid: n for n in nodes}
    by_tag = index_by_tag(nodes, {c.selector for c in clusters})
    order = sorted(clusters, key=lambda c: (c.created_at, c.id))
    claimed: dict[str, str] = {}
    kept: dict[str, list[Member]] = {}
    events: dict[str, list[Event]] = {c.id: [] for c in order}
    for cluster in order:
        kept[cluster.id] = _keep(cluster, by_uuid, claimed, now, events[cluster.id])
    names = {c.id: c.name for c in order}
    result: dict[str, Composition] = {}
    for cluster in order:
        result[cluster.id] = _fill(
            cluster, kept[cluster.id], by_tag.get(cluster.selector, []), claimed, names, now,
            events[cluster.id],
        )  # fmt: skip
    return result


def _keep(
    cluster: Cluster,
    by_uuid: Mapping[str, Node],
    claimed: dict[str, str],
    now: float,
    events: list[Event],
) -> list[Member]:
    """The current members that stay (claimed for this cluster); events for those that leave."""
    key, value = cluster.selector
    kept: list[Member] = []
    slots: set[int] = set()
    for member in sorted(cluster.members, key=_seniority):
        node = by_uuid.get(member.node)
        reason = None
        if node is None:
            reason = "the node is no longer registered"
        elif node.tags.get(key) != value:
            reason = f"untagged: {key}={value} is no longer set on it"
        elif member.node in claimed:
            reason = "it is already a member of another cluster"
        elif member.slot in slots:
            reason = f"its slot {member.slot} is taken by another member"
        elif cluster.active and (why := _ineligible(node, cluster, now)) is not None:
            if why == "lost":
                reason = f"lost: {_ago(now, node.last_seen)} (lost after {cluster.lost_after:g} s)"
            else:
                reason = "no longer attested"
        if reason is not None:
            events.append(Event(f"node {member.node} left ({member.role})", reason))
            continue
        if member.role is Role.INIT and any(m.role is Role.INIT for m in kept):
            # Odd input: one join server only; the most senior keeps the role.
            member = Member(member.node, Role.SERVER, member.slot, member.since)
        kept.append(member)
        slots.add(member.slot)
    # Cap (members above the maximum only come from odd input): the newest leave.
    servers = [m for m in kept if m.role is not Role.AGENT][: cluster.servers.max]
    agents = [m for m in kept if m.role is Role.AGENT][: cluster.agents.max]
    staying = {m.node for m in servers} | {m.node for m in agents}
    for extra in kept:
        if extra.node not in staying:
            size = cluster.servers if extra.role.is_server else cluster.agents
            label = "servers" if extra.role.is_server else "agents"
            events.append(
                Event(
                    f"node {extra.node} left ({extra.role})",
                    f"above the maximum of {size.max} {label}",
                )
            )
    for member in (*servers, *agents):
        claimed[member.node] = cluster.id
    return [*servers, *agents]


def _fill(
    cluster: Cluster,
    kept: list[Member],
    tagged: Sequence[Node],
    claimed: dict[str, str],
    names: Mapping[str, str],
    now: float,
    events: list[Event],
) -> Composition:
    servers = [m for m in kept if m.role is not Role.AGENT]
    agents = [m for m in kept if m.role is Role.AGENT]
    if not cluster.active:
        members = [*servers, *agents]
        return _finish(cluster, members, State.DEACTIVATED, "deactivated", events)

    candidates: list[Node] = []
    skipped: dict[str, int] = {}
    for node in tagged:
        owner = claimed.get(node.uuid)
        if owner is not None:
            if owner != cluster.id:
                label = f"in cluster {names.get(owner, owner)}"
                skipped[label] = skipped.get(label, 0) + 1
            continue
        why = _ineligible(node, cluster, now)
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        candidates.append(node)

    # How many new servers and agents: minimums first, then the maximums.
    free = len(candidates)
    need_servers = min(free, max(0, cluster.servers.min - len(servers)))
    need_agents = min(free - need_servers, max(0, cluster.agents.min - len(agents)))
    more_servers = min(
        free - need_servers - need_agents, cluster.servers.max - len(servers) - need_servers
    )
    more_agents = min(
        free - need_servers - need_agents - more_servers,
        cluster.agents.max - len(agents) - need_agents,
    )
    new_servers = need_servers + max(0, more_servers)
    new_agents = need_agents + max(0, more_agents)
    started = bool(kept)
    server_total, agent_total = len(servers) + new_servers, len(agents) + new_agents
    summary = (
        f"{server_total} of {cluster.servers} servers, {agent_total} of {cluster.agents} agents"
    )
    if skipped:
        summary += "; tagged but not eligible: " + ", ".join(
            f"{count} {why}" for why, count in sorted(skipped.items())
        )
    if not started and (server_total < cluster.servers.min or agent_total < cluster.agents.min):
        note = f"waiting for the minimum: {summary}"
        return _finish(cluster, [], State.WAITING, note, events)

    chosen = iter(candidates)
    used = {m.slot for m in kept}
    next_slot = 0

    def slot() -> int:
        nonlocal next_slot
        while next_slot in used:
            next_slot += 1
        used.add(next_slot)
        return next_slot

    if servers and not any(m.role is Role.INIT for m in servers):
        successor = min(servers, key=_seniority)
        servers[servers.index(successor)] = Member(
            successor.node, Role.INIT, successor.slot, successor.since
        )
        events.append(
            Event(
                f"node {successor.node} is now the join server (init)",
                "the init server left; it is the longest-standing server",
            )
        )
    for _ in range(new_servers):
        node = next(chosen)
        role = Role.SERVER if servers else Role.INIT
        member = Member(node.uuid, role, slot(), now)
        servers.append(member)
        claimed[node.uuid] = cluster.id
        events.append(_joined(member, node, cluster, now, summary))
    for _ in range(new_agents):
        node = next(chosen)
        member = Member(node.uuid, Role.AGENT, slot(), now)
        agents.append(member)
        claimed[node.uuid] = cluster.id
        events.append(_joined(member, node, cluster, now, summary))

    members = [*servers, *agents]
    below = len(servers) < cluster.servers.min or len(agents) < cluster.agents.min
    if below:
        return _finish(cluster, members, State.DEGRADED, f"below the minimum: {summary}", events)
    return _finish(cluster, members, State.UP, summary, events)


def _joined(member: Member, node: Node, cluster: Cluster, now: float, summary: str) -> Event:
    key, value = cluster.selector
    what = {
        Role.INIT: "as the init server",
        Role.SERVER: "as a server",
        Role.AGENT: "as an agent",
    }[member.role]
    return Event(
        f"node {member.node} joined {what}",
        f"tagged {key}={value}, attested, {_ago(now, node.last_seen)}; now {summary}",
    )


def _finish(
    cluster: Cluster, members: list[Member], state: State, note: str, events: list[Event]
) -> Composition:
    ordered = tuple(sorted(members, key=_order))
    changed = ordered != tuple(sorted(cluster.members, key=_order))
    if state is not cluster.state or note != cluster.note:
        events.append(Event(f"cluster {state}", note))
    return Composition(cluster.id, state, ordered, note, tuple(events), changed)


__all__ = [
    "Cluster",
    "Composition",
    "Event",
    "Member",
    "Node",
    "Role",
    "Size",
    "State",
    "compose",
    "index_by_tag",
]
