"""EVE object-level encryption on the agent: decrypting the ``CipherBlock`` secrets in config.

The format, the checks and the controller's half live in :mod:`agent.wire.objcipher` (pure, no
TPM, shared with the reference controller).  This module is the agent's front end to it: the
same API, and a failing ECDH (``Tpm.ecdh_shared_point`` raising ``TpmError``) is a
:class:`CipherError` like every other reason a block cannot be decrypted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.drivers.tpm import TpmError
from agent.vault.keys import VaultKeyError
from agent.wire import objcipher
from agent.wire.objcipher import (
    HASH_16,
    HASH_32,
    CipherError,
    DeviceCipherKeys,
    SharedPoint,
    cert_hash,
    ecdh_point,
    encrypt,
    encrypt_block,
    make_context,
    software_shared_point,
)
from agent.wire.pb.evecommon import acipherinfo_pb2

#: What a failing ECDH may raise besides ValueError: the TPM's and the vault's errors.
_ECDH_ERRORS: tuple[type[Exception], ...] = (TpmError, VaultKeyError)

Contexts = Iterable[acipherinfo_pb2.CipherContext] | Mapping[str, acipherinfo_pb2.CipherContext]


def decrypt(
    block: acipherinfo_pb2.CipherBlock, contexts: Contexts, keys: DeviceCipherKeys
) -> bytes:
    """The clear bytes of ``block``; CipherError when anything does not check out (a TPM
    failure included)."""
    return objcipher.decrypt(block, contexts, keys, ecdh_errors=_ECDH_ERRORS)


def decrypt_block(
    block: acipherinfo_pb2.CipherBlock, contexts: Contexts, keys: DeviceCipherKeys
) -> acipherinfo_pb2.EncryptionBlock:
    """Decrypt and parse the ``EncryptionBlock``; CipherError on any failure."""
    return objcipher.decrypt_block(block, contexts, keys, ecdh_errors=_ECDH_ERRORS)


__all__ = [
    "HASH_16",
    "HASH_32",
    "CipherError",
    "DeviceCipherKeys",
    "SharedPoint",
    "cert_hash",
    "decrypt",
    "decrypt_block",
    "ecdh_point",
    "encrypt",
    "encrypt_block",
    "make_context",
    "software_shared_point",
]
