"""Typed errors at the driver boundary: what a failure means for the retry policy.

Drivers translate library and process errors into these (libvirt's VIR_ERR_NO_DOMAIN into
``NotFoundError``, a registry's 401 into ``PermanentError``, a connection reset into
``TemporaryError``), so the reconcile engine decides retries from the type alone:

- ``TemporaryError``: retried with backoff and jitter (``retry_after`` overrides the delay);
- ``PermanentError``: reported, retried only when the desired item changes;
- ``NotFoundError``: the object is not there; "already gone" on delete is success.

Any other exception reaching the engine is treated as temporary.
"""

from __future__ import annotations


class DriverError(Exception):
    """A driver operation failed."""


class TemporaryError(DriverError):
    """Worth retrying as is: the system or a service was busy, slow or unreachable."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DriverError):
    """Retrying the same request cannot succeed: bad input, refused credentials, no such image."""


class NotFoundError(DriverError):
    """The object the operation is about does not exist."""
