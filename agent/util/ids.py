"""UUID validation for identifiers that arrive from the controller."""

from __future__ import annotations

import uuid


def parse_uuid(text: str, what: str = "uuid") -> str:
    """Return the canonical lower-case form of ``text``; raise ValueError naming ``what``."""
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{what} {text!r} is not a UUID") from exc
