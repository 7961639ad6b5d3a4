"""agent.link.controllercerts: /certs fetched from the real controller, verified, checkpointed."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from agent.link.checkpoint import CheckpointStore
from agent.link.controllercerts import (
    ECDH,
    INTERMEDIATE,
    SIGNING,
    ControllerCertError,
    ControllerCertStore,
    parse_controller_certs,
)
from agent.link.transport import TransportError
from agent.wire import envelope, pki
from agent.wire.pb.certs import certs_pb2
from controller.api.onboarding import controller_certs
from tests.unit.link_harness import (
    ControllerPki,
    FakeController,
    fake_controller,
    live_controller,
    make_pki,
    proto,
)


@pytest.fixture
def ctl_pki(tmp_path: Path) -> ControllerPki:
    return make_pki(tmp_path / "controller")


@pytest.fixture
async def fake(ctl_pki: ControllerPki) -> AsyncIterator[FakeController]:
    async with fake_controller(ctl_pki) as f:
        yield f


def zcerts(*certs: tuple[int, bytes]) -> bytes:
    msg = certs_pb2.ZControllerCert()
    for cert_type, pem in certs:
        z = msg.certs.add()
        z.type = cert_type  # type: ignore[assignment]
        z.cert = pem
        z.hashAlgo = envelope.HASH_SHA256_16
        z.certHash = envelope.pem_cert_hash(pem, envelope.HASH_SHA256_16)
    return msg.SerializeToString()


def rogue_pem(name: str = "rogue signing") -> bytes:
    return pki.cert_pem(pki.make_certificate(pki.new_ec_key(), name))


def roots(ctl: ControllerPki) -> list[x509.Certificate]:
    return pki.load_certs(ctl.root_pem)


def store_in(directory: Path, ctl: ControllerPki) -> ControllerCertStore:
    return ControllerCertStore(CheckpointStore(directory, "controllercerts"), ctl.root_pem)


# ---------------------------------------------------------------- against the real controller


async def test_refresh_verifies_and_checkpoints(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        store = store_in(tmp_path / "cp", ctl.pki)
        client = ctl.client()
        try:
            certs = await store.refresh(client)
        finally:
            await client.close()
    identity = ctl.pki.identity
    assert store.current is certs
    assert certs.signing_pem == identity.signing_pem
    assert certs.ecdh_pem == identity.ecdh_pem
    assert certs.signing == identity.signer.certificate
    assert certs.signing_hash == hashlib.sha256(identity.signing_pem).hexdigest()
    # The checkpoint is the ZControllerCert exactly, seeded into .bak on the first save.
    assert (tmp_path / "cp" / "controllercerts").read_bytes() == certs.raw
    assert (tmp_path / "cp" / "controllercerts.bak").read_bytes() == certs.raw
    # And the certificates verify the controller's signed responses.
    sealed = identity.seal(b"payload")
    assert envelope.open_signed(sealed, certs.trusted_signers()).payload == b"payload"
    assert ctl.count("certs", 200) == 1


async def test_load_checkpoint_after_restart(tmp_path: Path) -> None:
    async with live_controller(tmp_path) as ctl:
        first = store_in(tmp_path / "cp", ctl.pki)
        client = ctl.client()
        try:
            fetched = await first.refresh(client)
        finally:
            await client.close()
    # A "restarted" node: a new store over the same directory, controller gone.
    again = store_in(tmp_path / "cp", ctl.pki)
    assert again.current is None
    loaded = again.load_checkpoint()
    assert loaded is not None
    assert again.current is loaded
    assert loaded.raw == fetched.raw
    assert loaded.signing_pem == ctl.pki.identity.signing_pem
    sealed = ctl.pki.identity.seal(b"config")
    assert envelope.open_signed(sealed, loaded.trusted_signers()).payload == b"config"


def test_load_checkpoint_without_files(tmp_path: Path, ctl_pki: ControllerPki) -> None:
    store = store_in(tmp_path / "cp", ctl_pki)
    assert store.load_checkpoint() is None
    assert store.current is None


def test_corrupt_primary_falls_back_to_bak(
    tmp_path: Path, ctl_pki: ControllerPki, caplog: pytest.LogCaptureFixture
) -> None:
    cp = CheckpointStore(tmp_path / "cp", "controllercerts")
    good = controller_certs_payload(ctl_pki)
    cp.save(good)
    cp.primary.write_bytes(b"\xff\xfe garbage")
    store = ControllerCertStore(cp, ctl_pki.root_pem)
    loaded = store.load_checkpoint()
    assert loaded is not None
    assert loaded.raw == good
    assert "saved controller certificates controllercerts rejected" in caplog.text


def test_primary_from_another_root_falls_back_to_bak(
    tmp_path: Path, ctl_pki: ControllerPki
) -> None:
    other = make_pki(tmp_path / "other")
    cp = CheckpointStore(tmp_path / "cp", "controllercerts")
    good = controller_certs_payload(ctl_pki)
    cp.save(good)
    cp.primary.write_bytes(controller_certs_payload(other))  # verifies, but not to our root
    loaded = ControllerCertStore(cp, ctl_pki.root_pem).load_checkpoint()
    assert loaded is not None
    assert loaded.raw == good


def test_both_checkpoints_corrupt(tmp_path: Path, ctl_pki: ControllerPki) -> None:
    cp = CheckpointStore(tmp_path / "cp", "controllercerts")
    cp.save(b"junk")
    store = ControllerCertStore(cp, ctl_pki.root_pem)
    assert store.load_checkpoint() is None
    assert store.current is None


def controller_certs_payload(ctl: ControllerPki) -> bytes:
    """The ZControllerCert bytes inside the controller's /certs answer."""
    return envelope.parse(controller_certs(ctl.identity)).payload


