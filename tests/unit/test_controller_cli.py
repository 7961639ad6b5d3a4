"""The eve-controller command line, run in-process on a temporary state directory."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from agent.wire import envelope, pki
from agent.wire.pb.config import devconfig_pb2
from controller import configs
from controller.cli import main
from controller.records import ReportKind
from controller.state import StateDir
from controller.store import Store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StateDir:
    state = StateDir(tmp_path / "state")
    assert run(capsys, "init", "--state", str(state.root))[0] == 0
    return state


def register(state: StateDir, serial: str = "serial-1") -> str:
    key = pki.new_ec_key()
    cert = pki.make_certificate(key, "device")
    with Store.open(state.database) as store:
        _, device = store.register_device(
            onboard_sha256="ab" * 32,
            serial=serial,
            cert_pem=cert.public_bytes(Encoding.PEM),
            cert_sha256=envelope.device_cert_hash(cert),
            default_config=configs.default_config,
        )
    return device.uuid


def test_init_makes_the_certificates_private_and_chained(state: StateDir) -> None:
    assert stat.S_IMODE(state.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.certs.stat().st_mode) == 0o700
    for path in state.cert_files():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.name.endswith(".key.pem") else 0o644), path
    assert state.database.exists()

    root = pki.load_cert(state.root_cert.read_bytes())
    for leaf in (state.server_cert, state.signing_cert, state.ecdh_cert):
        pki.verify_chain(pki.load_cert(leaf.read_bytes()), [root])
    onboard = pki.load_cert(state.onboard_cert.read_bytes())
    assert onboard.subject.rfc4514_string() == "CN=onboard"
    assert onboard.issuer == onboard.subject
    onboard_key = onboard.public_key()
    assert isinstance(onboard_key, ec.EllipticCurvePublicKey)
    assert onboard_key.curve.name == "secp256r1"

    server = pki.load_cert(state.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_init_is_idempotent_and_refuses_to_overwrite(
    state: StateDir, capsys: pytest.CaptureFixture[str]
) -> None:
    root = state.root_cert.read_bytes()
    code, out, _ = run(capsys, "--state", str(state.root), "init")
    assert code == 0 and "already initialised" in out
    assert state.root_cert.read_bytes() == root

    code, _, err = run(capsys, "init", "--state", str(state.root), "--hostname", "ctl.example")
    assert code == 1 and "ctl.example" in err and "--force" in err
    assert state.root_cert.read_bytes() == root

    state.ecdh_key.unlink()
    code, _, err = run(capsys, "init", "--state", str(state.root))
    assert code == 1 and "incomplete" in err

    code, _, _ = run(
        capsys, "init", "--state", str(state.root), "--force",
        "--hostname", "ctl.example", "--ip", "192.0.2.7",
    )  # fmt: skip
    assert code == 0
    assert state.root_cert.read_bytes() != root
    server = pki.load_cert(state.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "ctl.example" in san.get_values_for_type(x509.DNSName)
    assert "192.0.2.7" in {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def test_init_rejects_a_bad_ip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "init", "--state", str(tmp_path / "s"), "--ip", "300.1.1.1")
    assert code == 1 and "bad --ip" in err


def test_onboard_add_list_remove(state: StateDir, capsys: pytest.CaptureFixture[str]) -> None:
    s = str(state.root)
    cert = str(state.onboard_cert)
    assert run(capsys, "onboard", "add", "--state", s, "--cert", cert, "--serial", "a")[0] == 0
    assert run(capsys, "onboard", "add", "--state", s, "--cert", cert, "--serial", "b")[0] == 0
    _, out, _ = run(capsys, "onboard", "list", "--state", s, "--json")
    [entry] = json.loads(out)
    assert entry["serials"] == ["a", "b"] and entry["any_serial"] is False
    assert entry["subject"] == "CN=onboard"

    sha = entry["cert_sha256"]
    assert run(capsys, "onboard", "remove", "--state", s, "--sha256", sha, "--serial", "a")[0] == 0
    _, out, _ = run(capsys, "onboard", "list", "--state", s, "--json")
    assert json.loads(out)[0]["serials"] == ["b"]
    assert run(capsys, "onboard", "remove", "--state", s, "--cert", cert)[0] == 0
    _, out, _ = run(capsys, "onboard", "list", "--state", s, "--json")
    assert json.loads(out) == []
    code, _, err = run(capsys, "onboard", "remove", "--state", s, "--sha256", sha)
    assert code == 1 and "not on the allow-list" in err


def test_onboard_add_needs_serials_or_any(
    state: StateDir, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["onboard", "add", "--state", str(state.root), "--cert", str(state.onboard_cert)])
    assert exc.value.code == 2


CONFIG_YAML = """\
# A YAML config; the timestamp-looking value must stay a string for protobuf.
configItems:
  - key: timer.config.interval
    value: "5"
  - key: note
    value: 2026-01-01T00:00:00Z
