"""The record cursor: `base64("<updated_at ISO-8601 with microseconds>||<record uuid>")`, Nango's format.

A cursor is a position in `(updated_at, id)` order, not a secret: a client that crafts one only
chooses where its read starts. Anything that does not decode to that shape is `invalid_cursor_value`.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from nango.persist.errors import InvalidCursor

# Nango caps the query parameter at 1,000 characters
MAX_CURSOR_LENGTH = 1000
_SEPARATOR = "||"
# what `encode_cursor` writes (and Nango's Postgres `to_json(updated_at)`): an offset is required
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_RECORD_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# years a timestamptz holds whatever the client's time zone (Python's datetime stops at 1 and 9999)
_MIN_YEAR, _MAX_YEAR = 2, 9998


@dataclass(frozen=True, order=True)
class Cursor:
    updated_at: datetime
    record_id: uuid.UUID


def encode_cursor(updated_at: datetime, record_id: uuid.UUID | str) -> str:
    text = f"{updated_at.isoformat(timespec='microseconds')}{_SEPARATOR}{record_id}"
    return base64.b64encode(text.encode()).decode()


def decode_cursor(value: str) -> Cursor:
    """The position a cursor names; InvalidCursor for anything `encode_cursor` would not have written
    (including moments Postgres cannot hold once in UTC)."""
    if not value or len(value) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        moment, record_id = base64.b64decode(value, validate=True).decode("ascii").split(_SEPARATOR)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor() from None
    if _MOMENT.fullmatch(moment) is None or _RECORD_ID.fullmatch(record_id) is None:
        raise InvalidCursor()
    try:
        updated_at = datetime.fromisoformat(moment).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidCursor() from None
    if not _MIN_YEAR <= updated_at.year <= _MAX_YEAR:
        raise InvalidCursor()
    return Cursor(updated_at, uuid.UUID(record_id))


__all__ = ["MAX_CURSOR_LENGTH", "Cursor", "decode_cursor", "encode_cursor"]
