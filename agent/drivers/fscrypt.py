"""fscrypt: the kernel's per-directory encryption, driven through its ioctls (``linux/fscrypt.h``).

This is the only module that issues the fscrypt ioctls.  The vault uses *v2 policies* only:

* a 64-byte raw master key is added to the filesystem's keyring with
  ``FS_IOC_ADD_ENCRYPTION_KEY``; the kernel answers with the key's 16-byte identifier
  (an HKDF-SHA512 of the key), which is what a v2 policy names;
* ``FS_IOC_SET_ENCRYPTION_POLICY`` on an *empty* directory makes it (and everything created in
  it) encrypted: AES-256-XTS for contents, AES-256-CTS for file names, as EVE's fscrypt does;
* ``FS_IOC_REMOVE_ENCRYPTION_KEY`` locks it again: the kernel evicts the key and every unused
  inode it decrypted, so names read back as ciphertext and contents cannot be opened.

The structures are packed by hand with :mod:`struct` (layouts and ioctl numbers from the UAPI
header, stable since Linux 5.4).  Errors come back as a small typed set rooted at
:class:`FscryptError`; removing a key that is not there is success ("already gone").

:class:`KernelFscrypt` is the real driver; :class:`FakeFscrypt` keeps policies and keys in memory
and raises the same errors, so the vault's logic is unit-tested without root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

# --- linux/fscrypt.h ------------------------------------------------------------------------

FSCRYPT_POLICY_V2 = 2
FSCRYPT_MODE_AES_256_XTS = 1
FSCRYPT_MODE_AES_256_CTS = 4
FSCRYPT_POLICY_FLAGS_PAD_32 = 0x03
FSCRYPT_KEY_IDENTIFIER_SIZE = 16
FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER = 2
FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY = 0x1
FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS = 0x2
#: AES-256-XTS takes a 64-byte key; a v2 master key must be at least that long.
MASTER_KEY_SIZE = 64

# struct fscrypt_policy_v2: version, contents mode, filenames mode, flags, log2_data_unit_size,
# 3 reserved bytes, master_key_identifier[16]  (24 bytes)
_POLICY_V2 = struct.Struct("=BBBBB3x16s")
# struct fscrypt_key_specifier: u32 type, u32 reserved, union u[32]  (40 bytes)
_KEY_SPEC = struct.Struct("=II32s")
# struct fscrypt_add_key_arg: key_spec, u32 raw_size, u32 key_id, u32 reserved[8], u8 raw[]
_ADD_KEY = struct.Struct("=40sII32x")
# struct fscrypt_remove_key_arg: key_spec, u32 removal_status_flags, u32 reserved[5]
_REMOVE_KEY = struct.Struct("=40sI20x")
# struct fscrypt_get_key_status_arg: key_spec, u32 reserved[6], u32 status, u32 status_flags,
# u32 user_count, u32 out_reserved[13]
_KEY_STATUS = struct.Struct("=40s24xIII52x")
# struct fscrypt_get_policy_ex_arg: u64 policy_size, union policy (v2 is the largest, 24 bytes)
_POLICY_EX = struct.Struct("=Q24s")


def _ioc(direction: int, nr: int, size: int) -> int:
    """``_IOC('f', nr, size)`` as the generic asm/ioctl.h encodes it (x86, arm64, riscv)."""
    return (direction << 30) | (size << 16) | (ord("f") << 8) | nr


_IOC_WRITE = 1  # userspace writes, the kernel reads: the kernel's _IOW
_IOC_READ = 2
FS_IOC_SET_ENCRYPTION_POLICY = _ioc(_IOC_READ, 19, 12)  # _IOR('f', 19, struct fscrypt_policy_v1)
FS_IOC_GET_ENCRYPTION_POLICY_EX = _ioc(_IOC_READ | _IOC_WRITE, 22, 9)  # _IOWR(.., __u8[9])
FS_IOC_ADD_ENCRYPTION_KEY = _ioc(_IOC_READ | _IOC_WRITE, 23, _ADD_KEY.size)
FS_IOC_REMOVE_ENCRYPTION_KEY = _ioc(_IOC_READ | _IOC_WRITE, 24, _REMOVE_KEY.size)
FS_IOC_GET_ENCRYPTION_KEY_STATUS = _ioc(_IOC_READ | _IOC_WRITE, 26, _KEY_STATUS.size)


# --- errors and values ----------------------------------------------------------------------


class FscryptError(Exception):
    """Base of the fscrypt driver errors.  ``errno`` is the kernel's answer when there was one."""

    def __init__(self, message: str, *, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class FscryptUnsupported(FscryptError):
    """The filesystem (or kernel) cannot encrypt: no ``encrypt`` feature, tmpfs, overlay..."""


class FscryptNotEmpty(FscryptError):
    """A policy can only be set on an empty directory."""


class FscryptPolicyConflict(FscryptError):
    """The directory already has a different policy (or is inside an encrypted directory)."""


class FscryptKeyMissing(FscryptError):
    """The directory's key is not in the filesystem keyring."""


class FscryptPermission(FscryptError):
    """The caller may not do this (not root, not the directory's owner)."""


class KeyStatus(IntEnum):
    """``FSCRYPT_KEY_STATUS_*``."""

    ABSENT = 1
    PRESENT = 2
    INCOMPLETELY_REMOVED = 3


@dataclass(frozen=True)
class PolicyV2:
    """A v2 encryption policy as the kernel reports it."""

    contents_mode: int
    filenames_mode: int
    flags: int
    identifier: bytes

    @property
    def is_vault_policy(self) -> bool:
        """AES-256-XTS contents and AES-256-CTS names, the only policy the vault sets."""
        return (
            self.contents_mode == FSCRYPT_MODE_AES_256_XTS
            and self.filenames_mode == FSCRYPT_MODE_AES_256_CTS
        )


@dataclass(frozen=True)
class RemovalResult:
    """What ``FS_IOC_REMOVE_ENCRYPTION_KEY`` said.  ``files_busy``: some files were open, so the
    key is only *incompletely* removed until they are closed (and removal is retried)."""

    files_busy: bool = False
    other_users: bool = False


def _map_errno(exc: OSError, action: str, path: Path) -> FscryptError:
    code = exc.errno
    message = f"{action} on {path}: {os.strerror(code) if code else exc}"
    if code in (errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS):
        return FscryptUnsupported(message, errno_=code)
    if code == errno.ENOTEMPTY:
        return FscryptNotEmpty(message, errno_=code)
    if code == errno.EEXIST:
        return FscryptPolicyConflict(message, errno_=code)
    if code == errno.ENOKEY:
        return FscryptKeyMissing(message, errno_=code)
    if code in (errno.EACCES, errno.EPERM):
        return FscryptPermission(message, errno_=code)
    return FscryptError(message, errno_=code)


class Fscrypt(Protocol):
    """The fscrypt operations the vault needs.  Every method raises FscryptError subclasses.

    ``where`` is any path on the filesystem (keys belong to the filesystem, not a directory).
    """

    def supported(self, directory: Path) -> bool:
        """True when ``directory``'s filesystem can hold encrypted directories."""
        ...

    def get_policy(self, directory: Path) -> PolicyV2 | None:
        """The directory's v2 policy, or None when it is not encrypted.  Raises
        FscryptUnsupported when the filesystem cannot encrypt, FscryptError for a v1 policy."""
        ...

    def set_policy(self, directory: Path, identifier: bytes) -> None:
        """Make the empty ``directory`` encrypted with the key ``identifier`` (the key must be
        present, unless the caller has CAP_FOWNER).  Setting the same policy again is a
        no-op."""
        ...

    def add_key(self, where: Path, raw_key: bytes) -> bytes:
        """Add a 64-byte master key to the filesystem; returns its identifier.  Idempotent."""
        ...

    def remove_key(self, where: Path, identifier: bytes) -> RemovalResult:
        """Remove (lock) a key; a key that is not there is success.  The key's secret is wiped
        at once; ``files_busy`` says some decrypted inodes stayed cached (readable) - the key
        is then INCOMPLETELY_REMOVED until they are evicted (or the filesystem unmounted)."""
        ...

    def key_status(self, where: Path, identifier: bytes) -> KeyStatus:
        """Whether the key is in the filesystem keyring."""
        ...


def _check_identifier(identifier: bytes) -> None:
    if len(identifier) != FSCRYPT_KEY_IDENTIFIER_SIZE:
        raise FscryptError(f"a key identifier has 16 bytes, not {len(identifier)}")


def _check_raw_key(raw_key: bytes) -> None:
    if len(raw_key) != MASTER_KEY_SIZE:
        raise FscryptError(
            f"the vault's master key has {MASTER_KEY_SIZE} bytes, not {len(raw_key)}"
        )


def _key_spec(identifier: bytes) -> bytes:
    return _KEY_SPEC.pack(FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, 0, identifier)


@contextlib.contextmanager
def _opened(path: Path, action: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise _map_errno(exc, action, path) from exc
    try:
        yield fd
    finally:
        os.close(fd)


class KernelFscrypt:
    """The real driver: ioctls on the running kernel.  Needs root for keys (CAP_SYS_ADMIN)."""

    def supported(self, directory: Path) -> bool:
        try:
            self.get_policy(directory)
        except FscryptUnsupported:
            return False
        except FscryptError:
            # a v1 policy or an odd answer: the filesystem does support encryption
            return True
        return True

    def get_policy(self, directory: Path) -> PolicyV2 | None:
        buf = bytearray(_POLICY_EX.pack(24, b""))
        with _opened(directory, "get encryption policy") as fd:
            try:
                fcntl.ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, buf)
            except OSError as exc:
                if exc.errno == errno.ENODATA:
                    return None
                raise _map_errno(exc, "get encryption policy", directory) from exc
        _, raw = _POLICY_EX.unpack(bytes(buf))
        version = raw[0]
        if version != FSCRYPT_POLICY_V2:
            raise FscryptError(f"{directory} has a v{version} encryption policy, not v2")
        _, contents, filenames, flags, _, identifier = _POLICY_V2.unpack(raw)
        return PolicyV2(contents, filenames, flags, identifier)

    def set_policy(self, directory: Path, identifier: bytes) -> None:
        _check_identifier(identifier)
        policy = _POLICY_V2.pack(
            FSCRYPT_POLICY_V2,
            FSCRYPT_MODE_AES_256_XTS,
            FSCRYPT_MODE_AES_256_CTS,
            FSCRYPT_POLICY_FLAGS_PAD_32,
            0,
            identifier,
        )
        with _opened(directory, "set encryption policy") as fd:
            try:
                fcntl.ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, policy)
            except OSError as exc:
                raise _map_errno(exc, "set encryption policy", directory) from exc

    def add_key(self, where: Path, raw_key: bytes) -> bytes:
        _check_raw_key(raw_key)
        buf = bytearray(_ADD_KEY.pack(_key_spec(bytes(16)), len(raw_key), 0) + raw_key)
        try:
            with _opened(where, "add encryption key") as fd:
                try:
                    fcntl.ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, buf)
                except OSError as exc:
                    raise _map_errno(exc, "add encryption key", where) from exc
            spec = bytes(buf[: _KEY_SPEC.size])
        finally:
            buf[:] = bytes(len(buf))  # do not leave the key in this buffer
        _, _, union = _KEY_SPEC.unpack(spec)
        return bytes(union[:FSCRYPT_KEY_IDENTIFIER_SIZE])

    def remove_key(self, where: Path, identifier: bytes) -> RemovalResult:
        _check_identifier(identifier)
        buf = bytearray(_REMOVE_KEY.pack(_key_spec(identifier), 0))
        with _opened(where, "remove encryption key") as fd:
            try:
                fcntl.ioctl(fd, FS_IOC_REMOVE_ENCRYPTION_KEY, buf)
            except OSError as exc:
                if exc.errno == errno.ENOKEY:
                    return RemovalResult()  # already gone
                raise _map_errno(exc, "remove encryption key", where) from exc
        _, flags = _REMOVE_KEY.unpack(bytes(buf))
        return RemovalResult(
            files_busy=bool(flags & FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY),
            other_users=bool(flags & FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS),
        )

    def key_status(self, where: Path, identifier: bytes) -> KeyStatus:
        _check_identifier(identifier)
        buf = bytearray(_KEY_STATUS.pack(_key_spec(identifier), 0, 0, 0))
        with _opened(where, "get encryption key status") as fd:
            try:
                fcntl.ioctl(fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, buf)
            except OSError as exc:
                raise _map_errno(exc, "get encryption key status", where) from exc
        _, status, _, _ = _KEY_STATUS.unpack(bytes(buf))
        try:
            return KeyStatus(status)
        except ValueError as exc:
            raise FscryptError(f"unknown key status {status} for {where}") from exc


