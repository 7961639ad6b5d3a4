"""The operator's cluster commands: ``device tag/untag`` and ``cluster ...``.

Like the rest of the admin commands (controller.admin) they work on the state directory, print
their result, and raise admin.AdminError for what the operator must fix.  Every change is
followed by a recomposition (controller.clusterwork.recompose), so its effect on memberships and
configs is immediate; the running server recomposes every 30 s as well.

The cluster token is generated here and never printed.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sqlite3
import uuid as uuidlib
from typing import Any

from agent.wire.pb.config import devconfig_pb2
from controller import admin, clusterconfig, clusterstatus, clusterwork
from controller.admin import AdminError, _print_json, _print_table, _printable, open_store
from controller.clusters import ClusterRecord, ClusterStore, TagError, check_tag
from controller.composer import Event, Size, State
from controller.records import rfc3339
from controller.state import StateDir
from controller.store import Store

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # as the agent accepts an ACE adapter label
_URL = re.compile(r"^https?://[^\s\x00-\x1f\x7f]{1,2040}$")
#: Events ``cluster show`` prints.
SHOW_EVENTS = 20


def add_parsers(
    commands: Any,
    device_cmds: Any,
    common: argparse.ArgumentParser,
    as_json: argparse.ArgumentParser,
) -> None:
    """Add ``device tag/untag`` and the ``cluster`` command to the CLI's parsers."""
    tag = device_cmds.add_parser("tag", parents=[common], help="set tags (KEY=VALUE ...)")
    tag.add_argument("uuid", metavar="UUID")
    tag.add_argument("tags", nargs="+", metavar="KEY=VALUE")
    untag = device_cmds.add_parser("untag", parents=[common], help="remove tags by key")
    untag.add_argument("uuid", metavar="UUID")
    untag.add_argument("keys", nargs="+", metavar="KEY")

    cluster = commands.add_parser("cluster", help="zero-touch K3s clusters of tagged nodes")
    cmds = cluster.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = cmds.add_parser("create", parents=[common], help="a new cluster")
    create.add_argument("name", metavar="NAME", help="lower-case letters, digits, -")
    create.add_argument(
        "--select", required=True, metavar="KEY=VALUE", help="members: nodes with this tag"
    )
    create.add_argument("--servers", default="1:1", metavar="MIN:MAX", help="default 1:1")
    create.add_argument("--agents", default="0:0", metavar="MIN:MAX", help="default 0:0")
    create.add_argument(
        "--network-tag",
        action="append",
        required=True,
        metavar="TAG",
        help="port label of the cluster interface (e.g. uplink); a second one gives the K3s "
        "VM another network",
    )
    create.add_argument("--manifest-url", default="", metavar="URL")
    create.add_argument(
        "--k3s-image",
        default="",
        metavar="CONTENT",
        help="content tree UUID or URL from a stored config (the default or a device's)",
    )
    create.add_argument("--vm-memory", type=int, default=2048, metavar="MIB")
    create.add_argument("--vm-cpus", type=int, default=2, metavar="N")
    create.add_argument(
        "--lost-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="a member not seen for longer is replaced (default 600)",
    )
    cmds.add_parser("list", parents=[common, as_json], help="all clusters")
    show = cmds.add_parser("show", parents=[common, as_json], help="members, state, events")
    show.add_argument("name", metavar="NAME")
    events = cmds.add_parser("events", parents=[common, as_json], help="event history")
    events.add_argument("name", metavar="NAME")
    events.add_argument("--last", type=int, metavar="N", help="only the newest N")
    for action, text in (
        ("deactivate", "stop the members' K3s VMs (volumes kept)"),
        ("activate", "start them again"),
        ("delete", "remove the cluster from its members' configs and forget it"),
    ):
        cmd = cmds.add_parser(action, parents=[common], help=text)
        cmd.add_argument("name", metavar="NAME")


def handles(args: argparse.Namespace) -> bool:
    """Whether ``args`` is one of this module's commands."""
    action = getattr(args, "action", None)
    return args.command == "cluster" or (args.command == "device" and action in ("tag", "untag"))


def run(state: StateDir, args: argparse.Namespace) -> int:
    """Execute a command :func:`handles` accepted."""
    if args.command == "device":
        if args.action == "tag":
            device_tag(state, args.uuid, args.tags)
        else:
            device_untag(state, args.uuid, args.keys)
        return 0
    action = args.action
    if action == "create":
        cluster_create(state, args)
    elif action == "list":
        cluster_list(state, as_json=args.json)
    elif action == "show":
        cluster_show(state, args.name, as_json=args.json)
    elif action == "events":
        cluster_events(state, args.name, last=args.last, as_json=args.json)
    elif action in ("activate", "deactivate"):
        cluster_activate(state, args.name, active=action == "activate")
    else:
        cluster_delete(state, args.name)
    return 0


