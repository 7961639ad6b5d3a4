"""The node's desired state as typed, validated, immutable dataclasses made from EdgeDevConfig.

This is where protobuf stops: reconcilers and reporters above see only these types.  Every field
the controller sends is treated as hostile: identifiers must be UUIDs, names bounded, numbers in
range, references resolvable.  An invalid object is left out of the model and recorded as an
:class:`ObjectError` on that object alone, so the rest of the config still applies; objects that
refer to a left-out object are left out too, with an error naming the missing reference.

Only a config that is unusable as a whole (no or bad device UUID) raises ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.model.acl import Ace, parse_ace
from agent.model.configitems import ConfigItems, parse_items
from agent.util.ids import parse_uuid
from agent.wire.pb.config import devconfig_pb2

MAX_NAME = 256
MAX_USERDATA = 256 * 1024
MAX_OBJECTS = 10_000


@dataclass(frozen=True, slots=True)
class ObjectError:
    kind: str
    id: str
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Datastore:
    id: str
    ds_type: int
    fqdn: str
    dpath: str
    region: str
    has_cipher: bool


@dataclass(frozen=True, slots=True)
class ContentTree:
    id: str
    name: str
    url: str
    format: int
    sha256: str
    max_size: int
    generation: int
    datastore_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Volume:
    id: str
    name: str
    origin_type: int
    content_tree_id: str
    generation: int
    max_size: int
    readonly: bool
    clear_text: bool
    target: int


@dataclass(frozen=True, slots=True)
class AppInterface:
    name: str
    network_id: str
    static_ip: str
    mac: str
    acls: tuple[Ace, ...]
    access_vlan: int


@dataclass(frozen=True, slots=True)
class VolumeRef:
    id: str
    generation: int
    mount_dir: str


@dataclass(frozen=True, slots=True)
class AppInstance:
    id: str
    version: str
    name: str
    activate: bool
    memory_kib: int
    vcpus: int
    virtualization_mode: int
    runtime_type: int
    interfaces: tuple[AppInterface, ...]
    volumes: tuple[VolumeRef, ...]
    restart_counter: int
    purge_counter: int
    user_data: str
    has_cipher: bool
    start_delay: int
    cloud_init_version: int


@dataclass(frozen=True, slots=True)
class NetworkInstance:
    id: str
    version: str
    name: str
    inst_type: int
    activate: bool
    port: str
    ip_type: int
    subnet: str
    gateway: str
    dhcp_start: str
    dhcp_end: str
    dns_servers: tuple[str, ...]
    static_dns: tuple[tuple[str, tuple[str, ...]], ...]
    mtu: int


@dataclass(frozen=True, slots=True)
class OpsCounter:
    counter: int = 0
    desired_state: bool = False


@dataclass(frozen=True)
class NodeConfig:
    device_uuid: str
    version: str
    timestamp: float
    items: ConfigItems
    datastores: Mapping[str, Datastore] = field(default_factory=dict)
    content_trees: Mapping[str, ContentTree] = field(default_factory=dict)
    volumes: Mapping[str, Volume] = field(default_factory=dict)
    network_instances: Mapping[str, NetworkInstance] = field(default_factory=dict)
    apps: Mapping[str, AppInstance] = field(default_factory=dict)
    reboot: OpsCounter = OpsCounter()
    shutdown: OpsCounter = OpsCounter()
    maintenance_mode: bool = False
    controller_epoch: int = 0
    controllercert_confighash: str = ""
    errors: tuple[ObjectError, ...] = ()


class _Invalid(ValueError):
    pass


def _name(text: str, what: str) -> str:
    if len(text) > MAX_NAME:
        raise _Invalid(f"{what} longer than {MAX_NAME} characters")
    if any(ord(c) < 32 for c in text):
        raise _Invalid(f"{what} contains control characters")
    return text


def _uuid(text: str, what: str) -> str:
    try:
        return parse_uuid(text, what)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _non_negative(value: int, what: str) -> int:
    if value < 0:
        raise _Invalid(f"{what} is negative")
    return value


T = TypeVar("T")


def _collect(
    kind: str,
    messages: Iterable[Any],
    ident: Callable[[Any], tuple[str, str]],
    build: Callable[[Any], T],
    errors: list[ObjectError],
) -> dict[str, T]:
    """Build every object; a failing one becomes an error.  Duplicate ids: the first wins."""
    out: dict[str, T] = {}
    for count, msg in enumerate(messages):
        raw_id, name = ident(msg)
        if count >= MAX_OBJECTS:
            errors.append(ObjectError(kind, raw_id, name, f"more than {MAX_OBJECTS} {kind}s"))
            continue
        try:
            obj = build(msg)
        except _Invalid as exc:
            errors.append(ObjectError(kind, raw_id[:64], name[:MAX_NAME], str(exc)))
            continue
        obj_id = getattr(obj, "id")  # noqa: B009 - every model object has an id
        if obj_id in out:
            errors.append(ObjectError(kind, obj_id, name, f"duplicate {kind} id {obj_id}"))
            continue
        out[obj_id] = obj
    return out


def _datastore(msg: Any) -> Datastore:
    return Datastore(
        id=_uuid(msg.id, "datastore id"),
        ds_type=int(msg.dType),
        fqdn=_name(msg.fqdn, "fqdn"),
        dpath=_name(msg.dpath, "dpath"),
        region=_name(msg.region, "region"),
        has_cipher=msg.HasField("cipherData"),
    )


def _content_tree(msg: Any) -> ContentTree:
    ds_ids = tuple(_uuid(d, "datastore id") for d in msg.ds_ids_list)
    if not ds_ids and msg.dsId:
        ds_ids = (_uuid(msg.dsId, "datastore id"),)
    sha = msg.sha256.lower()
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise _Invalid("sha256 is not 64 hex digits")
    if len(msg.URL) > 4096:
        raise _Invalid("URL longer than 4096 characters")
    return ContentTree(
        id=_uuid(msg.uuid, "content tree id"),
        name=_name(msg.displayName, "displayName"),
        url=msg.URL,
        format=int(msg.iformat),
        sha256=sha,
        max_size=int(msg.maxSizeBytes),
        generation=int(msg.generation_count),
        datastore_ids=ds_ids,
    )


def _volume(msg: Any) -> Volume:
    origin = msg.origin
    tree_id = ""
    if origin.downloadContentTreeID:
        tree_id = _uuid(origin.downloadContentTreeID, "downloadContentTreeID")
    return Volume(
        id=_uuid(msg.uuid, "volume id"),
        name=_name(msg.displayName, "displayName"),
        origin_type=int(origin.type),
        content_tree_id=tree_id,
        generation=int(msg.generationCount),
        max_size=_non_negative(int(msg.maxsizebytes), "maxsizebytes"),
        readonly=bool(msg.readonly),
        clear_text=bool(msg.clear_text),
        target=int(msg.target),
    )


def _network_instance(msg: Any) -> NetworkInstance:
    ip = msg.ip
    static = tuple(
        (_name(e.HostName, "dns host name"), tuple(_name(a, "dns address") for a in e.Address))
        for e in msg.dns
    )
    return NetworkInstance(
        id=_uuid(msg.uuidandversion.uuid, "network instance id"),
        version=_name(msg.uuidandversion.version, "version"),
        name=_name(msg.displayname, "displayname"),
        inst_type=int(msg.instType),
        activate=bool(msg.activate),
        port=_name(msg.port.name, "port name"),
        ip_type=int(msg.ipType),
        subnet=_name(ip.subnet, "subnet"),
        gateway=_name(ip.gateway, "gateway"),
        dhcp_start=_name(ip.dhcpRange.start, "dhcp range start"),
        dhcp_end=_name(ip.dhcpRange.end, "dhcp range end"),
        dns_servers=tuple(_name(d, "dns server") for d in ip.dns),
        static_dns=static,
        mtu=int(msg.mtu),
    )


def _interface(msg: Any) -> AppInterface:
    vlan = int(msg.access_vlan_id)
    if vlan and not 2 <= vlan <= 4093:
        raise _Invalid(f"access_vlan_id {vlan} outside 2..4093")
    try:
        acls = tuple(parse_ace(a) for a in msg.acls)
    except ValueError as exc:
        raise _Invalid(f"interface {msg.name!r}: {exc}") from None
    return AppInterface(
        name=_name(msg.name, "interface name"),
        network_id=_uuid(msg.networkId, "networkId"),
        static_ip=_name(msg.addr, "addr"),
        mac=_name(msg.macAddress, "macAddress"),
        acls=acls,
        access_vlan=vlan,
    )


def _app(msg: Any) -> AppInstance:
    res = msg.fixedresources
    if len(msg.userData) > MAX_USERDATA:
        raise _Invalid(f"userData larger than {MAX_USERDATA} bytes")
    return AppInstance(
        id=_uuid(msg.uuidandversion.uuid, "app id"),
        version=_name(msg.uuidandversion.version, "version"),
        name=_name(msg.displayname, "displayname"),
        activate=bool(msg.activate),
        memory_kib=int(res.memory),
        vcpus=int(res.vcpus),
        virtualization_mode=int(res.virtualizationMode),
        runtime_type=int(msg.runtime_type),
        interfaces=tuple(_interface(i) for i in msg.interfaces),
        volumes=tuple(
            VolumeRef(
                _uuid(v.uuid, "volume ref"), int(v.generationCount), _name(v.mount_dir, "mount_dir")
            )
            for v in msg.volumeRefList
        ),
        restart_counter=int(msg.restart.counter),
        purge_counter=int(msg.purge.counter),
        user_data=msg.userData,
        has_cipher=msg.HasField("cipherData"),
        start_delay=int(msg.start_delay_in_seconds),
        cloud_init_version=int(msg.cloud_init_version),
    )


def _drop_dangling(
    kind: str,
    objects: dict[str, T],
    refs: Callable[[T], Iterable[tuple[str, str]]],
    present: Mapping[str, Mapping[str, object]],
    errors: list[ObjectError],
) -> dict[str, T]:
    """Leave out objects whose references point at missing objects (one error each)."""
    kept: dict[str, T] = {}
    for obj_id, obj in objects.items():
        missing = [f"{k} {r}" for k, r in refs(obj) if r not in present[k]]
        if missing:
            name = str(getattr(obj, "name", ""))
            errors.append(
                ObjectError(kind, obj_id, name, "refers to missing " + ", ".join(missing))
            )
            continue
        kept[obj_id] = obj
    return kept


def from_proto(msg: devconfig_pb2.EdgeDevConfig) -> NodeConfig:
    """Validate an EdgeDevConfig into a NodeConfig.

    Raises ValueError only when the config as a whole is unusable (missing or invalid device
    UUID); every other problem becomes an entry in ``NodeConfig.errors``.
    """
    device_uuid = parse_uuid(msg.id.uuid, "device uuid")
    errors: list[ObjectError] = []
    items = parse_items((i.key, i.value) for i in msg.configItems)
    errors += [
        ObjectError("configitem", e.key[:MAX_NAME], e.key[:MAX_NAME], e.message)
        for e in items.errors
    ]

    datastores = _collect("datastore", msg.datastores, lambda m: (m.id, m.fqdn), _datastore, errors)
    trees = _collect(
        "contenttree", msg.contentInfo, lambda m: (m.uuid, m.displayName), _content_tree, errors
    )
    volumes = _collect("volume", msg.volumes, lambda m: (m.uuid, m.displayName), _volume, errors)
    nis = _collect(
        "networkinstance",
        msg.networkInstances,
        lambda m: (m.uuidandversion.uuid, m.displayname),
        _network_instance,
        errors,
    )
    apps = _collect("app", msg.apps, lambda m: (m.uuidandversion.uuid, m.displayname), _app, errors)

    present: dict[str, Mapping[str, object]] = {"datastore": datastores}
    trees = _drop_dangling(
        "contenttree", trees, lambda t: [("datastore", d) for d in t.datastore_ids], present, errors
    )
    present["contenttree"] = trees
    volumes = _drop_dangling(
        "volume",
        volumes,
        lambda v: [("contenttree", v.content_tree_id)] if v.content_tree_id else [],
        present,
        errors,
    )
    present["volume"] = volumes
    present["networkinstance"] = nis
    apps = _drop_dangling(
        "app",
        apps,
        lambda a: (
            [("volume", v.id) for v in a.volumes]
            + [("networkinstance", i.network_id) for i in a.interfaces]
        ),
        present,
        errors,
    )
    ts = msg.config_timestamp
    return NodeConfig(
        device_uuid=device_uuid,
        version=msg.id.version[:MAX_NAME],
        timestamp=ts.seconds + ts.nanos / 1e9 if msg.HasField("config_timestamp") else 0.0,
        items=items,
        datastores=datastores,
        content_trees=trees,
        volumes=volumes,
        network_instances=nis,
        apps=apps,
        reboot=OpsCounter(int(msg.reboot.counter), bool(msg.reboot.desiredState)),
        shutdown=OpsCounter(int(msg.shutdown.counter), bool(msg.shutdown.desiredState)),
        maintenance_mode=bool(msg.maintenance_mode),
        controller_epoch=int(msg.controller_epoch),
        controllercert_confighash=msg.controllercert_confighash[:MAX_NAME],
        errors=tuple(errors),
    )


@dataclass(frozen=True)
class KindDiff:
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def diff_kind(old: Mapping[str, object], new: Mapping[str, object]) -> KindDiff:
    return KindDiff(
        added=tuple(k for k in new if k not in old),
        changed=tuple(k for k in new if k in old and old[k] != new[k]),
        removed=tuple(k for k in old if k not in new),
    )


def diff_configs(old: NodeConfig | None, new: NodeConfig) -> dict[str, KindDiff]:
    """Per kind, which objects were added, changed or removed.  Pure."""

    def kinds(cfg: NodeConfig | None) -> dict[str, Mapping[str, object]]:
        if cfg is None:
            return {k: {} for k in ("datastore", "contenttree", "volume", "networkinstance", "app")}
        return {
            "datastore": cfg.datastores,
            "contenttree": cfg.content_trees,
            "volume": cfg.volumes,
            "networkinstance": cfg.network_instances,
            "app": cfg.apps,
        }

    before, after = kinds(old), kinds(new)
    out = {k: diff_kind(before[k], after[k]) for k in after}
    out["configitem"] = diff_kind(dict(old.items.values) if old else {}, dict(new.items.values))
    return out