def test_trusted_signers_has_16_and_32_byte_keys(ctl_pki: ControllerPki) -> None:
    certs = parse_controller_certs(controller_certs_payload(ctl_pki), roots(ctl_pki))
    signers = certs.trusted_signers()
    digest = hashlib.sha256(ctl_pki.identity.signing_pem).digest()
    assert set(signers) == {digest[:16], digest}
    assert all(c == ctl_pki.identity.signer.certificate for c in signers.values())
    # A response sealed with a 16-byte senderCertHash verifies too.
    sealed16 = envelope.seal(
        b"x",
        ctl_pki.identity.signer,
        sender_cert_hash=digest[:16],
        algo=envelope.HASH_SHA256_16,
    )
    assert envelope.open_signed(sealed16, signers).payload == b"x"


# ---------------------------------------------------------------- malformed ZControllerCert


def test_parse_accepts_signing_ecdh_and_intermediates(tmp_path: Path) -> None:
    ctl = make_pki(tmp_path / "c")
    root_key = pki.load_key(ctl.state.root_key.read_bytes())
    root = ctl.identity.root_cert
    inter_key = pki.new_ec_key()
    inter = pki.make_certificate(
        inter_key, "intermediate", issuer_key=root_key, issuer_cert=root, is_ca=True
    )
    leaf = pki.make_certificate(
        pki.new_ec_key(), "signing via intermediate", issuer_key=inter_key, issuer_cert=inter
    )
    raw = zcerts(
        (INTERMEDIATE, pki.cert_pem(inter)),
        (SIGNING, pki.cert_pem(leaf)),
        (ECDH, ctl.identity.ecdh_pem),
    )
    certs = parse_controller_certs(raw, [root])
    assert certs.signing == leaf
    assert certs.ecdh_pem == ctl.identity.ecdh_pem
    # Without the intermediate in the message the leaf no longer chains.
    with pytest.raises(ControllerCertError, match="does not chain"):
        parse_controller_certs(
            zcerts((SIGNING, pki.cert_pem(leaf)), (ECDH, ctl.identity.ecdh_pem)), [root]
        )


def test_two_signing_certs_rejected(ctl_pki: ControllerPki) -> None:
    ident = ctl_pki.identity
    raw = zcerts((SIGNING, ident.signing_pem), (SIGNING, ident.signing_pem), (ECDH, ident.ecdh_pem))
    with pytest.raises(ControllerCertError, match="expected one signing certificate, got 2"):
        parse_controller_certs(raw, roots(ctl_pki))


