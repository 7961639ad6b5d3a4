"""Blocking work of the controller link, done in worker threads so the event loop never waits.

A device signature is a TPM command when the device key lives in the TPM (1-2 ms on swtpm, tens
of milliseconds on a discrete TPM), and the TPM driver serialises its callers with a lock that
the vault's seal and unseal also hold from their own threads: a signature made on the loop can
wait behind a whole vault operation.  So every envelope the link sends is sealed here, in a
worker thread, whatever the signer (a software key costs a thread hop of some tens of
microseconds; an RSA onboarding key costs more than that to sign).

The other blocking work of the link (quotes, ECDH, modelling a large config, checkpoint and
outbox writes with their fsyncs, log compression) goes through ``asyncio.to_thread`` at its call
site; this module is the one place for signatures, so that no coroutine calls
:func:`agent.wire.envelope.seal_as_device` directly.
"""

from __future__ import annotations

import asyncio

from agent.wire import envelope
from agent.wire.envelope import Signer


async def seal_as_device_async(
    payload: bytes, signer: Signer, *, include_cert: bool = False
) -> bytes:
    """:func:`agent.wire.envelope.seal_as_device` in a worker thread; same result, same errors."""
    return await asyncio.to_thread(
        envelope.seal_as_device, payload, signer, include_cert=include_cert
    )


__all__ = ["seal_as_device_async"]
