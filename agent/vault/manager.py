"""The vault: an encrypted store in persist, opened with the TPM-sealed key or the escrowed one.

State machine (reported as :class:`VaultStatus`):

``DISABLED``  no TPM (the explicit software mode): the vault is a plain directory, as on EVE
              without a TPM.  Paths are usable; nothing is encrypted and ``derive_key`` refuses.
``LOCKED``    the key is not available: the PCRs moved since sealing (``mismatched_pcrs`` says
              which), the sealed key is missing or damaged, or it does not open the store.
              Nothing in the vault may be used; ``open_with_escrow`` may still open it.
``UNLOCKED``  the store is mounted (image mode) and its fscrypt key is in the kernel.
``ERROR``     the store or the TPM failed in a way a key cannot fix (mkfs, mount, fscrypt
              unsupported, TPM unreachable); ``reason`` says what.

Flow (EVE's vaultmgr, ``pkg/pillar/docs/vaultmgr.md``):

1. ``open_local()`` at start.  First boot (no sealed key, no store): make a key, seal it to the
   PCR policy, save it, create the store, and write ``allow-vault-clean`` (the store is brand
   new until the controller holds its escrow).  Later boots: unseal and unlock; a
   ``TpmPolicyError`` leaves the vault LOCKED.
2. After attestation, ``open_with_escrow(keys)`` with the keys from ``quoteResp.keys``: each is
   unwrapped with the TPM, checked against its digest and against the store; the first that
   opens the store is resealed to the *current* PCRs, so the next start opens locally again.
   An empty list is ignored unless ``allow-vault-clean`` exists (a store nobody escrowed yet):
   then the locked store is wiped and made anew.
3. ``escrow_blob()`` is the ``AttestVolumeKeyData`` for STORE_KEYS; ``escrow_stored()`` after
   the controller accepted it removes ``allow-vault-clean``.

The store is an fscrypt v2 directory (AES-256-XTS contents, AES-256-CTS names) whose 64-byte
master key is ``HKDF-SHA256(vault key, "eve-agent/vault/fscrypt/master-v2")``.  It lives in a
directory of persist when persist's filesystem can encrypt, otherwise in an ext4 image
(``mkfs.ext4 -O encrypt``) loop-mounted from persist.  The choice is made once, when the store is
created, and recorded beside the sealed key.  The vault never half-opens: paths are handed out
only in UNLOCKED (or DISABLED), and every failure leaves a status that says why.

Methods block (TPM, ioctls, mkfs, mount) and serialise on a lock: async callers use
``asyncio.to_thread``.  Do not ``lock()`` on agent shutdown: running apps keep using the vault
across an agent restart, and the next ``open_local`` adopts the open store.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from agent.drivers.fscrypt import (
    Fscrypt,
    FscryptError,
    FscryptUnsupported,
    KernelFscrypt,
)
from agent.drivers.loopfs import ImageFs, ImageFsDriver
from agent.drivers.tpm import DEFAULT_SEAL_PCRS, Tpm, TpmError, TpmPolicyError
from agent.util.atomicfile import is_storage_error, read_optional, write_atomic
from agent.vault import keys
from agent.vault.keys import EscrowError, SealedKeyError, SealedKeyFile, VaultKeyError
from agent.vault.store import FscryptStore as FscryptStore
from agent.vault.store import PlainStore as PlainStore
from agent.vault.store import Store as Store
from agent.vault.store import StoreError as StoreError
from agent.vault.store import StoreKeyMismatch as StoreKeyMismatch
from agent.vault.store import StoreKind as StoreKind
from agent.vault.store import VaultPaths as VaultPaths

log = logging.getLogger(__name__)

#: HKDF purposes: the store's master key, and keys handed out by ``derive_key``.
_FSCRYPT_PURPOSE = "fscrypt"
_FSCRYPT_LABEL = "master-v2"
_APP_PURPOSE = "app"


class VaultState(StrEnum):
    DISABLED = "disabled"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    ERROR = "error"


class StoreMode(StrEnum):
    """Setting: which store to create on first boot."""

    AUTO = "auto"  # DIRECTORY when persist's filesystem can encrypt, else IMAGE
    DIRECTORY = "directory"
    IMAGE = "image"


@dataclass(frozen=True)
class VaultSettings:
    #: Which kind of store to create (an existing store keeps its kind).
    store: StoreMode = StoreMode.AUTO
    #: Size of the ext4 image in image mode (a sparse file: space is used as data is written).
    image_size: int = 4 * 1024**3


@dataclass(frozen=True)
class VaultStatus:
    state: VaultState
    reason: str = ""
    #: sealing PCRs whose value differs from the one recorded at sealing (LOCKED)
    mismatched_pcrs: tuple[int, ...] = ()
    store: StoreKind | None = None
    #: the PCRs the key is sealed to
    sealed_pcrs: tuple[int, ...] = ()
    #: the controller does not hold this key yet (first boot, or a new key)
    escrow_pending: bool = False
    #: ERROR because the disk refused a write (full, I/O errors): ``open_local`` again later
    storage_error: bool = False


class VaultError(Exception):
    """A vault operation cannot be done in the current state."""


class VaultNotOpen(VaultError):
    """The vault's paths or keys were asked for while it is not open."""


