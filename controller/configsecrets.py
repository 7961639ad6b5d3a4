"""Encrypting the clear secrets of a config for one device (``config set --encrypt-secrets``).

EVE's object-level encryption (``eve:docs/OBJECT-LEVEL-ENCRYPTION.md``): the controller adds a
``CipherContext`` naming its ECDH certificate (``certs/ecdh.cert.pem``, served by ``/certs``)
and the device's ECDH certificate (sent with ``ATTEST_REQ_CERT``), both by SHA-256 of their PEM
bytes, and replaces each clear secret by a ``CipherBlock``: AES-256-CFB with the key
SHA-256(x || y) of the ECDH point between the two keys, over a marshalled ``EncryptionBlock``.
Only that device can decrypt it (with its TPM's ECDH key, or its software ECDH key).

What moves (and what the device puts back):

* ``apps[].userData`` -> ``apps[].cipherData`` (``EncryptionBlock.protectedUserData``);
* ``datastores[].apiKey`` / ``password`` -> ``datastores[].cipherData`` (``dsAPIKey`` /
  ``dsPassword``);
* the side field ``cluster.clusterToken`` -> ``cluster.encrypted_cluster_token``
  (``cluster_token``).

The crypto is :mod:`agent.wire.objcipher`, the same code the agent decrypts with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from agent.wire import objcipher, pki
from agent.wire.pb.certs import certs_pb2
from agent.wire.pb.config import devconfig_pb2
from agent.wire.pb.evecommon import acipherinfo_pb2
from controller.records import DeviceCert


class SecretsError(ValueError):
    """The secrets cannot be encrypted for this device; the message says why."""


@dataclass(frozen=True)
class EncryptedConfig:
    """The config with its secrets encrypted, and what was moved (for the operator)."""

    config: devconfig_pb2.EdgeDevConfig
    moved: tuple[str, ...]
    context_id: str


def device_ecdh_cert(certs: Sequence[DeviceCert]) -> bytes | None:
    """The PEM of the device's ECDH certificate among those it sent, or None."""
    return next(
        (c.pem for c in certs if c.cert_type == certs_pb2.CERT_TYPE_DEVICE_ECDH_EXCHANGE), None
    )


def _device_public_key(ecdh_pem: bytes, device_cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        cert = pki.load_cert(ecdh_pem)
    except ValueError as exc:
        raise SecretsError(f"the device's ECDH certificate is unreadable: {exc}") from exc
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        raise SecretsError("the device's ECDH certificate does not hold a P-256 key")
    try:
        cert.verify_directly_issued_by(device_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise SecretsError(
            "the device's ECDH certificate is not issued by its device certificate"
        ) from exc
    return public


def context_id_for(device_ecdh_pem: bytes, controller_ecdh_pem: bytes) -> str:
    """A context id fixed by the two certificates, so re-encrypting reuses it."""
    digest = hashlib.sha256(
        hashlib.sha256(device_ecdh_pem).digest() + hashlib.sha256(controller_ecdh_pem).digest()
    )
    return f"ecdh-{digest.hexdigest()[:16]}"


def encrypt_secrets(
    config: devconfig_pb2.EdgeDevConfig,
    *,
    cluster_token: str | None,
    device_ecdh_pem: bytes,
    device_cert: x509.Certificate,
    controller_ecdh_pem: bytes,
    controller_ecdh_key: ec.EllipticCurvePrivateKey,
) -> EncryptedConfig:
    """A copy of ``config`` with every clear secret moved into a CipherBlock for the device.

    Raises SecretsError when the device's ECDH certificate is unusable, or when an object has
    both a clear secret and a CipherBlock (which one would the device use?).
    """
    device_public = _device_public_key(device_ecdh_pem, device_cert)
    context_id = context_id_for(device_ecdh_pem, controller_ecdh_pem)
    context = objcipher.make_context(
        context_id, device_cert_pem=device_ecdh_pem, controller_cert_pem=controller_ecdh_pem
    )

    def seal(clear: acipherinfo_pb2.EncryptionBlock) -> acipherinfo_pb2.CipherBlock:
        return objcipher.encrypt_block(
            clear,
            context=context,
            controller_key=controller_ecdh_key,
            device_public_key=device_public,
        )

    out = devconfig_pb2.EdgeDevConfig()
    out.CopyFrom(config)
    moved: list[str] = []
    for app in out.apps:
        if not app.userData:
            continue
        label = f"app {app.displayname or app.uuidandversion.uuid}"
        if app.HasField("cipherData"):
            raise SecretsError(f"{label} has both userData and cipherData")
        app.cipherData.CopyFrom(
            seal(acipherinfo_pb2.EncryptionBlock(protectedUserData=app.userData))
        )
        app.ClearField("userData")
        moved.append(f"{label} userData")
    for ds in out.datastores:
        if not (ds.apiKey or ds.password):
            continue
        label = f"datastore {ds.fqdn or ds.id}"
        if ds.HasField("cipherData"):
            raise SecretsError(f"{label} has both clear credentials and cipherData")
        ds.cipherData.CopyFrom(
            seal(acipherinfo_pb2.EncryptionBlock(dsAPIKey=ds.apiKey, dsPassword=ds.password))
        )
        ds.ClearField("apiKey")
        ds.ClearField("password")
        moved.append(f"{label} credentials")
    if cluster_token is not None:
        if out.cluster.HasField("encrypted_cluster_token"):
            raise SecretsError("cluster has both clusterToken and encrypted_cluster_token")
        out.cluster.encrypted_cluster_token.CopyFrom(
            seal(acipherinfo_pb2.EncryptionBlock(cluster_token=cluster_token))
        )
        moved.append("cluster token")
    if moved:
        kept = [c for c in out.cipherContexts if c.contextId != context_id]
        del out.cipherContexts[:]
        out.cipherContexts.extend([*kept, context])
    return EncryptedConfig(config=out, moved=tuple(moved), context_id=context_id)


def clear_secrets(config: devconfig_pb2.EdgeDevConfig) -> list[str]:
    """Where ``config`` carries secrets in clear (for a hint to the operator)."""
    found = [
        f"app {a.displayname or a.uuidandversion.uuid} userData" for a in config.apps if a.userData
    ]
    found += [
        f"datastore {d.fqdn or d.id} credentials"
        for d in config.datastores
        if d.apiKey or d.password
    ]
    return found


__all__ = [
    "EncryptedConfig",
    "SecretsError",
    "clear_secrets",
    "context_id_for",
    "device_ecdh_cert",
    "encrypt_secrets",
]
