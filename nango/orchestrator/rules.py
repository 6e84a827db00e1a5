"""Small named rules of the scheduler, free of I/O: admission, expiry reasons, retries, the grid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from nango.orchestrator.models import Candidate, Task
from nango.orchestrator.states import TaskState


class ExpiryReason(StrEnum):
    """Nango's `output.reason` of an EXPIRED task."""

    CREATED_TO_STARTED = "createdToStartedTimeoutSecs_exceeded"
    HEARTBEAT = "heartbeatTimeoutSecs_exceeded"
    STARTED_TO_COMPLETED = "startedToCompletedTimeoutSecs_exceeded"


def admit(candidates: Iterable[Candidate], running: Mapping[str, int], limit: int) -> list[str]:
    """The ids to start, oldest first: at most `limit`, and no group beyond its max concurrency
    counting the tasks it already runs (`running`, by group key)."""
    admitted: list[str] = []
    taken: Counter[str] = Counter()
    for candidate in candidates:
        if len(admitted) == limit:
            break
        limit_of_group = candidate.max_concurrency
        if limit_of_group > 0 and running.get(candidate.group_key, 0) + taken[candidate.group_key] >= limit_of_group:
            continue
        taken[candidate.group_key] += 1
        admitted.append(candidate.id)
    return admitted


def expiry_reason(task: Task) -> ExpiryReason:
    """Which timeout an active task past its deadline exceeded (the earlier one, for a started task)."""
    if task.state is TaskState.CREATED:
        return ExpiryReason.CREATED_TO_STARTED
    heartbeat_deadline = task.last_heartbeat_at + task.timeouts.heartbeat
    completion_deadline = task.last_state_transition_at + task.timeouts.started_to_completed
    if heartbeat_deadline <= completion_deadline:
        return ExpiryReason.HEARTBEAT
    return ExpiryReason.STARTED_TO_COMPLETED


def retry_name(task: Task) -> str:
    """`name:n` for attempt n, built from the first attempt's name (so `a`, `a:1`, `a:2`, not `a:1:2`)."""
    suffix = f":{task.retry_count}"
    base = task.name[: -len(suffix)] if task.retry_count > 0 and task.name.endswith(suffix) else task.name
    return f"{base}:{task.retry_count + 1}"


def next_grid_point(starts_at: datetime, frequency: timedelta, now: datetime) -> datetime:
    """The first instant of the grid `starts_at + k * frequency` (k >= 0) that is not before `now`."""
    if frequency <= timedelta(0):
        raise ValueError("frequency must be positive")
    if now <= starts_at:
        return starts_at
    # ceil((now - starts_at) / frequency) in exact integer microseconds
    steps = -((starts_at - now) // frequency)
    return starts_at + steps * frequency
