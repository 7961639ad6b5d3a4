"""What a cluster adds to a member's EdgeDevConfig, and taking it out again.  Pure: protobuf only.

A member's config is its *base* (whatever the operator set, or version 0) plus the *cluster
part*.  :func:`render` adds the part to a base; :func:`strip` takes it out of a config, giving the
base back; :func:`same` compares two configs without the controller-stamped fields.  The caller
(controller.clusterwork) strips the member's current config, renders the result, and stores a
new version only when it differs, so a member's config changes only when its membership, its
role, its cluster or its base changes.

The cluster part, field by field (docs/clusters.md is the contract for the node side):

* ``cluster``: EdgeNodeCluster: name, id, ``cluster_interface`` (the first network tag: a port
  label), ``cluster_ip_prefix`` (the member's cluster address with the prefix length, as EVE
  sends it), ``is_worker_node`` (agents), ``join_server_ip`` (the init server's cluster address:
  on the init server its own, which is how EVE tells the bootstrap node), the token encrypted for
  the member, ``cluster_type`` K3S_BASE, ``ha_scheme`` K3S_EMBEDDED, ``master_node_uuids`` (the
  servers);
* ``cipherContexts``: the context of the token's CipherBlock, unless the base has it;
* with a K3s image: the image's content tree and datastores (unless the base has them), a volume
  from it, one local network instance per network tag (its port is the tag), and the K3s VM on
  them.  The first is the cluster network: its subnet is the cluster prefix and the VM's
  address there is the member's cluster address (how the node side finds its K3s VM:
  agent/reconcile/cluster.py); its ACL lets everything out and maps the K3s ports in from the
  cluster interface only (PORTMAP with an ``adapter`` match).  A second tag gives the VM a
  second network (10.245.n.0/24, same host number);
* with a manifest URL, on servers: the VM's user data, a cloud-config whose ``bootcmd`` fetches
  the URL into K3s's auto-deploy directory and posts the result as the app's custom status
  (controller/clustermanifest.py records it in the cluster's history; the node side appends
  its own cloud-config part, which uses ``write_files`` and ``runcmd``: different keys, so
  cloud-init's default merge keeps both).

Object UUIDs are derived (UUID v5) from the cluster id and node UUID, so rendering is
deterministic and :func:`strip` finds exactly what :func:`render` added.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import shlex
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from agent.wire.pb.config import (
    appconfig_pb2,
    devconfig_pb2,
    edge_node_cluster_pb2,
    netinst_pb2,
    storage_pb2,
)
from agent.wire.pb.evecommon import acipherinfo_pb2
from controller.composer import Role

#: Namespace of the derived object UUIDs.
NAMESPACE = uuidlib.UUID("6b0f6c52-2b8e-4f51-9d3c-1c1a5e7e0b11")
#: Where K3s servers pick up manifests to apply (K3s "Auto-Deploying Manifests").
MANIFEST_DIR = "/var/lib/rancher/k3s/server/manifests"
MANIFEST_FILE = f"{MANIFEST_DIR}/eve-cluster.yaml"
#: At most this many network tags (the cluster network, and one more).
MAX_NETWORKS = 2
#: Members per cluster: addresses .10 to .209 of each /24.
MAX_MEMBERS = 200
#: Clusters per controller: each takes one /24 from each range below.
MAX_CLUSTERS = 256
_FIRST_HOST = 10
#: K3s inbound ports (K3s docs, "Inbound Rules for K3s Nodes"): mapped in from the cluster
#: interface to the VM.  Servers: API server and supervisor, embedded etcd, kubelet, flannel
#: VXLAN; agents: kubelet and flannel VXLAN.
K3S_PORTS: dict[bool, tuple[tuple[str, int], ...]] = {
    True: (("tcp", 6443), ("tcp", 2379), ("tcp", 2380), ("tcp", 10250), ("udp", 8472)),
    False: (("tcp", 10250), ("udp", 8472)),
}


def cluster_prefix(net_index: int) -> ipaddress.IPv4Network:
    """The cluster's prefix: one cluster address per member (``cluster_ip_prefix``); also the
    subnet of the cluster network instance, where the member's K3s VM has that address."""
    return vm_network(net_index, 0)