class FakeFscrypt:
    """fscrypt in memory, for unit tests: keys in one keyring, policies on the directories.

    It checks what the kernel checks (empty directory, key present to set a policy unless
    root, conflicting policies, 64-byte keys) and raises the same errors, but encrypts nothing.
    A policy is kept in a ``user.`` extended attribute of the directory, so it lives and dies
    with the directory as a real one does.  The identifier is a hash of the key, as with the
    kernel (though not the same hash).  ``reboot()`` forgets the keys.  ``unsupported`` and
    ``encrypting`` list filesystem roots that cannot / can encrypt: the nearest listed ancestor
    of a path decides (unlisted: can).
    """

    XATTR = "user.eve-agent.fake-fscrypt"

    def __init__(self) -> None:
        self.keys: dict[bytes, int] = {}  # identifier -> number of adds
        self.unsupported: set[Path] = set()
        self.encrypting: set[Path] = set()

    def reboot(self) -> None:
        self.keys.clear()

    def _check_supported(self, path: Path, action: str) -> None:
        if not path.exists():
            raise FscryptError(f"{action} on {path}: No such file or directory", errno_=2)
        resolved = path.absolute()
        for candidate in (resolved, *resolved.parents):
            if candidate in self.encrypting:
                return
            if candidate in self.unsupported:
                raise FscryptUnsupported(
                    f"{action} on {path}: Operation not supported", errno_=errno.EOPNOTSUPP
                )

    def supported(self, directory: Path) -> bool:
        try:
            self._check_supported(directory, "get encryption policy")
        except FscryptUnsupported:
            return False
        return True

    def get_policy(self, directory: Path) -> PolicyV2 | None:
        self._check_supported(directory, "get encryption policy")
        try:
            identifier = os.getxattr(directory, self.XATTR)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return None
            raise _map_errno(exc, "get encryption policy", directory) from exc
        return _vault_policy(identifier)

    def set_policy(self, directory: Path, identifier: bytes) -> None:
        _check_identifier(identifier)
        existing = self.get_policy(directory)
        if existing is not None:
            if existing == _vault_policy(identifier):
                return
            raise FscryptPolicyConflict(f"set encryption policy on {directory}: File exists")
        if any(directory.iterdir()):
            raise FscryptNotEmpty(f"set encryption policy on {directory}: Directory not empty")
        if identifier not in self.keys and os.geteuid() != 0:
            # the kernel lets CAP_FOWNER set a policy for a key it does not hold
            raise FscryptKeyMissing(
                f"set encryption policy on {directory}: Required key not available"
            )
        os.setxattr(directory, self.XATTR, identifier)

    def add_key(self, where: Path, raw_key: bytes) -> bytes:
        _check_raw_key(raw_key)
        self._check_supported(where, "add encryption key")
        identifier = hashlib.sha512(b"fake fscrypt identifier" + raw_key).digest()[:16]
        self.keys[identifier] = self.keys.get(identifier, 0) + 1
        return identifier

    def remove_key(self, where: Path, identifier: bytes) -> RemovalResult:
        _check_identifier(identifier)
        self._check_supported(where, "remove encryption key")
        self.keys.pop(identifier, None)
        return RemovalResult()

    def key_status(self, where: Path, identifier: bytes) -> KeyStatus:
        _check_identifier(identifier)
        self._check_supported(where, "get encryption key status")
        return KeyStatus.PRESENT if identifier in self.keys else KeyStatus.ABSENT


def _vault_policy(identifier: bytes) -> PolicyV2:
    return PolicyV2(
        FSCRYPT_MODE_AES_256_XTS,
        FSCRYPT_MODE_AES_256_CTS,
        FSCRYPT_POLICY_FLAGS_PAD_32,
        identifier,
    )


__all__ = [
    "MASTER_KEY_SIZE",
    "FakeFscrypt",
    "Fscrypt",
    "FscryptError",
    "FscryptKeyMissing",
    "FscryptNotEmpty",
    "FscryptPermission",
    "FscryptPolicyConflict",
    "FscryptUnsupported",
    "KernelFscrypt",
    "KeyStatus",
    "PolicyV2",
    "RemovalResult",
]