def _keys(state: StateDir) -> clusterwork.ControllerKeys:
    try:
        return clusterwork.load_keys(state)
    except clusterwork.ClusterError as exc:
        raise AdminError(str(exc)) from exc


def _recompose(state: StateDir, store: Store) -> clusterwork.Outcome:
    return clusterwork.recompose(store, _keys(state))


def _outcome(outcome: clusterwork.Outcome) -> str:
    return f"{outcome.events} cluster events, {outcome.configs} config versions written"


# --- tags ------------------------------------------------------------------------------------


def parse_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise AdminError(f"expected KEY=VALUE, got {text!r}")
    try:
        check_tag(key, value)
    except TagError as exc:
        raise AdminError(str(exc)) from exc
    return key, value


def device_tag(state: StateDir, device_text: str, pairs: list[str]) -> None:
    tags = dict(parse_pair(p) for p in pairs)
    with open_store(state) as store:
        device = admin.resolve_device(store, device_text)
        cs = ClusterStore(store.connection, store.clock)
        try:
            with cs.transaction():
                cs.set_tags(device.uuid, tags)
        except TagError as exc:
            raise AdminError(str(exc)) from exc
        outcome = _recompose(state, store)
        shown = cs.tags(device.uuid)
    print(f"{device.uuid}: {_tags_text(shown)} ({_outcome(outcome)})")


def device_untag(state: StateDir, device_text: str, keys: list[str]) -> None:
    with open_store(state) as store:
        device = admin.resolve_device(store, device_text)
        cs = ClusterStore(store.connection, store.clock)
        removed = cs.remove_tags(device.uuid, keys)
        outcome = _recompose(state, store)
        shown = cs.tags(device.uuid)
    missing = [k for k in keys if k not in removed]
    note = f"; not set: {', '.join(missing)}" if missing else ""
    print(f"{device.uuid}: {_tags_text(shown)}{note} ({_outcome(outcome)})")