def vm_network(net_index: int, network: int = 0) -> ipaddress.IPv4Network:
    """The subnet of the cluster's ``network``-th network instance: the cluster prefix for the
    first, 10.245.n.0/24 for a second."""
    if not 0 <= net_index < MAX_CLUSTERS or not 0 <= network < MAX_NETWORKS:
        raise ValueError(f"network {network} of cluster index {net_index} is out of range")
    return ipaddress.IPv4Network(f"10.{244 + network}.{net_index}.0/24")


def member_address(net: ipaddress.IPv4Network, slot: int) -> ipaddress.IPv4Address:
    if not 0 <= slot < MAX_MEMBERS:
        raise ValueError(f"slot {slot} outside 0..{MAX_MEMBERS - 1}")
    return net.network_address + _FIRST_HOST + slot


@dataclass(frozen=True)
class ObjectIds:
    """The UUIDs of the objects a cluster gives one member."""

    networks: tuple[str, ...]
    app: str
    volume: str


def object_ids(cluster_id: str, node_uuid: str) -> ObjectIds:
    def derive(what: str) -> str:
        return str(uuidlib.uuid5(NAMESPACE, f"{cluster_id}/{what}"))

    return ObjectIds(
        networks=tuple(derive(f"network/{i}") for i in range(MAX_NETWORKS)),
        app=derive(f"k3s-vm/{node_uuid}"),
        volume=derive(f"k3s-disk/{node_uuid}"),
    )


@dataclass(frozen=True)
class MemberPart:
    """Everything the cluster part of one member depends on (besides the token)."""

    cluster_id: str
    cluster_name: str
    node_uuid: str
    role: Role
    net_index: int
    slot: int
    network_tags: tuple[str, ...]
    join_slot: int | None
    """The init server's slot (None while the cluster has no init server)."""
    servers: tuple[str, ...]
    active: bool
    manifest_url: str = ""
    k3s_objects: bytes | None = None
    vm_memory_mib: int = 2048
    vm_vcpus: int = 2


@dataclass(frozen=True)
class Added:
    """Shared objects :func:`render` added because the base lacked them (kept with the member
    so that :func:`strip` removes only those)."""

    content_trees: tuple[str, ...] = ()
    datastores: tuple[str, ...] = ()
    cipher_contexts: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "contentInfo": list(self.content_trees),
                "datastores": list(self.datastores),
                "cipherContexts": list(self.cipher_contexts),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Added:
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key)
            return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

        return cls(
            strings("contentInfo"),
            strings("datastores"),
            strings("cipherContexts"),
        )


def token_digest(token: str) -> bytes:
    """``clearTextSha256`` of the CipherBlock holding ``token`` (to recognise it unopened)."""
    block = acipherinfo_pb2.EncryptionBlock(cluster_token=token)
    return hashlib.sha256(block.SerializeToString()).digest()


def reusable_token(
    current: devconfig_pb2.EdgeDevConfig, cluster_id: str, context_id: str, token: str
) -> acipherinfo_pb2.CipherBlock | None:
    """The token block of ``current`` when it holds ``token`` for the same context: reusing it
    keeps the config unchanged (encrypting again would give new bytes every time)."""
    if not current.HasField("cluster") or current.cluster.cluster_id != cluster_id:
        return None
    block = current.cluster.encrypted_cluster_token
    if block.cipherContextId != context_id or bytes(block.clearTextSha256) != token_digest(token):
        return None
    if not any(c.contextId == context_id for c in current.cipherContexts):
        return None
    out = acipherinfo_pb2.CipherBlock()
    out.CopyFrom(block)
    return out


