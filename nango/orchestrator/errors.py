"""The orchestrator's error types; `client.py` raises the same classes on the calling side."""

from __future__ import annotations

from nango.errors import NangoError, NotFound, RpcStatus


class TaskNotFound(NotFound):
    code = "task_not_found"
    default_message = "No task with this id"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"
    default_message = "No schedule with this name"


class InvalidTransition(NangoError):
    """The task is not in a state from which the requested one may follow."""

    code = "invalid_task_transition"
    http_status = 409
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The task cannot move to the requested state from its current state"


class GroupQueueFull(NangoError):
    """Backpressure: the group already holds ORCHESTRATOR_TASK_CREATED_PER_GROUP_COUNT_MAX waiting tasks."""

    code = "group_queue_full"
    http_status = 429
    rpc_status = RpcStatus.RESOURCE_EXHAUSTED
    default_message = "Too many tasks are waiting in this group"


__all__ = ["GroupQueueFull", "InvalidTransition", "ScheduleNotFound", "TaskNotFound"]
