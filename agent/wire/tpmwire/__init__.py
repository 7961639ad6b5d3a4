"""TPM 2.0 structures on the wire, in pure Python: what a quote is made of and how to check one.

The agent's TPM drivers produce quotes and the controller verifies them; both use this package,
so it imports nothing but the standard library and ``cryptography`` (never ``tpm2_pytss``).  It
covers exactly the structures that cross the device-controller boundary or the fake-real driver
boundary (TPM 2.0 Library, Part 2 "Structures", big-endian throughout):

- ``TPMS_ATTEST`` with ``TPMS_QUOTE_INFO`` (EVE's ``ZAttestQuote.attestData``),
- ``TPML_PCR_SELECTION``,
- ``TPMT_SIGNATURE`` for ECDSA (what ``TPM2_Quote``/``TPM2_Sign`` return),
- ``TPMT_PUBLIC``/``TPM2B_PUBLIC`` for ECC, RSA and KEYEDHASH (sealed data) objects (EVE's
  ``ZCert`` metadata ``TPM2_PUBLIC`` is a ``TPM2B_PUBLIC``),
- object names, the ``TPM2_PolicyPCR`` policy digest and the agent's sealed-blob container.

(The ECDH point EVE's key derivation hashes is computed in :mod:`agent.wire.ecdh`.)

Every parser checks every length and raises :class:`TpmWireError` (a ``ValueError``) with a
message naming the field; hostile input never escapes as ``IndexError`` or ``struct.error``.

Import everything from here; the modules are:

- :mod:`agent.wire.tpmwire.pcr` - PCR selections, the pcrDigest and the PolicyPCR digest;
- :mod:`agent.wire.tpmwire.attest` - TPMS_ATTEST, ECDSA signatures and quote verification
  (and how EVE and Adam put a quote on the wire);
- :mod:`agent.wire.tpmwire.public` - TPMT_PUBLIC, names and qualified names;
- :mod:`agent.wire.tpmwire.sealed` - the sealed-blob container;
- ``_codec`` - the errors, the TPM enums and the reader/writer helpers they all share.
"""

from agent.wire.tpmwire._codec import (
    Alg,
    BadSignature,
    Curve,
    NonceMismatch,
    ObjectAttr,
    PcrDigestMismatch,
    TpmWireError,
    digest,
)
from agent.wire.tpmwire.attest import (
    ST_ATTEST_QUOTE,
    TPM_GENERATED,
    Attest,
    ClockInfo,
    EcdsaSignature,
    verify_quote,
    verify_quote_signature,
)
from agent.wire.tpmwire.pcr import (
    CC_POLICY_PCR,
    PCR_SELECT_SIZE,
    PcrSelection,
    marshal_pcr_selection,
    pcr_digest,
    policy_pcr_digest,
    sha256_selection,
    unmarshal_pcr_selection,
)
from agent.wire.tpmwire.public import (
    AES128_CFB,
    RH_ENDORSEMENT,
    RH_OWNER,
    Public,
    PublicKey,
    Scheme,
    SymDef,
    hierarchy_name,
    qualified_name,
)
from agent.wire.tpmwire.sealed import SEALED_MAGIC, SEALED_VERSION, SealedBlob

__all__ = [
    "AES128_CFB",
    "CC_POLICY_PCR",
    "PCR_SELECT_SIZE",
    "RH_ENDORSEMENT",
    "RH_OWNER",
    "SEALED_MAGIC",
    "SEALED_VERSION",
    "ST_ATTEST_QUOTE",
    "TPM_GENERATED",
    "Alg",
    "Attest",
    "BadSignature",
    "ClockInfo",
    "Curve",
    "EcdsaSignature",
    "NonceMismatch",
    "ObjectAttr",
    "PcrDigestMismatch",
    "PcrSelection",
    "Public",
    "PublicKey",
    "Scheme",
    "SealedBlob",
    "SymDef",
    "TpmWireError",
    "digest",
    "hierarchy_name",
    "marshal_pcr_selection",
    "pcr_digest",
    "policy_pcr_digest",
    "qualified_name",
    "sha256_selection",
    "unmarshal_pcr_selection",
    "verify_quote",
    "verify_quote_signature",
]
