"""persist's error types; `client.py` raises the same classes on the calling side."""

from __future__ import annotations

from nango.errors import Conflict, InvalidRequest


class InvalidCursor(InvalidRequest):
    code = "invalid_cursor_value"
    default_message = "The cursor is not one this API returned"


class CheckpointConflict(Conflict):
    """The checkpoint's version is not the one the writer read: someone else wrote it since."""

    code = "checkpoint_conflict"
    default_message = "The checkpoint was changed concurrently; read it again"


__all__ = ["CheckpointConflict", "InvalidCursor"]
