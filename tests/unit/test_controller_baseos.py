"""``eve-controller baseos set/show`` and the partitions in ``device show``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from agent.link.reporting import DeviceFacts, device_info
from agent.model.baseos import PartitionStatus
from agent.model.config import from_proto
from agent.model.configitems import parse_items
from agent.wire.pb.config import devconfig_pb2
from controller.records import ReportKind
from controller.state import StateDir
from controller.store import Store
from tests.unit.test_controller_cli import register, run, state  # noqa: F401

SHA = "ab" * 32


def current_config(state: StateDir, uuid: str) -> devconfig_pb2.EdgeDevConfig:  # noqa: F811
    with Store.open(state.database) as store:
        stored = store.current_config(uuid)
    assert stored is not None
    config = devconfig_pb2.EdgeDevConfig()
    config.ParseFromString(stored.config)
    return config


def test_baseos_set_writes_eve_objects_the_agent_accepts(
    state: StateDir,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    uuid = register(state)
    s = str(state.root)
    url = "http://10.0.2.100:8000/images/root-2.0.img.gz"
    code, out, _ = run(capsys, "baseos", "set", uuid, "--state", s, "--url", url,
                       "--sha256", SHA.upper(), "--version", "2.0")  # fmt: skip
    assert code == 0 and "base OS 2.0 (activate, retry counter 0)" in out
    config = current_config(state, uuid)
    (ds,) = config.datastores
    assert (ds.fqdn, ds.dpath, ds.dType) == ("http://10.0.2.100:8000", "images", 1)
    (tree,) = config.contentInfo
    assert (tree.URL, tree.sha256, list(tree.ds_ids_list)) == ("root-2.0.img.gz", SHA, [ds.id])
    assert config.baseos.content_tree_uuid == tree.uuid and config.baseos.activate
    # The agent's model takes it as it is.
    model = from_proto(config)
    assert model.baseos is not None and model.baseos.version == "2.0" and not model.errors

    # A new image replaces the old content tree; --retry raises the counter.
    code, out, _ = run(capsys, "baseos", "set", uuid, "--state", s, "--url",
                       url.replace("2.0", "2.1"), "--sha256", "cd" * 32, "--version", "2.1",
                       "--retry", "--no-activate")  # fmt: skip
    config = current_config(state, uuid)
    assert len(config.contentInfo) == 1 and len(config.datastores) == 1
    assert config.baseos.retry_update.counter == 1 and not config.baseos.activate
    assert "download only, retry counter 1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "ftp://x/a.img", "--sha256", SHA, "--version", "1"], "http:// or https://"),
        (["--url", "http://x/", "--sha256", SHA, "--version", "1"], "names no file"),
        (["--url", "http://x/a?b=1", "--sha256", SHA, "--version", "1"], "no query"),
        (["--url", "http://x/a.img", "--sha256", "zz", "--version", "1"], "64 hex"),
        (["--url", "http://x/a.img", "--sha256", SHA, "--version", "1 2"], "not a version"),
    ],
)
def test_baseos_set_refuses_bad_arguments(
    state: StateDir,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    uuid = register(state)
    code, _, err = run(capsys, "baseos", "set", uuid, "--state", str(state.root), *args)
    assert code != 0 and message in err


def test_partitions_as_reported_are_shown_escaped(
    state: StateDir,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    uuid = register(state)
    facts = DeviceFacts(
        uuid=uuid, version="1.0", boot_time=0.0, attestation_state="complete",
        attestation_error="", items=parse_items([]),
        partitions=(
            PartitionStatus("IMGA", "active", "1.0", True),
            PartitionStatus("IMGB", "unused", "2.0\x1b[31m", False, "FALLBACK",
                            error="update to 2.0 failed: no controller\nforged"),
        ),
        baseos_update_counter=2,
    )  # fmt: skip
    message = device_info(facts)
    with Store.open(state.database) as store:
        store.add_report(uuid, ReportKind.INFO, message.SerializeToString(),
                         json_format.MessageToJson(message))  # fmt: skip
    s = str(state.root)
    _, out, _ = run(capsys, "device", "show", uuid, "--state", s)
    assert "IMGA active 1.0 (running)" in out
    assert (
        "IMGB unused 2.0\\x1b[31m FALLBACK error: update to 2.0 failed: no controller\\nforged"
        in out
    )
    _, out, _ = run(capsys, "baseos", "show", uuid, "--state", s, "--json")
    shown = json.loads(out)
    assert shown["wanted"] is None and shown["reported"]["update_counter"] == 2
    assert [p["partition"] for p in shown["reported"]["partitions"]] == ["IMGA", "IMGB"]
    _, out, _ = run(capsys, "baseos", "show", uuid, "--state", s)
    assert out.startswith("wanted: - (the config names no base OS)")


def test_show_before_any_report(state: StateDir, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    uuid = register(state)
    _, out, _ = run(capsys, "baseos", "show", uuid, "--state", str(state.root))
    assert "reported: nothing yet" in out
    assert Path(state.root).exists()
