"""Recomposing the clusters and writing their members' configs.

:func:`recompose` is the one place memberships change.  In one ``BEGIN IMMEDIATE`` transaction it
reads every device (tags, attestation, last seen) and every cluster with its members, asks the
composer (controller.composer, pure) what each cluster should be now, stores the new members,
events and states, and, for every device that is or was a member, renders its config (its base
plus its cluster part, controller.clusterconfig) and stores a new version only when that differs
from the current one.  The admin commands call it after each change (a tag, a cluster created,
activated, deactivated, deleted); the server calls it every 30 s (:func:`run_periodically`),
which is what notices a node lost, attested or seen again.  Two processes recomposing at once
take turns on the write lock.

The join token is encrypted for each member's ECDH certificate (EVE's CipherBlock with
``EncryptionBlock.cluster_token``, as ``config set --encrypt-secrets`` does); an existing block
for the same certificates and token is kept, so an unchanged member's config stays byte for byte
the same.  The token never goes to a log, an event or ``cluster show``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from agent.wire import pki
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2
from controller import clusterconfig, clustermanifest, composer, configs, configsecrets
from controller.clusterconfig import Added, MemberPart
from controller.clusters import ClusterRecord, ClusterStore, MemberRecord
from controller.composer import Event, Role
from controller.server import ListenAddress, serve
from controller.state import StateDir
from controller.store import Store

logger = logging.getLogger("controller.clusters")

#: How often the server recomposes (seconds, with jitter).
INTERVAL = 30.0


class ClusterError(Exception):
    """A cluster operation the operator has to fix; the message says why."""


@dataclass(frozen=True)
class ControllerKeys:
    """The controller's ECDH certificate (PEM as served by /certs) and private key."""

    ecdh_pem: bytes
    ecdh_key: ec.EllipticCurvePrivateKey