# --- the manager -----------------------------------------------------------------------------


class VaultManager:
    """Owns the vault key and the store; see the module docstring.  Thread-safe, blocking."""

    def __init__(
        self,
        paths: VaultPaths,
        tpm: Tpm | None,
        *,
        settings: VaultSettings | None = None,
        fscrypt: Fscrypt | None = None,
        imagefs: ImageFsDriver | None = None,
    ) -> None:
        self.paths = paths
        self._tpm = tpm
        self._settings = settings or VaultSettings()
        self._fs: Fscrypt = fscrypt if fscrypt is not None else KernelFscrypt()
        self._img: ImageFsDriver = imagefs if imagefs is not None else ImageFs()
        self._keyfile = SealedKeyFile(paths.sealed_key)
        self._lock = threading.RLock()
        self._key: bytes | None = None
        self._store: Store | PlainStore | None = None
        self._status = VaultStatus(VaultState.LOCKED, reason="not opened yet")

    # --- state

    @property
    def status(self) -> VaultStatus:
        return self._status

    @property
    def state(self) -> VaultState:
        return self._status.state

    def _set(self, status: VaultStatus) -> VaultStatus:
        if status != self._status:
            good = status.state in (VaultState.UNLOCKED, VaultState.DISABLED)
            log.log(
                logging.INFO if good else logging.WARNING,
                "vault %s%s",
                status.state.value,
                f": {status.reason}" if status.reason else "",
            )
        self._status = status
        return status

    def _require_open(self) -> Path:
        if self._store is None or self.state not in (VaultState.UNLOCKED, VaultState.DISABLED):
            raise VaultNotOpen(f"the vault is {self.state.value}: {self._status.reason}")
        return self._store.root

    @property
    def root(self) -> Path:
        """The vault's directory (encrypted unless DISABLED).  VaultNotOpen otherwise."""
        return self._require_open()

    @property
    def volumes(self) -> Path:
        return self._require_open() / "volumes"

    @property
    def secrets(self) -> Path:
        return self._require_open() / "secrets"

    # --- opening

    def _status_with(
        self,
        state: VaultState,
        reason: str,
        *,
        store: StoreKind | None = None,
        mismatched_pcrs: tuple[int, ...] | None = None,
        sealed_pcrs: tuple[int, ...] | None = None,
    ) -> VaultStatus:
        """A status in ``state``; facts not given are carried over from the current one."""
        current = self._status
        return VaultStatus(
            state=state,
            reason=reason,
            mismatched_pcrs=current.mismatched_pcrs if mismatched_pcrs is None else mismatched_pcrs,
            store=current.store if store is None else store,
            sealed_pcrs=current.sealed_pcrs if sealed_pcrs is None else sealed_pcrs,
            escrow_pending=self.paths.allow_clean.exists(),
        )

    def open_local(self) -> VaultStatus:
        """Open with the sealed key (or create the vault on first boot).  Idempotent: an open
        vault stays open.  Never raises for vault problems: the status says what happened."""
        with self._lock:
            if self.state in (VaultState.UNLOCKED, VaultState.DISABLED):
                return self._status
            if self._tpm is None:
                return self._open_plain()
            kind = self._kind_or_none()
            try:
                sealed = self._keyfile.load()
            except SealedKeyError as exc:
                return self._set(
                    self._status_with(
                        VaultState.LOCKED,
                        f"{exc}; waiting for the controller's escrowed key",
                        store=kind,
                    )
                )
            if sealed is None:
                return self._no_sealed_key(kind)
            try:
                key = keys.unseal_key(self._tpm, sealed)
            except TpmPolicyError as exc:
                changed = keys.changed_pcrs(self._tpm, sealed)
                which = f" (PCRs {', '.join(map(str, changed))} changed)" if changed else ""
                return self._set(
                    self._status_with(
                        VaultState.LOCKED,
                        f"the TPM refused to unseal the vault key{which}: {exc}",
                        store=kind,
                        mismatched_pcrs=changed,
                        sealed_pcrs=sealed.pcrs,
                    )
                )
            except TpmError as exc:
                return self._set(
                    self._status_with(
                        VaultState.ERROR,
                        f"TPM failed to unseal the vault key: {exc}",
                        store=kind,
                        sealed_pcrs=sealed.pcrs,
                    )
                )
            except VaultKeyError as exc:
                return self._set(
                    self._status_with(
                        VaultState.LOCKED, str(exc), store=kind, sealed_pcrs=sealed.pcrs
                    )
                )
            return self._open_store(key, sealed_pcrs=sealed.pcrs)

    def open_with_escrow(self, escrowed: Sequence[bytes]) -> VaultStatus:
        """Open with keys the controller returned after attestation (the ``AttestVolumeKey.key``
        bytes of ``quoteResp.keys``).  Ignored when the vault is open or disabled.  Never
        raises for vault problems: the status says what happened."""
        with self._lock:
            if self.state in (VaultState.UNLOCKED, VaultState.DISABLED) or self._tpm is None:
                return self._status
            if not escrowed:
                if self.paths.allow_clean.exists():
                    log.warning("the controller has no key for a brand-new vault: recreating it")
                    return self._recreate()
                note = "the controller has no escrowed key"
                reason = self._status.reason
                if note not in reason:
                    reason = f"{reason}; {note}" if reason else note
                return self._set(self._status_with(self.state, reason))
            try:
                sealed = self._keyfile.load()
            except SealedKeyError:
                sealed = None
            candidates: list[bytes] = []
            problems: list[str] = []
            for i, blob in enumerate(escrowed):
                try:
                    key = keys.escrow_unwrap(self._tpm, blob)
                except (EscrowError, VaultKeyError, TpmError) as exc:
                    problems.append(f"key {i}: {exc}")
                    continue
                if sealed is not None and keys.key_digest(key) == sealed.digest:
                    candidates.insert(0, key)  # the key we sealed: try it first
                else:
                    candidates.append(key)
            before = self._status
            for key in candidates:
                status = self._open_store(key, escrowed=True)
                if status.state is VaultState.UNLOCKED:
                    return status
                problems.append(status.reason)
            state = VaultState.ERROR if self.state is VaultState.ERROR else VaultState.LOCKED
            summary = "; ".join(problems) or "no usable key"
            return self._set(
                self._status_with(
                    state,
                    f"{len(escrowed)} escrowed key(s) did not open the vault: {summary}",
                    mismatched_pcrs=before.mismatched_pcrs,
                    sealed_pcrs=before.sealed_pcrs,
                )
            )

    def _open_plain(self) -> VaultStatus:
        if self._keyfile.exists():
            return self._set(
                VaultStatus(
                    VaultState.ERROR,
                    "the vault was sealed with a TPM, and no TPM is in use now",
                )
            )
        store = PlainStore(self.paths)
        try:
            store.open()
        except StoreError as exc:
            return self._set(VaultStatus(VaultState.ERROR, str(exc), store=StoreKind.PLAIN))
        self._store = store
        return self._set(
            VaultStatus(
                VaultState.DISABLED, "no TPM: the vault is not encrypted", store=StoreKind.PLAIN
            )
        )

    def _no_sealed_key(self, kind: StoreKind | None) -> VaultStatus:
        """No sealed key: first boot, or a store whose key was lost."""
        if kind is not None:
            try:
                present = self._make_store(kind).exists()
            except StoreError as exc:
                return self._set(self._status_with(VaultState.ERROR, str(exc), store=kind))
            if present:
                if self.paths.allow_clean.exists():
                    return self._recreate()
                return self._set(
                    self._status_with(
                        VaultState.LOCKED,
                        "the vault has no sealed key; waiting for the controller's escrowed key",
                        store=kind,
                    )
                )
        return self._first_boot()

    def _first_boot(self) -> VaultStatus:
        assert self._tpm is not None
        try:
            write_atomic(self.paths.allow_clean, b"")
            kind = self._kind_or_none() or self._choose_kind()
            write_atomic(self.paths.store_kind, kind.value.encode() + b"\n", mode=0o644)
            key = keys.new_vault_key(self._tpm)
            sealed = keys.seal_key(self._tpm, key, self._policy_pcrs())
            self._keyfile.save(sealed)
        except TpmError as exc:
            return self._set(
                self._status_with(VaultState.ERROR, f"TPM failed making the vault key: {exc}")
            )
        except OSError as exc:
            return self._set(
                replace(
                    self._status_with(VaultState.ERROR, f"cannot write the vault key: {exc}"),
                    storage_error=is_storage_error(exc),
                )
            )
        log.info("vault key made and sealed to PCRs %s", list(sealed.pcrs))
        return self._open_store(key, sealed_pcrs=sealed.pcrs)

    def _recreate(self) -> VaultStatus:
        """Wipe the store and the key, then make both anew (allow-vault-clean only)."""
        kind = self._kind_or_none()
        if kind is not None:
            try:
                self._make_store(kind).wipe()
            except StoreError as exc:
                return self._set(
                    self._status_with(VaultState.ERROR, f"cannot wipe the vault: {exc}", store=kind)
                )
        self._keyfile.remove()
        self._status = VaultStatus(VaultState.LOCKED, "recreating")
        return self._first_boot()

    def _open_store(
        self, key: bytes, *, sealed_pcrs: tuple[int, ...] | None = None, escrowed: bool = False
    ) -> VaultStatus:
        """Open (or create) the store with ``key``; after an escrow, reseal to the current
        PCRs (the store proved the key right first, so a wrong key never replaces the sealed
        one)."""
        kind = self._kind_or_none() or self._choose_kind()
        store = self._make_store(kind)
        master = keys.derive(key, _FSCRYPT_PURPOSE, _FSCRYPT_LABEL, 64)
        notes: list[str] = []
        try:
            if store.exists():
                store.unlock(master)
            else:
                if not self.paths.allow_clean.exists():
                    log.warning("the vault store is missing: making a new, empty one")
                    notes.append("the store was missing and was made anew (empty)")
                store.create(master)
                write_atomic(self.paths.store_kind, kind.value.encode() + b"\n", mode=0o644)
        except StoreKeyMismatch as exc:
            which = "escrowed" if escrowed else "sealed"
            return self._set(
                self._status_with(
                    VaultState.LOCKED, f"the {which} key does not open the store: {exc}", store=kind
                )
            )
        except (StoreError, OSError) as exc:
            return self._set(
                replace(
                    self._status_with(VaultState.ERROR, str(exc), store=kind),
                    storage_error=is_storage_error(exc),
                )
            )
        self._store = store
        self._key = key
        if escrowed:
            assert self._tpm is not None
            # the controller returned this key, so it holds it: the store is not brand new
            self.paths.allow_clean.unlink(missing_ok=True)
            try:
                sealed = keys.seal_key(self._tpm, key, self._policy_pcrs())
                self._keyfile.save(sealed)
                sealed_pcrs = sealed.pcrs
                log.info("vault key resealed to the current PCRs %s", list(sealed.pcrs))
            except (TpmError, OSError) as exc:
                notes.append(f"opened with the escrowed key, but resealing failed: {exc}")
        return self._set(
            self._status_with(
                VaultState.UNLOCKED,
                "; ".join(notes),
                store=kind,
                mismatched_pcrs=(),
                sealed_pcrs=sealed_pcrs,
            )
        )

    # --- store selection

    def _kind_or_none(self) -> StoreKind | None:
        """The store kind recorded at creation, or found on disk."""
        try:
            raw = read_optional(self.paths.store_kind)
        except OSError:
            raw = None
        if raw is not None:
            try:
                return StoreKind(raw.decode().strip())
            except (UnicodeDecodeError, ValueError):
                log.warning("ignoring unreadable %s", self.paths.store_kind)
        if self.paths.image.exists():
            return StoreKind.IMAGE
        if self.paths.directory.is_dir():
            try:
                if self._fs.get_policy(self.paths.directory) is not None:
                    return StoreKind.DIRECTORY
            except FscryptError:
                pass
        return None

    def _choose_kind(self) -> StoreKind:
        mode = self._settings.store
        if mode is StoreMode.DIRECTORY:
            return StoreKind.DIRECTORY
        if mode is StoreMode.IMAGE:
            return StoreKind.IMAGE
        self.paths.persist.mkdir(parents=True, exist_ok=True)
        try:
            supported = self._fs.supported(self.paths.persist)
        except FscryptUnsupported:
            supported = False
        return StoreKind.DIRECTORY if supported else StoreKind.IMAGE

    def _make_store(self, kind: StoreKind) -> Store:
        return FscryptStore(
            kind, self.paths, self._fs, self._img, image_size=self._settings.image_size
        )

    def _policy_pcrs(self) -> tuple[int, ...]:
        """The controller-given sealing PCRs when saved and valid, else EVE's default."""
        try:
            raw = read_optional(self.paths.policy_pcrs)
        except OSError:
            raw = None
        if raw is None:
            return DEFAULT_SEAL_PCRS
        try:
            doc = json.loads(raw)
            return keys.check_seal_pcrs(doc["pcrs"] if isinstance(doc, dict) else doc)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("ignoring %s: %s", self.paths.policy_pcrs, exc)
            return DEFAULT_SEAL_PCRS

    # --- keys

    def derive_key(self, label: str, length: int = 32) -> bytes:
        """A key for ``label`` (e.g. ``"luks/<volume uuid>"``): HKDF-SHA256 of the vault key
        with info ``eve-agent/vault/app/<label>``.  Stable for the vault's life.  VaultNotOpen
        unless UNLOCKED."""
        with self._lock:
            if self.state is not VaultState.UNLOCKED or self._key is None:
                raise VaultNotOpen(f"no vault key: the vault is {self.state.value}")
            return keys.derive(self._key, _APP_PURPOSE, label, length)

    def keys_received(self, escrowed: list[bytes], policy_pcrs: list[int] | None) -> None:
        """After a successful attestation (the attestation client's ``KeyEscrow`` hook): take
        the controller's sealing PCR list, and open a locked vault with its escrowed keys.

        Never raises for vault problems: the status says what happened.
        """
        if policy_pcrs is not None:
            try:
                self.set_policy_pcrs(policy_pcrs)
            except (ValueError, VaultError) as exc:
                log.warning("controller PCR policy %s not taken: %s", policy_pcrs, exc)
        if self.state in (VaultState.UNLOCKED, VaultState.DISABLED):
            return
        status = self.open_with_escrow(escrowed)
        log.info("vault after attestation: %s %s", status.state.value, status.reason)

    def escrow_blob(self) -> bytes | None:
        """The ``AttestVolumeKeyData`` bytes to escrow with STORE_KEYS, or None when there is
        nothing to escrow (no TPM, vault not open).  Raises VaultError when the TPM fails."""
        with self._lock:
            if self._tpm is None or self._key is None or self.state is not VaultState.UNLOCKED:
                return None
            try:
                return keys.escrow_wrap(self._tpm, self._key)
            except (TpmError, VaultKeyError) as exc:
                raise VaultError(f"cannot wrap the vault key for escrow: {exc}") from exc

    def escrow_stored(self) -> None:
        """The controller accepted the escrow: the store is no longer brand new."""
        with self._lock:
            self.paths.allow_clean.unlink(missing_ok=True)
            self._status = replace(self._status, escrow_pending=False)

    def set_policy_pcrs(self, pcrs: Sequence[int] | None) -> None:
        """Save the controller's sealing PCR list (None: back to EVE's default) and reseal now
        when the vault is open.  ValueError for a list EVE would refuse (no PCR 0, or PCR 5)."""
        with self._lock:
            try:
                if pcrs is None:
                    self.paths.policy_pcrs.unlink(missing_ok=True)
                else:
                    indexes = keys.check_seal_pcrs(pcrs)
                    write_atomic(
                        self.paths.policy_pcrs,
                        json.dumps({"pcrs": list(indexes)}).encode() + b"\n",
                    )
            except OSError as exc:  # a full disk: the caller's error, not a crash
                raise VaultError(f"cannot save the sealing PCR list: {exc}") from exc
            wanted = self._policy_pcrs()
            if (
                self._tpm is not None
                and self._key is not None
                and self.state is VaultState.UNLOCKED
                and wanted != self._status.sealed_pcrs
            ):
                try:
                    sealed = keys.seal_key(self._tpm, self._key, wanted)
                    self._keyfile.save(sealed)
                except (TpmError, OSError) as exc:
                    raise VaultError(f"cannot reseal the vault key: {exc}") from exc
                self._status = replace(self._status, sealed_pcrs=sealed.pcrs)

    def lock(self) -> VaultStatus:
        """Lock the store (remove its key, unmount the image) and forget the key.  For tests
        and maintenance; the daemon does not call it on shutdown."""
        with self._lock:
            if self.state is not VaultState.UNLOCKED or self._store is None:
                return self._status
            store = self._store
            try:
                if not isinstance(store, PlainStore):
                    store.lock()
            except StoreError as exc:
                return self._set(self._status_with(VaultState.ERROR, str(exc)))
            self._key = None
            self._store = None
            return self._set(self._status_with(VaultState.LOCKED, "locked by request"))


__all__ = [
    "FscryptStore",
    "PlainStore",
    "Store",
    "StoreError",
    "StoreKeyMismatch",
    "StoreKind",
    "StoreMode",
    "VaultError",
    "VaultManager",
    "VaultNotOpen",
    "VaultPaths",
    "VaultSettings",
    "VaultState",
    "VaultStatus",
]
