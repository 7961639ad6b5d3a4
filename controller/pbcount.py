"""Counting what a protobuf message holds, with a cap, before doing work per element.

A 1 MiB report can hold half a million empty sub-messages (two bytes each).  Parsing it is quick
C code, but rendering it as JSON and storing that is Python work per element, so the controller
counts first and refuses past a cap.  The count stops as soon as it passes the cap.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_MESSAGE_TYPES = (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP)


class TooManyElements(ValueError):
    """The message holds more than the allowed number of fields and elements."""


def count_elements(message: Message, limit: int) -> int:
    """Set fields, sub-messages, repeated elements and map entries in ``message``, recursively.

    Raises TooManyElements as soon as the count passes ``limit``.  Unknown fields are not
    counted: they are kept as raw bytes and never rendered.
    """
    count = 0
    stack = [message]
    while stack:
        for field, value in stack.pop().ListFields():
            count += len(value) if field.is_repeated else 1
            if count > limit:  # checked before anything is queued
                raise TooManyElements(f"more than {limit} fields and elements")
            if field.type not in _MESSAGE_TYPES:
                continue
            entry = field.message_type
            if not field.is_repeated:
                stack.append(value)
            elif entry is None or not entry.GetOptions().map_entry:
                stack.extend(value)
            elif entry.fields_by_name["value"].type in _MESSAGE_TYPES:
                stack.extend(value.values())
    return count