def load_keys(state: StateDir) -> ControllerKeys:
    """Raises ClusterError when the ECDH certificate or key is unusable."""
    try:
        pem = state.ecdh_cert.read_bytes()
        key = pki.load_key(state.ecdh_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"controller ECDH certificate or key unusable: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ClusterError(f"{state.ecdh_key} is not an EC key")
    return ControllerKeys(pem, key)


@dataclass(frozen=True)
class Outcome:
    """What one recomposition did."""

    events: int = 0
    configs: int = 0
    """Config versions written."""


def recompose(store: Store, keys: ControllerKeys) -> Outcome:
    """Compose every cluster now and apply the result (see the module docstring)."""
    clusters = ClusterStore(store.connection, store.clock)
    with clusters.transaction():
        return _recompose(store, clusters, keys)


def _recompose(store: Store, cs: ClusterStore, keys: ControllerKeys) -> Outcome:
    now = cs.now()
    records = cs.clusters()
    old: dict[str, list[MemberRecord]] = {r.id: [] for r in records}
    for stored in cs.members():
        old.setdefault(stored.cluster_id, []).append(stored)
    tags = cs.all_tags()
    nodes = [
        composer.Node(v.uuid, tags.get(v.uuid, {}), v.has_token and v.has_ecdh, v.last_seen)
        for v in cs.device_views()
    ]
    result = composer.compose(nodes, [_composer_cluster(r, old[r.id]) for r in records], now=now)

    events: dict[str, list[Event]] = {r.id: list(result[r.id].events) for r in records}
    before = {m.device_uuid: m for members in old.values() for m in members}
    after: dict[str, tuple[ClusterRecord, MemberRecord, MemberPart]] = {}
    for record in records:
        comp = result[record.id]
        for chosen in comp.members:
            prev = before.get(chosen.node)
            kept = prev is not None and prev.cluster_id == record.id
            row = MemberRecord(
                record.id, chosen.node, chosen.role, chosen.slot, chosen.since,
                prev.added if kept and prev else "{}",
                prev.config_error if kept and prev else "",
            )  # fmt: skip
            after[chosen.node] = (record, row, _part(record, comp.members, chosen))

    # Configs first (they decide each member's `added` and error), then the rows.
    written = 0
    final: dict[str, list[MemberRecord]] = {r.id: [] for r in records}
    for device in sorted(set(before) | set(after)):
        target = after.get(device)
        got, wrote = _write_config(store, cs, keys, device, before.get(device), target)
        written += wrote
        if target is not None and got is not None:
            cluster_id = target[0].id
            if got.config_error and got.config_error != target[1].config_error:
                events[cluster_id].append(
                    Event(f"cannot write the config of node {device}", got.config_error)
                )
            final[cluster_id].append(got)
    for rows in final.values():
        rows.sort(key=lambda m: m.slot)
    changed = [r for r in records if final[r.id] != old[r.id]]
    for record in changed:  # departures first: a node may move from one cluster to another
        cs.replace_members(record.id, [])
    for record in changed:
        cs.replace_members(record.id, final[record.id])
    count = 0
    for record in records:
        comp = result[record.id]
        if comp.state is not record.state or comp.note != record.note:
            cs.set_status(record.id, comp.state, comp.note)
        # The manifest's result as a server's VM reported it (once; see clustermanifest).
        events[record.id] += clustermanifest.manifest_events(cs, record, final[record.id])
        cs.add_events(record.id, events[record.id])
        for event in events[record.id]:
            logger.info("cluster %s: %s (%s)", record.name, event.text, event.reason)
        count += len(events[record.id])
    return Outcome(events=count, configs=written)


def _composer_cluster(record: ClusterRecord, members: Sequence[MemberRecord]) -> composer.Cluster:
    return composer.Cluster(
        id=record.id,
        name=record.name,
        selector=record.selector,
        servers=record.servers,
        agents=record.agents,
        lost_after=record.lost_after,
        active=record.active,
        members=tuple(composer.Member(m.device_uuid, m.role, m.slot, m.joined_at) for m in members),
        created_at=record.created_at,
        state=record.state,
        note=record.note,
    )


def _part(
    record: ClusterRecord, members: Sequence[composer.Member], member: composer.Member
) -> MemberPart:
    init = next((m for m in members if m.role is Role.INIT), None)
    servers = [m for m in members if m.role.is_server]  # init first: the composer's order
    return MemberPart(
        cluster_id=record.id,
        cluster_name=record.name,
        node_uuid=member.node,
        role=member.role,
        net_index=record.net_index,
        slot=member.slot,
        network_tags=record.network_tags,
        join_slot=None if init is None else init.slot,
        servers=tuple(m.node for m in servers),
        active=record.active,
        manifest_url=record.manifest_url,
        k3s_objects=record.k3s_objects,
        vm_memory_mib=record.vm_memory_mib,
        vm_vcpus=record.vm_vcpus,
    )


def _current(store: Store, device: str) -> devconfig_pb2.EdgeDevConfig:
    found = store.current_config(device)
    config = devconfig_pb2.EdgeDevConfig()
    if found is not None:
        config.ParseFromString(found.config)
    return config


def _write_config(
    store: Store,
    cs: ClusterStore,
    keys: ControllerKeys,
    device: str,
    old: MemberRecord | None,
    target: tuple[ClusterRecord, MemberRecord, MemberPart] | None,
) -> tuple[MemberRecord | None, int]:
    """Store the device's next config if its cluster part changed; returns its member row
    (with what was added, or why nothing could be written) and how many versions it wrote."""
    current = _current(store, device)
    config = current
    if old is not None:
        config = clusterconfig.strip(current, old.cluster_id, device, Added.from_json(old.added))
    row = None
    if target is not None:
        record, row, part = target
        try:
            config, added = member_config(store, keys, record, part, config, current)
        except ClusterError as exc:
            # Leave its config as it is; the event says why (once: see the caller).
            return replace(row, config_error=str(exc)), 0
        row = replace(row, added=added.to_json(), config_error="")
    if clusterconfig.same(config, current):
        return row, 0
    stamp = configs.timestamp_from_unix(cs.now())
    version = cs.next_config_version(device)
    cs.insert_config(
        device, version, configs.stamp(config, device_uuid=device, version=version, timestamp=stamp)
    )
    return row, 1


def member_config(
    store: Store,
    keys: ControllerKeys,
    record: ClusterRecord,
    part: MemberPart,
    base: devconfig_pb2.EdgeDevConfig,
    current: devconfig_pb2.EdgeDevConfig,
) -> tuple[devconfig_pb2.EdgeDevConfig, Added]:
    """``base`` with the member's cluster part, the token sealed for the device (or taken
    from ``current`` when it holds the same token for the same certificates).  Raises
    ClusterError when the token cannot be encrypted for it."""
    device = store.device(part.node_uuid)
    device_pem = configsecrets.device_ecdh_cert(store.device_certs(part.node_uuid))
    if device is None or device_pem is None:
        raise ClusterError("the node has not sent an ECDH certificate: the token cannot reach it")
    context_id = configsecrets.context_id_for(device_pem, keys.ecdh_pem)
    block = clusterconfig.reusable_token(current, record.id, context_id, record.token)
    context = next((c for c in current.cipherContexts if c.contextId == context_id), None)
    if block is None or context is None:
        try:
            sealed = configsecrets.encrypt_secrets(
                devconfig_pb2.EdgeDevConfig(),
                cluster_token=record.token,
                device_ecdh_pem=device_pem,
                device_cert=device.cert,
                controller_ecdh_pem=keys.ecdh_pem,
                controller_ecdh_key=keys.ecdh_key,
            )
        except (configsecrets.SecretsError, ValueError) as exc:
            raise ClusterError(f"cannot encrypt the token for the node: {exc}") from exc
        block = acipherinfo_pb2.CipherBlock()
        block.CopyFrom(sealed.config.cluster.encrypted_cluster_token)
        context = sealed.config.cipherContexts[-1]
    try:
        return clusterconfig.render(base, part, block, context)
    except ValueError as exc:
        raise ClusterError(str(exc)) from exc


def release_members(
    store: Store, cs: ClusterStore, keys: ControllerKeys, members: Sequence[MemberRecord]
) -> int:
    """Take the cluster part out of these members' configs (for a cluster being deleted);
    returns the config versions written.  Call inside ``cs.transaction()``."""
    return sum(_write_config(store, cs, keys, m.device_uuid, m, None)[1] for m in members)


def with_cluster_part(
    store: Store, state: StateDir, device_uuid: str, config: devconfig_pb2.EdgeDevConfig
) -> devconfig_pb2.EdgeDevConfig:
    """``config`` (a new base from ``config set``) with the device's cluster part when it is a
    member, so that storing it never takes the member out of its cluster, even for a moment.
    Unchanged when it is in no cluster.  Raises ClusterError."""
    cs = ClusterStore(store.connection, store.clock)
    member = cs.membership(device_uuid)
    if member is None:
        return config
    record = cs.cluster(member.cluster_id)
    if record is None:
        return config
    members = [
        composer.Member(m.device_uuid, m.role, m.slot, m.joined_at) for m in cs.members(record.id)
    ]
    members.sort(key=lambda m: (m.role is not Role.INIT, not m.role.is_server, m.slot))
    me = next(m for m in members if m.node == device_uuid)
    base = clusterconfig.strip(config, record.id, device_uuid, Added.from_json(member.added))
    merged, _ = member_config(
        store,
        load_keys(state),
        record,
        _part(record, members, me),
        base,
        _current(store, device_uuid),
    )
    return merged


def forget_device(store: Store, device_uuid: str) -> None:
    """Note in its cluster's history that a member is being removed from the controller (its
    membership goes with it; the next recomposition replaces it)."""
    cs = ClusterStore(store.connection, store.clock)
    member = cs.membership(device_uuid)
    if member is not None:
        cs.add_events(
            member.cluster_id,
            [Event(f"node {device_uuid} left ({member.role})", "removed from the controller")],
        )


def recompose_state(state: StateDir) -> Outcome:
    """Open the state's database, recompose if there are clusters, close.  For a worker
    thread: the connection is made and used in the calling thread."""
    with Store.open(state.database) as store:
        if not ClusterStore(store.connection, store.clock).clusters():
            return Outcome()
        return recompose(store, load_keys(state))


async def run_periodically(
    state: StateDir, stop: asyncio.Event, *, interval: float = INTERVAL
) -> None:
    """Recompose every ``interval`` seconds (0.8-1.2x, jittered) until ``stop`` is set, in a
    worker thread so that the event loop never waits for the database or the crypto."""
    while not stop.is_set():
        try:
            outcome = await asyncio.to_thread(recompose_state, state)
            if outcome.configs:
                logger.info("clusters recomposed: %d config versions written", outcome.configs)
        except (sqlite3.Error, OSError, ValueError, RuntimeError, ClusterError) as exc:
            # Keep the task alive (SchemaTooNew is a RuntimeError); the next round retries.
            logger.warning("cluster recomposition failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval * random.uniform(0.8, 1.2))


async def serve_with_clusters(state: StateDir, listen: ListenAddress, **kwargs: Any) -> None:
    """:func:`controller.server.serve`, with the periodic recomposition beside it."""
    stop: asyncio.Event = kwargs.pop("stop", None) or asyncio.Event()
    task = asyncio.create_task(run_periodically(state, stop))
    try:
        await serve(state, listen, stop=stop, **kwargs)
    finally:
        stop.set()
        await task


__all__ = [
    "ClusterError",
    "ControllerKeys",
    "Outcome",
    "forget_device",
    "load_keys",
    "member_config",
    "recompose",
    "recompose_state",
    "release_members",
    "run_periodically",
    "serve_with_clusters",
    "with_cluster_part",
]
