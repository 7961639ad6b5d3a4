# SPDX-License-Identifier: Apache-2.0
"""controller.clusterconfig: the cluster part of a member's config, added and taken out again."""

from __future__ import annotations

import hashlib

from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2
from controller import clusterconfig
from controller.clusterconfig import Added, MemberPart
from controller.composer import Role

CLUSTER = "11111111-1111-4111-8111-111111111111"
NODE = "22222222-2222-4222-8222-222222222222"
DS = "33333333-3333-4333-8333-333333333333"
TREE = "44444444-4444-4444-8444-444444444444"
APP = "55555555-5555-4555-8555-555555555555"
TOKEN = "the-cluster-token"

OBJECTS = devconfig_pb2.EdgeDevConfig()
json_format.ParseDict(
    {
        "datastores": [{"id": DS, "dType": "DsHttp", "fqdn": "http://images.example"}],
        "contentInfo": [{"uuid": TREE, "URL": "k3s.qcow2", "iformat": "QCOW2", "dsIdsList": [DS]}],
    },
    OBJECTS,
)


def part(**changes: object) -> MemberPart:
    values: dict[str, object] = {
        "cluster_id": CLUSTER, "cluster_name": "c", "node_uuid": NODE, "role": Role.SERVER,
        "net_index": 3, "slot": 1, "network_tags": ("uplink",), "join_slot": 0,
        "servers": ("a", NODE), "active": True,
        "k3s_objects": OBJECTS.SerializeToString(deterministic=True),
    }  # fmt: skip
    values.update(changes)
    return MemberPart(**values)  # type: ignore[arg-type]


def sealed(context_id: str = "ctx-1", token: str = TOKEN) -> tuple[
    acipherinfo_pb2.CipherBlock, acipherinfo_pb2.CipherContext
]:  # fmt: skip
    block = acipherinfo_pb2.CipherBlock(
        cipherContextId=context_id, initialValue=b"i" * 16, cipherData=b"c" * 20,
        clearTextSha256=clusterconfig.token_digest(token),
    )  # fmt: skip
    return block, acipherinfo_pb2.CipherContext(contextId=context_id)


def base() -> devconfig_pb2.EdgeDevConfig:
    config = devconfig_pb2.EdgeDevConfig()
    json_format.ParseDict(
        {
            "id": {"uuid": NODE, "version": "4"},
            "apps": [{"uuidandversion": {"uuid": APP, "version": "1"}, "displayname": "mine"}],
            "configItems": [{"key": "timer.config.interval", "value": "30"}],
        },
        config,
    )
    return config


def test_render_adds_the_part_and_strip_takes_it_out() -> None:
    config, added = clusterconfig.render(base(), part(), *sealed())
    assert added == Added((TREE,), (DS,), ("ctx-1",))
    c = config.cluster
    assert c.cluster_ip_prefix == "10.244.3.11/24" and c.join_server_ip == "10.244.3.10"
    assert c.cluster_interface == "uplink" and not c.is_worker_node
    assert list(c.master_node_uuids) == ["a", NODE]
    assert [a.displayname for a in config.apps] == ["mine", "k3s-c"]
    vm = config.apps[1]
    assert vm.interfaces[0].addr == "10.244.3.11" and not vm.userData
    assert config.networkInstances[0].ip.subnet == "10.244.3.0/24"
    assert config.networkInstances[0].port.name == "uplink"
    stripped = clusterconfig.strip(config, CLUSTER, NODE, added)
    assert clusterconfig.same(stripped, base())
    assert stripped.SerializeToString(deterministic=True) == base().SerializeToString(
        deterministic=True
    )


def test_an_agent_maps_fewer_ports_and_a_second_network() -> None:
    config, _ = clusterconfig.render(
        base(), part(role=Role.AGENT, network_tags=("lan", "uplink")), *sealed()
    )
    assert config.cluster.is_worker_node
    first, second = config.apps[1].interfaces
    ports = {a.actions[0].appPort for a in first.acls if a.actions}
    assert ports == {10250, 8472}
    assert not [a for a in second.acls if a.actions]
    assert second.addr == "10.245.3.11" and config.networkInstances[1].port.name == "uplink"


