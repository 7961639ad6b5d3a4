"""EdgeNodeCluster made real: the node's K3s VM gets its K3s configuration.  Pure.

A node in a cluster (``config.cluster``) runs one K3s VM: the app with an interface whose
static address is the node's cluster address (``cluster_ip_prefix``'s host part) - the
controller places the VM there, so the link between the cluster and its VM is the address, no
new field.  The agent adds to that app's user data (a MIME multipart: the controller's own user
data first, when there is any, then the agent's cloud-config) what K3s needs:

- ``/etc/rancher/k3s/config.yaml`` (0600), K3s's own configuration: ``token`` (the cluster
  token, decrypted from the config), ``cluster-init: true`` on the server that initialises the
  cluster (a server whose address is ``join_server_ip``), else ``server:
  https://<join_server_ip>:6443``; ``node-ip``, ``tls-san`` (the node's cluster address, which
  the agent dials to read the cluster's state), ``node-name`` and ``node-label``s with the node's
  UUID and the cluster's id;
- ``/etc/eve/k3s-member.env``: the role and addresses as ``EVE_K3S_*=value`` lines (no token);
- a script that posts the kubeconfig K3s writes (``/etc/rancher/k3s/k3s.yaml``) to the metadata
  server (``/eve/v1/kubeconfig``, as EVE's K3s does) until it is taken - servers only;
- ``runcmd`` enabling and starting ``k3s.service`` (servers) or ``k3s-agent.service``
  (agents), the units the K3s VM image ships (images/k3s), without waiting for K3s
  (``--no-block``): K3s's server unit is ``Type=notify`` with ``TimeoutStartSec=0``, so a
  waiting ``systemctl`` would hold cloud-init's final stage, and the poster started after it,
  until K3s is up - for ever when a joining member's server is away.

Problems are errors of the cluster's app (no app at the cluster address, no token for a joining
member) or of the device; the rest of the config applies unchanged.  The token lives only in
the app's user data (a :class:`~agent.model.secret.Secret`) and the VM's seed.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import replace
from email.charset import Charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import yaml

from agent.model.config import AppInstance, ClusterConfig, NodeConfig, ObjectError
from agent.model.secret import Secret
from agent.reconcile import userdata

K3S_CONFIG = "/etc/rancher/k3s/config.yaml"
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
POST_SCRIPT = "/usr/local/sbin/eve-post-kubeconfig"
MEMBER_ENV = "/etc/eve/k3s-member.env"
API_PORT = 6443

_POST = f"""#!/bin/sh
# Posts K3s's kubeconfig to the node's metadata server until it is taken (written by eve-agent).
# Only a 200 means taken: a 204 says the node does not know this VM's address (yet).
url=http://169.254.169.254/eve/v1/kubeconfig
json='Content-Type: application/json'
kube={K3S_KUBECONFIG}
while :; do
    if [ -s "$kube" ]; then
        if command -v curl >/dev/null; then
            code=$(curl -s -o /dev/null -w '%{{http_code}}' -X POST -H "$json" \\
                --data-binary @"$kube" "$url")
        else
            code=$(wget -S -O /dev/null --header "$json" --post-file "$kube" "$url" 2>&1 \\
                | awk '$1 ~ /^HTTP/ {{c = $2}} END {{print c}}')
        fi
        [ "$code" = 200 ] && exit 0
    fi
    sleep 10
done
"""


def node_address(cluster: ClusterConfig) -> str:
    """The node's address in the cluster (``cluster_ip_prefix`` without its length)."""
    return str(ipaddress.ip_interface(cluster.ip_prefix).ip)


def is_init(cluster: ClusterConfig) -> bool:
    """Whether this node's server initialises the cluster (the others join it)."""
    return not cluster.is_worker and (
        not cluster.join_server_ip or cluster.join_server_ip == node_address(cluster)
    )


def k3s_config(cluster: ClusterConfig, device_uuid: str) -> dict[str, object]:
    """K3s's ``config.yaml`` for this node (with the token: a secret)."""
    own = node_address(cluster)
    doc: dict[str, object] = {}
    if cluster.token:
        doc["token"] = cluster.token.reveal()
    if is_init(cluster):
        doc["cluster-init"] = True
    else:
        doc["server"] = f"https://{cluster.join_server_ip}:{API_PORT}"
    doc.update({
        "node-ip": own,
        "node-name": f"{cluster.name}-{device_uuid[:8]}",
        "node-label": [f"node-uuid={device_uuid}", f"eve-cluster-id={cluster.id}"],
    })  # fmt: skip
    if not cluster.is_worker:
        doc["tls-san"] = [own]
    return doc


