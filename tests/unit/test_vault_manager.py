# SPDX-License-Identifier: Apache-2.0
"""VaultManager's state machine with FakeTpm, FakeFscrypt and FakeImageFs.

The rig keeps the "hardware" across agent restarts and reboots: the TPM state (a reboot resets
PCRs, keeps keys), the fscrypt policies (a reboot drops the keys from the kernel) and the image
mounts (a reboot unmounts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.drivers.fscrypt import FakeFscrypt
from agent.drivers.loopfs import FakeImageFs
from agent.drivers.tpm import DEFAULT_SEAL_PCRS
from agent.drivers.tpm_fake import FakeTpm
from agent.vault import keys
from agent.vault.manager import (
    StoreKind,
    StoreMode,
    VaultManager,
    VaultNotOpen,
    VaultPaths,
    VaultSettings,
    VaultState,
)


class Rig:
    def __init__(self, root: Path, *, mode: StoreMode = StoreMode.IMAGE) -> None:
        self.paths = VaultPaths(root / "persist")
        self.tpm_state: dict[str, bytes] = {}
        self.fs = FakeFscrypt()
        self.img = FakeImageFs()
        self.settings = VaultSettings(store=mode, image_size=64 * 1024 * 1024)
        self.tpm = self._power_on()

    def _power_on(self) -> FakeTpm:
        tpm = FakeTpm(self.tpm_state)
        tpm.provision()
        return tpm

    def reboot(self, *, boot_chain: bytes | None = None) -> None:
        """Power cycle; ``boot_chain`` is measured into PCR 8 (a new bootloader config)."""
        self.fs.reboot()
        self.img.reboot()
        self.tpm = self._power_on()
        if boot_chain is not None:
            self.tpm.extend_pcr(8, hashlib.sha256(boot_chain).digest())

    def manager(self, *, tpm: bool = True) -> VaultManager:
        return VaultManager(
            self.paths,
            self.tpm if tpm else None,
            settings=self.settings,
            fscrypt=self.fs,
            imagefs=self.img,
        )


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def _first_boot(rig: Rig) -> tuple[VaultManager, bytes, bytes]:
    """A vault made on first boot, its escrow blob and a derived key to recognise it by."""
    vault = rig.manager()
    status = vault.open_local()
    assert status.state is VaultState.UNLOCKED, status.reason
    blob = vault.escrow_blob()
    assert blob is not None
    return vault, blob, vault.derive_key("probe")


def test_first_boot_creates_key_store_and_escrow(rig: Rig) -> None:
    vault, blob, _ = _first_boot(rig)
    status = vault.status
    assert status.store is StoreKind.IMAGE
    assert status.escrow_pending
    assert status.sealed_pcrs == DEFAULT_SEAL_PCRS
    assert status.reason == ""
    assert rig.paths.sealed_key.is_file()
    assert rig.paths.allow_clean.exists()
    assert rig.paths.image.is_file()
    assert vault.root == rig.paths.image_mount / "vault"
    assert vault.volumes.is_dir() and vault.secrets.is_dir()
    assert rig.fs.get_policy(vault.root) is not None
    # the escrow carries the vault key: HKDF of it gives the same derived keys
    key = keys.escrow_unwrap(rig.tpm, blob)
    assert keys.derive(key, "app", "probe") == vault.derive_key("probe")
    assert len(vault.derive_key("luks/vol-1", 64)) == 64
    assert vault.derive_key("a") != vault.derive_key("b")
    # nothing secret in persist in clear
    assert key not in rig.paths.sealed_key.read_bytes()
    assert key.hex().encode() not in rig.paths.sealed_key.read_bytes()


def test_escrow_stored_clears_pending(rig: Rig) -> None:
    vault, _, _ = _first_boot(rig)
    vault.escrow_stored()
    assert not vault.status.escrow_pending
    assert not rig.paths.allow_clean.exists()


def test_open_local_is_idempotent_and_survives_agent_restart(rig: Rig) -> None:
    vault, _, probe = _first_boot(rig)
    assert vault.open_local() == vault.status
    again = rig.manager()  # agent restart: same boot, store still mounted and unlocked
    assert again.open_local().state is VaultState.UNLOCKED
    assert again.derive_key("probe") == probe


def test_reboot_with_same_pcrs_opens_locally(rig: Rig) -> None:
    _, _, probe = _first_boot(rig)
    rig.reboot()
    vault = rig.manager()
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe


def test_pcr_change_locks_and_names_the_pcr(rig: Rig) -> None:
    _first_boot(rig)
    rig.reboot(boot_chain=b"grub.cfg v2")
    vault = rig.manager()
    status = vault.open_local()
    assert status.state is VaultState.LOCKED
    assert status.mismatched_pcrs == (8,)
    assert "PCRs 8 changed" in status.reason
    with pytest.raises(VaultNotOpen):
        _ = vault.root
    with pytest.raises(VaultNotOpen):
        _ = vault.volumes
    with pytest.raises(VaultNotOpen):
        vault.derive_key("probe")
    assert vault.escrow_blob() is None
    assert vault.open_local().state is VaultState.LOCKED  # idempotent, still locked


def test_escrow_reopens_reseals_and_next_boot_opens_locally(rig: Rig) -> None:
    _, blob, probe = _first_boot(rig)
    rig.reboot(boot_chain=b"grub.cfg v2")
    vault = rig.manager()
    assert vault.open_local().state is VaultState.LOCKED
    status = vault.open_with_escrow([blob])
    assert status.state is VaultState.UNLOCKED, status.reason
    assert status.mismatched_pcrs == ()
    assert vault.derive_key("probe") == probe
    assert not rig.paths.allow_clean.exists()  # the controller evidently holds the key
    sealed = keys.SealedKey.from_bytes(rig.paths.sealed_key.read_bytes())
    assert sealed.pcr_values[8] == rig.tpm.read_pcrs([8])[8]
    # the new boot chain is now the normal one
    rig.reboot(boot_chain=b"grub.cfg v2")
    vault = rig.manager()
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe
    # idempotent once open
    assert vault.open_with_escrow([blob]).state is VaultState.UNLOCKED


def test_escrow_from_another_device_is_refused(rig: Rig, tmp_path: Path) -> None:
    _first_boot(rig)
    rig.reboot(boot_chain=b"new")
    vault = rig.manager()
    vault.open_local()
    other = Rig(tmp_path / "other")
    _, foreign_blob, _ = _first_boot(other)
    status = vault.open_with_escrow([foreign_blob])
    assert status.state is VaultState.LOCKED
    assert "another device" in status.reason
    assert status.mismatched_pcrs == (8,)


def test_tampered_escrow_is_refused_and_good_one_after_it_works(rig: Rig) -> None:
    _, blob, probe = _first_boot(rig)
    rig.reboot(boot_chain=b"new")
    vault = rig.manager()
    vault.open_local()
    tampered = bytearray(blob)
    tampered[10] ^= 0x01
    assert vault.open_with_escrow([bytes(tampered)]).state is VaultState.LOCKED
    assert vault.open_with_escrow([b"\xff\xff", bytes(tampered), blob]).state is (
        VaultState.UNLOCKED
    )
    assert vault.derive_key("probe") == probe


def test_escrowed_key_of_another_vault_does_not_replace_the_sealed_key(rig: Rig) -> None:
    _first_boot(rig)
    rig.reboot(boot_chain=b"new")
    vault = rig.manager()
    vault.open_local()
    before = rig.paths.sealed_key.read_bytes()
    stranger = keys.escrow_wrap(rig.tpm, keys.new_vault_key(rig.tpm))  # same TPM, other key
    status = vault.open_with_escrow([stranger])
    assert status.state is VaultState.LOCKED
    assert "does not open the store" in status.reason
    assert rig.paths.sealed_key.read_bytes() == before
    assert not rig.fs.keys  # the wrong key was taken out of the kernel again


def test_empty_key_list_is_ignored_once_escrowed(rig: Rig) -> None:
    vault, _, _ = _first_boot(rig)
    vault.escrow_stored()
    rig.reboot(boot_chain=b"new")
    vault = rig.manager()
    vault.open_local()
    status = vault.open_with_escrow([])
    assert status.state is VaultState.LOCKED
    assert "no escrowed key" in status.reason
    assert status.mismatched_pcrs == (8,)
    assert rig.paths.image.exists()


def test_empty_key_list_recreates_a_brand_new_vault(rig: Rig) -> None:
    _, _, probe = _first_boot(rig)  # escrow never stored: allow-vault-clean stays
    rig.reboot(boot_chain=b"new")
    vault = rig.manager()
    assert vault.open_local().state is VaultState.LOCKED
    status = vault.open_with_escrow([])
    assert status.state is VaultState.UNLOCKED, status.reason
    assert status.escrow_pending
    assert vault.derive_key("probe") != probe
    assert vault.volumes.is_dir()


def test_empty_key_list_when_open_changes_nothing(rig: Rig) -> None:
    vault, _, probe = _first_boot(rig)
    assert vault.open_with_escrow([]).state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe


def test_no_tpm_is_disabled_and_plain(rig: Rig) -> None:
    vault = rig.manager(tpm=False)
    status = vault.open_local()
    assert status.state is VaultState.DISABLED
    assert status.store is StoreKind.PLAIN
    assert "no TPM" in status.reason
    assert vault.root == rig.paths.directory
    assert vault.volumes.is_dir() and vault.secrets.is_dir()
    assert vault.escrow_blob() is None
    assert vault.open_with_escrow([b"x"]).state is VaultState.DISABLED
    with pytest.raises(VaultNotOpen):
        vault.derive_key("luks")
    assert not rig.paths.sealed_key.exists()


def test_sealed_vault_without_tpm_is_an_error(rig: Rig) -> None:
    _first_boot(rig)
    vault = rig.manager(tpm=False)
    status = vault.open_local()
    assert status.state is VaultState.ERROR
    assert "no TPM" in status.reason
    with pytest.raises(VaultNotOpen):
        _ = vault.root


def test_mount_failure_is_an_error_and_retry_works(rig: Rig) -> None:
    _, _, probe = _first_boot(rig)
    rig.reboot()
    rig.img.fail_mount = "wrong fs type, bad superblock"
    vault = rig.manager()
    status = vault.open_local()
    assert status.state is VaultState.ERROR
    assert "bad superblock" in status.reason
    with pytest.raises(VaultNotOpen):
        _ = vault.volumes
    rig.img.fail_mount = None
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe


def test_tpm_unavailable_is_an_error(rig: Rig) -> None:
    _first_boot(rig)
    rig.reboot()
    rig.tpm.close()
    status = rig.manager().open_local()
    assert status.state is VaultState.ERROR
    assert "TPM" in status.reason


def test_auto_mode_picks_directory_when_persist_encrypts(tmp_path: Path) -> None:
    rig = Rig(tmp_path, mode=StoreMode.AUTO)
    vault, _, probe = _first_boot(rig)
    assert vault.status.store is StoreKind.DIRECTORY
    assert vault.root == rig.paths.directory
    assert not rig.paths.image.exists()
    rig.reboot()
    reopened = rig.manager()
    assert reopened.open_local().state is VaultState.UNLOCKED
    assert reopened.derive_key("probe") == probe


def test_auto_mode_picks_image_when_persist_cannot_encrypt(tmp_path: Path) -> None:
    rig = Rig(tmp_path, mode=StoreMode.AUTO)
    rig.paths.persist.mkdir(parents=True)
    rig.fs.unsupported.add(rig.paths.persist)
    rig.fs.encrypting.add(rig.paths.image_mount)  # the image's ext4 has -O encrypt
    vault, _, _ = _first_boot(rig)
    assert vault.status.store is StoreKind.IMAGE


def test_store_kind_sticks_when_the_setting_changes(rig: Rig) -> None:
    _first_boot(rig)
    rig.reboot()
    rig.settings = VaultSettings(store=StoreMode.DIRECTORY)
    vault = rig.manager()
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.status.store is StoreKind.IMAGE


def test_directory_mode_refuses_to_encrypt_existing_plain_data(tmp_path: Path) -> None:
    rig = Rig(tmp_path, mode=StoreMode.DIRECTORY)
    (rig.paths.directory / "volumes").mkdir(parents=True)
    (rig.paths.directory / "volumes" / "old.img").write_bytes(b"plain data")
    status = rig.manager().open_local()
    assert status.state is VaultState.ERROR
    assert "not empty" in status.reason


def test_controller_pcr_policy_is_saved_and_used(rig: Rig) -> None:
    vault, _, probe = _first_boot(rig)
    vault.set_policy_pcrs([0, 1, 2, 3, 4, 7])
    assert vault.status.sealed_pcrs == (0, 1, 2, 3, 4, 7)
    assert json.loads(rig.paths.policy_pcrs.read_text()) == {"pcrs": [0, 1, 2, 3, 4, 7]}
    rig.reboot(boot_chain=b"grub.cfg v2")  # PCR 8 is not in the policy any more
    vault = rig.manager()
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe
    with pytest.raises(ValueError):
        vault.set_policy_pcrs([0, 5])
    with pytest.raises(ValueError):
        vault.set_policy_pcrs([1, 2])
    vault.set_policy_pcrs(None)
    assert vault.status.sealed_pcrs == DEFAULT_SEAL_PCRS
    assert not rig.paths.policy_pcrs.exists()


def test_lost_sealed_key_waits_for_escrow(rig: Rig) -> None:
    vault, blob, probe = _first_boot(rig)
    vault.escrow_stored()
    rig.paths.sealed_key.unlink()
    rig.reboot()
    vault = rig.manager()
    status = vault.open_local()
    assert status.state is VaultState.LOCKED
    assert "no sealed key" in status.reason
    assert vault.open_with_escrow([blob]).state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe
    assert rig.paths.sealed_key.is_file()


def test_damaged_sealed_key_waits_for_escrow(rig: Rig) -> None:
    vault, blob, probe = _first_boot(rig)
    vault.escrow_stored()
    rig.paths.sealed_key.write_text("{ not json")
    rig.reboot()
    vault = rig.manager()
    status = vault.open_local()
    assert status.state is VaultState.LOCKED
    assert "malformed" in status.reason
    assert vault.open_with_escrow([blob]).state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe


def test_missing_store_is_made_anew_and_said_so(rig: Rig) -> None:
    vault, _, _ = _first_boot(rig)
    vault.escrow_stored()
    rig.reboot()
    rig.paths.image.unlink()
    vault = rig.manager()
    status = vault.open_local()
    assert status.state is VaultState.UNLOCKED
    assert "made anew" in status.reason


def test_lock_and_reopen(rig: Rig) -> None:
    vault, _, probe = _first_boot(rig)
    status = vault.lock()
    assert status.state is VaultState.LOCKED
    assert not rig.fs.keys
    assert not rig.img.mounted
    with pytest.raises(VaultNotOpen):
        _ = vault.secrets
    assert vault.lock().state is VaultState.LOCKED  # idempotent
    assert vault.open_local().state is VaultState.UNLOCKED
    assert vault.derive_key("probe") == probe
