"""The jobs service's error types; `client.py` callers receive the same codes."""

from __future__ import annotations

from nango.errors import InvalidRequest, NangoError, NotFound, RpcStatus


class InvalidTaskArgs(InvalidRequest):
    code = "invalid_task_args"
    default_message = "The task's arguments are not valid"


class FunctionDisabled(NangoError):
    code = "function_disabled"
    http_status = 409
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The function is disabled"


class UnknownTask(NotFound):
    """A runner reported a task that jobs never dispatched."""

    code = "unknown_task"
    default_message = "Jobs did not dispatch this task"


__all__ = ["FunctionDisabled", "InvalidTaskArgs", "UnknownTask"]
