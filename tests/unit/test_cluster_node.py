"""A cluster member's K3s VM gets its K3s configuration (agent/reconcile/cluster.py): the pure
parts, and the seed the VM boots with (the fake hypervisor, the workloads test env)."""

from __future__ import annotations

import base64
import dataclasses
import email
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from agent.model.config import ClusterConfig, NodeConfig
from agent.model.secret import Secret
from agent.reconcile import cluster
from tests.unit.workload_env import APP_VM, DEVICE, Env, env

__all__ = ["env"]

NI = "6d3b3b4e-8a3c-4c47-9d41-0000000000c1"
CLUSTER = "6d3b3b4e-8a3c-4c47-9d41-0000000000c9"
TOKEN = "K10-very-secret-token"


def _cluster(**changes: Any) -> ClusterConfig:
    base = ClusterConfig(
        id=CLUSTER, name="store1", interface="uplink", ip_prefix="10.44.0.2/24",
        is_worker=False, join_server_ip="10.44.0.2", cluster_type=1, tie_breaker_node_id="",
        token=Secret(TOKEN),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def _doc(e: Env) -> dict[str, Any]:
    doc = e.document()
    doc["networkInstances"] = [{
        "uuidandversion": {"uuid": NI, "version": "1"}, "displayname": "cluster",
        "instType": "ZnetInstLocal", "activate": True,
        "ip": {"subnet": "10.44.0.0/24", "gateway": "10.44.0.1",
               "dhcpRange": {"start": "10.44.0.10", "end": "10.44.0.50"}},
    }]  # fmt: skip
    e.app(doc, APP_VM)["interfaces"] = [{"name": "eth0", "networkId": NI, "addr": "10.44.0.2"}]
    return doc


def _config(e: Env, **changes: Any) -> NodeConfig:
    return dataclasses.replace(e.config(_doc(e)), cluster=_cluster(**changes))


def _parts(data: bytes) -> list[tuple[str, str]]:
    message = email.message_from_bytes(data)
    if not message.is_multipart():
        return [("text/cloud-config", data.decode())]
    parts: list[Any] = message.get_payload()  # type: ignore[assignment]
    return [(p.get_content_type(), p.get_payload(decode=True).decode()) for p in parts]


def _k3s(cloud: str) -> dict[str, Any]:
    doc = yaml.safe_load(cloud)
    (entry,) = [f for f in doc["write_files"] if f["path"] == cluster.K3S_CONFIG]
    assert entry["permissions"] == "0600"
    config: dict[str, Any] = yaml.safe_load(entry["content"])
    return config


def test_the_first_server_initialises_and_posts_its_kubeconfig(env: Env) -> None:
    config, errors = cluster.prepare(_config(env))
    assert errors == []
    data = base64.b64decode(config.apps[APP_VM].user_data.reveal())
    (original, ours) = _parts(data)
    assert original == ("text/cloud-config", "#cloud-config\nhostname: vm\n")  # kept, first
    k3s = _k3s(ours[1])
    assert k3s["cluster-init"] is True and "server" not in k3s
    assert k3s["token"] == TOKEN and k3s["node-ip"] == "10.44.0.2"
    assert k3s["tls-san"] == ["10.44.0.2"]
    assert f"node-uuid={DEVICE}" in k3s["node-label"]
    doc = yaml.safe_load(ours[1])
    # Started without waiting for K3s (Type=notify, no start timeout): cloud-init goes on.
    assert ["systemctl", "enable", "--now", "--no-block", "k3s.service"] in doc["runcmd"]
    assert any(f["path"] == cluster.POST_SCRIPT for f in doc["write_files"])
    # Other apps are untouched.
    assert config.apps["6d3b3b4e-8a3c-4c47-9d41-0000000000a2"] == env.config(_doc(env)).apps[
        "6d3b3b4e-8a3c-4c47-9d41-0000000000a2"]  # fmt: skip


def test_joining_servers_and_agents(env: Env) -> None:
    config, _ = cluster.prepare(_config(env, join_server_ip="10.44.0.9"))
    k3s = _k3s(_parts(base64.b64decode(config.apps[APP_VM].user_data.reveal()))[1][1])
    assert k3s["server"] == "https://10.44.0.9:6443" and "cluster-init" not in k3s
    config, _ = cluster.prepare(_config(env, join_server_ip="10.44.0.9", is_worker=True))
    cloud = _parts(base64.b64decode(config.apps[APP_VM].user_data.reveal()))[1][1]
    k3s = _k3s(cloud)
    assert k3s["server"] == "https://10.44.0.9:6443" and "tls-san" not in k3s
    doc = yaml.safe_load(cloud)
    assert doc["runcmd"] == [["systemctl", "enable", "--now", "--no-block", "k3s-agent.service"]]
    assert all(f["path"] != cluster.POST_SCRIPT for f in doc["write_files"])


def test_problems_are_errors_and_the_token_stays_secret(env: Env) -> None:
    config = _config(env, ip_prefix="10.44.0.3/24", join_server_ip="10.44.0.3")
    same, errors = cluster.prepare(config)
    assert same is config
    assert [e.kind for e in errors] == ["device"] and "no app has" in errors[0].message
    _, errors = cluster.prepare(_config(env, join_server_ip="10.44.0.9", token=Secret()))
    assert [(e.kind, e.id) for e in errors] == [("app", APP_VM)]
    assert "no cluster token" in errors[0].message
    prepared, _ = cluster.prepare(_config(env))
    for text in (repr(prepared), str(prepared.cluster), repr(prepared.apps[APP_VM])):
        assert TOKEN not in text
    assert cluster.prepare(env.config(_doc(env))) == (env.config(_doc(env)), [])  # no cluster


async def test_the_vm_boots_with_the_k3s_configuration(env: Env) -> None:
    rec = env.new_reconciler()
    assert await rec.apply(_config(env), 20), rec.report
    info = await env.hypervisor.state(uuid.UUID(APP_VM))
    console = info.console_log.read_text()  # the test guest prints its seed
    assert "cluster-init: true" in console and "k3s.service" in console
    assert not rec.report.item_errors


def test_the_poster_stops_only_on_a_200(tmp_path: Path) -> None:
    """The VM's poster (run here with a stand-in curl): a 204 (the node does not know the VM's
    address yet) is no answer, a 200 is."""
    kube = tmp_path / "k3s.yaml"
    kube.write_text("apiVersion: v1\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answers = tmp_path / "answers"
    (bin_dir / "curl").write_text(
        '#!/bin/sh\necho "$@" >> ' + str(tmp_path / "calls") + "\n"
        "code=$(head -n1 " + str(answers) + "); sed -i 1d " + str(answers) + "\n"
        'printf %s "$code"\n'
    )
    (bin_dir / "curl").chmod(0o755)
    (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")  # no waiting between tries
    (bin_dir / "sleep").chmod(0o755)
    answers.write_text("204\n000\n200\n")
    script = tmp_path / "post.sh"
    script.write_text(cluster._POST.replace(cluster.K3S_KUBECONFIG, str(kube)))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["sh", str(script)], env=env, timeout=10, check=False)
    assert done.returncode == 0
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 3  # 204 and a failure were retried; the 200 ended it
    assert "Content-Type: application/json" in calls[0] and f"@{kube}" in calls[0]