def render(
    base: devconfig_pb2.EdgeDevConfig,
    part: MemberPart,
    token_block: acipherinfo_pb2.CipherBlock,
    context: acipherinfo_pb2.CipherContext,
) -> tuple[devconfig_pb2.EdgeDevConfig, Added]:
    """``base`` with the member's cluster part; ``base`` must not hold it (see :func:`strip`).

    Raises ValueError when the part cannot be rendered (a slot or index out of range, stored
    K3s objects that do not parse).
    """
    out = devconfig_pb2.EdgeDevConfig()
    out.CopyFrom(base)
    prefix = cluster_prefix(part.net_index)
    address = member_address(prefix, part.slot)
    join = "" if part.join_slot is None else str(member_address(prefix, part.join_slot))
    out.cluster.CopyFrom(
        edge_node_cluster_pb2.EdgeNodeCluster(
            cluster_name=part.cluster_name,
            cluster_id=part.cluster_id,
            cluster_interface=part.network_tags[0],
            cluster_ip_prefix=f"{address}/{prefix.prefixlen}",
            is_worker_node=not part.role.is_server,
            join_server_ip=join,
            encrypted_cluster_token=token_block,
            cluster_type=edge_node_cluster_pb2.CLUSTER_TYPE_K3S_BASE,
            ha_scheme=edge_node_cluster_pb2.HA_SCHEME_K3S_EMBEDDED,
            master_node_uuids=list(part.servers),
        )
    )
    contexts: list[str] = []
    if not any(c.contextId == context.contextId for c in out.cipherContexts):
        out.cipherContexts.append(context)
        contexts.append(context.contextId)
    trees: list[str] = []
    stores: list[str] = []
    if part.k3s_objects is not None:
        trees, stores = _add_vm(out, part)
    return out, Added(tuple(trees), tuple(stores), tuple(contexts))


def _add_vm(out: devconfig_pb2.EdgeDevConfig, part: MemberPart) -> tuple[list[str], list[str]]:
    objects = devconfig_pb2.EdgeDevConfig()
    try:
        objects.ParseFromString(part.k3s_objects or b"")
    except Exception as exc:  # protobuf's DecodeError; stored by us, so unexpected
        raise ValueError(f"stored K3s objects do not parse: {exc}") from exc
    if not objects.contentInfo:
        raise ValueError("stored K3s objects hold no content tree")
    tree_id = objects.contentInfo[0].uuid
    stores = [d.id for d in objects.datastores if all(x.id != d.id for x in out.datastores)]
    out.datastores.extend(d for d in objects.datastores if d.id in stores)
    trees = [t.uuid for t in objects.contentInfo if all(x.uuid != t.uuid for x in out.contentInfo)]
    out.contentInfo.extend(t for t in objects.contentInfo if t.uuid in trees)

    ids = object_ids(part.cluster_id, part.node_uuid)
    label = f"k3s-{part.cluster_name}"
    volume = storage_pb2.Volume()
    json_format.ParseDict(
        {
            "uuid": ids.volume,
            "displayName": f"{label}-disk",
            "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": tree_id},
        },
        volume,
    )
    interfaces = []
    for index, tag in enumerate(part.network_tags):
        net = vm_network(part.net_index, index)
        network = netinst_pb2.NetworkInstanceConfig()
        json_format.ParseDict(
            {
                "uuidandversion": {"uuid": ids.networks[index], "version": "1"},
                "displayname": f"cluster-{part.cluster_name}-{index}",
                "instType": "ZnetInstLocal",
                "activate": True,
                "port": {"name": tag},
                "ipType": "IPV4",
                "ip": {
                    "subnet": str(net),
                    "gateway": str(net.network_address + 1),
                    "dns": [str(net.network_address + 1)],
                    "dhcpRange": {
                        "start": str(net.network_address + 220),
                        "end": str(net.network_address + 250),
                    },
                },
            },
            network,
        )
        ni_id = ids.networks[index]
        _remove(out.networkInstances, lambda n, ni_id=ni_id: n.uuidandversion.uuid == ni_id)
        out.networkInstances.append(network)
        acls: list[dict[str, Any]] = [
            {"id": 1, "name": "out", "matches": [{"type": "ip", "value": "0.0.0.0/0"}]}
        ]
        if index == 0:
            for number, (protocol, port) in enumerate(K3S_PORTS[part.role.is_server], start=2):
                acls.append(
                    {
                        "id": number,
                        "name": f"k3s-{protocol}-{port}",
                        "matches": [
                            {"type": "protocol", "value": protocol},
                            {"type": "lport", "value": str(port)},
                            {"type": "adapter", "value": tag},
                        ],
                        "actions": [{"portmap": True, "appPort": port}],
                    }
                )
        interfaces.append(
            {
                "name": f"eth{index}",
                "networkId": ids.networks[index],
                "addr": str(member_address(net, part.slot)),
                "acls": acls,
            }
        )
    fetch = bool(part.manifest_url) and part.role.is_server
    app = appconfig_pb2.AppInstanceConfig()
    json_format.ParseDict(
        {
            "uuidandversion": {"uuid": ids.app, "version": "1"},
            "displayname": label,
            "activate": part.active,
            "fixedresources": {
                "memory": part.vm_memory_mib * 1024,
                "vcpus": part.vm_vcpus,
                "virtualizationMode": "HVM",
            },
            "volumeRefList": [{"uuid": ids.volume}],
            "interfaces": interfaces,
            **({"userData": manifest_user_data(part.manifest_url)} if fetch else {}),
        },
        app,
    )
    _remove(out.volumes, lambda v: v.uuid == ids.volume)
    out.volumes.append(volume)
    _remove(out.apps, lambda a: a.uuidandversion.uuid == ids.app)
    out.apps.append(app)
    return trees, stores


