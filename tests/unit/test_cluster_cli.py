# SPDX-License-Identifier: Apache-2.0
"""``eve-controller device tag`` and ``cluster ...``: memberships become configs that the agent's
own model accepts (the token opens with the member's ECDH key only), change only when the
membership or the cluster does, and the token is never printed."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from agent.link.devicecipher import DeviceEcdh, config_decryptor, load_software_ecdh
from agent.link.identity import load_or_create_device_signer
from agent.model.config import NodeConfig, from_proto
from agent.reconcile import cluster as node_cluster
from agent.settings import NodePaths
from agent.wire import envelope
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from controller import clusterconfig, clusterwork, configs
from controller.cli import main
from controller.clusters import ClusterStore
from controller.records import AttestState, DeviceCert, ObjectKind, ObjectStatus, ReportKind
from controller.state import StateDir
from controller.store import Store

DS = "7a1e5f0c-3b2d-4c8e-9f10-00000000d001"
TREE = "7a1e5f0c-3b2d-4c8e-9f10-00000000c001"
DEFAULT = {
    "datastores": [{"id": DS, "dType": "DsHttp", "fqdn": "http://images.example"}],
    "contentInfo": [
        {"uuid": TREE, "URL": "k3s-vm.qcow2", "iformat": "QCOW2", "displayName": "k3s-vm",
         "sha256": "ab" * 32, "dsIdsList": [DS]},
    ],
}  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StateDir:
    state = StateDir(tmp_path / "state")
    assert run(capsys, "init", "--state", str(state.root))[0] == 0
    path = tmp_path / "default.yaml"
    path.write_text(yaml.safe_dump(DEFAULT))
    assert run(capsys, "config", "default", "--state", str(state.root), str(path))[0] == 0
    return state


@dataclass(frozen=True)
class Member:
    uuid: str
    ecdh: DeviceEcdh


def node(state: StateDir, root: Path, serial: str, *, attested: bool = True) -> Member:
    """A registered, seen device with a software ECDH key (as an agent with --no-tpm)."""
    paths = NodePaths.from_root(root)
    signer = load_or_create_device_signer(paths)
    ecdh = load_software_ecdh(paths, signer)
    with Store.open(state.database) as store:
        _, device = store.register_device(
            onboard_sha256="ab" * 32,
            serial=serial,
            cert_pem=signer.certificate.public_bytes(Encoding.PEM),
            cert_sha256=envelope.device_cert_hash(signer.certificate),
            default_config=configs.default_config,
        )
        store.touch(device.uuid)
        if attested:
            store.set_device_certs(
                device.uuid,
                [DeviceCert(certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE, 1, b"", ecdh.cert_pem,
                            True, False, b"")],
            )  # fmt: skip
            store.set_attestation(
                device.uuid, AttestState.ATTESTED_NO_TPM, "", integrity_token=b"t" * 32
            )
    return Member(device.uuid, ecdh)


def uuid_of(n: Member) -> str:
    return n.uuid


def model(state: StateDir, n: Member) -> NodeConfig:
    """The device's current config as the agent would take it (decrypted with its key)."""
    with Store.open(state.database) as store:
        current = store.current_config(n.uuid)
    assert current is not None
    msg = devconfig_pb2.EdgeDevConfig()
    msg.ParseFromString(current.config)
    return from_proto(msg, decrypt=config_decryptor(n.ecdh, (state.ecdh_cert.read_bytes(),)))


def versions(state: StateDir, n: Member) -> int:
    with Store.open(state.database) as store:
        return len(store.config_history(n.uuid))


def token(state: StateDir, name: str) -> str:
    with Store.open(state.database) as store:
        record = ClusterStore(store.connection, store.clock).cluster_by_name(name)
    assert record is not None
    return record.token


