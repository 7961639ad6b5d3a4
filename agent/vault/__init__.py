"""The vault: the node's encrypted store and the keys around it (EVE's vaultmgr).

- :mod:`agent.vault.keys` - the vault key: sealing to PCRs, escrow wrap/unwrap, HKDF labels;
- :mod:`agent.vault.manager` - :class:`VaultManager`, its state machine and the fscrypt store;
- :mod:`agent.vault.cipher` - EVE object-level encryption (``CipherBlock`` secrets in config).

See docs/vault.md.
"""

from agent.vault.manager import (
    StoreKind,
    StoreMode,
    VaultError,
    VaultManager,
    VaultNotOpen,
    VaultPaths,
    VaultSettings,
    VaultState,
    VaultStatus,
)

__all__ = [
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
