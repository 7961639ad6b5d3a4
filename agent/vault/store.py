"""The vault's encrypted store: an fscrypt v2 directory (in persist, or in a loop-mounted ext4
image when persist cannot encrypt), or a plain directory on a node without a TPM.

Only :mod:`agent.vault.manager` drives a store; it hands out the store's paths once the vault is
open.  Methods block (ioctls, mkfs, mount) and raise :class:`StoreError`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from agent.drivers.fscrypt import Fscrypt, FscryptError, FscryptNotEmpty
from agent.drivers.loopfs import ImageFsDriver, LoopFsError

log = logging.getLogger(__name__)


class StoreKind(StrEnum):
    """Where the encrypted store lives."""

    DIRECTORY = "fscrypt-directory"  # a directory of persist (persist's filesystem encrypts)
    IMAGE = "fscrypt-image"  # an ext4 image in persist, loop-mounted
    PLAIN = "plain"  # no TPM: a plain directory


@dataclass(frozen=True)
class VaultPaths:
    """The vault's files in persist, EVE's names where EVE has them."""

    persist: Path

    @property
    def sealed_key(self) -> Path:
        return self.persist / "status" / "vault" / "sealed-key.json"

    @property
    def store_kind(self) -> Path:
        return self.persist / "status" / "vault" / "store"

    @property
    def policy_pcrs(self) -> Path:
        """The controller-given sealing PCR list (EVE: /persist/status/policy-pcr.json)."""
        return self.persist / "status" / "policy-pcr.json"

    @property
    def allow_clean(self) -> Path:
        """Sentinel: the store may be wiped when the controller has no key for it."""
        return self.persist / "status" / "allow-vault-clean"

    @property
    def directory(self) -> Path:
        """The store in directory (and plain) mode: EVE's /persist/vault."""
        return self.persist / "vault"

    @property
    def image(self) -> Path:
        return self.persist / "vault.img"

    @property
    def image_mount(self) -> Path:
        return self.persist / "vault.fs"


class StoreError(Exception):
    """The store cannot be made or opened; not a key problem."""


class StoreKeyMismatch(StoreError):
    """The key given is not the store's key."""


class Store(Protocol):
    kind: StoreKind

    @property
    def root(self) -> Path: ...

    def exists(self) -> bool:
        """True when there is an encrypted store (possibly locked)."""
        ...

    def create(self, master_key: bytes) -> None:
        """Make a new, empty encrypted store and leave it unlocked."""
        ...

    def unlock(self, master_key: bytes) -> None:
        """Open the existing store; StoreKeyMismatch when the key is not its key."""
        ...

    def lock(self) -> None: ...

    def wipe(self) -> None:
        """Lock and delete the store and all it holds."""
        ...


class FscryptStore:
    """An fscrypt v2 directory, in persist or inside a loop-mounted ext4 image."""

    def __init__(
        self,
        kind: StoreKind,
        paths: VaultPaths,
        fscrypt: Fscrypt,
        imagefs: ImageFsDriver,
        *,
        image_size: int,
    ) -> None:
        if kind is StoreKind.PLAIN:
            raise ValueError("FscryptStore is not plain")
        self.kind: StoreKind = kind
        self._paths = paths
        self._fs = fscrypt
        self._img = imagefs
        self._image_size = image_size

    @property
    def root(self) -> Path:
        if self.kind is StoreKind.IMAGE:
            return self._paths.image_mount / "vault"
        return self._paths.directory

    def _mount(self) -> None:
        if self.kind is StoreKind.IMAGE:
            try:
                self._img.mount(self._paths.image, self._paths.image_mount)
            except LoopFsError as exc:
                raise StoreError(str(exc)) from exc

    def exists(self) -> bool:
        if self.kind is StoreKind.IMAGE:
            if not self._paths.image.exists():
                return False
            self._mount()
        if not self.root.is_dir():
            return False
        try:
            return self._fs.get_policy(self.root) is not None
        except FscryptError as exc:
            raise StoreError(str(exc)) from exc

    def create(self, master_key: bytes) -> None:
        try:
            if self.kind is StoreKind.IMAGE and not self._paths.image.exists():
                self._img.create(self._paths.image, self._image_size, label="eve-vault")
            self._mount()
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            identifier = self._fs.add_key(self.root, master_key)
            self._fs.set_policy(self.root, identifier)
            self._ensure_layout()
        except FscryptNotEmpty as exc:
            raise StoreError(
                f"{self.root} is not empty and not encrypted; refusing to encrypt it in place"
            ) from exc
        except (FscryptError, LoopFsError, OSError) as exc:
            raise StoreError(f"cannot create the vault store: {exc}") from exc

    def unlock(self, master_key: bytes) -> None:
        self._mount()
        try:
            policy = self._fs.get_policy(self.root)
            if policy is None:
                raise StoreError(f"{self.root} is not encrypted")
            if not policy.is_vault_policy:
                raise StoreError(f"{self.root} has an unexpected encryption policy {policy}")
            identifier = self._fs.add_key(self.root, master_key)
            if identifier != policy.identifier:
                self._fs.remove_key(self.root, identifier)
                raise StoreKeyMismatch("the key is not the vault store's key")
            self._ensure_layout()
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root} is missing") from exc
        except (FscryptError, OSError) as exc:
            raise StoreError(f"cannot unlock the vault store: {exc}") from exc

    def _ensure_layout(self) -> None:
        for name in ("volumes", "secrets"):
            (self.root / name).mkdir(mode=0o700, exist_ok=True)

    def lock(self) -> None:
        try:
            if self.kind is StoreKind.IMAGE and not self._img.is_mounted(
                self._paths.image, self._paths.image_mount
            ):
                return
            policy = self._fs.get_policy(self.root) if self.root.is_dir() else None
            if policy is not None:
                result = self._fs.remove_key(self.root, policy.identifier)
                if result.files_busy and self.kind is StoreKind.DIRECTORY:
                    # Seen on Linux 6.18 even with nothing open: cached dentries of a
                    # directory tree are not all evicted.  The key is wiped; what is still
                    # cached stays readable until the kernel evicts it.  (Image mode
                    # unmounts next, which completes the lock.)
                    log.warning("vault key removed, but some cached files stay readable")
            if self.kind is StoreKind.IMAGE:
                self._img.unmount(self._paths.image, self._paths.image_mount)
        except (FscryptError, LoopFsError, OSError) as exc:
            raise StoreError(f"cannot lock the vault store: {exc}") from exc

    def wipe(self) -> None:
        self.lock()
        try:
            if self.kind is StoreKind.IMAGE:
                self._paths.image.unlink(missing_ok=True)
            else:
                shutil.rmtree(self.root, ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot remove the vault store: {exc}") from exc


class PlainStore:
    """No TPM: persist/vault as a plain directory."""

    kind = StoreKind.PLAIN

    def __init__(self, paths: VaultPaths) -> None:
        self._paths = paths

    @property
    def root(self) -> Path:
        return self._paths.directory

    def open(self) -> None:
        try:
            for name in ("volumes", "secrets"):
                (self.root / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot make {self.root}: {exc}") from exc
