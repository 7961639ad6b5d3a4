"""The node's desired state as typed, validated, immutable dataclasses made from EdgeDevConfig.

This is where protobuf stops: reconcilers and reporters above see only these types.  Every field
the controller sends is treated as hostile: identifiers must be UUIDs, names bounded, numbers in
range, references resolvable.  An invalid object is left out of the model and recorded as an
:class:`ObjectError` on that object alone, so the rest of the config still applies; objects that
refer to a left-out object are left out too, with an error naming the missing reference.

Only a config that is unusable as a whole (no or bad device UUID) raises ValueError.

Secrets (cloud-init user data, datastore credentials, the cluster token) are :class:`Secret`
values, which never print themselves.  Encrypted ones (``CipherBlock``, EVE's object-level
encryption) are opened by the ``decrypt`` callable given to :func:`from_proto`; this module does
no cryptography and no I/O, so it stays pure.  A block that cannot be decrypted, or a config
with encrypted fields and no ``decrypt``, leaves that one object out with an ObjectError: an
object never runs with half of its secrets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent.model.acl import Ace, parse_ace
from agent.model.baseos import BaseOsConfig, parse_baseos
from agent.model.configitems import ConfigItems, parse_items
from agent.model.ports import Port, PortError, instance_addressing, parse_ports, resolve
from agent.model.secret import Secret
from agent.util.ids import parse_uuid
from agent.wire.objcipher import CipherError
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2

MAX_NAME = 256
MAX_USERDATA = 256 * 1024
MAX_CREDENTIAL = 64 * 1024
MAX_OBJECTS = 10_000
#: netinst.proto ZNetworkInstType values this agent runs.
NI_SWITCH, NI_LOCAL = 1, 2

#: Opens a CipherBlock with the config's cipher contexts (by context id); raises CipherError.
#: The link layer makes one from :mod:`agent.vault.cipher` and the node's ECDH key.
Decrypt = Callable[
    [acipherinfo_pb2.CipherBlock, Mapping[str, acipherinfo_pb2.CipherContext]],
    acipherinfo_pb2.EncryptionBlock,
]


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
    api_key: Secret
    password: Secret
    #: PEM certificates the datastore's TLS is checked against besides the system's.
    ca_certs: tuple[bytes, ...] = ()


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
    user_data: Secret
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
    #: ``disable_flowlog`` (field 50): no flow records of this instance's app interfaces.
    disable_flowlog: bool = False


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """EVE-k cluster membership (``EdgeNodeCluster``): which cluster, this node's role in it,
    and the join token (only ever sent encrypted)."""

    id: str
    name: str
    interface: str
    ip_prefix: str
    is_worker: bool
    join_server_ip: str
    cluster_type: int
    tie_breaker_node_id: str
    token: Secret


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
    #: The node's ports by logical name (:mod:`agent.model.ports`).
    ports: Mapping[str, Port] = field(default_factory=dict)
    cluster: ClusterConfig | None = None
    #: The wanted base OS (A/B update), None when the config names none.
    baseos: BaseOsConfig | None = None
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


class _Unsealer:
    """Opens the CipherBlocks of one config: its cipher contexts and the ``decrypt`` callable.

    Every failure is an ``_Invalid`` naming what could not be decrypted and why (the reason
    says which check failed, never anything of the clear text).
    """

    def __init__(
        self, decrypt: Decrypt | None, contexts: Iterable[acipherinfo_pb2.CipherContext]
    ) -> None:
        self._decrypt = decrypt
        self._contexts: dict[str, acipherinfo_pb2.CipherContext] = {}
        for count, context in enumerate(contexts):
            if count >= MAX_OBJECTS:
                break
            self._contexts.setdefault(context.contextId, context)

    def open(
        self, block: acipherinfo_pb2.CipherBlock, what: str
    ) -> acipherinfo_pb2.EncryptionBlock:
        if self._decrypt is None:
            raise _Invalid(f"{what} is encrypted and this node has no key to decrypt it")
        try:
            return self._decrypt(block, self._contexts)
        except CipherError as exc:
            raise _Invalid(f"cannot decrypt {what}: {exc}") from None


def _secret(text: str, what: str, limit: int) -> Secret:
    if len(text) > limit:
        raise _Invalid(f"{what} larger than {limit} bytes")
    return Secret(text)


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


def _datastore(msg: Any, unsealer: _Unsealer) -> Datastore:
    ds_id = _uuid(msg.id, "datastore id")
    api_key, password = msg.apiKey, msg.password
    if msg.HasField("cipherData"):
        # As EVE: the decrypted credentials replace the deprecated clear-text fields.
        clear = unsealer.open(msg.cipherData, "the datastore credentials")
        api_key, password = clear.dsAPIKey, clear.dsPassword
    return Datastore(
        id=ds_id,
        ds_type=int(msg.dType),
        fqdn=_name(msg.fqdn, "fqdn"),
        dpath=_name(msg.dpath, "dpath"),
        region=_name(msg.region, "region"),
        has_cipher=msg.HasField("cipherData"),
        api_key=_secret(api_key, "datastore API key", MAX_CREDENTIAL),
        password=_secret(password, "datastore password", MAX_CREDENTIAL),
        ca_certs=_certs(msg.dsCertPEM),
    )


def _certs(pems: Iterable[bytes]) -> tuple[bytes, ...]:
    out = []
    for count, pem in enumerate(pems):
        if count >= 16:
            raise _Invalid("more than 16 dsCertPEM certificates")
        if len(pem) > MAX_CREDENTIAL or b"-----BEGIN CERTIFICATE-----" not in pem:
            raise _Invalid("dsCertPEM is not a PEM certificate")
        out.append(bytes(pem))
    return tuple(out)


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
    if int(msg.instType) not in (NI_SWITCH, NI_LOCAL):
        raise _Invalid(
            f"network instance type {int(msg.instType)} is not supported (local, switch)"
        )
    if int(msg.instType) == NI_LOCAL and (ip.subnet or ip.gateway):
        try:
            instance_addressing(ip.subnet, ip.gateway, ip.dhcpRange.start, ip.dhcpRange.end)
        except PortError as exc:
            raise _Invalid(str(exc)) from None
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
        disable_flowlog=bool(msg.disable_flowlog),
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


def _app(msg: Any, unsealer: _Unsealer) -> AppInstance:
    res = msg.fixedresources
    app_id = _uuid(msg.uuidandversion.uuid, "app id")
    user_data = _secret(msg.userData, "userData", MAX_USERDATA)
    if msg.HasField("cipherData"):
        # EncryptionBlock.protectedUserData replaces userData, as in EVE.
        clear = unsealer.open(msg.cipherData, "the cloud-init user data")
        user_data = _secret(clear.protectedUserData, "protectedUserData", MAX_USERDATA)
    return AppInstance(
        id=app_id,
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
        user_data=user_data,
        has_cipher=msg.HasField("cipherData"),
        start_delay=int(msg.start_delay_in_seconds),
        cloud_init_version=int(msg.cloud_init_version),
    )


def _address(text: str, what: str, *, prefix: bool) -> str:
    if not text:
        return ""
    try:
        if prefix:
            ipaddress.ip_interface(text)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        kind = "prefix" if prefix else "address"
        raise _Invalid(f"{what} {text[:64]!r} is not an IP {kind}") from None
    return text


def _cluster(msg: Any, unsealer: _Unsealer) -> ClusterConfig:
    cluster_id = _uuid(msg.cluster_id, "cluster id")
    token = Secret()
    if msg.HasField("encrypted_cluster_token"):
        clear = unsealer.open(msg.encrypted_cluster_token, "the cluster token")
        token = _secret(clear.cluster_token, "cluster token", MAX_CREDENTIAL)
    tie_breaker = msg.tie_breaker_node_id
    return ClusterConfig(
        id=cluster_id,
        name=_name(msg.cluster_name, "cluster_name"),
        interface=_name(msg.cluster_interface, "cluster_interface"),
        ip_prefix=_address(msg.cluster_ip_prefix, "cluster_ip_prefix", prefix=True),
        is_worker=bool(msg.is_worker_node),
        join_server_ip=_address(msg.join_server_ip, "join_server_ip", prefix=False),
        cluster_type=int(msg.cluster_type),
        tie_breaker_node_id=_uuid(tie_breaker, "tie_breaker_node_id") if tie_breaker else "",
        token=token,
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


def from_proto(msg: devconfig_pb2.EdgeDevConfig, *, decrypt: Decrypt | None = None) -> NodeConfig:
    """Validate an EdgeDevConfig into a NodeConfig.

    ``decrypt`` opens the config's CipherBlocks (see :data:`Decrypt`); without it an object
    with an encrypted field is left out with an error.  Raises ValueError only when the config
    as a whole is unusable (missing or invalid device UUID); every other problem becomes an
    entry in ``NodeConfig.errors``.
    """
    device_uuid = parse_uuid(msg.id.uuid, "device uuid")
    errors: list[ObjectError] = []
    unsealer = _Unsealer(decrypt, msg.cipherContexts)
    items = parse_items((i.key, i.value) for i in msg.configItems)
    errors += [
        ObjectError("configitem", e.key[:MAX_NAME], e.key[:MAX_NAME], e.message)
        for e in items.errors
    ]

    datastores = _collect(
        "datastore",
        msg.datastores,
        lambda m: (m.id, m.fqdn),
        lambda m: _datastore(m, unsealer),
        errors,
    )
    trees = _collect(
        "contenttree", msg.contentInfo, lambda m: (m.uuid, m.displayName), _content_tree, errors
    )
    volumes = _collect("volume", msg.volumes, lambda m: (m.uuid, m.displayName), _volume, errors)
    ports, port_errors = parse_ports(msg.systemAdapterList, msg.deviceIoList, msg.networks)
    errors += [ObjectError("port", name, name, message) for name, message in port_errors]
    nis = _collect(
        "networkinstance",
        msg.networkInstances,
        lambda m: (m.uuidandversion.uuid, m.displayname),
        _network_instance,
        errors,
    )
    # A config without ports leaves the node's ports as they are (EVE keeps its last port
    # config); one with ports must name an existing port or label.
    for ni_id, ni in list(nis.items()):
        if ports and ni.port and not resolve(ports, ni.port):
            message = f"no port named or labelled {ni.port!r}"
            errors.append(ObjectError("networkinstance", ni_id, ni.name, message))
            del nis[ni_id]
    apps = _collect(
        "app",
        msg.apps,
        lambda m: (m.uuidandversion.uuid, m.displayname),
        lambda m: _app(m, unsealer),
        errors,
    )
    cluster: ClusterConfig | None = None
    if msg.HasField("cluster"):
        clusters = _collect(
            "cluster",
            [msg.cluster],
            lambda m: (m.cluster_id, m.cluster_name),
            lambda m: _cluster(m, unsealer),
            errors,
        )
        cluster = next(iter(clusters.values()), None)

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
    baseos = _baseos(msg, trees, errors)
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
        ports=ports,
        cluster=cluster,
        baseos=baseos,
        reboot=OpsCounter(int(msg.reboot.counter), bool(msg.reboot.desiredState)),
        shutdown=OpsCounter(int(msg.shutdown.counter), bool(msg.shutdown.desiredState)),
        maintenance_mode=bool(msg.maintenance_mode),
        controller_epoch=int(msg.controller_epoch),
        controllercert_confighash=msg.controllercert_confighash[:MAX_NAME],
        errors=tuple(errors),
    )


def _baseos(
    msg: devconfig_pb2.EdgeDevConfig, trees: Mapping[str, ContentTree], errors: list[ObjectError]
) -> BaseOsConfig | None:
    """The wanted base OS, None when the config has none or it is invalid (an error on the
    ``baseos`` object, named by its version)."""
    if not msg.HasField("baseos"):
        return None
    name = msg.baseos.base_os_version[:MAX_NAME]
    try:
        wanted = parse_baseos(msg.baseos)
        tree_id = _uuid(wanted.content_tree_id, "content_tree_uuid")
    except ValueError as exc:
        errors.append(ObjectError("baseos", name, name, str(exc)))
        return None
    if tree_id not in trees:
        errors.append(ObjectError("baseos", name, name, f"missing contenttree {tree_id}"))
        return None
    return BaseOsConfig(tree_id, wanted.version, wanted.activate, wanted.retry_counter)


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
