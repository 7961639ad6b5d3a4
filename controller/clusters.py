"""Device tags, clusters, members and cluster events in ``controller.db`` (schema v4).

:class:`ClusterStore` shares the connection of a :class:`controller.store.Store`, so a cluster
change and the configs it writes go in one transaction (``with clusters.transaction():``, which
is ``BEGIN IMMEDIATE``: two processes composing at once take turns).  Methods run single
statements and never open a transaction of their own, except where they say so.

The cluster token is a secret: :class:`ClusterRecord` keeps it out of its ``repr``, and nothing
here logs.  What devices send is never read here except through the store's typed records.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.wire.pb.certs import certs_pb2
from controller import db
from controller.composer import Event, Role, Size, State
from controller.records import Clock, NewConfig

#: Tags a device may carry, and the size of keys and values.
MAX_TAGS = 64
_TAG_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,128}$")
#: Events kept per cluster; older ones go.
MAX_EVENTS = 1000


class TagError(ValueError):
    """A tag that cannot be stored; the message says why."""


def check_tag(key: str, value: str | None = None) -> None:
    """Raise TagError unless ``key`` (and ``value``) are well-formed tag text."""
    if not _TAG_KEY.match(key):
        raise TagError(
            f"bad tag key {key[:80]!r}: 1-63 of letters, digits and _.:/- (starting with a "
            "letter or digit)"
        )
    if value is not None and not _TAG_VALUE.match(value):
        raise TagError(f"bad tag value {value[:80]!r}: 1-128 of letters, digits and _.:/@+-")


@dataclass(frozen=True)
class ClusterRecord:
    """A cluster as stored."""

    id: str
    name: str
    select_key: str
    select_value: str
    servers: Size
    agents: Size
    network_tags: tuple[str, ...]
    """Port labels (EVE shared labels; ``uplink`` is every management port): the first is the
    cluster interface, each one a cluster network instance on the members."""
    manifest_url: str
    k3s_image: str
    k3s_objects: bytes | None
    """A serialised EdgeDevConfig holding the K3s image's content tree and its datastores."""
    vm_memory_mib: int
    vm_vcpus: int
    net_index: int
    lost_after: float
    token: str = field(repr=False)
    active: bool = True
    state: State = State.WAITING
    note: str = ""
    created_at: float = 0.0
    changed_at: float = 0.0

    @property
    def selector(self) -> tuple[str, str]:
        return (self.select_key, self.select_value)


@dataclass(frozen=True)
class MemberRecord:
    cluster_id: str
    device_uuid: str
    role: Role
    slot: int
    joined_at: float
    added: str = "{}"
    """JSON: the shared objects the controller added to the member's config (see
    controller.clusterconfig.Added)."""
    config_error: str = ""


@dataclass(frozen=True)
class EventRecord:
    id: int
    cluster_id: str
    at: float
    text: str
    reason: str


@dataclass(frozen=True)
class DeviceView:
    """What the composer needs to know about one device (from the store's own tables)."""

    uuid: str
    last_seen: float | None
    has_token: bool
    """A current integrity token: its last attestation succeeded and was not revoked."""
    has_ecdh: bool
    """It sent an ECDH certificate, so a cluster token can be encrypted for it."""


_CLUSTER_COLUMNS = (
    "id, name, select_key, select_value, servers_min, servers_max, agents_min, agents_max,"
    " network_tags, manifest_url, k3s_image, k3s_objects, vm_memory_mib, vm_vcpus, net_index,"
    " lost_after, token, active, state, note, created_at, changed_at"
)
_MEMBER_COLUMNS = "cluster_id, device_uuid, role, slot, joined_at, added, config_error"


