"""Reading a K3s VM's API with the kubeconfig it posted (agent/drivers/kubeapi.py), turning the
answers into the cluster report (agent/reconcile/kubestatus.py, agent/link/kubeinfo.py).  A TLS
API stand-in on loopback that demands the kubeconfig's client certificate or token."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from agent.drivers.errors import PermanentError, TemporaryError
from agent.drivers.kubeapi import MAX_BODY, KubeApi, KubeConfig, KubeConfigError
from agent.link.kubeinfo import kube_cluster_info
from agent.reconcile import kubestatus
from agent.wire import pki
from agent.wire.pb.info import edge_node_cluster_pb2 as kube_pb2
from agent.wire.pb.info import info_pb2
from tests.unit.blob_server import serve

NODE_UUID = "6d3b3b4e-8a3c-4c47-9d41-00000000d001"
NODES: dict[str, Any] = {
    "kind": "NodeList",
    "items": [
        {
            "metadata": {"name": "k3s-a", "creationTimestamp": "2026-11-29T10:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "true",
                                    "node-uuid": NODE_UUID}},
            "spec": {},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True",
                     "lastTransitionTime": "2026-11-29T10:01:00Z"},
                    {"type": "DiskPressure", "status": "False"},
                    {"type": "Bogus", "status": "True"},
                ],
                "addresses": [{"type": "InternalIP", "address": "10.44.0.2"}],
                "nodeInfo": {"kubeletVersion": "v1.30.4+k3s1"},
            },
        },
        {"metadata": {"name": "k3s-b", "labels": {}}, "spec": {"unschedulable": True},
         "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"metadata": {"name": 7}},  # hostile: no usable name
        "not an object",
    ],
}  # fmt: skip
PODS: dict[str, Any] = {
    "items": [
        {"metadata": {"namespace": "kube-system"}, "status": {"phase": "Running"}},
        {"metadata": {"namespace": "kube-system"}, "status": {"phase": "Pending"}},
        {"metadata": {"namespace": "default"}, "status": {"phase": "Succeeded"}},
        {"metadata": {}, "status": {"phase": "Weird"}},
    ]
}


@dataclass
class Api:
    port: int
    kubeconfig: bytes
    token_kubeconfig: bytes
    other_ca: bytes


def _kubeconfig(ca: bytes, port: int, user: dict[str, str]) -> bytes:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "default",
        "clusters": [{"name": "default", "cluster": {
            "server": f"https://127.0.0.1:{port}",
            "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": "default", "user": user}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    }  # fmt: skip
    return yaml.safe_dump(doc).encode()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    ca_key = pki.new_ec_key()
    ca = pki.make_certificate(ca_key, "k3s-server-ca", is_ca=True)
    key = pki.new_ec_key()
    cert = pki.make_certificate(key, "k3s", issuer_key=ca_key, issuer_cert=ca,
                                ip_addresses=["127.0.0.1"], server_auth=True)  # fmt: skip
    client_key = pki.new_ec_key()
    client = pki.make_certificate(client_key, "system:admin", issuer_key=ca_key,
                                  issuer_cert=ca, client_auth=True)  # fmt: skip
    (tmp_path / "server.pem").write_bytes(pki.cert_pem(cert) + pki.key_pem(key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    ctx.load_verify_locations(cadata=pki.cert_pem(ca).decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, or the token below
    answers: dict[str, Any] = {"/api/v1/nodes": NODES, "/api/v1/pods": PODS}

    async def handle(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if not peer and request.headers.get("Authorization") != "Bearer s3cret":
            return web.Response(status=401)
        if request.path == "/api/v1/huge":
            return web.Response(body=b"{" + b" " * MAX_BODY + b"}")
        if request.path == "/api/v1/broken":
            return web.Response(status=503)
        return web.json_response(answers[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with serve(app, ssl_context=ctx) as port:
        other = pki.cert_pem(pki.make_certificate(pki.new_ec_key(), "other", is_ca=True))
        yield Api(
            port,
            _kubeconfig(pki.cert_pem(ca), port, {
                "client-certificate-data": base64.b64encode(pki.cert_pem(client)).decode(),
                "client-key-data": base64.b64encode(pki.key_pem(client_key)).decode()}),
            _kubeconfig(pki.cert_pem(ca), port, {"token": "s3cret"}),
            other,
        )  # fmt: skip


async def test_reads_the_cluster_with_the_posted_kubeconfig(api: Api) -> None:
    kube = KubeApi()
    try:
        for raw in (api.kubeconfig, api.token_kubeconfig):
            config = KubeConfig.parse(raw)
            assert config.port == api.port and "s3cret" not in repr(config)
            nodes = await kube.get(config, "127.0.0.1", "/api/v1/nodes")
            pods = await kube.get(config, "127.0.0.1", "/api/v1/pods")
            status = kubestatus.parse("c1", nodes, pods)
            assert [n.name for n in status.nodes] == ["k3s-a", "k3s-b"]
            a, b = status.nodes
            assert a.ready and a.server and a.version == "v1.30.4+k3s1"
            assert a.internal_ip == "10.44.0.2" and a.node_uuid == NODE_UUID and a.schedulable
            assert [c.type for c in a.conditions] == ["Ready", "DiskPressure"]
            assert not b.ready and not b.server and not b.schedulable
            counts = {ns.namespace: ns for ns in status.namespaces}
            assert counts["kube-system"].total == 2 and counts["kube-system"].running == 1
            assert counts["default"].total == 2 and counts["default"].succeeded == 1
        # Errors, typed.
        with pytest.raises(TemporaryError, match="503"):
            await kube.get(config, "127.0.0.1", "/api/v1/broken")
        with pytest.raises(PermanentError, match="larger than"):
            await kube.get(config, "127.0.0.1", "/api/v1/huge")
        wrong_ca = KubeConfig(api.port, api.other_ca, token="s3cret")
        with pytest.raises(PermanentError, match="certificate"):
            await kube.get(wrong_ca, "127.0.0.1", "/api/v1/nodes")
        with pytest.raises(PermanentError, match="401"):
            await kube.get(KubeConfig.parse(api.token_kubeconfig.replace(b"s3cret", b"nope")),
                           "127.0.0.1", "/api/v1/nodes")  # fmt: skip
        with pytest.raises(TemporaryError):  # nobody listening
            await kube.get(KubeConfig(1, config.ca_pem, token="x"), "127.0.0.1", "/")
    finally:
        await kube.close()


def test_the_report_is_eves() -> None:
    status = kubestatus.parse("c1", NODES, PODS)
    msg = kube_cluster_info("dev", status)
    assert msg.ztype == info_pb2.ZiKubeCluster and msg.WhichOneof("InfoContent") == "cluster_info"
    info = msg.cluster_info
    assert info.cluster_id == "c1" and [n.name for n in info.nodes] == ["k3s-a", "k3s-b"]
    ready = info.nodes[0].conditions[0]
    assert ready.type == kube_pb2.KUBE_NODE_CONDITION_TYPE_READY and ready.set
    assert info.nodes[0].role_server and info.nodes[0].node_id == NODE_UUID
    assert {ns.name: ns.pod_running_count for ns in info.pod_name_spaces}["kube-system"] == 1


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xff", "not YAML"),
        (b"[1, 2]", "not a mapping"),
        (b"clusters: []", "no clusters"),
        (json.dumps({"clusters": [{"name": "x", "cluster": {"server": "http://a"}}],
                     "users": [{"name": "x", "user": {}}]}).encode(), "not https"),
        (json.dumps({"clusters": [{"name": "x", "cluster": {
            "server": "https://a:6443", "certificate-authority-data": "%%%"}}],
            "users": [{"name": "x", "user": {}}]}).encode(), "not base64"),
        (b"x" * 40000, "larger than"),
    ],
)  # fmt: skip
def test_a_bad_kubeconfig_is_refused_by_name(raw: bytes, why: str) -> None:
    with pytest.raises(KubeConfigError, match=why):
        KubeConfig.parse(raw)
