"""The real TPM driver: tpm2-pytss (ESAPI) on ``/dev/tpmrm0`` or on a swtpm socket.

This is the only module that imports ``tpm2_pytss``.  It translates every TSS error into the
:mod:`agent.drivers.tpm` errors at the boundary: a TCTI that cannot reach the TPM (or loses it
mid-command) is TpmUnavailable and the next call reconnects; a persistent handle that is not
there is TpmNotProvisioned; a PolicyPCR that does not hold is TpmPolicyError; anything else the
TPM refuses is TpmError with the decoded response code.

TPM structures go through :mod:`agent.wire.tpmwire`: templates are marshalled there and
unmarshalled into tpm2-pytss types, results are marshalled by tpm2-pytss and parsed there, so
the device driver and the fake produce the same bytes.

Bus protection, as EVE does it (``evetpm/enc_seal.go``): the commands that carry a secret
across the CPU-TPM bus run in a *salted* session with AES-128-CFB parameter encryption, so a
passive snooper on the LPC/SPI/I2C lines (or anyone reading the swtpm socket) sees ciphertext.

- ``seal``: TPM2_Create of the sealed object authorises the SRK with a salted HMAC session
  whose ``decrypt`` attribute encrypts the first command parameter, the TPM2B_SENSITIVE_CREATE
  holding the secret.
- ``unseal``: TPM2_Unseal is authorised by the PolicyPCR policy session, and that session is
  itself salted and carries the ``encrypt`` attribute, so the secret comes back encrypted.  One
  session does both jobs, as EVE's does: TPM 2.0 allows parameter encryption in any session
  started with a symmetric algorithm, policy sessions included; ESAPI decrypts the response
  with the policy session's key; a second HMAC session would only cost a round trip and a
  session slot.
- ``ecdh_shared_point``: TPM2_ECDH_ZGen authorises the ECDH key with a salted HMAC session whose
  ``encrypt`` attribute protects the shared point in the response.

Each session is started unbound (bind = TPM_RH_NULL) with the SRK as ``tpmKey``: ESAPI makes a
random salt and sends it encrypted to the SRK (an ECC P-256 key: the salt is derived from an
ephemeral ECDH exchange with it), so the session key is unknown to anyone without the SRK's
private key.  (EVE salts to the RSA EK; any loaded decryption key serves, and the SRK is the
parent the sealed object lives under anyway.)  The session key also keys the command and
response HMACs, so the TPM's answers in these sessions are authenticated.  Each session lives
for one command and is flushed.

The protection is on by default (``encrypt_sessions=False`` turns it off, for tests that want
to see the clear text on the wire).  Like EVE, it is used "when supported": the first protected
command on a connection asks the TPM (TPM2_TestParms) whether it does AES-128-CFB, which the PC
Client profile requires; a TPM that says no gets unprotected sessions and a warning.  What it
does not stop: an *active* interposer that answers TPM2_ReadPublic with its own SRK public key
learns the salt (the SRK's public area is read over the same bus, unauthenticated, as EVE reads
its EK's), and it could answer TestParms with an error to turn the protection off.  Every other
command uses the plain password session with the keys' empty authorisation values: no secret
travels in them.

Emulators have no resource manager: transient objects and sessions a crashed process left in a
swtpm stay there and fill its three object slots.  On connecting to a ``swtpm:`` or ``mssim:``
TCTI the driver therefore flushes every transient object and loaded session it finds (swtpm
serves one client at a time, so they can only be leftovers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HC,
    TPM2_RC,
    TPM2_SE,
    TPM2B_DIGEST,
    TPM2B_ECC_PARAMETER,
    TPM2B_ECC_POINT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMA_SESSION,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_ECC_POINT,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_PUBLIC_PARMS,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMU_HA,
)
from tpm2_pytss.TSS2_Exception import TSS2_Exception

from agent.drivers import tpm
from agent.drivers.tpm import (
    DEFAULT_SEAL_PCRS,
    EK_CERT_NV_INDEX,
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
from agent.wire import tpmwire
from agent.wire.tpmwire import ObjectAttr as A

log = logging.getLogger(__name__)

_LAYER_MASK = 0x00FF0000
_TPM_LAYER = 0x00000000
_TCTI_LAYER = 0x000A0000
_RESMGR_TPM_LAYER = 0x000C0000  # TPM response codes passed on by a resource manager
_EMULATOR_TCTIS = ("swtpm", "mssim")
_PCRS_PER_READ = 8  # TPML_DIGEST holds at most 8 digests
_NV_CHUNK = 512  # below every TPM's TPM_PT_NV_BUFFER_MAX
_RANDOM_CHUNK = 32  # GetRandom returns at most one digest's worth
#: Parameter encryption of the salted sessions: AES in CFB mode with this key size (EVE's).
_SESSION_AES_BITS = 128


class DeviceTpm:
    """A TPM 2.0 reached through a TCTI, e.g. ``device:/dev/tpmrm0`` or a
    :attr:`agent.drivers.swtpm.SwtpmProcess.tcti`.  Connects on first use; thread-safe.

    ``encrypt_sessions`` (default True) runs seal, unseal and ECDH_ZGen in salted sessions
    with AES-128-CFB parameter encryption when the TPM supports it; see the module docstring.
    """

    def __init__(self, tcti: str, *, encrypt_sessions: bool = True) -> None:
        self._tcti = tcti
        self._encrypt_sessions = encrypt_sessions
        self._cipher_supported: bool | None = None  # per connection: asked on first need
        self._lock = threading.RLock()
        self._esys: Any = None
        self._handles: dict[KeyRole, Any] = {}
        self._publics: dict[KeyRole, bytes] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"DeviceTpm({self._tcti!r})"

    # --- keys

    def provision(self) -> None:
        with self._tpm("provision") as esys:
            present = self._persistent_handles(esys)
            for role in KeyRole:
                if role.value in present:
                    if role is not KeyRole.EK:
                        _check_fits(role, tpmwire.Public.unmarshal_2b(self._public(esys, role)))
                    continue
                hierarchy = ESYS_TR.ENDORSEMENT if role is KeyRole.EK else ESYS_TR.OWNER
                log.info("creating the %s key at 0x%08x", role.name, role.value)
                handle, *_ = esys.create_primary(None, _public_2b(tpm.TEMPLATES[role]), hierarchy)
                try:
                    self._handles[role] = esys.evict_control(ESYS_TR.OWNER, handle, role.value)
                finally:
                    esys.flush_context(handle)

    def public_key(self, role: KeyRole) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        with self._tpm(f"read the {role.name} public key") as esys:
            area = self._public(esys, role)
        return tpmwire.Public.unmarshal_2b(area).public_key()

    def public_area(self, role: KeyRole) -> bytes:
        with self._tpm(f"read the {role.name} public area") as esys:
            return self._public(esys, role)

    def ek_certificate(self) -> bytes | None:
        with self._tpm("read the EK certificate") as esys:
            try:
                index = esys.tr_from_tpmpublic(EK_CERT_NV_INDEX)
            except TSS2_Exception as exc:
                if _tpm_code(exc) == TPM2_RC.HANDLE:
                    return None
                raise
            try:
                nv_public, _name = esys.nv_read_public(index)
                size = int(nv_public.nvPublic.dataSize)
                data = b""
                while len(data) < size:
                    chunk = min(size - len(data), _NV_CHUNK)
                    data += _nv_read(esys, index, chunk, len(data))
            finally:
                esys.tr_close(index)
        return _trim_der(data)

    def sign_digest(self, role: KeyRole, digest: bytes) -> bytes:
        tpm.check_signing_role(role)
        data = tpm.check_digest(digest)
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
        with self._tpm("sign with the device key") as esys:
            signature = esys.sign(self._handle(esys, role), TPM2B_DIGEST(data), scheme)
            raw = bytes(signature.marshal())
        return tpmwire.EcdsaSignature.unmarshal(raw).raw()

    # --- PCRs and quotes

    def read_pcrs(self, pcrs: Sequence[int] = REPORTED_PCRS) -> dict[int, bytes]:
        indexes = tpm.check_pcrs(pcrs)
        with self._tpm("read PCRs") as esys:
            return self._read_pcrs(esys, indexes)

    def extend_pcr(self, index: int, digest: bytes) -> None:
        (pcr,) = tpm.check_pcrs([index])
        data = tpm.check_digest(digest)
        values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=data))])
        with self._tpm(f"extend PCR {pcr}") as esys:
            esys.pcr_extend(getattr(ESYS_TR, f"PCR{pcr}"), values)

    def quote(self, nonce: bytes, pcrs: Sequence[int] = QUOTE_PCRS) -> Quote:
        extra = tpm.check_nonce(nonce)
        indexes = tpm.check_pcrs(pcrs)
        selection = _selection(tpmwire.sha256_selection(indexes))
        with self._tpm("quote") as esys:
            attest, signature = esys.quote(
                self._handle(esys, KeyRole.AK),
                selection,
                extra,
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            )
            attest_bytes = bytes(attest)
            signature_bytes = bytes(signature.marshal())
        der = tpmwire.EcdsaSignature.unmarshal(signature_bytes).der()
        return Quote(attest=attest_bytes, signature=der, pcrs=indexes)

    # --- ECDH, sealing, randomness

    def ecdh_shared_point(self, peer: ec.EllipticCurvePublicKey) -> tuple[int, int]:
        numbers = tpm.check_peer(peer).public_numbers()
        point = TPM2B_ECC_POINT(
            TPMS_ECC_POINT(
                x=TPM2B_ECC_PARAMETER(numbers.x.to_bytes(32, "big")),
                y=TPM2B_ECC_PARAMETER(numbers.y.to_bytes(32, "big")),
            )
        )
        with self._tpm("ECDH_ZGen") as esys:
            key = self._handle(esys, KeyRole.ECDH)
            with self._session(esys, TPM2_SE.HMAC, TPMA_SESSION.ENCRYPT) as session:
                shared = esys.ecdh_zgen(key, point, session1=session)
            x, y = bytes(shared.point.x), bytes(shared.point.y)
        return int.from_bytes(x, "big"), int.from_bytes(y, "big")

    def seal(self, secret: bytes, pcrs: Sequence[int] = DEFAULT_SEAL_PCRS) -> bytes:
        data = tpm.check_secret(secret)
        indexes = tpm.check_pcrs(pcrs)
        selection = tpmwire.sha256_selection(indexes)
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(data)))
        with self._tpm("seal") as esys:
            srk = self._handle(esys, KeyRole.SRK)
            # The policy is computed here from the PCR values rather than in a trial session:
            # some TPMs use a zero PCR digest in trial sessions (evetpm/enc_seal.go).
            values = self._read_pcrs(esys, indexes)
            policy = tpmwire.policy_pcr_digest(values, selection)
            template = replace(tpm.SEALED_TEMPLATE, auth_policy=policy)
            with self._session(esys, TPM2_SE.HMAC, TPMA_SESSION.DECRYPT) as session:
                private, public, *_ = esys.create(
                    srk, sensitive, _public_2b(template), session1=session
                )
            public_bytes = bytes(public.marshal())[2:]
            private_bytes = bytes(private.marshal())[2:]
        return tpmwire.SealedBlob(selection, public_bytes, private_bytes).marshal()

    def unseal(self, blob: bytes) -> bytes:
        try:
            sealed = tpmwire.SealedBlob.unmarshal(blob)
            tpm.check_pcrs(sealed.pcr_indexes)
        except ValueError as exc:
            raise TpmError(f"cannot unseal: {exc}") from None
        public, _ = TPM2B_PUBLIC.unmarshal(_tpm2b(sealed.public))
        private, _ = TPM2B_PRIVATE.unmarshal(_tpm2b(sealed.private))
        selection = _selection(sealed.pcrs)
        with self._tpm("unseal") as esys:
            item = esys.load(self._handle(esys, KeyRole.SRK), private, public)
            try:
                for attempt in (1, 2):
                    try:
                        return self._unseal_once(esys, item, selection)
                    except TSS2_Exception as exc:
                        # A PCR changed between PolicyPCR and Unseal: judge the new state.
                        if attempt == 1 and _tpm_code(exc) == TPM2_RC.PCR_CHANGED:
                            continue
                        raise
            finally:
                esys.flush_context(item)
        raise TpmError("unseal: unreachable")  # pragma: no cover

    def random(self, size: int) -> bytes:
        if size < 0:
            raise ValueError("random size must not be negative")
        out = b""
        with self._tpm("GetRandom") as esys:
            while len(out) < size:
                out += bytes(esys.get_random(min(size - len(out), _RANDOM_CHUNK)))
        return out[:size]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    # --- internals (called with the lock held)

    @contextmanager
    def _tpm(self, what: str) -> Iterator[Any]:
        """The ESAPI context, connected, with TSS errors translated for ``what``."""
        with self._lock:
            if self._closed:
                raise TpmUnavailable("the TPM connection is closed")
            esys = self._esys if self._esys is not None else self._connect()
            try:
                yield esys
            except TSS2_Exception as exc:
                error = _translate(exc, what)
                if isinstance(error, TpmUnavailable):
                    self._drop()
                raise error from exc

    def _connect(self) -> Any:
        # libtss2 logs every TPM error response on stderr; the agent logs what matters itself.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        try:
            esys = ESAPI(self._tcti)
        except TSS2_Exception as exc:
            raise TpmUnavailable(f"cannot connect to the TPM at {self._tcti}: {exc}") from exc
        self._esys = esys
        if self._tcti.split(":", 1)[0] in _EMULATOR_TCTIS:
            self._flush_leftovers(esys)
        return esys

    def _drop(self) -> None:
        esys, self._esys = self._esys, None
        self._cipher_supported = None
        self._handles.clear()
        self._publics.clear()
        if esys is not None:
            with contextlib.suppress(TSS2_Exception):
                esys.close()

    def _flush_leftovers(self, esys: Any) -> None:
        for first in (TPM2_HC.TRANSIENT_FIRST, TPM2_HC.LOADED_SESSION_FIRST):
            for handle in _handles(esys, first):
                log.info("flushing handle 0x%08x left in the TPM", handle)
                with contextlib.suppress(TSS2_Exception):
                    esys.flush_context(esys.tr_from_tpmpublic(handle))

    def _persistent_handles(self, esys: Any) -> set[int]:
        return set(_handles(esys, TPM2_HC.PERSISTENT_FIRST))

    def _handle(self, esys: Any, role: KeyRole) -> Any:
        handle = self._handles.get(role)
        if handle is None:
            try:
                handle = esys.tr_from_tpmpublic(role.value)
            except TSS2_Exception as exc:
                if _tpm_code(exc) == TPM2_RC.HANDLE:
                    raise TpmNotProvisioned(
                        f"no {role.name} key at 0x{role.value:08x}: provision the TPM"
                    ) from None
                raise
            self._handles[role] = handle
        return handle

    def _public(self, esys: Any, role: KeyRole) -> bytes:
        area = self._publics.get(role)
        if area is None:
            public, _name, _qualified_name = esys.read_public(self._handle(esys, role))
            area = self._publics[role] = bytes(public.marshal())
        return area

    def _read_pcrs(self, esys: Any, indexes: Sequence[int]) -> dict[int, bytes]:
        values: dict[int, bytes] = {}
        wanted = list(indexes)
        for _ in range(PCR_COUNT):  # each round reads at least one PCR
            missing = [i for i in wanted if i not in values]
            if not missing:
                return values
            chunk = tpmwire.sha256_selection(missing[:_PCRS_PER_READ])
            _counter, selected, digests = esys.pcr_read(_selection(chunk))
            got = tpmwire.unmarshal_pcr_selection(bytes(selected.marshal()))
            order = [i for s in got if s.hash_alg == tpmwire.Alg.SHA256 for i in s.pcrs]
            found = [bytes(d) for d in digests]
            if not order or len(order) != len(found):
                raise TpmError(f"PCR_Read returned {len(found)} values for PCRs {order}")
            values.update(zip(order, found, strict=True))
        raise TpmError("PCR_Read made no progress")  # pragma: no cover

    def _unseal_once(self, esys: Any, item: Any, selection: Any) -> bytes:
        with self._session(esys, TPM2_SE.POLICY, TPMA_SESSION.ENCRYPT) as session:
            esys.policy_pcr(session, b"", selection)
            return bytes(esys.unseal(item, session1=session))

    @contextmanager
    def _session(self, esys: Any, kind: TPM2_SE, encryption: TPMA_SESSION) -> Iterator[Any]:
        """A session for one command, flushed afterwards.

        With bus protection: salted to the SRK, unbound, AES-128-CFB, with ``encryption``
        (TPMA_SESSION.DECRYPT: the command's first parameter travels encrypted; ENCRYPT: the
        response's).  Without: an unsalted policy session without a cipher, or for an HMAC
        session the password session (the keys' authorisation values are empty).
        """
        if self._bus_protection(esys):
            session = esys.start_auth_session(
                self._handle(esys, KeyRole.SRK),
                ESYS_TR.NONE,
                kind,
                _session_cipher(),
                TPM2_ALG.SHA256,
            )
            try:
                esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION | encryption)
            except BaseException:
                with contextlib.suppress(TSS2_Exception):
                    esys.flush_context(session)
                raise
        elif kind == TPM2_SE.POLICY:
            session = esys.start_auth_session(
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                TPM2_ALG.SHA256,
            )
        else:
            yield ESYS_TR.PASSWORD
            return
        try:
            yield session
        finally:
            with contextlib.suppress(TSS2_Exception):
                esys.flush_context(session)

    def _bus_protection(self, esys: Any) -> bool:
        """Whether to use salted, encrypted sessions: asked of the TPM once per connection."""
        if not self._encrypt_sessions:
            return False
        if self._cipher_supported is None:
            parms = TPMT_PUBLIC_PARMS(type=TPM2_ALG.SYMCIPHER)
            parms.parameters.symDetail.sym = _session_cipher()
            try:
                esys.test_parms(parms)
                self._cipher_supported = True
            except TSS2_Exception as exc:
                if _tpm_code(exc) is None:
                    raise  # not the TPM's answer (e.g. the connection broke)
                log.warning(
                    "the TPM does not support AES-%d-CFB session encryption (%s): seal, unseal "
                    "and ECDH run without TPM bus protection",
                    _SESSION_AES_BITS,
                    exc,
                )
                self._cipher_supported = False
        return self._cipher_supported


# --- helpers ------------------------------------------------------------------------------------


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _session_cipher() -> Any:
    """TPMT_SYM_DEF for AES-CFB parameter encryption (``_SESSION_AES_BITS``)."""
    cipher = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES)
    cipher.keyBits.aes = _SESSION_AES_BITS
    cipher.mode.aes = TPM2_ALG.CFB
    return cipher


def _public_2b(public: tpmwire.Public) -> Any:
    value, _ = TPM2B_PUBLIC.unmarshal(public.marshal_2b())
    return value


def _selection(selections: Sequence[tpmwire.PcrSelection]) -> Any:
    value, _ = TPML_PCR_SELECTION.unmarshal(tpmwire.marshal_pcr_selection(selections))
    return value


def _handles(esys: Any, first: int) -> list[int]:
    more, data = esys.get_capability(TPM2_CAP.HANDLES, first, 64)
    del more
    kind = first >> 24
    return [int(h) for h in data.data.handles if int(h) >> 24 == kind]


def _nv_read(esys: Any, index: Any, size: int, offset: int) -> bytes:
    """Read NV with the index's own (empty) auth, else the owner's (EK certificates are
    usually both AUTHREAD and OWNERREAD)."""
    try:
        return bytes(esys.nv_read(index, size, offset))
    except TSS2_Exception:
        return bytes(esys.nv_read(index, size, offset, auth_handle=ESYS_TR.OWNER))


def _trim_der(data: bytes) -> bytes:
    """Drop padding after a DER certificate (some TPMs size the NV index generously)."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] & 0x80:
        count = data[1] & 0x7F
        if 0 < count <= 4 and len(data) >= 2 + count:
            total = 2 + count + int.from_bytes(data[2 : 2 + count], "big")
            if total <= len(data):
                return data[:total]
    return data


def _tpm_code(exc: TSS2_Exception) -> int | None:
    """The TPM response code of ``exc`` without handle/parameter/session numbers, or None
    when the error did not come from the TPM."""
    rc = int(exc.rc)
    if rc & _LAYER_MASK not in (_TPM_LAYER, _RESMGR_TPM_LAYER):
        return None
    rc &= 0xFFFF
    if rc & TPM2_RC.FMT1:
        return int(TPM2_RC.FMT1 | (rc & 0x3F))
    return rc


def _translate(exc: TSS2_Exception, what: str) -> TpmError:
    rc = int(exc.rc)
    if rc & _LAYER_MASK == _TCTI_LAYER:
        return TpmUnavailable(f"{what}: the TPM cannot be reached ({exc})")
    code = _tpm_code(exc)
    if code in (TPM2_RC.POLICY_FAIL, TPM2_RC.PCR_CHANGED):
        return TpmPolicyError(f"{what}: the PCR policy does not hold ({exc})")
    return TpmError(f"{what} failed: {exc} (rc 0x{rc:x})")


def _check_fits(role: KeyRole, public: tpmwire.Public) -> None:
    """Refuse a key found at ``role``'s handle that cannot do ``role``'s job."""
    attrs = A(public.attributes)
    p256 = public.type == tpmwire.Alg.ECC and public.curve == tpmwire.Curve.NIST_P256
    restricted = A.RESTRICTED in attrs
    fits = {
        KeyRole.SRK: restricted and A.DECRYPT in attrs and A.SIGN_ENCRYPT not in attrs,
        KeyRole.AK: p256
        and restricted
        and A.SIGN_ENCRYPT in attrs
        and public.scheme == tpmwire.Scheme(tpmwire.Alg.ECDSA, tpmwire.Alg.SHA256),
        KeyRole.ECDH: p256 and not restricted and A.DECRYPT in attrs,
        KeyRole.DEVICE: p256 and not restricted and A.SIGN_ENCRYPT in attrs,
    }[role]
    if not fits:
        raise TpmError(
            f"the key at 0x{role.value:08x} cannot serve as the {role.name} key "
            f"(type 0x{public.type:04x}, attributes {attrs!r}); it was not made by this agent"
        )
