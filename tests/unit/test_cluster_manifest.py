# SPDX-License-Identifier: Apache-2.0
"""controller.clustermanifest: the manifest URL's result, posted by a server's K3s VM as the
app's custom status and reported by its node, lands once in the cluster's event history."""

from __future__ import annotations

import base64
import http.server
import json
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from agent.wire.pb.info import info_pb2
from controller import clusterconfig, clustermanifest, clusterwork
from controller.cli import main
from controller.clusters import ClusterStore
from controller.records import ReportKind
from controller.state import StateDir
from controller.store import Store
from tests.unit.test_cluster_cli import node
from tests.unit.test_cluster_work import cli


@pytest.fixture
def state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StateDir:
    made = StateDir(tmp_path / "state")
    assert main(["init", "--state", str(made.root)]) == 0
    capsys.readouterr()
    return made


URL = "https://rancher.example/v3/import/secretregistrationtoken_c-abcde.yaml"


def status(result: str, detail: str, url: str = URL) -> bytes:
    part = {"result": result, "detail": detail, "url-sha256": clustermanifest.url_hash(url)}
    return json.dumps({clustermanifest.STATUS_KEY: part}).encode()


def test_parse_status_takes_only_a_well_formed_result() -> None:
    got = clustermanifest.parse_status(status("applied", "73 bytes"))
    assert got == clustermanifest.ManifestResult(True, "73 bytes", clustermanifest.url_hash(URL))
    failed = clustermanifest.parse_status(status("failed", "HTTP 404\x1b[2J"))
    assert failed is not None and not failed.applied and failed.detail == "HTTP 404?[2J"
    for bad in (b"not json", b"[]", b'{"other": {}}', b'{"eve-cluster-manifest": "applied"}',
                json.dumps({"eve-cluster-manifest": {"result": "maybe", "url-sha256": "ab"}})
                .encode(),
                json.dumps({"eve-cluster-manifest": {"result": "applied"}}).encode(),
                b"{" + b" " * 70000 + b"}"):  # fmt: skip
        assert clustermanifest.parse_status(bad) is None, bad


def _report(state: StateDir, device: str, app_id: str, data: bytes) -> None:
    msg = info_pb2.ZInfoMsg(ztype=info_pb2.ZiAppInstMetaData, devId=device)
    msg.amdinfo.uuid = app_id
    msg.amdinfo.type = info_pb2.APP_INST_META_DATA_TYPE_CUSTOM_STATUS
    msg.amdinfo.data = data
    rendered = json.dumps(json_format.MessageToDict(msg), separators=(",", ":"))
    with Store.open(state.database) as store:
        store.add_report(device, ReportKind.INFO, msg.SerializeToString(), rendered)


def _manifest_events(state: StateDir) -> list[tuple[str, str]]:
    with Store.open(state.database) as store:
        clusterwork.recompose(store, clusterwork.load_keys(state))
        cs = ClusterStore(store.connection, store.clock)
        record = cs.cluster_by_name("c")
        assert record is not None
        return [(e.text, e.reason) for e in cs.events(record.id) if e.text.startswith("manifest")]


def test_the_result_is_recorded_once_per_cluster(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = [node(state, tmp_path / f"n{i}", f"s{i}") for i in range(2)]
    for n in nodes:
        cli(capsys, state, "device", "tag", n.uuid, "pool=a")
    cli(capsys, state, "cluster", "create", "c", "--select", "pool=a", "--servers", "1:1",
        "--agents", "1:1", "--network-tag", "uplink", "--manifest-url", URL)  # fmt: skip
    with Store.open(state.database) as store:
        cs = ClusterStore(store.connection, store.clock)
        record = cs.cluster_by_name("c")
        assert record is not None
        roles = {m.role.value: m.device_uuid for m in cs.members(record.id)}
    app = {r: clusterconfig.object_ids(record.id, d).app for r, d in roles.items()}
    assert _manifest_events(state) == []

    # Ignored: an agent's VM (agents fetch no manifest), another URL's result, another app.
    _report(state, roles["agent"], app["agent"], status("applied", "1 bytes"))
    _report(state, roles["init"], app["init"], status("applied", "2 bytes", url="https://x/y"))
    _report(state, roles["init"], app["agent"], status("applied", "3 bytes"))
    assert _manifest_events(state) == []

    _report(state, roles["init"], app["init"], status("applied", "73 bytes"))
    want = [("manifest applied", f"reported by node {roles['init']}'s K3s VM (73 bytes)")]
    assert _manifest_events(state) == want
    # The VM boots again and posts again: nothing new.
    _report(state, roles["init"], app["init"], status("applied", "73 bytes"))
    assert _manifest_events(state) == want
    # A changed result is recorded (and the URL is in no event).
    _report(state, roles["init"], app["init"], status("failed", "HTTP 404"))
    got = _manifest_events(state)
    assert [t for t, _ in got] == ["manifest applied", "manifest failed: HTTP 404"]
    assert all(URL not in t and URL not in r for t, r in got)


class _Site(http.server.BaseHTTPRequestHandler):
    """The manifest's server and the metadata server in one: GET /m.yaml, 404 otherwise; POSTs
    to the custom status path are kept."""

    posted: list[bytes] = []

    def do_GET(self) -> None:
        body = b"kind: ConfigMap\n" if self.path == "/m.yaml" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        type(self).posted.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.mark.skipif(shutil.which("curl") is None, reason="the script's curl path needs curl")
@pytest.mark.parametrize(("path", "want"), [("/m.yaml", (True, "16 bytes")),
                                            ("/gone.yaml", (False, "HTTP 404"))])  # fmt: skip
def test_the_vm_script_fetches_and_posts_its_result(
    tmp_path: Path, path: str, want: tuple[bool, str]
) -> None:
    """The bootcmd the controller renders, run by sh here (the metadata server and the K3s
    directories pointed at this test's), posts what the controller then records."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Site.posted = []
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        url = base + path
        seed = base64.b64decode(clusterconfig.manifest_user_data(url)).decode()
        script = yaml.safe_load(seed)["bootcmd"][0][2]
        assert f"\nEVE_K3S_MANIFEST_URL={shlex.quote(url)}\n" in script  # the guest reads it
        assert script.endswith(") >/dev/null 2>&1 &")  # in the background at boot
        status = str(tmp_path / "status.json")
        script = (script.removesuffix(" >/dev/null 2>&1 &")
                  .replace(clusterconfig.CUSTOM_STATUS_URL, base + "/eve/v1/app/appCustomStatus")
                  .replace(clusterconfig.MANIFEST_DIR, str(tmp_path / "manifests"))
                  .replace("/run/eve-cluster-manifest.json", status))  # fmt: skip
        subprocess.run(["sh", "-c", script], check=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    (posted,) = _Site.posted
    result = clustermanifest.parse_status(posted)
    assert result is not None and (result.applied, result.detail) == want
    assert result.url_sha256 == clustermanifest.url_hash(url)
    fetched = tmp_path / "manifests" / "eve-cluster.yaml"
    assert (
        fetched.exists() == want[0]
        and not (tmp_path / "manifests" / "eve-cluster.yaml.new").exists()
    )