def test_no_signing_cert_rejected(ctl_pki: ControllerPki) -> None:
    raw = zcerts((ECDH, ctl_pki.identity.ecdh_pem))
    with pytest.raises(ControllerCertError, match="got 0"):
        parse_controller_certs(raw, roots(ctl_pki))


def test_no_ecdh_cert_rejected(ctl_pki: ControllerPki) -> None:
    raw = zcerts((SIGNING, ctl_pki.identity.signing_pem))
    with pytest.raises(ControllerCertError, match="no ECDH certificate"):
        parse_controller_certs(raw, roots(ctl_pki))


@pytest.mark.parametrize(
    "cert_type",
    [certs_pb2.CERT_TYPE_CONTROLLER_NONE, certs_pb2.CERT_TYPE_DEVICE_ONBOARDING, 99],
)
def test_unknown_cert_type_rejected(ctl_pki: ControllerPki, cert_type: int) -> None:
    ident = ctl_pki.identity
    raw = zcerts((SIGNING, ident.signing_pem), (ECDH, ident.ecdh_pem), (cert_type, rogue_pem()))
    with pytest.raises(
        ControllerCertError, match=f"unexpected controller certificate type {cert_type}"
    ):
        parse_controller_certs(raw, roots(ctl_pki))


def test_signing_cert_not_chaining_to_root_rejected(ctl_pki: ControllerPki) -> None:
    raw = zcerts((SIGNING, rogue_pem()), (ECDH, ctl_pki.identity.ecdh_pem))
    with pytest.raises(ControllerCertError, match="does not chain to the root"):
        parse_controller_certs(raw, roots(ctl_pki))


def test_ecdh_cert_not_chaining_to_root_rejected(ctl_pki: ControllerPki) -> None:
    raw = zcerts((SIGNING, ctl_pki.identity.signing_pem), (ECDH, rogue_pem("rogue ecdh")))
    with pytest.raises(ControllerCertError, match="rogue ecdh"):
        parse_controller_certs(raw, roots(ctl_pki))


def test_unreadable_cert_rejected(ctl_pki: ControllerPki) -> None:
    raw = zcerts((SIGNING, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
    with pytest.raises(ControllerCertError, match="unreadable"):
        parse_controller_certs(raw, roots(ctl_pki))


def test_undecodable_message_rejected(ctl_pki: ControllerPki) -> None:
    with pytest.raises(ControllerCertError, match="undecodable"):
        parse_controller_certs(b"\xff\xff\xff\xff", roots(ctl_pki))


# ---------------------------------------------------------------- misbehaving /certs


async def test_refresh_refuses_certs_from_another_root(
    tmp_path: Path, fake: FakeController
) -> None:
    other = make_pki(tmp_path / "other")

    async def foreign(request: web.Request, body: bytes) -> web.StreamResponse:
        return proto(controller_certs(other.identity))

    cp_dir = tmp_path / "cp"
    store = store_in(cp_dir, fake.pki)
    client = fake.client()
    try:
        before = await store.refresh(client)
        fake.handlers["certs"] = foreign
        with pytest.raises(ControllerCertError, match="does not chain"):
            await store.refresh(client)
    finally:
        await client.close()
    # Nothing changed: the verified certificates and their checkpoint stay.
    assert store.current is before
    assert (cp_dir / "controllercerts").read_bytes() == before.raw


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (503, b"", "answered 503"),
        (404, b"", "answered 404"),
        (200, b"\xff\xff not protobuf", "/certs body"),
        (200, b"", "/certs body"),
    ],
)
async def test_refresh_refuses_bad_answers(
    tmp_path: Path, fake: FakeController, status: int, body: bytes, match: str
) -> None:
    async def bad(request: web.Request, _: bytes) -> web.StreamResponse:
        return proto(body, status=status)

    fake.handlers["certs"] = bad
    store = store_in(tmp_path / "cp", fake.pki)
    client = fake.client()
    try:
        with pytest.raises(ControllerCertError, match=match):
            await store.refresh(client)
    finally:
        await client.close()
    assert store.current is None
    assert not (tmp_path / "cp" / "controllercerts").exists()


