# SPDX-License-Identifier: Apache-2.0
"""The vault with a real TPM: DeviceTpm (tpm2-pytss) on a swtpm of its own, and a real
loop-mounted ext4 image with fscrypt (root).

The swtpm is manufactured once per session and copied for each test, so every test starts with
a factory-fresh TPM.  Teardown closes the TPM connection, stops the swtpm and unmounts the image,
also when the test failed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.drivers.loopfs import ImageFs
from agent.drivers.swtpm import SwtpmError, SwtpmProcess
from agent.drivers.tpm import KeyRole, Tpm, TpmPolicyError
from agent.drivers.tpm_fake import FakeTpm
from agent.vault import cipher, keys
from agent.vault.keys import EscrowError
from agent.vault.manager import (
    StoreMode,
    VaultManager,
    VaultPaths,
    VaultSettings,
    VaultState,
)
from agent.wire import pki
from agent.wire.pb.evecommon import acipherinfo_pb2
from tests.integration.conftest import swtpm_missing

RequireService = Callable[[str, str], NoReturn]
IMAGE_SIZE = 64 * 1024 * 1024


@pytest.fixture(scope="session")
def vault_swtpm_factory(tmp_path_factory: pytest.TempPathFactory) -> Path | str:
    """A manufactured swtpm state directory to copy, or why there is none."""
    reason = swtpm_missing()
    if reason is not None:
        return reason
    state = tmp_path_factory.mktemp("vault-swtpm")
    try:
        SwtpmProcess(state).manufacture()
    except SwtpmError as exc:
        return str(exc)
    return state


class Machine:
    """A swtpm-backed TPM that can be power-cycled, with a boot chain measured into PCR 8."""

    def __init__(self, state: Path) -> None:
        from agent.drivers.tpm_device import DeviceTpm

        self._device = DeviceTpm
        self.proc = SwtpmProcess(state)
        self.proc.start()
        self.tpm: Tpm = DeviceTpm(self.proc.tcti)
        self.tpm.provision()

    def power_cycle(self, *, boot_chain: bytes | None = None) -> Tpm:
        self.tpm.close()
        self.proc.stop()
        self.proc.start()
        self.tpm = self._device(self.proc.tcti)
        if boot_chain is not None:
            self.tpm.extend_pcr(8, hashlib.sha256(boot_chain).digest())
        return self.tpm

    def shutdown(self) -> None:
        self.tpm.close()
        self.proc.stop()


@pytest.fixture
def machine(
    vault_swtpm_factory: Path | str, tmp_path: Path, require_service: RequireService
) -> Iterator[Machine]:
    if isinstance(vault_swtpm_factory, str):
        require_service("swtpm", vault_swtpm_factory)
    state = tmp_path / "swtpm"
    shutil.copytree(vault_swtpm_factory, state)
    made = Machine(state)
    try:
        yield made
    finally:
        made.shutdown()


def test_seal_unseal_and_pcr_change_on_a_real_tpm(machine: Machine) -> None:
    tpm = machine.tpm
    key = keys.new_vault_key(tpm)
    sealed = keys.seal_key(tpm, key)
    assert keys.unseal_key(tpm, sealed) == key
    tpm = machine.power_cycle()
    assert keys.unseal_key(tpm, sealed) == key  # same boot chain, same PCRs
    tpm = machine.power_cycle(boot_chain=b"grub.cfg v2")
    with pytest.raises(TpmPolicyError):
        keys.unseal_key(tpm, sealed)
    assert keys.changed_pcrs(tpm, sealed) == (8,)


def test_escrow_roundtrip_on_a_real_tpm(machine: Machine) -> None:
    tpm = machine.tpm
    key = keys.new_vault_key(tpm)
    blob = keys.escrow_wrap(tpm, key)
    tpm = machine.power_cycle(boot_chain=b"anything")  # the escrow is not PCR-bound
    assert keys.escrow_unwrap(tpm, blob) == key
    foreign = FakeTpm()
    foreign.provision()
    with pytest.raises(EscrowError):
        keys.escrow_unwrap(tpm, keys.escrow_wrap(foreign, key))
    with pytest.raises(EscrowError):
        keys.escrow_unwrap(foreign, blob)


def test_cipher_block_decrypts_with_the_tpm_ecdh_key(machine: Machine) -> None:
    tpm = machine.tpm
    device_public = tpm.public_key(KeyRole.ECDH)
    assert isinstance(device_public, ec.EllipticCurvePublicKey)
    signer = ec.generate_private_key(ec.SECP256R1())
    device_pem = pki.cert_pem(
        pki.certificate_builder(device_public, "ecdh", key_agreement=True).sign(
            signer, hashes.SHA256()
        )
    )
    controller_key = ec.generate_private_key(ec.SECP256R1())
    controller_pem = pki.cert_pem(pki.make_certificate(controller_key, "controller-ecdh"))
    context = cipher.make_context(
        "ctx", device_cert_pem=device_pem, controller_cert_pem=controller_pem
    )
    secret = acipherinfo_pb2.EncryptionBlock(dsPassword="hunter2", wifiPassword="wpa-secret")
    block = cipher.encrypt_block(
        secret, context=context, controller_key=controller_key, device_public_key=device_public
    )
    device_keys = cipher.DeviceCipherKeys(
        device_cert_pem=device_pem,
        controller_certs=(controller_pem,),
        shared_point=tpm.ecdh_shared_point,
    )
    assert cipher.decrypt_block(block, [context], device_keys) == secret


# --- the whole vault: swtpm + fscrypt on a loop image --------------------------------------------


@pytest.fixture
def persist(tmp_path: Path, require_service: RequireService) -> Iterator[VaultPaths]:
    if os.geteuid() != 0:
        require_service("loop devices", "needs root")
    if not Path("/sys/fs/ext4/features/encryption").exists():
        require_service("ext4 encryption", "the kernel's ext4 has no encryption support")
    paths = VaultPaths(tmp_path / "persist")
    try:
        yield paths
    finally:
        if paths.image.exists():
            ImageFs().unmount(paths.image, paths.image_mount)


def _vault(paths: VaultPaths, tpm: Tpm) -> VaultManager:
    return VaultManager(
        paths, tpm, settings=VaultSettings(store=StoreMode.IMAGE, image_size=IMAGE_SIZE)
    )


def test_vault_lifecycle_on_swtpm_and_fscrypt(machine: Machine, persist: VaultPaths) -> None:
    vault = _vault(persist, machine.tpm)
    status = vault.open_local()
    assert status.state is VaultState.UNLOCKED, status.reason
    blob = vault.escrow_blob()
    assert blob is not None
    vault.escrow_stored()
    marker = f"APP-VOLUME-{uuid.uuid4().hex}".encode()
    (vault.volumes / "disk.raw").write_bytes(marker * 1024)
    luks = vault.derive_key("luks/vol-1")
    vault.lock()
    assert marker not in persist.image.read_bytes()

    # same boot chain: opens locally
    vault = _vault(persist, machine.power_cycle())
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("luks/vol-1") == luks
    vault.lock()

    # an update changed the boot chain: locked, naming PCR 8; the controller's copy opens it
    vault = _vault(persist, machine.power_cycle(boot_chain=b"eve 2.0 grub.cfg"))
    status = vault.open_local()
    assert status.state is VaultState.LOCKED
    assert status.mismatched_pcrs == (8,)
    assert vault.open_with_escrow([]).state is VaultState.LOCKED  # escrowed: no wipe
    status = vault.open_with_escrow([blob])
    assert status.state is VaultState.UNLOCKED, status.reason
    assert (vault.volumes / "disk.raw").read_bytes() == marker * 1024
    vault.lock()

    # resealed: the new boot chain now opens locally
    vault = _vault(persist, machine.power_cycle(boot_chain=b"eve 2.0 grub.cfg"))
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("luks/vol-1") == luks
    assert (vault.volumes / "disk.raw").read_bytes() == marker * 1024
    vault.lock()
