"""The agent's sealed-blob container: what :meth:`agent.drivers.tpm.Tpm.seal` returns."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.wire.tpmwire._codec import TpmWireError, _read_with, _Reader, _tpm2b
from agent.wire.tpmwire.pcr import PcrSelection, _read_pcr_selection, marshal_pcr_selection
from agent.wire.tpmwire.public import Public

SEALED_MAGIC = b"EVSB"
SEALED_VERSION = 1


@dataclass(frozen=True)
class SealedBlob:
    """What :meth:`agent.drivers.tpm.Tpm.seal` returns, marshalled as::

        "EVSB" | u16 version (1) | TPML_PCR_SELECTION | TPM2B_PUBLIC | TPM2B_PRIVATE

    ``public`` is the sealed data object's TPMT_PUBLIC (a KEYEDHASH object whose authPolicy is
    the PolicyPCR digest), ``private`` the TPM2B_PRIVATE body the TPM returned from
    ``TPM2_Create`` under the SRK (opaque, encrypted by the TPM), ``pcrs`` the selection the
    policy covers.  All integers big-endian; nothing may follow the private part.
    """

    pcrs: tuple[PcrSelection, ...]
    public: bytes
    private: bytes

    def marshal(self) -> bytes:
        return b"".join(
            (
                SEALED_MAGIC,
                struct.pack(">H", SEALED_VERSION),
                marshal_pcr_selection(self.pcrs),
                _tpm2b(self.public, "public"),
                _tpm2b(self.private, "private"),
            )
        )

    @classmethod
    def unmarshal(cls, data: bytes) -> SealedBlob:
        return _read_with(data, "sealed blob", cls._read)

    @classmethod
    def _read(cls, r: _Reader) -> SealedBlob:
        if r.take(4, "magic") != SEALED_MAGIC:
            raise TpmWireError("sealed blob: bad magic (not made by this agent's seal)")
        version = r.u16("version")
        if version != SEALED_VERSION:
            raise TpmWireError(f"sealed blob: unknown version {version}")
        pcrs = _read_pcr_selection(r)
        public = r.tpm2b("public")
        Public.unmarshal(public)  # reject garbage before it reaches a TPM
        private = r.tpm2b("private")
        return cls(pcrs, public, private)

    @property
    def pcr_indexes(self) -> tuple[int, ...]:
        return tuple(sorted({p for s in self.pcrs for p in s.pcrs}))
