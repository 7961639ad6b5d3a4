# SPDX-License-Identifier: Apache-2.0
"""``eve-controller config set --encrypt-secrets``: clear secrets leave the stored config, and
the device (and only it) gets them back with its ECDH key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from agent.link.devicecipher import DeviceEcdh, config_decryptor, load_software_ecdh
from agent.link.identity import load_or_create_device_signer
from agent.model.config import from_proto
from agent.settings import NodePaths
from agent.wire import envelope, pki
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from controller import configs
from controller.cli import main
from controller.records import DeviceCert
from controller.state import StateDir
from controller.store import Store

APP = "66666666-6666-4666-8666-666666666666"
DS = "22222222-2222-4222-8222-222222222222"
CLUSTER = "88888888-8888-4888-8888-888888888888"
USER_DATA = "I2Nsb3VkLWNvbmZpZwpwYXNzd29yZDogaHVudGVyMgo="
API_KEY = "AKIA-controller-test"
PASSWORD = "ds-password-controller-test"
TOKEN = "cluster-token-controller-test"

CONFIG = {
    "apps": [
        {
            "uuidandversion": {"uuid": APP, "version": "1"},
            "displayname": "web",
            "userData": USER_DATA,
        }
    ],
    "datastores": [
        {
            "id": DS,
            "dType": "DsHttps",
            "fqdn": "https://images.example",
            "apiKey": API_KEY,
            "password": PASSWORD,
        }
    ],
    "cluster": {"clusterId": CLUSTER, "clusterName": "edge-k", "clusterToken": TOKEN},
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StateDir:
    state = StateDir(tmp_path / "state")
    assert run(capsys, "init", "--state", str(state.root))[0] == 0
    return state


def device_node(state: StateDir, tmp_path: Path) -> tuple[str, DeviceEcdh]:
    """A registered device with a software identity (as an agent with --no-tpm makes it)."""
    paths = NodePaths.from_root(tmp_path / "node")
    signer = load_or_create_device_signer(paths)
    ecdh = load_software_ecdh(paths, signer)
    with Store.open(state.database) as store:
        _, device = store.register_device(
            onboard_sha256="ab" * 32,
            serial="serial-1",
            cert_pem=signer.certificate.public_bytes(Encoding.PEM),
            cert_sha256=envelope.device_cert_hash(signer.certificate),
            default_config=configs.default_config,
        )
    return device.uuid, ecdh


def send_certs(state: StateDir, uuid: str, *pems: bytes) -> None:
    """What the attest endpoint stores for ATTEST_REQ_CERT."""
    with Store.open(state.database) as store:
        store.set_device_certs(
            uuid,
            [
                DeviceCert(
                    cert_type=certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE,
                    hash_algo=1,
                    cert_hash=b"",
                    pem=pem,
                    is_mutable=True,
                    is_tpm=False,
                    zcert=b"",
                )
                for pem in pems
            ],
        )


def write(tmp_path: Path, document: object, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return str(path)


def versions(state: StateDir, uuid: str) -> list[int]:
    with Store.open(state.database) as store:
        return [c.version for c in store.config_history(uuid)]


def test_encrypt_secrets_end_to_end(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, ecdh = device_node(state, tmp_path)
    send_certs(state, uuid, ecdh.cert_pem)
    s = str(state.root)
    code, out, err = run(
        capsys, "config", "set", "--state", s, uuid, write(tmp_path, CONFIG), "--encrypt-secrets"
    )
    assert code == 0, err
    assert "app web userData" in out and "cluster token" in out and "config version 1" in out
    assert "datastore https://images.example credentials" in out

    code, shown, _ = run(capsys, "config", "get", "--state", s, uuid)
    assert code == 0
    for secret in (USER_DATA, API_KEY, PASSWORD, TOKEN):
        assert secret not in shown
    document = json.loads(shown)
    (context,) = document["cipherContexts"]
    assert context["keyExchangeScheme"] == "KEA_ECDH"
    assert context["encryptionScheme"] == "SA_AES_256_CFB"
    assert "userData" not in document["apps"][0] and "cipherData" in document["apps"][0]
    assert "apiKey" not in document["datastores"][0]
    assert "encryptedClusterToken" in document["cluster"]

    # The device opens every block with its ECDH key and the controller's /certs ECDH cert.
    with Store.open(state.database) as store:
        current = store.current_config(uuid)
    assert current is not None
    msg = devconfig_pb2.EdgeDevConfig()
    msg.ParseFromString(current.config)
    for secret in (USER_DATA, API_KEY, PASSWORD, TOKEN):
        assert secret.encode() not in current.config
    decrypt = config_decryptor(ecdh, (state.ecdh_cert.read_bytes(),))
    cfg = from_proto(msg, decrypt=decrypt)
    assert cfg.errors == ()
    assert cfg.apps[APP].user_data.reveal() == USER_DATA
    assert cfg.datastores[DS].api_key.reveal() == API_KEY
    assert cfg.datastores[DS].password.reveal() == PASSWORD
    assert cfg.cluster is not None and cfg.cluster.token.reveal() == TOKEN

    # Another device's key opens nothing.
    _, stranger = device_node(state, tmp_path / "other")
    cfg = from_proto(msg, decrypt=config_decryptor(stranger, (state.ecdh_cert.read_bytes(),)))
    assert cfg.apps == {} and cfg.datastores == {} and cfg.cluster is None
    assert all("deviceCertHash" in e.message for e in cfg.errors if e.kind != "contenttree")

    # Setting the same file again reuses the context (one context, fixed by the two certs).
    code, _, err = run(
        capsys, "config", "set", "--state", s, uuid, write(tmp_path, CONFIG), "--encrypt-secrets"
    )
    assert code == 0, err
    _, shown, _ = run(capsys, "config", "get", "--state", s, uuid)
    assert [c["contextId"] for c in json.loads(shown)["cipherContexts"]] == [context["contextId"]]


def test_refused_before_the_device_sent_its_ecdh_certificate(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, _ = device_node(state, tmp_path)
    code, _, err = run(
        capsys,
        "config",
        "set",
        "--state",
        str(state.root),
        uuid,
        write(tmp_path, CONFIG),
        "--encrypt-secrets",
    )
    assert code == 1
    assert "has not sent an ECDH certificate (ATTEST_REQ_CERT) yet" in err
    assert versions(state, uuid) == [0]


def test_an_ecdh_certificate_not_issued_by_the_device_is_refused(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, _ = device_node(state, tmp_path)
    foreign = pki.cert_pem(pki.make_certificate(pki.new_ec_key(), "someone else's ECDH"))
    send_certs(state, uuid, foreign)
    code, _, err = run(
        capsys,
        "config",
        "set",
        "--state",
        str(state.root),
        uuid,
        write(tmp_path, CONFIG),
        "--encrypt-secrets",
    )
    assert code == 1 and "not issued by its device certificate" in err
    assert versions(state, uuid) == [0]


def test_cluster_token_side_field_needs_encryption(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, ecdh = device_node(state, tmp_path)
    send_certs(state, uuid, ecdh.cert_pem)
    s = str(state.root)
    path = write(tmp_path, CONFIG)
    code, _, err = run(capsys, "config", "set", "--state", s, uuid, path)
    assert code == 1 and "cluster.clusterToken can only be sent encrypted" in err
    code, _, err = run(capsys, "config", "default", "--state", s, path)
    assert code == 1 and "--encrypt-secrets" in err
    assert versions(state, uuid) == [0]

    both = {"cluster": {"clusterId": CLUSTER, "clusterToken": "a", "cluster_token": "b"}}
    code, _, err = run(
        capsys, "config", "set", "--state", s, uuid, write(tmp_path, both), "--encrypt-secrets"
    )
    assert code == 1 and "both clusterToken and cluster_token" in err
    empty = {"cluster": {"clusterId": CLUSTER, "clusterToken": ""}}
    code, _, err = run(
        capsys, "config", "set", "--state", s, uuid, write(tmp_path, empty), "--encrypt-secrets"
    )
    assert code == 1 and "must be a non-empty string" in err


def test_clear_secrets_without_the_flag_are_stored_with_a_note(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, _ = device_node(state, tmp_path)
    document = {k: v for k, v in CONFIG.items() if k != "cluster"}
    code, _, err = run(
        capsys, "config", "set", "--state", str(state.root), uuid, write(tmp_path, document)
    )
    assert code == 0
    assert "secrets stored and sent in clear (app web userData" in err
    assert "--encrypt-secrets" in err
    _, shown, _ = run(capsys, "config", "get", "--state", str(state.root), uuid)
    assert USER_DATA in shown


def test_clear_and_encrypted_secret_on_one_object_is_ambiguous(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, ecdh = device_node(state, tmp_path)
    send_certs(state, uuid, ecdh.cert_pem)
    document = {
        "apps": [
            {
                "uuidandversion": {"uuid": APP, "version": "1"},
                "displayname": "web",
                "userData": USER_DATA,
                "cipherData": {"cipherContextId": "x"},
            }
        ]
    }
    code, _, err = run(
        capsys,
        "config",
        "set",
        "--state",
        str(state.root),
        uuid,
        write(tmp_path, document),
        "--encrypt-secrets",
    )
    assert code == 1 and "app web has both userData and cipherData" in err
    assert versions(state, uuid) == [0]


def test_nothing_to_encrypt(
    state: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid, ecdh = device_node(state, tmp_path)
    send_certs(state, uuid, ecdh.cert_pem)
    code, out, err = run(
        capsys,
        "config",
        "set",
        "--state",
        str(state.root),
        uuid,
        write(tmp_path, {"configItems": [{"key": "a", "value": "b"}]}),
        "--encrypt-secrets",
    )
    assert code == 0 and "no clear-text secrets to encrypt" in err
    assert "config version 1" in out
    _, shown, _ = run(capsys, "config", "get", "--state", str(state.root), uuid)
    assert "cipherContexts" not in json.loads(shown)
