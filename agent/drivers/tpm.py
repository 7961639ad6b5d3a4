"""The TPM driver interface: what the agent needs from a TPM 2.0, and nothing more.

Two implementations stand behind it: :mod:`agent.drivers.tpm_device` (tpm2-pytss, talking to
``/dev/tpmrm0`` or to a swtpm socket) and :mod:`agent.drivers.tpm_fake` (in memory, for unit
tests, raising the same errors).  One contract test suite runs against both.

Keys live at EVE's persistent handles (``pkg/pillar/evetpm/tpm.go``) so a node provisioned by
this agent looks like an EVE node to anyone who inspects its TPM.  Private keys never leave the
TPM; the agent only ever holds public keys and opaque blobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa


class KeyRole(IntEnum):
    """Persistent handles, as EVE allocates them."""

    EK = 0x81000001
    SRK = 0x81000002
    AK = 0x81000003  # restricted signing key for quotes (ECC P-256)
    ECDH = 0x81000005  # ECDH key for object encryption and the escrow wrap
    DEVICE = 0x817FFFFF  # the device certificate's key: signs every envelope


#: PCRs the quote covers (SHA-256 bank) and those whose values are reported beside it.
QUOTE_PCRS: tuple[int, ...] = tuple(range(16))
REPORTED_PCRS: tuple[int, ...] = tuple(range(24))
#: EVE's default sealing set for the vault key (DefaultDiskKeySealingPCRs): SHA-256 PCRs 0-14
#: without 5 (the GPT, which changes with disk layout) and 15.
DEFAULT_SEAL_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14)


class TpmError(Exception):
    """Base of all TPM driver errors."""


class TpmUnavailable(TpmError):
    """The TPM cannot be reached (device missing, swtpm not answering).  Temporary."""


class TpmPolicyError(TpmError):
    """An unseal was refused because the PCR policy no longer holds (the boot state changed)."""


class TpmNotProvisioned(TpmError):
    """A key is used before :meth:`Tpm.provision` made it."""


@dataclass(frozen=True)
class Quote:
    """A TPM2_Quote result in the form EVE puts it on the wire (``attest.ZAttestQuote``).

    ``attest`` is the marshalled TPMS_ATTEST (it contains the nonce as extraData and the PCR
    digest); ``signature`` is encoded exactly as EVE's tpmmgr encodes it for the controller.
    """

    attest: bytes
    signature: bytes
    pcrs: tuple[int, ...]


class Tpm(Protocol):
    """A provisioned TPM.  Methods raise TpmError subclasses; none returns a private key."""

    def provision(self) -> None:
        """Create the SRK, AK, ECDH and device keys (and the EK where missing) at their
        persistent handles.  Idempotent: existing keys are kept (a new device key would be a
        new device)."""
        ...

    def public_key(self, role: KeyRole) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The public key of a provisioned key.  Raises TpmNotProvisioned."""
        ...

    def public_area(self, role: KeyRole) -> bytes:
        """The marshalled TPM2B_PUBLIC of the key (ZCert metadata TPM2_PUBLIC)."""
        ...

    def ek_certificate(self) -> bytes | None:
        """The EK certificate (DER) from the TPM's NV, or None when the TPM has none."""
        ...

    def sign_digest(self, role: KeyRole, digest: bytes) -> bytes:
        """ECDSA-sign a 32-byte SHA-256 digest with DEVICE (unrestricted); raw ``r || s``."""
        ...

    def quote(self, nonce: bytes, pcrs: Sequence[int] = QUOTE_PCRS) -> Quote:
        """TPM2_Quote with the AK over the SHA-256 ``pcrs``, qualifying data = ``nonce``."""
        ...

    def read_pcrs(self, pcrs: Sequence[int] = REPORTED_PCRS) -> dict[int, bytes]:
        """Current SHA-256 PCR values."""
        ...

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """Extend a SHA-256 PCR with a 32-byte digest."""
        ...

    def ecdh_shared_point(self, peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        """TPM2_ECDH_ZGen with the ECDH key: the shared point (x, y)."""
        ...

    def seal(self, secret: bytes, pcrs: Sequence[int] = DEFAULT_SEAL_PCRS) -> bytes:
        """Seal up to 128 bytes under the SRK to the current values of ``pcrs``; an opaque
        blob to store anywhere."""
        ...

    def unseal(self, blob: bytes) -> bytes:
        """Open a sealed blob; raises TpmPolicyError when the PCRs changed since sealing."""
        ...

    def random(self, size: int) -> bytes:
        """``size`` bytes from the TPM's RNG."""
        ...

    def close(self) -> None:
        """Release the connection.  Idempotent."""
        ...