def _tags_text(tags: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "(no tags)"


# --- clusters --------------------------------------------------------------------------------


def _size(text: str, what: str) -> Size:
    low, sep, high = text.partition(":")
    try:
        numbers = int(low), int(high if sep else low)
    except ValueError:
        raise AdminError(f"bad {what} {text!r}: use MIN:MAX, e.g. 1:3") from None
    try:
        return Size(*numbers)
    except ValueError as exc:
        raise AdminError(f"bad {what}: {exc}") from None


def find_k3s_image(store: Store, text: str) -> tuple[bytes, str]:
    """The content tree ``text`` names (UUID or URL) with its datastores, as a serialised
    EdgeDevConfig, from the default config or a device's current config; and where it was."""
    wanted = text.strip()
    sources: list[tuple[str, bytes]] = []
    template = store.default_config()
    if template is not None:
        sources.append(("the default config", template))
    for device in store.list_devices():
        current = store.current_config(device.uuid)
        if current is not None:
            sources.append((f"the config of {device.uuid}", current.config))
    for where, data in sources:
        config = devconfig_pb2.EdgeDevConfig()
        config.ParseFromString(data)
        for tree in config.contentInfo:
            if wanted not in (tree.uuid, tree.uuid.lower(), tree.URL):
                continue
            ids = {*tree.ds_ids_list, tree.dsId} - {""}
            stores = [d for d in config.datastores if d.id in ids]
            if len(stores) != len(ids):
                continue
            for ds in stores:
                if ds.HasField("cipherData"):
                    raise AdminError(
                        f"the K3s image's datastore {ds.id} ({where}) has credentials "
                        "encrypted for one device; use a datastore without them or with "
                        "clear ones"
                    )
            objects = devconfig_pb2.EdgeDevConfig(contentInfo=[tree], datastores=stores)
            return objects.SerializeToString(deterministic=True), f"{tree.uuid} from {where}"
    raise AdminError(
        f"no content tree {text!r} (by UUID or URL) in the default config or any device's "
        "config: add its contentInfo and datastore to one first"
    )


def cluster_create(state: StateDir, args: argparse.Namespace) -> None:
    name = args.name
    if not _NAME.match(name):
        raise AdminError(f"bad cluster name {name!r}: 1-40 of a-z, 0-9 and -")
    key, value = parse_pair(args.select)
    servers, agents = _size(args.servers, "--servers"), _size(args.agents, "--agents")
    if servers.min < 1:
        raise AdminError("a cluster needs at least one server (--servers 1:N)")
    if servers.max + agents.max > clusterconfig.MAX_MEMBERS:
        raise AdminError(f"at most {clusterconfig.MAX_MEMBERS} members per cluster")
    tags = tuple(args.network_tag)
    if len(tags) > clusterconfig.MAX_NETWORKS or len(set(tags)) != len(tags):
        raise AdminError(f"1 to {clusterconfig.MAX_NETWORKS} distinct --network-tag")
    for tag in tags:
        if not _LABEL.match(tag):
            raise AdminError(f"bad --network-tag {tag!r}: a port label (letters, digits, _.:-)")
    if args.manifest_url and not _URL.match(args.manifest_url):
        raise AdminError(f"bad --manifest-url {args.manifest_url[:80]!r}: an http(s) URL")
    if not 256 <= args.vm_memory <= 1 << 20 or not 1 <= args.vm_cpus <= 64:
        raise AdminError("--vm-memory 256..1048576 MiB, --vm-cpus 1..64")
    if not 30 <= args.lost_after <= 30 * 86400:
        raise AdminError("--lost-after is 30 s to 30 days")
    with open_store(state) as store:
        objects, found = (None, "")
        if args.k3s_image:
            objects, found = find_k3s_image(store, args.k3s_image)
        cs = ClusterStore(store.connection, store.clock)
        with cs.transaction():
            if cs.cluster_by_name(name) is not None:
                raise AdminError(f"there is a cluster {name} already")
            index = cs.free_net_index(clusterconfig.MAX_CLUSTERS)
            if index is None:
                raise AdminError(f"at most {clusterconfig.MAX_CLUSTERS} clusters")
            now = cs.now()
            record = ClusterRecord(
                id=str(uuidlib.uuid4()), name=name, select_key=key, select_value=value,
                servers=servers, agents=agents, network_tags=tags,
                manifest_url=args.manifest_url, k3s_image=args.k3s_image, k3s_objects=objects,
                vm_memory_mib=args.vm_memory, vm_vcpus=args.vm_cpus, net_index=index,
                lost_after=args.lost_after, token=secrets.token_urlsafe(32), active=True,
                state=State.WAITING, note="", created_at=now, changed_at=now,
            )  # fmt: skip
            try:
                cs.add_cluster(record)
            except sqlite3.IntegrityError as exc:
                raise AdminError(f"cannot create cluster {name}: {exc}") from exc
        outcome = _recompose(state, store)
        created = cs.cluster(record.id)
    assert created is not None
    print(f"cluster {name} ({record.id}) created: {created.state} {created.note}".rstrip())
    if found:
        print(f"K3s image: content tree {found}")
    print(_outcome(outcome))


def resolve_cluster(cs: ClusterStore, text: str) -> ClusterRecord:
    found = cs.cluster_by_name(text) or cs.cluster(text.lower())
    if found is None:
        raise AdminError(f"no cluster {text}")
    return found


def cluster_activate(state: StateDir, name: str, *, active: bool) -> None:
    with open_store(state) as store:
        cs = ClusterStore(store.connection, store.clock)
        record = resolve_cluster(cs, name)
        if record.active == active:
            print(f"cluster {record.name} is {'active' if active else 'deactivated'} already")
            return
        with cs.transaction():
            cs.set_active(record.id, active)
            cs.add_events(record.id, [_admin_event("activated" if active else "deactivated")])
        outcome = _recompose(state, store)
    print(f"cluster {record.name} {'activated' if active else 'deactivated'} ({_outcome(outcome)})")


def _admin_event(what: str) -> Event:
    return Event(f"cluster {what} by the operator", "eve-controller cluster command")


def cluster_delete(state: StateDir, name: str) -> None:
    """Take the cluster out of its members' configs (their K3s VMs and volumes go), then
    forget it, its members and its events, in one transaction."""
    with open_store(state) as store:
        cs = ClusterStore(store.connection, store.clock)
        record = resolve_cluster(cs, name)
        keys = _keys(state)
        with cs.transaction():
            # Recompose without it: the members' configs lose the cluster part.
            members = cs.members(record.id)
            written = clusterwork.release_members(store, cs, keys, members)
            cs.delete_cluster(record.id)
    print(f"cluster {record.name} deleted; {len(members)} members released, {written} config "
          "versions written")  # fmt: skip


def cluster_list(state: StateDir, *, as_json: bool) -> None:
    with open_store(state) as store:
        cs = ClusterStore(store.connection, store.clock)
        records = cs.clusters()
        members = cs.members()
    counts = {r.id: [0, 0] for r in records}
    for m in members:
        counts[m.cluster_id][0 if m.role.is_server else 1] += 1
    if as_json:
        _print_json([{**_cluster_json(r), "servers": counts[r.id][0], "agents": counts[r.id][1]}
                     for r in records])  # fmt: skip
        return
    _print_table(
        ("NAME", "STATE", "SERVERS", "AGENTS", "SELECTOR", "NETWORK", "ACTIVE"),
        [
            (
                r.name,
                str(r.state),
                f"{counts[r.id][0]} ({r.servers})",
                f"{counts[r.id][1]} ({r.agents})",
                f"{r.select_key}={r.select_value}",
                ",".join(r.network_tags),
                "yes" if r.active else "no",
            )
            for r in records
        ],
    )


def _cluster_json(r: ClusterRecord) -> dict[str, Any]:
    return {
        "name": r.name,
        "id": r.id,
        "state": r.state.value,
        "note": r.note,
        "active": r.active,
        "selector": {r.select_key: r.select_value},
        "size": {"servers": str(r.servers), "agents": str(r.agents)},
        "network_tags": list(r.network_tags),
    }


def cluster_show(state: StateDir, name: str, *, as_json: bool) -> None:
    with open_store(state) as store:
        cs = ClusterStore(store.connection, store.clock)
        record = resolve_cluster(cs, name)
        detail = _cluster_json(record)
        members = cs.members(record.id)
        kube, kube_at = clusterstatus.cluster_kube(cs, record, members)
        prefix = clusterconfig.cluster_prefix(record.net_index)
        detail |= {
            "cluster_prefix": str(prefix),
            "networks": [
                {"tag": tag, "subnet": str(clusterconfig.vm_network(record.net_index, i))}
                for i, tag in enumerate(record.network_tags)
            ],
            "k3s_image": record.k3s_image,
            "manifest_url": record.manifest_url,
            "vm": {"memory_mib": record.vm_memory_mib, "vcpus": record.vm_vcpus},
            "lost_after": record.lost_after,
            "token": "set (never shown)",
            "created": rfc3339(record.created_at),
            "members": [clusterstatus.member_status(store, cs, record, m, kube) for m in members],
            "kubernetes_report": rfc3339(kube_at),
            "events": [
                {"at": rfc3339(e.at), "text": e.text, "reason": e.reason}
                for e in cs.events(record.id, last=SHOW_EVENTS)
            ],
        }
    if as_json:
        _print_json(detail)
        return
    rows = [
        ("name", record.name),
        ("id", record.id),
        ("state", f"{record.state} {record.note}".rstrip()),
        ("active", "yes" if record.active else "no"),
        ("selector", f"{record.select_key}={record.select_value}"),
        ("servers", str(record.servers)),
        ("agents", str(record.agents)),
        ("cluster prefix", str(prefix)),
        ("networks", ", ".join(f"{n['tag']} {n['subnet']}" for n in detail["networks"])),
        ("K3s image", record.k3s_image or "- (no K3s VM: the node runs K3s itself)"),
        ("manifest URL", record.manifest_url or "-"),
        ("VM", f"{record.vm_memory_mib} MiB, {record.vm_vcpus} vCPUs"),
        ("lost after", f"{record.lost_after:g} s"),
        ("token", "set (never shown)"),
        ("created", detail["created"] or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print()
    print(f"Kubernetes as last reported: {detail['kubernetes_report'] or 'no report yet'}")
    _print_table(
        ("NODE", "ROLE", "ADDRESS", "JOINED", "LAST SEEN", "K3S VM", "READY", "K8S", "VERSION",
         "PROBLEMS"),
        [
            (
                m["node"], m["role"], m["address"], m["joined"] or "-", m["last_seen"] or "-",
                _printable(m["vm_state"] or "-"), "yes" if m["ready"] else "no",
                _printable(m["kubernetes"]["version"] if m["kubernetes"] else "-"),
                _printable(m["version"] or "-"),
                _printable("; ".join(m["problems"]))[:120] or "-",
            )
            for m in detail["members"]
        ],
    )  # fmt: skip
    print()
    _print_events(detail["events"])


def _print_events(events: list[dict[str, Any]]) -> None:
    if not events:
        print("no events")
        return
    for e in events:
        print(f"{e['at']}  {e['text']}")
        if e["reason"]:
            print(f"    {e['reason']}")


def cluster_events(state: StateDir, name: str, *, last: int | None, as_json: bool) -> None:
    if last is not None and last <= 0:
        raise AdminError("--last must be positive")
    with open_store(state) as store:
        cs = ClusterStore(store.connection, store.clock)
        record = resolve_cluster(cs, name)
        events = [
            {"at": rfc3339(e.at), "text": e.text, "reason": e.reason}
            for e in cs.events(record.id, last=last)
        ]
    if as_json:
        _print_json(events)
        return
    _print_events(events)
