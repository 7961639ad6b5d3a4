"""The TPM driver interface: what the agent needs from a TPM 2.0, and nothing more.

Two implementations stand behind it: :mod:`agent.drivers.tpm_device` (tpm2-pytss, talking to
``/dev/tpmrm0`` or to a swtpm socket) and :mod:`agent.drivers.tpm_fake` (in memory, for unit
tests, raising the same errors).  One contract test suite runs against both.

Keys live at EVE's persistent handles (``pkg/pillar/evetpm/tpm.go``) so a node provisioned by
this agent looks like an EVE node to anyone who inspects its TPM.  Private keys never leave the
TPM; the agent only ever holds public keys and opaque blobs.

The key templates are EVE's (``evetpm/tpm.go`` ``Default*Template``), with two deliberate
differences: the SRK is ECC P-256 rather than EVE's RSA-2048 (same attributes, so EVE's
``CreateKey`` would keep it), and the device key's template carries a ``unique`` value so that it
is not the same key pair as the ECDH key (EVE's two templates are identical, and a primary key is
a function of the hierarchy seed and the template, so on EVE 0x817FFFFF and 0x81000005 hold one
key pair).  The EK is the TCG default RSA-2048 EK in the endorsement hierarchy, so it matches the
manufacturer's EK certificate in NV.  All keys have an empty authorisation value (EVE gives the
device key a password kept in NV 0x1600000).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent.wire.tpmwire import AES128_CFB, Alg, Curve, Public, Scheme
from agent.wire.tpmwire import ObjectAttr as A


class KeyRole(IntEnum):
    """Persistent handles, as EVE allocates them."""

    EK = 0x81000001
    SRK = 0x81000002
    #: Restricted ECDSA-SHA256 signing key for quotes (ECC P-256): EVE's ``TpmQuoteKeyHdl``.
    #: (EVE's 0x81000003, ``TpmAIKHdl``, is an RSA key for vTPM guests that the agent does not
    #: make; the quote key certified as DEVICE_RESTRICTED_SIGNING is this one.)
    AK = 0x81000004
    ECDH = 0x81000005  # ECDH key for object encryption and the escrow wrap
    DEVICE = 0x817FFFFF  # the device certificate's key: signs every envelope


#: PCRs the quote covers (SHA-256 bank) and those whose values are reported beside it.
QUOTE_PCRS: tuple[int, ...] = tuple(range(16))
REPORTED_PCRS: tuple[int, ...] = tuple(range(24))
#: EVE's default sealing set for the vault key (DefaultDiskKeySealingPCRs): SHA-256 PCRs 0-14
#: without 5 (the GPT, which changes with disk layout) and 15.
DEFAULT_SEAL_PCRS: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14)
#: Number of PCRs in the SHA-256 bank.
PCR_COUNT = 24
#: Longest quote nonce: the qualifying data must fit a TPMT_HA of the SHA-256 bank, and EVE's
#: tpmmgr accepts 12-32 bytes (the 12-byte floor is the attestation client's business).
MAX_NONCE_SIZE = 32
#: Longest secret ``seal`` takes (MAX_SYM_DATA).
MAX_SEAL_SIZE = 128
#: NV index of the manufacturer's RSA-2048 EK certificate (TCG EK Credential Profile).
EK_CERT_NV_INDEX = 0x01C00002

_EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_P256 = Curve.NIST_P256
_UNRESTRICTED = A.SENSITIVE_DATA_ORIGIN | A.USER_WITH_AUTH | A.NO_DA

#: The templates ``provision`` creates primaries from (the EK in the endorsement hierarchy, the
#: rest in the owner hierarchy), as marshalled TPMT_PUBLIC values with an empty key.
TEMPLATES: Mapping[KeyRole, Public] = {
    KeyRole.EK: Public(
        Alg.RSA,
        Alg.SHA256,
        A.FIXED_TPM
        | A.FIXED_PARENT
        | A.SENSITIVE_DATA_ORIGIN
        | A.ADMIN_WITH_POLICY
        | A.RESTRICTED
        | A.DECRYPT,
        auth_policy=_EK_POLICY,
        symmetric=AES128_CFB,
        key_bits=2048,
        unique=bytes(256),
    ),
    KeyRole.SRK: Public(
        Alg.ECC,
        Alg.SHA256,
        A.FIXED_TPM | A.FIXED_PARENT | _UNRESTRICTED | A.RESTRICTED | A.DECRYPT,
        symmetric=AES128_CFB,
        curve=_P256,
        ecc_point=(bytes(32), bytes(32)),
    ),
    KeyRole.AK: Public(
        Alg.ECC,
        Alg.SHA256,
        A.FIXED_TPM | A.FIXED_PARENT | _UNRESTRICTED | A.RESTRICTED | A.SIGN_ENCRYPT,
        scheme=Scheme(Alg.ECDSA, Alg.SHA256),
        curve=_P256,
    ),
    KeyRole.ECDH: Public(
        Alg.ECC, Alg.SHA256, _UNRESTRICTED | A.SIGN_ENCRYPT | A.DECRYPT, curve=_P256
    ),
    KeyRole.DEVICE: Public(
        Alg.ECC,
        Alg.SHA256,
        _UNRESTRICTED | A.SIGN_ENCRYPT | A.DECRYPT,
        curve=_P256,
        ecc_point=(b"eve-agent device key", b""),
    ),
}

#: The sealed data object: EVE's (``evetpm/enc_seal.go`` ``sealDiskKeyEncrypted``), a
#: KEYEDHASH object with a NULL scheme usable only through its PolicyPCR ``authPolicy``.
SEALED_TEMPLATE = Public(
    Alg.KEYEDHASH, Alg.SHA256, A.FIXED_TPM | A.FIXED_PARENT | A.ADMIN_WITH_POLICY
)


class TpmError(Exception):
    """Base of all TPM driver errors."""


class TpmUnavailable(TpmError):
    """The TPM cannot be reached (device missing, swtpm not answering).  Temporary: the next
    call tries to connect again."""


class TpmPolicyError(TpmError):
    """An unseal was refused because the PCR policy no longer holds (the boot state changed)."""


class TpmNotProvisioned(TpmError):
    """A key is used before :meth:`Tpm.provision` made it."""


@dataclass(frozen=True)
class Quote:
    """A TPM2_Quote result in the form EVE puts it on the wire (``attest.ZAttestQuote``).

    ``attest`` is the marshalled TPMS_ATTEST (the TPM2B_ATTEST body without its size; it
    contains the nonce as extraData and the PCR digest); ``signature`` is the AK's ECDSA
    signature over SHA-256(attest) as DER ``SEQUENCE {r, s}``, exactly as EVE's tpmmgr encodes
    it (``getQuote``: ``asn1.Marshal(struct{R, S *big.Int})``); ``pcrs`` the quoted SHA-256
    PCR indexes, ascending.  Check one with :func:`agent.wire.tpmwire.verify_quote`.
    """

    attest: bytes
    signature: bytes
    pcrs: tuple[int, ...]


class Tpm(Protocol):
    """A provisioned TPM.  Methods raise TpmError subclasses; none returns a private key.

    Arguments outside the contract (a PCR index past 23, a digest of the wrong size, a nonce
    over 32 bytes...) raise ValueError before the TPM is asked.  Implementations serialise
    their calls; they are blocking, so async callers use ``asyncio.to_thread``.
    """

    def provision(self) -> None:
        """Create the SRK, AK, ECDH and device keys (and the EK where missing) at their
        persistent handles.  Idempotent: existing keys are kept (a new device key would be a
        new device)."""
        ...

    def public_key(self, role: KeyRole) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The public key of a provisioned key.  Raises TpmNotProvisioned."""
        ...

    def public_area(self, role: KeyRole) -> bytes:
        """The marshalled TPM2B_PUBLIC of the key, size prefix included: what EVE sends as the
        EK certificate's ZCert metadata TPM2_PUBLIC (``getEkCertMetaData``:
        ``tpmutil.Pack(tpmutil.U16Bytes(pub.Encode()))``).  Raises TpmNotProvisioned."""
        ...

    def ek_certificate(self) -> bytes | None:
        """The manufacturer's RSA EK certificate (DER) from NV index 0x01C00002, or None when
        the TPM has none.  (EVE does not send this one: it sends an EK certificate it issues
        itself with the device key.)"""
        ...

    def sign_digest(self, role: KeyRole, digest: bytes) -> bytes:
        """ECDSA-sign a 32-byte SHA-256 digest with DEVICE (unrestricted); raw ``r || s``, 64
        bytes.  ``role`` must be KeyRole.DEVICE (ValueError otherwise)."""
        ...

    def quote(self, nonce: bytes, pcrs: Sequence[int] = QUOTE_PCRS) -> Quote:
        """TPM2_Quote with the AK over the SHA-256 ``pcrs``, qualifying data = ``nonce`` (at
        most MAX_NONCE_SIZE bytes)."""
        ...

    def read_pcrs(self, pcrs: Sequence[int] = REPORTED_PCRS) -> dict[int, bytes]:
        """Current SHA-256 PCR values."""
        ...

    def extend_pcr(self, index: int, digest: bytes) -> None:
        """Extend a SHA-256 PCR with a 32-byte digest: new = SHA-256(old || digest).  PCRs
        17-22 belong to higher localities: extending them raises TpmError."""
        ...

    def ecdh_shared_point(self, peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        """TPM2_ECDH_ZGen with the ECDH key and a P-256 ``peer``: the shared point (x, y).

        EVE derives its AES-256 keys as SHA-256(x || y), each coordinate left-padded to 32
        bytes (``evetpm/encryptdecypt.go`` ``Sha256FromECPoint``): with the controller's ECDH
        certificate key for object encryption, with the device certificate key for the vault
        key escrow."""
        ...

    def seal(self, secret: bytes, pcrs: Sequence[int] = DEFAULT_SEAL_PCRS) -> bytes:
        """Seal 1 to 128 bytes under the SRK to the current values of ``pcrs``; an opaque
        blob to store anywhere (format: :class:`agent.wire.tpmwire.SealedBlob`).  Only this
        TPM can open it."""
        ...

    def unseal(self, blob: bytes) -> bytes:
        """Open a sealed blob; raises TpmPolicyError when the PCRs changed since sealing and
        TpmError when the blob is malformed or was sealed by another TPM."""
        ...

    def random(self, size: int) -> bytes:
        """``size`` bytes from the TPM's RNG."""
        ...

    def close(self) -> None:
        """Release the connection.  Idempotent."""
        ...


# --- argument checks shared by the implementations (ValueError before the TPM is asked) --------


def check_pcrs(pcrs: Sequence[int], *, limit: int = PCR_COUNT) -> tuple[int, ...]:
    """``pcrs`` as sorted unique indexes; ValueError when empty or out of ``range(limit)``."""
    indexes = tuple(sorted(set(pcrs)))
    if not indexes:
        raise ValueError("no PCR selected")
    if any(not isinstance(i, int) or isinstance(i, bool) for i in indexes):
        raise ValueError(f"PCR indexes must be integers: {pcrs!r}")
    if indexes[0] < 0 or indexes[-1] >= limit:
        raise ValueError(f"PCR indexes must be in 0..{limit - 1}: {list(indexes)}")
    return indexes


def check_digest(digest: bytes, what: str = "digest") -> bytes:
    """A 32-byte SHA-256 digest, or ValueError."""
    if not isinstance(digest, bytes | bytearray) or len(digest) != 32:
        raise ValueError(f"{what} must be 32 bytes (SHA-256)")
    return bytes(digest)


def check_nonce(nonce: bytes) -> bytes:
    if not isinstance(nonce, bytes | bytearray) or len(nonce) > MAX_NONCE_SIZE:
        raise ValueError(f"quote nonce must be bytes, at most {MAX_NONCE_SIZE}")
    return bytes(nonce)


def check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or not 0 < len(secret) <= MAX_SEAL_SIZE:
        raise ValueError(f"a sealed secret is 1 to {MAX_SEAL_SIZE} bytes")
    return bytes(secret)


def check_signing_role(role: KeyRole) -> None:
    if role is not KeyRole.DEVICE:
        raise ValueError(f"only the DEVICE key signs digests, not {role.name}")


def check_peer(peer: ec.EllipticCurvePublicKey) -> ec.EllipticCurvePublicKey:
    if not isinstance(peer, ec.EllipticCurvePublicKey) or not isinstance(peer.curve, ec.SECP256R1):
        raise ValueError("the ECDH peer must be a NIST P-256 public key")
    return peer
