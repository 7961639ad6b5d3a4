"""A secret string that does not print itself.

Cloud-init user data, datastore credentials and cluster tokens are held as :class:`Secret` in
the model, so that a repr of a model object, an f-string, a log line or a ``json.dumps`` of it
never shows the value.  The value is read with :meth:`Secret.reveal`, deliberately, where it is
used.  Equality compares values (config diffs need it); hashing does too, and neither reveals
anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Secret:
    """A string kept out of reprs, ``str()`` and formatting.  ``Secret()`` is the empty one."""

    _value: str = field(default="", repr=False)

    def reveal(self) -> str:
        """The value itself: only for the code that uses it, never for logs or status."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret(<redacted>)" if self._value else "Secret(<empty>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)


__all__ = ["Secret"]