#: What the K3s VM posts the manifest's result to: EVE's metadata server path for an app's
#: custom status (controller/clustermanifest.py reads it back from the node's reports).
CUSTOM_STATUS_URL = "http://169.254.169.254/eve/v1/app/appCustomStatus"

_MANIFEST_SCRIPT = """\
EVE_K3S_MANIFEST_URL={url}
file={file}
status=/run/eve-cluster-manifest.json
json='Content-Type: application/json'
# get URL OUT: the HTTP status of a GET of URL into OUT ("" or 000: no answer).
get() {{
    if command -v curl >/dev/null; then
        curl -sSL -o "$2" -w '%{{http_code}}' "$1" 2>/dev/null
    else
        wget -S -O "$2" "$1" 2>&1 | awk '$1 ~ /^HTTP/ {{c = $2}} END {{print c}}'
    fi
}}
# post: the result as the app's custom status, until the metadata server takes it (200).
post() {{
    for i in $(seq 60); do
        if command -v curl >/dev/null; then
            code=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST -H "$json" \\
                --data-binary @"$status" {post})
        else
            code=$(wget -S -O /dev/null --header "$json" --post-file "$status" {post} 2>&1 \\
                | awk '$1 ~ /^HTTP/ {{c = $2}} END {{print c}}')
        fi
        [ "$code" = 200 ] && return 0
        sleep 10
    done
}}
mkdir -p {dir}
result=failed detail="no answer in 60 tries"
for i in $(seq 60); do
    code=$(get "$EVE_K3S_MANIFEST_URL" "$file.new")
    if [ "$code" = 200 ] && [ -s "$file.new" ]; then
        mv "$file.new" "$file"
        result=applied detail="$(wc -c <"$file") bytes"
        break
    fi
    rm -f "$file.new"
    if [ -n "$code" ] && [ "$code" != 000 ]; then
        result=failed detail="HTTP $code"
        break
    fi
    sleep 10
done
hash=$(printf %s "$EVE_K3S_MANIFEST_URL" | sha256sum | cut -c1-64)
printf '{{"{key}":{{"result":"%s","detail":"%s","url-sha256":"%s"}}}}' \\
    "$result" "$detail" "$hash" >"$status"
post
"""


class _Literal(yaml.SafeDumper):
    """Multi-line strings as literal blocks: the script stays readable in the VM's seed (and
    its ``EVE_K3S_MANIFEST_URL=`` line starts a line, as the test guest reads it)."""


