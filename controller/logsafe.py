"""Log lines that a peer cannot forge or flood.

Everything the controller logs about a request can come from the other side: the path, headers,
serials, names in reports.  :func:`printable` makes such a value safe for one log line (control
and other non-printable characters escaped, backslashes doubled so an escape cannot be faked,
length capped).  :class:`SafeFormatter` is the last line of defence for messages that were not
escaped at the call site (libraries' own log lines).

A peer can also make the controller log the same condition thousands of times a second (refused
requests, idle connections, handshake failures).  :class:`LogThrottle` lets one line per
condition through per interval and says how many it held back.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_LIMIT = 200
"""Characters of one peer-supplied value kept in a log line."""

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as text fit for one log line.

    Non-printable characters (newlines, escape sequences, Unicode line separators) become
    backslash escapes and backslashes are doubled, so what the peer sent is shown unambiguously
    and cannot start a new line or drive a terminal.  Longer text is cut to ``limit`` characters
    with a note of how many more there were.
    """
    text = str(value)
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    out = "".join(_escape(ch) for ch in text) if not _plain(text) else text
    return f"{out}...(+{extra} chars)" if extra > 0 else out


def _plain(text: str) -> bool:
    return text.isprintable() and "\\" not in text


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class SafeFormatter(logging.Formatter):
    """A formatter that keeps each record's message on one line.

    Control characters in the message (not in a traceback, which is many lines by design) are
    escaped.  Backslashes are left alone here: call sites that log peer data use
    :func:`printable`, and doubling them again would only garble those lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if not message.isprintable():
            # A copy: other handlers of the same record keep the message as it was.
            record = copy.copy(record)
            record.message = "".join(ch if ch.isprintable() else _escape(ch) for ch in message)
        return super().formatMessage(record)


Clock = Callable[[], float]


@dataclass
class _Held:
    next_at: float
    suppressed: int = 0


class LogThrottle:
    """At most one log line per key per ``interval`` seconds.

    A key names a condition ("header timeout", "rate limit for device X").  The first
    occurrence is logged at once; repeats within the interval are counted, and the next line
    that gets through says how many were held back.  At most ``max_keys`` keys are remembered
    (the oldest is forgotten first), so keys derived from peers cannot grow memory without
    bound.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 60.0,
        max_keys: int = 4096,
        clock: Clock = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()

    def emit(
        self,
        level: int,
        key: str,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log ``message % args`` unless ``key`` was logged within the interval; True if logged.

        ``exc_info`` adds that exception's traceback to the line, when it gets through.
        """
        now = self._clock()
        held = self._held.get(key)
        if held is not None and now < held.next_at:
            held.suppressed += 1
            return False
        suppressed = held.suppressed if held is not None else 0
        self._held[key] = _Held(next_at=now + self._interval)
        self._held.move_to_end(key)
        while len(self._held) > self._max_keys:
            self._held.popitem(last=False)
        if suppressed:
            message += " (and %d more like it since the last such line)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True

    def warning_for(self, key: str, message: str, *args: object) -> bool:
        return self.emit(logging.WARNING, key, message, *args)