def member_env(cluster: ClusterConfig, device_uuid: str) -> str:
    """``/etc/eve/k3s-member.env``: the member's role and addresses as ``EVE_K3S_*=value``
    lines (no token), for tools in the VM that read no YAML (the test guest acts its role from
    it) and for a person looking at the VM."""
    k3s = k3s_config(cluster, device_uuid)
    role = "init" if is_init(cluster) else "agent" if cluster.is_worker else "server"
    lines = {
        "EVE_K3S_ROLE": role,
        "EVE_K3S_NODE_IP": node_address(cluster),
        "EVE_K3S_NODE_NAME": str(k3s["node-name"]),
        "EVE_K3S_NODE_UUID": device_uuid,
        "EVE_K3S_CLUSTER_ID": cluster.id,
        "EVE_K3S_CLUSTER_NAME": cluster.name,
        "EVE_K3S_SERVER": str(k3s.get("server", "")),
    }
    return "".join(f"{k}={v}\n" for k, v in lines.items())


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks: the files stay readable (and greppable) in the
    VM's user data."""


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _literal)


def cloud_config(cluster: ClusterConfig, device_uuid: str) -> str:
    """The agent's ``#cloud-config`` part for the K3s VM."""
    files: list[dict[str, str]] = [
        {"path": K3S_CONFIG, "permissions": "0600", "owner": "root:root",
         "content": yaml.safe_dump(k3s_config(cluster, device_uuid), sort_keys=True)},
        {"path": MEMBER_ENV, "permissions": "0644",
         "content": member_env(cluster, device_uuid)},
    ]  # fmt: skip
    runcmd: list[list[str]] = []
    if cluster.is_worker:
        runcmd.append(["systemctl", "enable", "--now", "--no-block", "k3s-agent.service"])
    else:
        files.append({"path": POST_SCRIPT, "permissions": "0755", "content": _POST})
        runcmd.append(["systemctl", "enable", "--now", "--no-block", "k3s.service"])
        runcmd.append(["sh", "-c", f"nohup {POST_SCRIPT} >/dev/null 2>&1 &"])
    doc = {"write_files": files, "runcmd": runcmd}
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


def _subtype(data: bytes) -> str:
    head = data.lstrip()[:32]
    if head.startswith(b"#cloud-config"):
        return "cloud-config"
    if head.startswith(b"#!"):
        return "x-shellscript"
    if head.startswith(b"Content-Type: multipart"):
        return "x-include-multipart"  # not expected; kept as a part cloud-init lists
    return "plain"


def user_data(original: bytes, cluster: ClusterConfig, device_uuid: str) -> bytes:
    """The K3s VM's user data: the agent's cloud-config alone, or after ``original`` in a MIME
    multipart (cloud-init merges the parts)."""
    ours = cloud_config(cluster, device_uuid)
    if not original.strip():
        return ours.encode()
    message = MIMEMultipart()
    try:
        text = original.decode("utf-8")
    except UnicodeDecodeError:
        text = original.decode("latin-1")
    # 8bit parts, not base64: readable on the VM's console and in its seed.
    charset = Charset("utf-8")
    charset.body_encoding = None  # type: ignore[assignment]
    message.attach(MIMEText(text, _subtype(original), charset))  # type: ignore[arg-type]
    message.attach(MIMEText(ours, "cloud-config", charset))  # type: ignore[arg-type]
    return message.as_bytes()


def cluster_app(config: NodeConfig, cluster: ClusterConfig) -> AppInstance | None:
    """The app with an interface at the node's cluster address."""
    own = node_address(cluster)
    return next(
        (app for app in sorted(config.apps.values(), key=lambda a: a.id)
         if any(i.static_ip == own for i in app.interfaces)), None,
    )  # fmt: skip


def prepare(config: NodeConfig) -> tuple[NodeConfig, list[ObjectError]]:
    """``config`` with its K3s VM's user data completed (unchanged when the node is in no
    cluster), and the problems found."""
    cluster = config.cluster
    if cluster is None:
        return config, []
    app = cluster_app(config, cluster)
    if app is None:
        message = (f"cluster {cluster.name}: no app has the node's cluster address "
                   f"{node_address(cluster)}: no K3s VM runs here")  # fmt: skip
        return config, [ObjectError("device", config.device_uuid, "", message)]
    if not cluster.token and not is_init(cluster):
        message = f"cluster {cluster.name}: no cluster token: this member cannot join"
        return config, [ObjectError("app", app.id, app.name, message)]
    data = user_data(userdata.decode(app.user_data.reveal()), cluster, config.device_uuid)
    made = replace(app, user_data=Secret(base64.b64encode(data).decode("ascii")))
    return replace(config, apps={**config.apps, app.id: made}), []
