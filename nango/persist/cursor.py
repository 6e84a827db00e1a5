"""The record cursor: `base64("<updated_at ISO-8601 with microseconds>||<record uuid>")`, Nango's format.

A cursor is a position in `(updated_at, id)` order, not a secret: a client that crafts one only
chooses where its read starts. Anything that does not decode to that shape is `invalid_cursor_value`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from nango.persist.errors import InvalidCursor

# Nango caps the query parameter at 1,000 characters
MAX_CURSOR_LENGTH = 1000
_SEPARATOR = "||"


@dataclass(frozen=True, order=True)
class Cursor:
    updated_at: datetime
    record_id: uuid.UUID


def encode_cursor(updated_at: datetime, record_id: uuid.UUID | str) -> str:
    text = f"{updated_at.isoformat(timespec='microseconds')}{_SEPARATOR}{record_id}"
    return base64.b64encode(text.encode()).decode()


def decode_cursor(value: str) -> Cursor:
    if not value or len(value) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        text = base64.b64decode(value, validate=True).decode("ascii")
        moment, record_id = text.split(_SEPARATOR)
        updated_at = datetime.fromisoformat(moment)
        parsed_id = uuid.UUID(record_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor() from None
    if updated_at.tzinfo is None or len(record_id) != 36:
        raise InvalidCursor()
    return Cursor(updated_at, parsed_id)


__all__ = ["MAX_CURSOR_LENGTH", "Cursor", "decode_cursor", "encode_cursor"]