class ClusterStore:
    """Tags, clusters, members and events on a store's connection."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception)."""
        with db.transaction(self._conn):
            yield

    # --- tags -----------------------------------------------------------------------------

    def tags(self, device_uuid: str) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT key, value FROM device_tag WHERE device_uuid = ? ORDER BY key", (device_uuid,)
        )
        return {str(k): str(v) for k, v in rows}

    def all_tags(self) -> dict[str, dict[str, str]]:
        """Every device's tags, by device UUID (devices without tags are absent)."""
        found: dict[str, dict[str, str]] = {}
        for device, key, value in self._conn.execute(
            "SELECT device_uuid, key, value FROM device_tag ORDER BY device_uuid, key"
        ):
            found.setdefault(str(device), {})[str(key)] = str(value)
        return found

    def set_tags(self, device_uuid: str, tags: Mapping[str, str]) -> None:
        """Set (add or replace) tags; raises TagError for bad text or too many tags.

        Call inside :meth:`transaction` (the count check and the writes belong together).
        """
        for key, value in tags.items():
            check_tag(key, value)
        total = set(self.tags(device_uuid)) | set(tags)
        if len(total) > MAX_TAGS:
            raise TagError(f"a device carries at most {MAX_TAGS} tags")
        self._conn.executemany(
            "INSERT INTO device_tag (device_uuid, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (device_uuid, key) DO UPDATE SET value = excluded.value",
            [(device_uuid, k, v) for k, v in tags.items()],
        )

    def remove_tags(self, device_uuid: str, keys: Iterable[str]) -> list[str]:
        """Remove tags by key; returns the keys that were set."""
        removed = []
        for key in keys:
            cur = self._conn.execute(
                "DELETE FROM device_tag WHERE device_uuid = ? AND key = ?", (device_uuid, key)
            )
            if cur.rowcount:
                removed.append(key)
        return removed

    # --- devices as the composer sees them --------------------------------------------------

    def device_views(self) -> list[DeviceView]:
        """Every registered device: last seen, integrity token, ECDH certificate (one query)."""
        rows = self._conn.execute(
            "SELECT d.uuid, d.last_seen, d.integrity_token IS NOT NULL,"
            " EXISTS (SELECT 1 FROM device_cert c WHERE c.device_uuid = d.uuid"
            "  AND c.cert_type = ?) FROM device d ORDER BY d.uuid",
            (certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE,),
        )
        return [
            DeviceView(str(u), None if s is None else float(s), bool(t), bool(e))
            for u, s, t, e in rows
        ]

    # --- clusters -------------------------------------------------------------------------

    def add_cluster(self, record: ClusterRecord) -> None:
        """Store a new cluster; raises sqlite3.IntegrityError for a name or index in use."""
        self._conn.execute(
            f"INSERT INTO cluster ({_CLUSTER_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id, record.name, record.select_key, record.select_value,
                record.servers.min, record.servers.max, record.agents.min, record.agents.max,
                json.dumps(list(record.network_tags)), record.manifest_url, record.k3s_image,
                record.k3s_objects, record.vm_memory_mib, record.vm_vcpus, record.net_index,
                record.lost_after, record.token, int(record.active), record.state.value,
                record.note, record.created_at, record.changed_at,
            ),
        )  # fmt: skip

    def cluster(self, cluster_id: str) -> ClusterRecord | None:
        row = self._conn.execute(
            f"SELECT {_CLUSTER_COLUMNS} FROM cluster WHERE id = ?", (cluster_id,)
        ).fetchone()
        return _cluster(row) if row else None

    def cluster_by_name(self, name: str) -> ClusterRecord | None:
        row = self._conn.execute(
            f"SELECT {_CLUSTER_COLUMNS} FROM cluster WHERE name = ?", (name,)
        ).fetchone()
        return _cluster(row) if row else None

    def clusters(self) -> list[ClusterRecord]:
        """All clusters, oldest first."""
        rows = self._conn.execute(f"SELECT {_CLUSTER_COLUMNS} FROM cluster ORDER BY created_at, id")
        return [_cluster(r) for r in rows]

    def free_net_index(self, limit: int) -> int | None:
        """The smallest address index no cluster uses, below ``limit``; None when all are."""
        used = {int(r[0]) for r in self._conn.execute("SELECT net_index FROM cluster")}
        return next((i for i in range(limit) if i not in used), None)

    def set_active(self, cluster_id: str, active: bool) -> None:
        self._conn.execute(
            "UPDATE cluster SET active = ?, changed_at = ? WHERE id = ?",
            (int(active), self.now(), cluster_id),
        )

    def set_status(self, cluster_id: str, state: State, note: str) -> None:
        self._conn.execute(
            "UPDATE cluster SET state = ?, note = ? WHERE id = ?", (state.value, note, cluster_id)
        )

    def delete_cluster(self, cluster_id: str) -> None:
        """Forget the cluster, its members and its events."""
        self._conn.execute("DELETE FROM cluster WHERE id = ?", (cluster_id,))

    # --- members --------------------------------------------------------------------------

    def members(self, cluster_id: str | None = None) -> list[MemberRecord]:
        """A cluster's members (all clusters' without an id), by cluster then slot."""
        where, args = ("WHERE cluster_id = ?", (cluster_id,)) if cluster_id else ("", ())
        rows = self._conn.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM cluster_member {where} ORDER BY cluster_id, slot", args
        )
        return [_member(r) for r in rows]

    def membership(self, device_uuid: str) -> MemberRecord | None:
        row = self._conn.execute(
            f"SELECT {_MEMBER_COLUMNS} FROM cluster_member WHERE device_uuid = ?", (device_uuid,)
        ).fetchone()
        return _member(row) if row else None

    def replace_members(self, cluster_id: str, members: Sequence[MemberRecord]) -> None:
        """Make ``members`` the cluster's whole membership.  Call inside a transaction."""
        self._conn.execute("DELETE FROM cluster_member WHERE cluster_id = ?", (cluster_id,))
        self._conn.executemany(
            f"INSERT INTO cluster_member ({_MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (cluster_id, m.device_uuid, m.role.value, m.slot, m.joined_at, m.added,
                 m.config_error)
                for m in members
            ],
        )  # fmt: skip

    # --- events ---------------------------------------------------------------------------

    def add_events(self, cluster_id: str, events: Sequence[Event]) -> None:
        """Append events (now), keeping the newest MAX_EVENTS of the cluster."""
        if not events:
            return
        now = self.now()
        self._conn.executemany(
            "INSERT INTO cluster_event (cluster_id, at, text, reason) VALUES (?, ?, ?, ?)",
            [(cluster_id, now, e.text, e.reason) for e in events],
        )
        self._conn.execute(
            "DELETE FROM cluster_event WHERE cluster_id = ? AND id <= (SELECT id FROM"
            " cluster_event WHERE cluster_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (cluster_id, cluster_id, MAX_EVENTS),
        )

    def events(self, cluster_id: str, *, last: int | None = None) -> list[EventRecord]:
        """The cluster's events, oldest first; only the newest ``last`` when given."""
        rows = self._conn.execute(
            "SELECT * FROM (SELECT id, cluster_id, at, text, reason FROM cluster_event"
            " WHERE cluster_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (cluster_id, -1 if last is None else last),
        )
        return [EventRecord(int(i), str(c), float(a), str(t), str(r)) for i, c, a, t, r in rows]

    def node_version(self, device_uuid: str) -> str | None:
        """The software version in the device's latest device info (``dinfo.swList[0]``), as
        the device sent it (hostile text: escape it before printing)."""
        row = self._conn.execute(
            "SELECT CASE WHEN json_valid(json) THEN"
            " json_extract(json, '$.dinfo.swList[0].shortVersion') END FROM report"
            " WHERE device_uuid = ? AND kind = 'info' AND json_valid(json)"
            " AND json_extract(json, '$.ztype') = 'ZiDevice' ORDER BY id DESC LIMIT 1",
            (device_uuid,),
        ).fetchone()
        return str(row[0])[:64] if row and row[0] is not None else None

    def kube_report(self, device_uuid: str, cluster_id: str) -> tuple[float, Any] | None:
        """The device's latest cluster report (ZInfoKubeCluster, as the K3s VM's API told its
        node) for this cluster: when it came, and its ``clusterInfo`` as parsed JSON.  Hostile:
        the caller checks every field."""
        row = self._conn.execute(
            "SELECT received_at, json_extract(json, '$.clusterInfo') FROM report"
            " WHERE device_uuid = ? AND kind = 'info' AND json_valid(json)"
            " AND json_extract(json, '$.ztype') = 'ZiKubeCluster'"
            " AND json_extract(json, '$.clusterInfo.clusterId') = ? ORDER BY id DESC LIMIT 1",
            (device_uuid, cluster_id),
        ).fetchone()
        if row is None or row[1] is None:
            return None
        try:
            return float(row[0]), json.loads(row[1])
        except ValueError:
            return None

    def app_custom_statuses(
        self, device_uuid: str, app_id: str, *, last: int
    ) -> list[tuple[float, str]]:
        """The device's newest ``last`` custom statuses of app ``app_id`` (``ZInfoAppInstMetaData``
        of type CUSTOM_STATUS, what its VM posted to ``/eve/v1/app/appCustomStatus``), newest
        first: when each came and its ``data`` as stored (base64).  Hostile: check everything."""
        rows = self._conn.execute(
            "SELECT received_at, json_extract(json, '$.amdinfo.data') FROM report"
            " WHERE device_uuid = ? AND kind = 'info' AND json_valid(json)"
            " AND json_extract(json, '$.ztype') = 'ZiAppInstMetaData'"
            " AND json_extract(json, '$.amdinfo.uuid') = ?"
            " AND json_extract(json, '$.amdinfo.type') = 'APP_INST_META_DATA_TYPE_CUSTOM_STATUS'"
            " ORDER BY id DESC LIMIT ?",
            (device_uuid, app_id, last),
        ).fetchall()
        return [(float(at), data) for at, data in rows if isinstance(data, str)]

    # --- configs written inside a cluster transaction ----------------------------------------

    def next_config_version(self, device_uuid: str) -> int:
        (highest,) = self._conn.execute(
            "SELECT coalesce(max(version), -1) FROM config WHERE device_uuid = ?", (device_uuid,)
        ).fetchone()
        return int(highest) + 1

    def insert_config(self, device_uuid: str, version: int, new: NewConfig) -> None:
        """Store a config version (as Store.add_config does, but inside the caller's
        transaction, so memberships and the configs that carry them change together)."""
        self._conn.execute(
            "INSERT INTO config (device_uuid, version, config, config_hash, config_timestamp,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (device_uuid, version, new.config, new.config_hash, new.config_timestamp, self.now()),
        )