def test_cluster_lifecycle(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = str(state.root)
    nodes = [node(state, tmp_path / f"n{i}", f"serial-{i}") for i in range(4)]
    by_uuid = sorted(nodes, key=uuid_of)
    outputs: list[str] = []

    def cli(*argv: str) -> str:
        code, out, err = run(capsys, *argv, "--state", s)
        assert code == 0, err
        outputs.append(out + err)
        return out

    for n in by_uuid[:2]:
        cli("device", "tag", uuid_of(n), "ClusterPool=SJC_Store_1", "rack=3")
    out = cli(
        "cluster", "create", "sjc", "--select", "ClusterPool=SJC_Store_1", "--servers", "3:3",
        "--agents", "0:1", "--network-tag", "uplink", "--k3s-image", TREE,
        "--manifest-url", "https://example.com/manifests.yaml",
    )  # fmt: skip
    assert "waiting for the minimum: 2 of 3:3 servers" in out
    assert all(model(state, n).cluster is None for n in nodes)  # nothing starts

    # The third tagged node makes the minimum: three servers, roles by UUID.
    cli("device", "tag", uuid_of(by_uuid[2]), "ClusterPool=SJC_Store_1")
    secret = token(state, "sjc")
    members = [model(state, n) for n in by_uuid[:3]]
    clusters = [m.cluster for m in members]
    assert all(c is not None for c in clusters)
    init, *joiners = [c for c in clusters if c is not None]
    assert init.ip_prefix == "10.244.0.10/24" and init.join_server_ip == "10.244.0.10"
    assert [c.join_server_ip for c in joiners] == ["10.244.0.10", "10.244.0.10"]
    assert [c.ip_prefix for c in joiners] == ["10.244.0.11/24", "10.244.0.12/24"]
    assert all(c.interface == "uplink" and not c.is_worker for c in (init, *joiners))
    assert all(c.token.reveal() == secret for c in (init, *joiners))
    for m in members:
        assert m.errors == ()
        (vm,) = m.apps.values()
        assert vm.name == "k3s-sjc" and vm.activate and vm.memory_kib == 2048 * 1024
        (iface,) = vm.interfaces
        ni = m.network_instances[iface.network_id]
        assert ni.port == "uplink" and ni.subnet == "10.244.0.0/24"
        assert m.cluster is not None and iface.static_ip == m.cluster.ip_prefix.split("/")[0]
        portmaps = [a for a in iface.acls if any(x.portmap for x in a.actions)]
        assert {a.actions[0].app_port for a in portmaps} == {6443, 2379, 2380, 10250, 8472}
        assert all(("adapter", "uplink") in {(x.type, x.value) for x in a.matches}
                   for a in portmaps)  # fmt: skip
        assert TREE in m.content_trees and DS in m.datastores
        seed = base64.b64decode(vm.user_data.reveal()).decode()
        assert seed.startswith("#cloud-config\n") and "https://example.com/manifests.yaml" in seed
        assert clusterconfig.MANIFEST_FILE in yaml.safe_load(seed)["bootcmd"][0][2]
        # The node side finds its K3s VM by the cluster address and completes its seed.
        prepared, problems = node_cluster.prepare(m)
        assert problems == []
        assert b"cluster-init" in base64.b64decode(prepared.apps[vm.id].user_data.reveal()) or (
            m.cluster.join_server_ip != m.cluster.ip_prefix.split("/")[0]
        )
    # The token is encrypted for each member: another node's key opens nothing.
    with Store.open(state.database) as store:
        current = store.current_config(uuid_of(by_uuid[0]))
    assert current is not None and secret.encode() not in current.config
    msg = devconfig_pb2.EdgeDevConfig()
    msg.ParseFromString(current.config)
    stranger = from_proto(
        msg, decrypt=config_decryptor(by_uuid[3].ecdh, (state.ecdh_cert.read_bytes(),))
    )
    assert stranger.cluster is None

    # Recomposing again changes nothing: no new versions.
    counts = [versions(state, n) for n in nodes]
    with Store.open(state.database) as store:
        outcome = clusterwork.recompose(store, clusterwork.load_keys(state))
    assert outcome.configs == 0 and outcome.events == 0
    assert [versions(state, n) for n in nodes] == counts

    # A fourth tagged node joins as the agent; the servers' configs only change in ... nothing.
    cli("device", "tag", uuid_of(by_uuid[3]), "ClusterPool=SJC_Store_1")
    agent_model = model(state, by_uuid[3])
    agent = agent_model.cluster
    assert agent is not None and agent.is_worker and agent.join_server_ip == "10.244.0.10"
    # Agents fetch no manifest (servers apply them).
    assert next(iter(agent_model.apps.values())).user_data.reveal() == ""
    assert [versions(state, n) for n in by_uuid[:3]] == [
        counts[nodes.index(n)] for n in by_uuid[:3]
    ]

    # config set on a member keeps its cluster part in the same version.
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump({"configItems": [{"key": "timer.config.interval", "value": "30"}]})
    )
    cli("config", "set", uuid_of(by_uuid[1]), str(path))
    kept = model(state, by_uuid[1])
    assert kept.cluster is not None and kept.items.get("timer.config.interval") == 30
    assert kept.errors == () and len(kept.apps) == 1

    # Show, list, events, device list/show.
    with Store.open(state.database) as store:
        record = ClusterStore(store.connection, store.clock).cluster_by_name("sjc")
        assert record is not None
        vm_id = clusterconfig.object_ids(record.id, uuid_of(by_uuid[0])).app
        store.put_object_status(
            uuid_of(by_uuid[0]),
            ObjectStatus(ObjectKind.APP, vm_id, "k3s-sjc", "RUNNING", (), None, time.time()),
            limit=100,
        )
        store.add_report(
            uuid_of(by_uuid[0]), ReportKind.INFO, b"",
            json.dumps({"ztype": "ZiDevice", "dinfo": {"swList": [{"shortVersion": "9.9\x1b"}]}}),
        )  # fmt: skip
        ready = {"type": "KUBE_NODE_CONDITION_TYPE_READY", "set": True}
        nodes_seen = [
            {
                "name": "a",
                "nodeId": uuid_of(by_uuid[0]),
                "roleServer": True,
                "apiServerSersion": "v1.30.1+k3s1",
                "conditions": [ready],
            },
            {"nodeId": uuid_of(by_uuid[1]), "conditions": [{**ready, "set": False}]},
            "garbage",
            {"nodeId": 5},
            {"nodeId": uuid_of(by_uuid[2]), "conditions": "x"},
        ]
        store.add_report(
            uuid_of(by_uuid[2]), ReportKind.INFO, b"",
            json.dumps({"ztype": "ZiKubeCluster",
                        "clusterInfo": {"clusterId": record.id, "nodes": nodes_seen}}),
        )  # fmt: skip
    shown = json.loads(cli("cluster", "show", "sjc", "--json"))
    assert shown["state"] == "up" and len(shown["members"]) == 4
    first, second, third, fourth = shown["members"]
    assert first["role"] == "init" and first["ready"] and first["version"] == "9.9\x1b"
    assert first["kubernetes"] == {
        "name": "a",
        "ready": True,
        "role": "server",
        "version": "v1.30.1+k3s1",
    }
    assert not second["ready"] and second["kubernetes"]["ready"] is False
    assert third["kubernetes"]["ready"] is None and not fourth["ready"]
    assert shown["kubernetes_report"] is not None
    assert [m["role"] for m in shown["members"]].count("agent") == 1
    text = cli("cluster", "show", "sjc")
    assert "\x1b" not in text and "9.9\\x1b" in text and "RUNNING" in text
    assert "joined as the init server" in text
    listed = json.loads(cli("cluster", "list", "--json"))
    assert listed[0]["servers"] == 3 and listed[0]["agents"] == 1
    events = json.loads(cli("cluster", "events", "sjc", "--json", "--last", "2"))
    assert len(events) == 2
    devices = json.loads(cli("device", "list", "--json"))
    assert {d["uuid"]: d["tags"] for d in devices}[uuid_of(by_uuid[0])]["rack"] == "3"
    device = json.loads(cli("device", "show", uuid_of(by_uuid[3]), "--json"))
    assert device["cluster"]["role"] == "agent" and device["tags"]["ClusterPool"]

    # Deactivate: the VMs stop (activate false), volumes stay; activate starts them again.
    cli("cluster", "deactivate", "sjc")
    off = model(state, by_uuid[0])
    assert not next(iter(off.apps.values())).activate and len(off.volumes) == 1
    assert off.cluster is not None
    cli("cluster", "activate", "sjc")
    assert next(iter(model(state, by_uuid[0]).apps.values())).activate

    # Untag the agent: it leaves, its config loses the cluster part (and only that).
    cli("device", "untag", uuid_of(by_uuid[3]), "ClusterPool")
    left = model(state, by_uuid[3])
    assert left.cluster is None and left.apps == {} and left.network_instances == {}
    assert TREE in left.content_trees  # the default config's own copy stays

    # Delete: every member is released.
    cli("cluster", "delete", "sjc")
    for n in nodes:
        m = model(state, n)
        assert m.cluster is None and m.apps == {} and m.volumes == {}
    assert json.loads(cli("cluster", "list", "--json")) == []

    # The token was never printed.
    assert all(secret not in o for o in outputs)


