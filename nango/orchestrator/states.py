"""The task and schedule state machines as data: which state may follow which.

Every transition in SQL is conditional on `sources(to)` (`UPDATE … WHERE state = ANY(…)`), so a
transition that this table forbids cannot happen, even between two replicas racing on one row.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class TaskState(StrEnum):
    CREATED = "CREATED"
    STARTED = "STARTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return not TASK_TRANSITIONS[self]


class ScheduleState(StrEnum):
    STARTED = "STARTED"
    PAUSED = "PAUSED"
    DELETED = "DELETED"


TASK_TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    TaskState.CREATED: frozenset({TaskState.STARTED, TaskState.CANCELLED, TaskState.EXPIRED}),
    TaskState.STARTED: frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED}),
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.EXPIRED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}

# A schedule never leaves DELETED; its name is free for a new schedule.
SCHEDULE_TRANSITIONS: Mapping[ScheduleState, frozenset[ScheduleState]] = {
    ScheduleState.STARTED: frozenset({ScheduleState.PAUSED, ScheduleState.DELETED}),
    ScheduleState.PAUSED: frozenset({ScheduleState.STARTED, ScheduleState.DELETED}),
    ScheduleState.DELETED: frozenset(),
}

TERMINAL_TASK_STATES = frozenset(s for s in TaskState if s.terminal)
ACTIVE_TASK_STATES = frozenset(s for s in TaskState if not s.terminal)

# A failed or expired attempt is retried while its policy allows; success and cancellation are final.
RETRYABLE_TASK_STATES = frozenset({TaskState.FAILED, TaskState.EXPIRED})


def task_sources(to: TaskState) -> list[str]:
    """The states a task may be in to move to `to`, sorted, ready for `state = ANY($n)`."""
    return sorted(s.value for s, targets in TASK_TRANSITIONS.items() if to in targets)


def schedule_sources(to: ScheduleState) -> list[str]:
    return sorted(s.value for s, targets in SCHEDULE_TRANSITIONS.items() if to in targets)


def task_transition_allowed(frm: TaskState, to: TaskState) -> bool:
    return to in TASK_TRANSITIONS[frm]


def schedule_transition_allowed(frm: ScheduleState, to: ScheduleState) -> bool:
    return to in SCHEDULE_TRANSITIONS[frm]
