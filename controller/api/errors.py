"""The one exception a request handler raises to answer with an error."""

from __future__ import annotations

import logging
from collections.abc import Mapping


class ApiError(Exception):
    """Ends a request with ``status`` and ``reason`` as a text body and in the request log.

    ``headers`` go on the response (a 429's Retry-After).  ``quiet`` puts the request's log line
    at DEBUG: for refusals a peer can repeat at will (rate limits, timeouts), which are logged
    through a :class:`~controller.logsafe.LogThrottle` instead.  ``close`` ends the connection
    after the answer (the rest of the request was not read).  ``level`` is the request log
    line's level otherwise (WARNING for refusals an operator should notice).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        headers: Mapping[str, str] | None = None,
        quiet: bool = False,
        close: bool = False,
        level: int = logging.INFO,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})
        self.quiet = quiet
        self.close = close
        self.level = logging.DEBUG if quiet else level