def test_two_clusters_and_bad_input(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = str(state.root)
    a, b, c = (node(state, tmp_path / f"n{i}", f"s{i}") for i in range(3))
    for n in (a, b, c):
        assert run(capsys, "device", "tag", "--state", s, uuid_of(n), "pool=x")[0] == 0
    for name in ("one", "two"):
        code, _, err = run(
            capsys, "cluster", "create", "--state", s, name, "--select", "pool=x",
            "--servers", "1:2", "--network-tag", "uplink",
        )  # fmt: skip
        assert code == 0, err
    shown = {
        name: {m["node"] for m in json.loads(
            run(capsys, "cluster", "show", "--state", s, name, "--json")[1])["members"]}
        for name in ("one", "two")
    }  # fmt: skip
    assert len(shown["one"]) == 2 and len(shown["two"]) == 1
    assert not shown["one"] & shown["two"]
    # Without --k3s-image: only the EdgeNodeCluster part (the node runs K3s itself).
    only = model(state, a)
    assert only.cluster is not None and only.apps == {}
    second = clusterconfig.cluster_prefix(1)
    assert any(
        model(state, n).cluster.ip_prefix.startswith(str(second.network_address)[:-1])  # type: ignore[union-attr]
        for n in (a, b, c)
    )

    for argv, message in [
        (("cluster", "create", "one", "--select", "pool=x", "--network-tag", "uplink"),
         "already"),
        (("cluster", "create", "Bad_Name", "--select", "pool=x", "--network-tag", "u"), "name"),
        (("cluster", "create", "z", "--select", "pool", "--network-tag", "u"), "KEY=VALUE"),
        (("cluster", "create", "z", "--select", "a=b", "--servers", "0:1", "--network-tag", "u"),
         "at least one server"),
        (("cluster", "create", "z", "--select", "a=b", "--servers", "3:1", "--network-tag", "u"),
         "min <= max"),
        (("cluster", "create", "z", "--select", "a=b", "--network-tag", "bad label"), "label"),
        (("cluster", "create", "z", "--select", "a=b", "--network-tag", "u", "--k3s-image",
          "nothing"), "no content tree"),
        (("cluster", "create", "z", "--select", "a=b", "--network-tag", "u", "--manifest-url",
          "ftp://x"), "manifest"),
        (("cluster", "show", "nope"), "no cluster"),
        (("device", "tag", uuid_of(a), "bad key=1"), "tag key"),
        (("device", "tag", uuid_of(a), "k=bad value"), "tag value"),
    ]:  # fmt: skip
        code, _, err = run(capsys, *argv[:2], "--state", s, *argv[2:])
        assert code == 1 and message in err, (argv, err)


def test_unattested_node_waits(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = str(state.root)
    n = node(state, tmp_path / "n", "s", attested=False)
    run(capsys, "device", "tag", "--state", s, uuid_of(n), "pool=x")
    code, out, _ = run(
        capsys, "cluster", "create", "--state", s, "c", "--select", "pool=x",
        "--network-tag", "uplink",
    )  # fmt: skip
    assert code == 0 and "1 not attested" in out
    assert model(state, n).cluster is None
