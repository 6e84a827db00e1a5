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


class ReconcilePassNotOpen(Conflict):
    """The reconcile pass named is not the open one of its model (finished, or replaced by a newer one)."""

    code = "reconcile_pass_not_open"
    default_message = "The reconcile pass is not open: it finished, or a newer pass replaced it"


__all__ = ["CheckpointConflict", "InvalidCursor", "ReconcilePassNotOpen"]
