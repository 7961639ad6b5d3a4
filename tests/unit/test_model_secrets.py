# SPDX-License-Identifier: Apache-2.0
"""Encrypted config fields: CipherBlocks opened while the model is built (TPM and software ECDH),
failures confined to their object, secrets redacted everywhere, the software ECDH key."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.drivers.tpm import KeyRole, TpmUnavailable
from agent.drivers.tpm_fake import FakeTpm
from agent.link.attestation import NoTpmQuotes
from agent.link.devicecipher import (
    DeviceEcdh,
    config_decryptor,
    ecdh_paths,
    load_software_ecdh,
)
from agent.link.identity import IdentityError, load_or_create_device_signer
from agent.model.config import Decrypt, NodeConfig, diff_configs, from_proto
from agent.model.secret import Secret
from agent.settings import NodePaths
from agent.vault import cipher
from agent.wire import objcipher, pki
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2, edge_node_cluster_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2
from tests.unit.test_model import APP, APP2, CT, DS, NI, VOL, app_msg, base_config

USER_DATA = "I2Nsb3VkLWNvbmZpZwpwYXNzd29yZDogaHVudGVyMgo="  # "#cloud-config\npassword: hunter2"
API_KEY = "AKIA-do-not-print"
PASSWORD = "s3cr3t-do-not-print"
TOKEN = "K10-cluster-token-do-not-print"
CLUSTER = "88888888-8888-4888-8888-888888888888"
SECRETS = (USER_DATA, API_KEY, PASSWORD, TOKEN)


def _cert_pem(public: ec.EllipticCurvePublicKey, name: str) -> bytes:
    signer = ec.generate_private_key(ec.SECP256R1())
    builder = pki.certificate_builder(public, name, key_agreement=True)
    return pki.cert_pem(builder.sign(signer, hashes.SHA256()))


@dataclass
class World:
    """The controller's ECDH key and certificate, and a device's ECDH key (TPM or software)."""

    controller_key: ec.EllipticCurvePrivateKey
    controller_pem: bytes
    device_public: ec.EllipticCurvePublicKey
    ecdh: DeviceEcdh

    @property
    def decrypt(self) -> Decrypt:
        return config_decryptor(self.ecdh, (self.controller_pem,))

    def context(self, cid: str = "ctx-1") -> acipherinfo_pb2.CipherContext:
        return objcipher.make_context(
            cid, device_cert_pem=self.ecdh.cert_pem, controller_cert_pem=self.controller_pem
        )

    def seal(
        self, clear: acipherinfo_pb2.EncryptionBlock, cid: str = "ctx-1"
    ) -> acipherinfo_pb2.CipherBlock:
        return objcipher.encrypt_block(
            clear,
            context=self.context(cid),
            controller_key=self.controller_key,
            device_public_key=self.device_public,
        )


@pytest.fixture(params=["tpm", "software"])
def world(request: pytest.FixtureRequest) -> World:
    controller_key = ec.generate_private_key(ec.SECP256R1())
    controller_pem = _cert_pem(controller_key.public_key(), "controller-ecdh")
    shared: cipher.SharedPoint
    if request.param == "tpm":
        tpm = FakeTpm()
        tpm.provision()
        public = tpm.public_key(KeyRole.ECDH)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        shared = tpm.ecdh_shared_point
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        shared = cipher.software_shared_point(key)
    ecdh = DeviceEcdh(cert_pem=_cert_pem(public, "device-ecdh"), shared_point=shared)
    return World(controller_key, controller_pem, public, ecdh)


def encrypted_config(world: World) -> devconfig_pb2.EdgeDevConfig:
    """base_config with the app's user data, the datastore's credentials and a cluster token
    in CipherBlocks; the clear fields hold decoys that must not win."""
    msg = base_config()
    msg.cipherContexts.append(world.context())
    app = msg.apps[0]
    app.userData = "plain-decoy"
    app.cipherData.CopyFrom(
        world.seal(acipherinfo_pb2.EncryptionBlock(protectedUserData=USER_DATA))
    )
    ds = msg.datastores[0]
    ds.cipherData.CopyFrom(
        world.seal(acipherinfo_pb2.EncryptionBlock(dsAPIKey=API_KEY, dsPassword=PASSWORD))
    )
    msg.cluster.CopyFrom(
        edge_node_cluster_pb2.EdgeNodeCluster(
            cluster_name="edge-k",
            cluster_id=CLUSTER,
            cluster_interface="eth1",
            cluster_ip_prefix="10.244.244.2/28",
            is_worker_node=True,
            join_server_ip="10.244.244.1",
            cluster_type=edge_node_cluster_pb2.CLUSTER_TYPE_REPLICATED_STORAGE,
        )
    )
    msg.cluster.encrypted_cluster_token.CopyFrom(
        world.seal(acipherinfo_pb2.EncryptionBlock(cluster_token=TOKEN))
    )
    return msg


# ---------------------------------------------------------------- decryption


def test_encrypted_fields_are_opened(world: World) -> None:
    cfg = from_proto(encrypted_config(world), decrypt=world.decrypt)
    assert cfg.errors == ()
    app = cfg.apps[APP]
    assert app.has_cipher and app.user_data.reveal() == USER_DATA  # replaces userData
    ds = cfg.datastores[DS]
    assert ds.has_cipher
    assert (ds.api_key.reveal(), ds.password.reveal()) == (API_KEY, PASSWORD)
    cluster = cfg.cluster
    assert cluster is not None
    assert (cluster.id, cluster.name, cluster.interface) == (CLUSTER, "edge-k", "eth1")
    assert (cluster.ip_prefix, cluster.join_server_ip) == ("10.244.244.2/28", "10.244.244.1")
    assert cluster.is_worker
    assert cluster.cluster_type == edge_node_cluster_pb2.CLUSTER_TYPE_REPLICATED_STORAGE
    assert cluster.token.reveal() == TOKEN
    # Everything that depends on the datastore is still there.
    assert list(cfg.content_trees) == [CT] and list(cfg.volumes) == [VOL]


def test_clear_text_secrets_are_secrets_too() -> None:
    msg = base_config()
    msg.datastores[0].apiKey = API_KEY
    msg.datastores[0].password = PASSWORD
    cfg = from_proto(msg)
    assert cfg.errors == ()
    assert cfg.apps[APP].user_data == Secret("I2Nsb3VkLWNvbmZpZw==")
    assert not cfg.apps[APP].has_cipher
    assert cfg.datastores[DS].api_key.reveal() == API_KEY
    assert cfg.datastores[DS].password.reveal() == PASSWORD
    assert cfg.cluster is None


def test_a_bad_block_is_an_error_on_its_object_only(world: World) -> None:
    msg = encrypted_config(world)
    second = app_msg(APP2, "second")
    second.cipherData.CopyFrom(
        world.seal(acipherinfo_pb2.EncryptionBlock(protectedUserData="other"))
    )
    tampered = bytearray(second.cipherData.cipherData)
    tampered[0] ^= 0x01
    second.cipherData.cipherData = bytes(tampered)
    msg.apps.append(second)
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert list(cfg.apps) == [APP]
    (err,) = cfg.errors
    assert (err.kind, err.id, err.name) == ("app", APP2, "second")
    assert "cannot decrypt the cloud-init user data" in err.message
    assert "clearTextSha256" in err.message
    # The good objects kept their secrets.
    assert cfg.apps[APP].user_data.reveal() == USER_DATA
    assert cfg.cluster is not None and cfg.cluster.token.reveal() == TOKEN


def test_a_datastore_that_does_not_decrypt_takes_its_dependents_along(world: World) -> None:
    msg = encrypted_config(world)
    msg.datastores[0].cipherData.cipherContextId = "unknown-context"
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert cfg.datastores == {} and cfg.content_trees == {} and cfg.volumes == {}
    assert cfg.apps == {}  # its root volume is gone
    assert [e.kind for e in cfg.errors] == ["datastore", "contenttree", "volume", "app"]
    assert "no such cipher context" in cfg.errors[0].message
    assert list(cfg.network_instances) == [NI]
    assert cfg.cluster is not None  # unrelated objects still apply


def test_a_cluster_token_that_does_not_decrypt(world: World) -> None:
    msg = encrypted_config(world)
    other = World(
        world.controller_key,
        world.controller_pem,
        ec.generate_private_key(ec.SECP256R1()).public_key(),  # encrypted for another device
        world.ecdh,
    )
    msg.cluster.encrypted_cluster_token.CopyFrom(
        other.seal(acipherinfo_pb2.EncryptionBlock(cluster_token=TOKEN))
    )
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert cfg.cluster is None
    (err,) = cfg.errors
    assert (err.kind, err.id) == ("cluster", CLUSTER)
    assert "cannot decrypt the cluster token" in err.message


def test_without_a_key_encrypted_objects_are_left_out(world: World) -> None:
    cfg = from_proto(encrypted_config(world))
    assert cfg.datastores == {} and cfg.cluster is None
    messages = {e.kind: e.message for e in cfg.errors}
    assert messages["datastore"] == (
        "the datastore credentials is encrypted and this node has no key to decrypt it"
    )
    assert "no key" in messages["cluster"]


def test_a_tpm_failure_is_an_object_error(world: World) -> None:
    def broken(peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        raise TpmUnavailable("swtpm went away")

    decrypt = config_decryptor(DeviceEcdh(world.ecdh.cert_pem, broken), (world.controller_pem,))
    cfg = from_proto(encrypted_config(world), decrypt=decrypt)
    assert cfg.apps == {} and cfg.datastores == {} and cfg.cluster is None
    failed = {e.kind: e.message for e in cfg.errors if "ECDH" in e.message}
    assert set(failed) == {"datastore", "app", "cluster"}
    assert all("ECDH failed: swtpm went away" in m for m in failed.values())


def test_invalid_cluster_fields(world: World) -> None:
    msg = encrypted_config(world)
    msg.cluster.cluster_ip_prefix = "10.244.244.300/28"
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert cfg.cluster is None
    assert "cluster_ip_prefix" in cfg.errors[0].message
    msg.cluster.cluster_ip_prefix = ""
    msg.cluster.cluster_id = "c-1"
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert cfg.cluster is None and cfg.errors[0].kind == "cluster"


def test_oversized_decrypted_user_data(world: World) -> None:
    msg = encrypted_config(world)
    msg.apps[0].cipherData.CopyFrom(
        world.seal(acipherinfo_pb2.EncryptionBlock(protectedUserData="x" * (256 * 1024 + 1)))
    )
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert APP not in cfg.apps
    assert "protectedUserData larger" in cfg.errors[0].message


# ---------------------------------------------------------------- redaction


def _shown(cfg: NodeConfig) -> str:
    return "\n".join(
        [
            repr(cfg),
            str(cfg),
            f"{cfg}",
            json.dumps({"apps": list(cfg.apps.values()), "cluster": cfg.cluster}, default=repr),
            *(repr(v) for v in cfg.apps.values()),
            *(repr(v) for v in cfg.datastores.values()),
            repr(cfg.cluster),
            *(e.message for e in cfg.errors),
        ]
    )


def test_secrets_never_print(world: World) -> None:
    cfg = from_proto(encrypted_config(world), decrypt=world.decrypt)
    shown = _shown(cfg)
    assert "Secret(<redacted>)" in shown
    for secret in SECRETS:
        assert secret not in shown
    app = cfg.apps[APP]
    assert f"{app.user_data}" == str(app.user_data) == "Secret(<redacted>)"
    assert f"{app.user_data:>20}".strip() == "Secret(<redacted>)"
    with pytest.raises(TypeError):
        json.dumps(app.user_data)


def test_error_messages_carry_no_secret(world: World) -> None:
    msg = encrypted_config(world)
    msg.apps[0].cipherData.clearTextSha256 = b"\x00" * 32  # wrong digest: decrypts, then fails
    msg.datastores[0].cipherData.initialValue = b"short"
    cfg = from_proto(msg, decrypt=world.decrypt)
    assert cfg.errors
    for secret in SECRETS:
        assert secret not in _shown(cfg)


def test_secret_value_semantics() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert hash(Secret("a")) == hash(Secret("a"))
    assert not Secret() and Secret("x") and len(Secret("abc")) == 3
    assert repr(Secret()) == "Secret(<empty>)"


def test_a_changed_secret_is_a_changed_object(world: World) -> None:
    old = from_proto(encrypted_config(world), decrypt=world.decrypt)
    msg = encrypted_config(world)
    msg.apps[0].cipherData.CopyFrom(
        world.seal(acipherinfo_pb2.EncryptionBlock(protectedUserData="new"))
    )
    new = from_proto(msg, decrypt=world.decrypt)
    assert diff_configs(old, new)["app"].changed == (APP,)
    # Re-encrypting the same clear text (a new IV) is no change at all.
    again = from_proto(encrypted_config(world), decrypt=world.decrypt)
    assert diff_configs(old, again)["app"].empty


# ---------------------------------------------------------------- the software ECDH key


def test_software_ecdh_key_and_certificate(tmp_path: Path) -> None:
    paths = NodePaths.from_root(tmp_path)
    device = load_or_create_device_signer(paths)
    ecdh = load_software_ecdh(paths, device)
    key_path, cert_path = ecdh_paths(paths)
    assert key_path == paths.persist / "certs" / "ecdh.key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert cert_path.read_bytes() == ecdh.cert_pem
    cert = pki.load_cert(ecdh.cert_pem)
    cert.verify_directly_issued_by(device.certificate)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement

    # Idempotent; a lost certificate is issued again for the same key.
    assert load_software_ecdh(paths, device).cert_pem == ecdh.cert_pem
    cert_path.unlink()
    again = load_software_ecdh(paths, device)
    assert pki.load_cert(again.cert_pem).public_key() == cert.public_key()

    # The key works for the controller's blocks, and travels with ATTEST_REQ_CERT.
    controller_key = ec.generate_private_key(ec.SECP256R1())
    controller_pem = _cert_pem(controller_key.public_key(), "controller-ecdh")
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    world = World(controller_key, controller_pem, public, again)
    cfg = from_proto(encrypted_config(world), decrypt=world.decrypt)
    assert cfg.errors == () and cfg.cluster is not None
    (zcert,) = NoTpmQuotes([again.zcert()]).attestation_certs()
    assert zcert.type == certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE
    assert zcert.cert == again.cert_pem and len(zcert.certHash) == 16
    assert NoTpmQuotes().attestation_certs() == []


def test_an_unreadable_software_ecdh_key_is_refused(tmp_path: Path) -> None:
    paths = NodePaths.from_root(tmp_path)
    device = load_or_create_device_signer(paths)
    key_path, _ = ecdh_paths(paths)
    key_path.write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="unreadable"):
        load_software_ecdh(paths, device)
