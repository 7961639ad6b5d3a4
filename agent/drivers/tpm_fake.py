"""An in-memory TPM for unit tests: software keys, real PCR semantics, real TPM structures.

:class:`FakeTpm` implements :class:`agent.drivers.tpm.Tpm` so that the code above it, and the
controller's quote verifier, cannot tell it from :class:`agent.drivers.tpm_device.DeviceTpm`
by what comes out of it:

- PCRs start at their power-on values (zeros, and all-ones for the locality-4 PCRs 17-22, as
  swtpm and PC-client TPMs have them), extend as SHA-256(old || digest), refuse 17-22;
- quotes are real TPMS_ATTEST structures (qualifiedSigner = the AK's qualified name, extraData =
  the nonce, pcrDigest over the selection) signed with the AK as DER ECDSA, like EVE's tpmmgr;
- public areas are the same templates the device driver creates its primaries from;
- sealed blobs have the device's format, with the PolicyPCR digest as the object's authPolicy;
  the "private" part is AES-GCM under a per-TPM seed, so another FakeTpm cannot open them, and
  unseal refuses with TpmPolicyError when the current PCRs do not give that policy digest;
- the same errors: TpmNotProvisioned before :meth:`provision`, ValueError for bad arguments,
  TpmUnavailable after :meth:`close`.

Persistence is optional: pass a ``state`` mapping and the keys, the seed and the EK certificate
live in it; a new FakeTpm on the same mapping is the same TPM after a power cycle (keys kept,
PCRs reset, reset count incremented).  The mapping holds private keys: it is test state only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import replace

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.drivers import tpm
from agent.drivers.tpm import (
    DEFAULT_SEAL_PCRS,
    PCR_COUNT,
    QUOTE_PCRS,
    REPORTED_PCRS,
    KeyRole,
    Quote,
    TpmError,
    TpmNotProvisioned,
    TpmPolicyError,
    TpmUnavailable,
)
from agent.wire import ecdh, pki, tpmwire

#: What the fake reports as TPMS_ATTEST.firmwareVersion.
FAKE_FIRMWARE_VERSION = 0x20240125_00000000
_LOCALITY_PCRS = range(17, 23)
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class FakeTpm:
    """A TPM in memory; see the module docstring.  Thread-safe."""

    def __init__(
        self,
        state: MutableMapping[str, bytes] | None = None,
        *,
        ek_certificate: bool = False,
    ) -> None:
        """``state`` keeps the TPM across instances (a power cycle); ``ek_certificate`` makes
        the "manufacturer" write an EK certificate on first use of a fresh state."""
        self._state: MutableMapping[str, bytes] = {} if state is None else state
        self._lock = threading.Lock()
        self._closed = False
        self._booted = time.monotonic()
        if "seed" not in self._state:  # manufacturing
            self._state["seed"] = os.urandom(32)
            if ek_certificate:
                self._manufacture_ek_certificate()
        resets = int.from_bytes(self._state.get("resets", b""), "big") + 1
        self._state["resets"] = resets.to_bytes(4, "big")
        self._pcrs = {
            i: (b"\xff" * 32 if i in _LOCALITY_PCRS else bytes(32)) for i in range(PCR_COUNT)
        }

    # --- keys

    def provision(self) -> None:
        with self._lock:
            self._check_open()
            for role in KeyRole:
                if f"key.{role.name}" in self._state:
                    continue
                if role is KeyRole.EK:
                    # Persisting the EK only marks it: its key is the one the endorsement seed
                    # gives, generated on first use (RSA key generation is slow).
                    self._state["key.EK"] = b""
                else:
                    self._state[f"key.{role.name}"] = _der(ec.generate_private_key(ec.SECP256R1()))

    def public_key(self, role: KeyRole) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        with self._lock:
            return self._key(role).public_key()

    def public_area(self, role: KeyRole) -> bytes:
        with self._lock:
            return self._public(role).marshal_2b()

    def ek_certificate(self) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._state.get("ek.cert")

    def sign_digest(self, role: KeyRole, digest: bytes) -> bytes:
        tpm.check_signing_role(role)
        data = tpm.check_digest(digest)
        with self._lock:
            key = self._ec_key(role)
            der = key.sign(data, ec.ECDSA(Prehashed(hashes.SHA256())))
        return tpmwire.EcdsaSignature.from_der(der).raw()

    # --- PCRs and quotes

    def read_pcrs(self, pcrs: Sequence[int] = REPORTED_PCRS) -> dict[int, bytes]:
        indexes = tpm.check_pcrs(pcrs)
        with self._lock:
            self._check_open()
            return {i: self._pcrs[i] for i in indexes}

    def extend_pcr(self, index: int, digest: bytes) -> None:
        (pcr,) = tpm.check_pcrs([index])
        data = tpm.check_digest(digest)
        with self._lock:
            self._check_open()
            if pcr in _LOCALITY_PCRS:
                raise TpmError(f"PCR {pcr} cannot be extended from locality 0")
            self._pcrs[pcr] = tpmwire.digest(tpmwire.Alg.SHA256, self._pcrs[pcr] + data)

    def quote(self, nonce: bytes, pcrs: Sequence[int] = QUOTE_PCRS) -> Quote:
        extra = tpm.check_nonce(nonce)
        indexes = tpm.check_pcrs(pcrs)
        with self._lock:
            key = self._ec_key(KeyRole.AK)
            selection = tpmwire.sha256_selection(indexes)
            owner = tpmwire.hierarchy_name(tpmwire.RH_OWNER)
            attest = tpmwire.Attest(
                qualified_signer=tpmwire.qualified_name(owner, self._public(KeyRole.AK).name()),
                extra_data=extra,
                pcr_select=selection,
                pcr_digest=tpmwire.pcr_digest(self._pcrs, selection),
                clock_info=tpmwire.ClockInfo(
                    clock=int((time.monotonic() - self._booted) * 1000),
                    reset_count=int.from_bytes(self._state["resets"], "big"),
                ),
                firmware_version=FAKE_FIRMWARE_VERSION,
            ).marshal()
            signature = key.sign(attest, ec.ECDSA(hashes.SHA256()))
        return Quote(attest=attest, signature=signature, pcrs=indexes)

    # --- ECDH, sealing, randomness

    def ecdh_shared_point(self, peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        tpm.check_peer(peer)
        with self._lock:
            key = self._ec_key(KeyRole.ECDH)
        return ecdh.shared_point(key, peer)

    def seal(self, secret: bytes, pcrs: Sequence[int] = DEFAULT_SEAL_PCRS) -> bytes:
        data = tpm.check_secret(secret)
        indexes = tpm.check_pcrs(pcrs)
        with self._lock:
            self._key(KeyRole.SRK)
            selection = tpmwire.sha256_selection(indexes)
            public = replace(
                tpm.SEALED_TEMPLATE,
                auth_policy=tpmwire.policy_pcr_digest(self._pcrs, selection),
                unique=os.urandom(32),
            ).marshal()
            nonce = os.urandom(12)
            private = nonce + AESGCM(self._state["seed"]).encrypt(nonce, data, public)
        return tpmwire.SealedBlob(selection, public, private).marshal()

    def unseal(self, blob: bytes) -> bytes:
        try:
            sealed = tpmwire.SealedBlob.unmarshal(blob)
        except tpmwire.TpmWireError as exc:
            raise TpmError(f"cannot unseal: {exc}") from None
        with self._lock:
            self._key(KeyRole.SRK)
            nonce, ciphertext = sealed.private[:12], sealed.private[12:]
            try:
                secret = AESGCM(self._state["seed"]).decrypt(nonce, ciphertext, sealed.public)
            except (InvalidTag, ValueError):
                raise TpmError("cannot unseal: the blob is corrupt or from another TPM") from None
            policy = tpmwire.Public.unmarshal(sealed.public).auth_policy
            try:
                current = tpmwire.policy_pcr_digest(self._pcrs, sealed.pcrs)
            except tpmwire.TpmWireError as exc:
                raise TpmError(f"cannot unseal: {exc}") from None
            if current != policy:
                raise TpmPolicyError(
                    f"PCR policy no longer holds for PCRs {list(sealed.pcr_indexes)}"
                )
        return secret

    def random(self, size: int) -> bytes:
        if size < 0:
            raise ValueError("random size must not be negative")
        with self._lock:
            self._check_open()
        return os.urandom(size)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # --- internals (called with the lock held)

    def _check_open(self) -> None:
        if self._closed:
            raise TpmUnavailable("the TPM connection is closed")

    def _key(self, role: KeyRole) -> _PrivateKey:
        self._check_open()
        der = self._state.get(f"key.{role.name}")
        if der is None:
            raise TpmNotProvisioned(f"no {role.name} key at 0x{role.value:08x}")
        if role is KeyRole.EK:
            return self._endorsement_key()
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TpmError(f"{role.name} key has an unexpected type")  # pragma: no cover
        return key

    def _ec_key(self, role: KeyRole) -> ec.EllipticCurvePrivateKey:
        key = self._key(role)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TpmError(f"{role.name} is not an ECC key")  # pragma: no cover
        return key

    def _public(self, role: KeyRole) -> tpmwire.Public:
        return tpm.TEMPLATES[role].with_key(self._key(role).public_key())

    def _endorsement_key(self) -> rsa.RSAPrivateKey:
        """The EK the endorsement seed gives (made once, like a TPM's EPS-derived EK)."""
        if "ek.key" not in self._state:
            new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self._state["ek.key"] = _der(new)
        key = serialization.load_der_private_key(self._state["ek.key"], password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TpmError("the endorsement key has an unexpected type")  # pragma: no cover
        return key

    def _manufacture_ek_certificate(self) -> None:
        ca_key = pki.new_ec_key()
        ca_cert = pki.make_certificate(ca_key, "FakeTpm manufacturer CA", is_ca=True)
        cert = pki.make_certificate(
            self._endorsement_key(),
            "FakeTpm EK",
            issuer_key=ca_key,
            issuer_cert=ca_cert,
        )
        self._state["ek.cert"] = cert.public_bytes(serialization.Encoding.DER)
        self._state["ek.ca"] = ca_cert.public_bytes(serialization.Encoding.DER)


def _der(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def manufacturer_ca(state: MutableMapping[str, bytes]) -> x509.Certificate | None:
    """The CA that issued a FakeTpm's EK certificate (tests check the chain with it)."""
    der = state.get("ek.ca")
    return None if der is None else x509.load_der_x509_certificate(der)