_Literal.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def manifest_user_data(url: str) -> str:
    """The K3s VM's user data (base64) on a server: at every boot, in the background, fetch
    ``url`` into K3s's auto-deploy directory (60 tries 10 s apart while nothing answers; an
    HTTP error is final), then post the result to the node's metadata server as the app's
    custom status (``{"eve-cluster-manifest": {"result": "applied"|"failed", "detail": ...,
    "url-sha256": ...}}``, see controller/clustermanifest.py).  "applied" means the manifest
    is in the auto-deploy directory; K3s applies it from there by itself."""
    script = _MANIFEST_SCRIPT.format(
        url=shlex.quote(url), file=MANIFEST_FILE, dir=MANIFEST_DIR, post=CUSTOM_STATUS_URL,
        key="eve-cluster-manifest",
    )  # fmt: skip
    doc = {"bootcmd": [["sh", "-c", f"(\n{script}) >/dev/null 2>&1 &"]]}
    text = "#cloud-config\n" + yaml.dump(doc, Dumper=_Literal, sort_keys=False, width=1000)
    return base64.b64encode(text.encode()).decode("ascii")


def strip(
    config: devconfig_pb2.EdgeDevConfig, cluster_id: str, node_uuid: str, added: Added
) -> devconfig_pb2.EdgeDevConfig:
    """``config`` without what :func:`render` added for this cluster and node: the cluster
    (if it is this one), the VM, its volume and networks, and the shared objects in ``added``
    that nothing left refers to."""
    out = devconfig_pb2.EdgeDevConfig()
    out.CopyFrom(config)
    ids = object_ids(cluster_id, node_uuid)
    if out.HasField("cluster") and out.cluster.cluster_id == cluster_id:
        out.ClearField("cluster")
    _remove(out.apps, lambda a: a.uuidandversion.uuid == ids.app)
    _remove(out.volumes, lambda v: v.uuid == ids.volume)
    _remove(out.networkInstances, lambda n: n.uuidandversion.uuid in ids.networks)
    used_trees = {v.origin.downloadContentTreeID for v in out.volumes}
    _remove(out.contentInfo, lambda t: t.uuid in added.content_trees and t.uuid not in used_trees)
    used_stores = {d for t in out.contentInfo for d in (*t.ds_ids_list, t.dsId)}
    _remove(out.datastores, lambda d: d.id in added.datastores and d.id not in used_stores)
    used_contexts = {b.cipherContextId for b in _cipher_blocks(out)}
    _remove(
        out.cipherContexts,
        lambda c: c.contextId in added.cipher_contexts and c.contextId not in used_contexts,
    )
    return out


def same(a: devconfig_pb2.EdgeDevConfig, b: devconfig_pb2.EdgeDevConfig) -> bool:
    """Equal apart from the fields the controller stamps (id, config_timestamp)."""
    return _unstamped(a) == _unstamped(b)


def _unstamped(config: devconfig_pb2.EdgeDevConfig) -> bytes:
    copy = devconfig_pb2.EdgeDevConfig()
    copy.CopyFrom(config)
    copy.ClearField("id")
    copy.ClearField("config_timestamp")
    return copy.SerializeToString(deterministic=True)


def _cipher_blocks(message: Message) -> Iterator[acipherinfo_pb2.CipherBlock]:
    """Every CipherBlock anywhere in ``message``."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if isinstance(value, Message):
            values: Any = [value]
        elif hasattr(value, "values"):  # a map field: its values
            values = value.values()
        else:  # a repeated field
            values = value
        for item in values:
            if not isinstance(item, Message):
                continue  # a map's scalar values
            if isinstance(item, acipherinfo_pb2.CipherBlock):
                yield item
            else:
                yield from _cipher_blocks(item)


def _remove(repeated: Any, drop: Any) -> None:
    """Delete the elements of a repeated message field for which ``drop`` is true."""
    for index in reversed(range(len(repeated))):
        if drop(repeated[index]):
            del repeated[index]


__all__ = [
    "K3S_PORTS",
    "MANIFEST_FILE",
    "MAX_CLUSTERS",
    "MAX_MEMBERS",
    "MAX_NETWORKS",
    "Added",
    "MemberPart",
    "ObjectIds",
    "cluster_prefix",
    "manifest_user_data",
    "member_address",
    "object_ids",
    "render",
    "reusable_token",
    "same",
    "strip",
    "token_digest",
    "vm_network",
]
