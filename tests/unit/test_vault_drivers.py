# SPDX-License-Identifier: Apache-2.0
"""The fscrypt and loop-image drivers without root: UAPI layouts, mountinfo, the fakes.

The same contract runs against the kernel in tests/integration/test_vault_fscrypt.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.drivers import fscrypt, loopfs
from agent.drivers.fscrypt import (
    FakeFscrypt,
    FscryptError,
    FscryptKeyMissing,
    FscryptNotEmpty,
    FscryptPolicyConflict,
    FscryptUnsupported,
    KeyStatus,
)
from agent.drivers.loopfs import FakeImageFs, LoopFsError


def test_ioctl_numbers_match_the_uapi_header() -> None:
    # values as the C preprocessor computes them from linux/fscrypt.h on x86-64 and arm64
    assert fscrypt.FS_IOC_SET_ENCRYPTION_POLICY == 0x800C6613
    assert fscrypt.FS_IOC_GET_ENCRYPTION_POLICY_EX == 0xC0096616
    assert fscrypt.FS_IOC_ADD_ENCRYPTION_KEY == 0xC0506617
    assert fscrypt.FS_IOC_REMOVE_ENCRYPTION_KEY == 0xC0406618
    assert fscrypt.FS_IOC_GET_ENCRYPTION_KEY_STATUS == 0xC080661A


def test_struct_sizes_match_the_uapi_header() -> None:
    assert fscrypt._POLICY_V2.size == 24
    assert fscrypt._KEY_SPEC.size == 40
    assert fscrypt._ADD_KEY.size == 80
    assert fscrypt._REMOVE_KEY.size == 64
    assert fscrypt._KEY_STATUS.size == 128
    assert fscrypt._POLICY_EX.size == 32


def test_mountinfo_parsing(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "44 22 7:0 / /persist/vault.fs rw,nodev,nosuid - ext4 /dev/loop0 rw\n"
        "45 22 0:40 / /mnt/with\\040space rw - tmpfs tmp\\134fs rw\n"
        "garbage line\n"
    )
    mounts = loopfs.read_mounts(info)
    assert [m.mountpoint for m in mounts] == [
        Path("/"),
        Path("/persist/vault.fs"),
        Path("/mnt/with space"),
    ]
    assert mounts[1].source == "/dev/loop0" and mounts[1].fstype == "ext4"
    assert mounts[2].source == "tmp\\fs"


def test_image_fs_refuses_a_mountpoint_holding_something_else(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    target = tmp_path / "mnt"
    info.write_text(f"45 22 0:40 / {target} rw - tmpfs tmpfs rw\n")
    driver = loopfs.ImageFs(mountinfo=info)
    assert not driver.is_mounted(tmp_path / "img", tmp_path / "elsewhere")
    with pytest.raises(LoopFsError, match="not the image"):
        driver.is_mounted(tmp_path / "img", target)
    with pytest.raises(LoopFsError, match="too small"):
        driver.create(tmp_path / "img", 1024, label="x")
    with pytest.raises(LoopFsError, match="does not exist"):
        driver.mount(tmp_path / "missing.img", target)


# --- the fakes -------------------------------------------------------------------------------


def test_fake_fscrypt_contract(tmp_path: Path) -> None:
    fs = FakeFscrypt()
    d = tmp_path / "vault"
    d.mkdir()
    assert fs.supported(d)
    assert fs.get_policy(d) is None
    key = bytes(range(64))
    ident = fs.add_key(d, key)
    assert len(ident) == 16 and fs.add_key(d, key) == ident
    assert fs.key_status(d, ident) is KeyStatus.PRESENT
    fs.set_policy(d, ident)
    policy = fs.get_policy(d)
    assert policy is not None and policy.identifier == ident and policy.is_vault_policy
    fs.set_policy(d, ident)  # same policy again: fine
    other = fs.add_key(d, bytes(64))
    with pytest.raises(FscryptPolicyConflict):
        fs.set_policy(d, other)
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").write_text("x")
    with pytest.raises(FscryptNotEmpty):
        fs.set_policy(full, ident)
    empty = tmp_path / "empty"
    empty.mkdir()
    fs.remove_key(d, other)
    if os.geteuid() == 0:  # CAP_FOWNER may set a policy for an absent key, as with the kernel
        fs.set_policy(empty, other)
    else:
        with pytest.raises(FscryptKeyMissing):
            fs.set_policy(empty, other)
    fs.remove_key(d, ident)
    assert fs.key_status(d, ident) is KeyStatus.ABSENT
    fs.remove_key(d, ident)  # already gone: fine
    with pytest.raises(FscryptError):
        fs.add_key(d, b"short")
    with pytest.raises(FscryptError):
        fs.remove_key(d, b"short")
    fs.unsupported.add(tmp_path)
    assert not fs.supported(d)
    with pytest.raises(FscryptUnsupported):
        fs.get_policy(d)


def test_fake_fscrypt_policy_dies_with_the_directory(tmp_path: Path) -> None:
    fs = FakeFscrypt()
    d = tmp_path / "vault"
    d.mkdir()
    fs.set_policy(d, fs.add_key(d, bytes(64)))
    d.rmdir()
    d.mkdir()
    assert fs.get_policy(d) is None


def test_fake_image_fs(tmp_path: Path) -> None:
    img = FakeImageFs()
    image, mnt = tmp_path / "vault.img", tmp_path / "vault.fs"
    with pytest.raises(LoopFsError):
        img.mount(image, mnt)
    img.create(image, loopfs.MIN_IMAGE_SIZE, label="eve-vault")
    with pytest.raises(LoopFsError, match="exists"):
        img.create(image, loopfs.MIN_IMAGE_SIZE, label="eve-vault")
    img.mount(image, mnt)
    img.mount(image, mnt)  # idempotent
    (mnt / "data").write_text("kept in the image")
    img.unmount(image, mnt)
    assert list(mnt.iterdir()) == []
    img.unmount(image, mnt)  # not mounted: fine
    img.mount(image, mnt)
    assert (mnt / "data").read_text() == "kept in the image"
    with pytest.raises(LoopFsError, match="not the image"):
        img.is_mounted(tmp_path / "other.img", mnt)
    img.reboot()
    assert not img.is_mounted(image, mnt)