async def test_refresh_with_bad_envelope_signature_is_accepted_with_a_warning(
    tmp_path: Path, fake: FakeController, caplog: pytest.LogCaptureFixture
) -> None:
    """As EVE: the /certs envelope signature is not what makes the certificates trusted."""
    genuine = controller_certs(fake.pki.identity)
    container = envelope.parse(genuine)
    # Re-seal the same payload with a wrong key but the genuine senderCertHash.
    wrong = envelope.seal(
        container.payload,
        envelope.SoftwareSigner(pki.new_ec_key(), fake.pki.identity.signer.certificate),
        sender_cert_hash=container.sender_cert_hash,
    )

    async def resealed(request: web.Request, _: bytes) -> web.StreamResponse:
        return proto(wrong)

    fake.handlers["certs"] = resealed
    store = store_in(tmp_path / "cp", fake.pki)
    client = fake.client()
    try:
        with caplog.at_level(logging.WARNING, logger="agent.link.controllercerts"):
            certs = await store.refresh(client)
    finally:
        await client.close()
    assert certs.signing_pem == fake.pki.identity.signing_pem
    assert "/certs envelope signature did not verify" in caplog.text


async def test_refresh_with_tampered_certificate_refused(
    tmp_path: Path, fake: FakeController
) -> None:
    """A changed byte in the signing certificate breaks its chain, whatever the envelope says."""
    genuine = envelope.parse(controller_certs(fake.pki.identity)).payload
    msg = certs_pb2.ZControllerCert()
    msg.ParseFromString(genuine)
    pem = bytearray(msg.certs[0].cert)
    assert msg.certs[0].type == SIGNING
    spot = pem.index(b"-----END") - 8  # inside the signature's base64
    pem[spot] = ord("A") if pem[spot] != ord("A") else ord("B")
    msg.certs[0].cert = bytes(pem)
    forged = msg.SerializeToString()

    async def tampered(request: web.Request, _: bytes) -> web.StreamResponse:
        return proto(fake.seal(forged))

    fake.handlers["certs"] = tampered
    store = store_in(tmp_path / "cp", fake.pki)
    client = fake.client()
    try:
        with pytest.raises(ControllerCertError, match=r"does not chain|unreadable"):
            await store.refresh(client)
    finally:
        await client.close()
    assert store.current is None
    assert not (tmp_path / "cp" / "controllercerts").exists()


async def test_refresh_transport_error_propagates(tmp_path: Path, ctl_pki: ControllerPki) -> None:
    store = store_in(tmp_path / "cp", ctl_pki)
    async with fake_controller(ctl_pki) as fake:
        client = fake.client()
    try:
        with pytest.raises(TransportError):
            await store.refresh(client)  # the fake is gone: nothing listens
    finally:
        await client.close()
    assert store.current is None


async def test_refresh_rewrites_checkpoint_only_on_change(
    tmp_path: Path, fake: FakeController
) -> None:
    store = store_in(tmp_path / "cp", fake.pki)
    primary = tmp_path / "cp" / "controllercerts"
    client = fake.client()
    try:
        await store.refresh(client)
        primary.write_bytes(b"marker: not rewritten when nothing changed")
        await store.refresh(client)
        assert primary.read_bytes() == b"marker: not rewritten when nothing changed"
        # New controller certificates (same root) are written.
        root_key = pki.load_key(fake.pki.state.root_key.read_bytes())
        new_signing = pki.cert_pem(
            pki.make_certificate(
                pki.new_ec_key(),
                "new signing",
                issuer_key=root_key,
                issuer_cert=fake.pki.identity.root_cert,
            )
        )
        new_raw = zcerts((SIGNING, new_signing), (ECDH, fake.pki.identity.ecdh_pem))

        async def rotated(request: web.Request, _: bytes) -> web.StreamResponse:
            return proto(fake.seal(new_raw))

        fake.handlers["certs"] = rotated
        certs = await store.refresh(client)
    finally:
        await client.close()
    assert certs.signing_pem == new_signing
    assert primary.read_bytes() == new_raw