deviceName: edge-1
"""


def test_config_set_from_yaml(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = register(state)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_YAML)
    s = str(state.root)
    code, out, err = run(capsys, "config", "set", "--state", s, uuid, str(path))
    assert code == 0, err
    assert "config version 1" in out

    code, out, _ = run(capsys, "config", "get", "--state", s, uuid)
    document: dict[str, Any] = json.loads(out)
    assert document["id"] == {"uuid": uuid, "version": "1"}
    assert document["deviceName"] == "edge-1"
    assert document["configItems"][1] == {"key": "note", "value": "2026-01-01T00:00:00Z"}
    assert "configTimestamp" in document

    # An operator replaying an old config sets the timestamp; a prefix of the UUID is enough.
    old = "2020-05-01T12:00:00Z"
    assert (
        run(capsys, "config", "set", "--state", s, uuid[:8], str(path), "--timestamp", old)[0] == 0
    )
    code, out, _ = run(capsys, "config", "history", "--state", s, uuid, "--json")
    history = json.loads(out)
    assert [h["version"] for h in history] == [0, 1, 2]
    assert history[2]["config_timestamp"] == old
    # Same content, different version and timestamp: a different hash.
    assert len({h["config_hash"] for h in history}) == 3

    code, out, _ = run(capsys, "config", "get", "--state", s, uuid, "--version", "0")
    assert json.loads(out)["id"] == {"uuid": uuid, "version": "0"}

    with Store.open(state.database) as store:
        current = store.current_config(uuid)
    assert current is not None
    config = devconfig_pb2.EdgeDevConfig()
    config.ParseFromString(current.config)
    assert config.id.version == "2" and config.config_timestamp.ToJsonString() == old
    assert current.config_hash == configs.config_hash(current.config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("configItems:\n  - key: a\n    valeu: b\n", 'no field named "valeu"'),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("configItems: [unclosed\n", "not valid YAML or JSON"),
        ('{"deviceName": 5}', "deviceName"),
    ],
)
def test_config_set_rejects_bad_files(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    uuid = register(state)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = run(capsys, "config", "set", "--state", str(state.root), uuid, str(path))
    assert code == 1
    assert message in err
    assert err.startswith("eve-controller: error: ")
    with Store.open(state.database) as store:
        assert [c.version for c in store.config_history(uuid)] == [0]


def test_config_set_for_an_unknown_device(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    path.write_text("{}")
    code, _, err = run(capsys, "config", "set", "--state", str(state.root), "nope", str(path))
    assert code == 1 and "no device nope" in err


def test_config_default_seeds_new_devices(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "default.yaml"
    path.write_text("configItems:\n  - {key: timer.config.interval, value: '5'}\n")
    assert run(capsys, "--state", str(state.root), "config", "default", str(path))[0] == 0
    uuid = register(state)
    _, out, _ = run(capsys, "--state", str(state.root), "config", "get", uuid)
    document = json.loads(out)
    assert document["configItems"] == [{"key": "timer.config.interval", "value": "5"}]
    assert document["id"] == {"uuid": uuid, "version": "0"}


def test_device_list_show_set(state: StateDir, capsys: pytest.CaptureFixture[str]) -> None:
    uuid = register(state)
    s = str(state.root)
    _, out, _ = run(capsys, "device", "list", "--state", s, "--json")
    assert [d["uuid"] for d in json.loads(out)] == [uuid]

    with Store.open(state.database) as store:
        store.add_report(uuid, ReportKind.INFO, b"", "{}")
        store.add_logs(uuid, None, "{}", ['{"content": "x"}', '{"content": "y"}'])
    _, out, _ = run(capsys, "device", "show", "--state", s, uuid, "--json")
    shown = json.loads(out)
    assert shown["serial"] == "serial-1"
    assert shown["attestation"]["state"] == "unattested"
    assert shown["attestation"]["integrity_token"] is False
    assert shown["config"]["version"] == 0
    assert shown["counts"] == {
        "info": 1,
        "metrics": 0,
        "flowlog": 0,
        "hardwarehealth": 0,
        "logs": 2,
    }
    assert shown["require_attestation"] is True and shown["allow_no_tpm"] is True

    assert run(capsys, "device", "set", "--state", s, uuid, "--require-tpm")[0] == 0
    _, out, _ = run(capsys, "device", "show", "--state", s, uuid, "--json")
    assert json.loads(out)["allow_no_tpm"] is False
    code, out, _ = run(capsys, "device", "show", "--state", s, uuid)
    assert code == 0 and "require TPM" in out

    assert run(capsys, "device", "remove", "--state", s, uuid)[0] == 0
    _, out, _ = run(capsys, "device", "list", "--state", s, "--json")
    assert json.loads(out) == []


def test_stored_messages_print_as_json_lines(
    state: StateDir, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = register(state)
    app = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    with Store.open(state.database) as store:
        for n in range(3):
            store.add_report(uuid, ReportKind.METRICS, b"", json.dumps({"n": n}))
        store.add_logs(uuid, None, "{}", ['{"content": "device"}'])
        store.add_logs(uuid, app, "{}", ['{"content": "app"}'])
    s = str(state.root)
    _, out, _ = run(capsys, "metrics", uuid, "--state", s, "--last", "2")
    assert [json.loads(line)["message"]["n"] for line in out.splitlines()] == [1, 2]
    assert all("received" in json.loads(line) for line in out.splitlines())

    _, out, _ = run(capsys, "--state", s, "logs", uuid, "--json")
    assert [json.loads(line)["entry"]["content"] for line in out.splitlines()] == ["device", "app"]
    _, out, _ = run(capsys, "--state", s, "logs", uuid, "--app", app.upper())
    assert [json.loads(line)["app"] for line in out.splitlines()] == [app]


def test_commands_refuse_a_state_without_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "device", "list", "--state", str(tmp_path / "none"))
    assert code == 1 and "eve-controller init" in err
    assert not (tmp_path / "none").exists()


def test_config_set_rejects_a_bad_timestamp_and_binary_files(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = register(state)
    good, binary = tmp_path / "good.yaml", tmp_path / "binary.yaml"
    good.write_text("{}")
    binary.write_bytes(b"\xff\xfe\x00garbage")
    s = str(state.root)
    code, _, err = run(
        capsys, "config", "set", "--state", s, uuid, str(good), "--timestamp", "soon"
    )
    assert code == 1 and "not an RFC 3339 time" in err
    code, _, err = run(capsys, "config", "set", "--state", s, uuid, str(binary))
    assert code == 1 and "not UTF-8" in err


def test_text_listings_with_and_without_rows(
    state: StateDir, capsys: pytest.CaptureFixture[str]
) -> None:
    s = str(state.root)
    for command in (("onboard", "list"), ("device", "list")):
        code, out, _ = run(capsys, *command, "--state", s)
        assert code == 0 and len(out.splitlines()) == 1  # the header only
    uuid = register(state)
    code, out, _ = run(capsys, "device", "list", "--state", s)
    assert code == 0 and uuid in out.splitlines()[1]
    code, out, _ = run(capsys, "config", "history", "--state", s, uuid)
    assert code == 0 and out.splitlines()[1].startswith("0 ")