def _cluster(row: Any) -> ClusterRecord:
    (
        cid, name, key, value, smin, smax, amin, amax, tags, manifest, image, objects, memory,
        vcpus, net_index, lost_after, token, active, state, note, created_at, changed_at,
    ) = row  # fmt: skip
    return ClusterRecord(
        id=str(cid),
        name=str(name),
        select_key=str(key),
        select_value=str(value),
        servers=Size(int(smin), int(smax)),
        agents=Size(int(amin), int(amax)),
        network_tags=tuple(str(t) for t in json.loads(tags)),
        manifest_url=str(manifest),
        k3s_image=str(image),
        k3s_objects=None if objects is None else bytes(objects),
        vm_memory_mib=int(memory),
        vm_vcpus=int(vcpus),
        net_index=int(net_index),
        lost_after=float(lost_after),
        token=str(token),
        active=bool(active),
        state=State(state),
        note=str(note),
        created_at=float(created_at),
        changed_at=float(changed_at),
    )


def _member(row: Any) -> MemberRecord:
    cluster_id, device_uuid, role, slot, joined_at, added, config_error = row
    return MemberRecord(
        cluster_id=str(cluster_id),
        device_uuid=str(device_uuid),
        role=Role(role),
        slot=int(slot),
        joined_at=float(joined_at),
        added=str(added),
        config_error=str(config_error),
    )
