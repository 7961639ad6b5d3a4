# SPDX-License-Identifier: Apache-2.0
"""Object-level encryption (CipherBlock): round trips and every rejection, TPM and software."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.drivers.tpm import KeyRole, TpmUnavailable
from agent.drivers.tpm_fake import FakeTpm
from agent.vault import cipher
from agent.vault.cipher import CipherError, DeviceCipherKeys
from agent.wire import pki
from agent.wire.pb.evecommon import acipherinfo_pb2


def _cert_pem(public_key: ec.EllipticCurvePublicKey, name: str) -> bytes:
    signer = ec.generate_private_key(ec.SECP256R1())
    cert = pki.certificate_builder(public_key, name, key_agreement=True).sign(
        signer, hashes.SHA256()
    )
    return pki.cert_pem(cert)


@dataclass
class World:
    """A controller ECDH key and certificate, and a device (TPM or software) with its cert."""

    controller_key: ec.EllipticCurvePrivateKey
    controller_pem: bytes
    device_public: ec.EllipticCurvePublicKey
    keys: DeviceCipherKeys

    def context(
        self, cid: str = "ctx-1", scheme: int = cipher.HASH_32
    ) -> acipherinfo_pb2.CipherContext:
        return cipher.make_context(
            cid,
            device_cert_pem=self.keys.device_cert_pem,
            controller_cert_pem=self.controller_pem,
            hash_scheme=scheme,
        )

    def encrypt(
        self, clear: bytes, context: acipherinfo_pb2.CipherContext
    ) -> acipherinfo_pb2.CipherBlock:
        return cipher.encrypt(
            clear,
            context=context,
            controller_key=self.controller_key,
            device_public_key=self.device_public,
        )


def _controller() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _cert_pem(key.public_key(), "controller-ecdh")


@pytest.fixture(params=["tpm", "software"])
def world(request: pytest.FixtureRequest) -> World:
    controller_key, controller_pem = _controller()
    shared: cipher.SharedPoint
    if request.param == "tpm":
        tpm = FakeTpm()
        tpm.provision()
        public = tpm.public_key(KeyRole.ECDH)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        shared = tpm.ecdh_shared_point
    else:
        device_key = ec.generate_private_key(ec.SECP256R1())
        public = device_key.public_key()
        shared = cipher.software_shared_point(device_key)
    keys = DeviceCipherKeys(
        device_cert_pem=_cert_pem(public, "device-ecdh"),
        controller_certs=(controller_pem,),
        shared_point=shared,
    )
    return World(controller_key, controller_pem, public, keys)


def _secret() -> acipherinfo_pb2.EncryptionBlock:
    return acipherinfo_pb2.EncryptionBlock(
        dsAPIKey="AKIA-example", dsPassword="s3cr3t", protectedUserData="I2Nsb3VkLWNvbmZpZwo="
    )


def test_roundtrip(world: World) -> None:
    context = world.context()
    block = cipher.encrypt_block(
        _secret(),
        context=context,
        controller_key=world.controller_key,
        device_public_key=world.device_public,
    )
    assert b"s3cr3t" not in block.cipherData
    assert cipher.decrypt_block(block, [context], world.keys) == _secret()


def test_roundtrip_16_byte_hashes_and_context_mapping(world: World) -> None:
    context = world.context("short", cipher.HASH_16)
    assert len(context.deviceCertHash) == len(context.controllerCertHash) == 16
    block = world.encrypt(b"hello", context)
    assert cipher.decrypt(block, {"short": context}, world.keys) == b"hello"


def test_previous_controller_certificate_still_decrypts(world: World) -> None:
    context = world.context()
    block = world.encrypt(b"old", context)
    _, newer = _controller()
    rotated = replace(world.keys, controller_certs=(newer, world.controller_pem))
    assert cipher.decrypt(block, [context], rotated) == b"old"


def test_software_ecdh_point_is_d_times_q() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    g = ec.derive_private_key(1, ec.SECP256R1()).public_key()  # the generator G
    own = key.public_key().public_numbers()
    assert cipher.ecdh_point(key, g) == (own.x, own.y)
    other = ec.generate_private_key(ec.SECP256R1())
    assert cipher.ecdh_point(key, other.public_key()) == cipher.ecdh_point(other, key.public_key())


def test_tpm_and_software_sides_agree() -> None:
    tpm = FakeTpm()
    tpm.provision()
    peer = ec.generate_private_key(ec.SECP256R1())
    device = tpm.public_key(KeyRole.ECDH)
    assert isinstance(device, ec.EllipticCurvePublicKey)
    assert tpm.ecdh_shared_point(peer.public_key()) == cipher.ecdh_point(peer, device)


def _expect(match: str, block: acipherinfo_pb2.CipherBlock, contexts: object, keys: object) -> None:
    with pytest.raises(CipherError, match=match) as info:
        cipher.decrypt_block(block, contexts, keys)  # type: ignore[arg-type]
    assert info.value.context_id == block.cipherContextId
    assert block.cipherContextId in str(info.value) or not block.cipherContextId


def test_unknown_context(world: World) -> None:
    context = world.context()
    block = world.encrypt(b"x", context)
    _expect("no such cipher context", block, [world.context("other")], world.keys)
    block.cipherContextId = ""
    _expect("names no cipher context", block, [context], world.keys)


def test_wrong_device_certificate_hash(world: World) -> None:
    context = world.context()
    block = world.encrypt(b"x", context)
    context.deviceCertHash = hashlib.sha256(b"another device").digest()
    _expect("deviceCertHash", block, [context], world.keys)


def test_unknown_controller_certificate(world: World) -> None:
    context = world.context()
    block = world.encrypt(b"x", context)
    _, other_pem = _controller()
    _expect(
        "controllerCertHash", block, [context], replace(world.keys, controller_certs=(other_pem,))
    )


def test_wrong_controller_key_fails_the_digest(world: World) -> None:
    """A block made with another controller key under a context naming our certs."""
    context = world.context()
    impostor, _ = _controller()
    block = cipher.encrypt(
        b"x" * 40, context=context, controller_key=impostor, device_public_key=world.device_public
    )
    _expect("clearTextSha256", block, [context], world.keys)


def test_tampered_data_and_digest(world: World) -> None:
    context = world.context()
    block = world.encrypt(_secret().SerializeToString(), context)
    tampered = acipherinfo_pb2.CipherBlock()
    tampered.CopyFrom(block)
    tampered.cipherData = bytes([block.cipherData[0] ^ 0x40]) + block.cipherData[1:]
    _expect("clearTextSha256", tampered, [context], world.keys)
    tampered.CopyFrom(block)
    tampered.clearTextSha256 = hashlib.sha256(b"other").digest()
    _expect("clearTextSha256", tampered, [context], world.keys)
    tampered.clearTextSha256 = b""
    _expect("clearTextSha256", tampered, [context], world.keys)
    tampered.CopyFrom(block)
    tampered.initialValue = block.initialValue[:8]
    _expect("initial value", tampered, [context], world.keys)
    tampered.CopyFrom(block)
    tampered.cipherData = b""
    _expect("no data", tampered, [context], world.keys)


def test_unsupported_schemes(world: World) -> None:
    block = world.encrypt(b"x", world.context())
    context = world.context()
    context.keyExchangeScheme = acipherinfo_pb2.KEA_NONE
    _expect("not ECDH", block, [context], world.keys)
    context = world.context()
    context.encryptionScheme = acipherinfo_pb2.SA_NONE
    _expect("not AES-256-CFB", block, [context], world.keys)
    context = world.context()
    context.hashScheme = 0  # type: ignore[assignment]
    _expect("hash scheme", block, [context], world.keys)


def test_clear_text_that_is_not_an_encryption_block(world: World) -> None:
    context = world.context()
    block = world.encrypt(b"\xff\xff\xff\xff not protobuf", context)
    _expect("not an EncryptionBlock", block, [context], world.keys)


def test_controller_certificate_with_an_rsa_key(world: World) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = pki.cert_pem(pki.make_certificate(rsa_key, "rsa-controller"))
    context = cipher.make_context(
        "rsa", device_cert_pem=world.keys.device_cert_pem, controller_cert_pem=rsa_pem
    )
    block = world.encrypt(b"x", context)  # encrypted with the EC key, context names the RSA cert
    _expect("P-256", block, [context], replace(world.keys, controller_certs=(rsa_pem,)))


def test_tpm_failure_is_a_cipher_error(world: World) -> None:
    def broken(peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        raise TpmUnavailable("swtpm went away")

    context = world.context()
    block = world.encrypt(b"x", context)
    _expect(
        "ECDH failed: swtpm went away", block, [context], replace(world.keys, shared_point=broken)
    )


def test_encrypt_refuses_a_bad_iv(world: World) -> None:
    with pytest.raises(ValueError):
        cipher.encrypt(
            b"x",
            context=world.context(),
            controller_key=world.controller_key,
            device_public_key=world.device_public,
            iv=b"short",
        )