def test_manifest_only_on_servers_and_deactivated_vm() -> None:
    url = "https://example.com/m.yaml"
    server, _ = clusterconfig.render(base(), part(manifest_url=url, active=False), *sealed())
    assert server.apps[1].userData and not server.apps[1].activate
    agent, _ = clusterconfig.render(base(), part(manifest_url=url, role=Role.AGENT), *sealed())
    assert not agent.apps[1].userData


def test_shared_objects_the_base_has_stay() -> None:
    mine = base()
    mine.datastores.extend(OBJECTS.datastores)
    config, added = clusterconfig.render(mine, part(), *sealed())
    assert added.datastores == () and added.content_trees == (TREE,)
    assert len(config.datastores) == 1
    stripped = clusterconfig.strip(config, CLUSTER, NODE, added)
    assert [d.id for d in stripped.datastores] == [DS] and not stripped.contentInfo


def test_strip_keeps_a_context_still_in_use_and_another_cluster() -> None:
    config, added = clusterconfig.render(base(), part(), *sealed())
    config.apps[0].cipherData.cipherContextId = "ctx-1"
    stripped = clusterconfig.strip(config, CLUSTER, NODE, added)
    assert [c.contextId for c in stripped.cipherContexts] == ["ctx-1"]
    other = clusterconfig.strip(config, "another-cluster", NODE, added)
    assert other.HasField("cluster")


def test_without_an_image_only_the_cluster() -> None:
    config, added = clusterconfig.render(base(), part(k3s_objects=None), *sealed())
    assert config.HasField("cluster") and len(config.apps) == 1 and not config.volumes
    assert added == Added((), (), ("ctx-1",))


def test_reusable_token() -> None:
    config, _ = clusterconfig.render(base(), part(), *sealed())
    assert clusterconfig.reusable_token(config, CLUSTER, "ctx-1", TOKEN) is not None
    assert clusterconfig.reusable_token(config, CLUSTER, "ctx-2", TOKEN) is None
    assert clusterconfig.reusable_token(config, CLUSTER, "ctx-1", "other") is None
    assert clusterconfig.reusable_token(config, "other", "ctx-1", TOKEN) is None
    assert clusterconfig.reusable_token(base(), CLUSTER, "ctx-1", TOKEN) is None
    digest = hashlib.sha256(b"B" + bytes([len(TOKEN)]) + TOKEN.encode()).digest()
    assert clusterconfig.token_digest(TOKEN) == digest  # EncryptionBlock.cluster_token, field 8


def test_added_from_hostile_json() -> None:
    assert Added.from_json("not json") == Added()
    assert Added.from_json("[1]") == Added()
    assert Added.from_json('{"contentInfo": [1, "x"], "datastores": "y"}') == Added(("x",))
    round_trip = Added(("a",), ("b",), ("c",))
    assert Added.from_json(round_trip.to_json()) == round_trip


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(list(Role)),
    st.integers(0, 255),
    st.integers(0, 199),
    st.booleans(),
    st.lists(st.sampled_from(["uplink", "lan", "air"]), min_size=1, max_size=2, unique=True),
    st.booleans(),
)
def test_round_trip(
    role: Role, index: int, slot: int, image: bool, tags: list[str], shared: bool
) -> None:
    mine = base()
    if shared:
        mine.contentInfo.extend(OBJECTS.contentInfo)
        mine.datastores.extend(OBJECTS.datastores)
    p = part(
        role=role, net_index=index, slot=slot, network_tags=tuple(tags),
        k3s_objects=OBJECTS.SerializeToString() if image else None,
    )  # fmt: skip
    config, added = clusterconfig.render(mine, p, *sealed())
    again, added_again = clusterconfig.render(
        clusterconfig.strip(config, CLUSTER, NODE, added), p, *sealed()
    )
    assert clusterconfig.same(config, again) and added == added_again
    assert clusterconfig.same(clusterconfig.strip(config, CLUSTER, NODE, added), mine)
