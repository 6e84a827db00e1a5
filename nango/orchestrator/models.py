"""Domain types of tasks and schedules. The service and `client.py` speak these, never protobuf."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nango.orchestrator.states import ScheduleState, TaskState


@dataclass(frozen=True)
class TaskGroup:
    """Tasks of one group share a concurrency limit; 0 means unlimited."""

    key: str
    max_concurrency: int = 0


@dataclass(frozen=True)
class TaskTimeouts:
    """A task that exceeds one of these is EXPIRED. The defaults are Nango's for immediate tasks."""

    created_to_started: timedelta = timedelta(seconds=30)
    started_to_completed: timedelta = timedelta(seconds=30)
    heartbeat: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class TaskSpec:
    """What a caller gives to create an immediate task."""

    name: str
    group: TaskGroup
    args: Mapping[str, Any] = field(default_factory=dict)
    retry_max: int = 0
    timeouts: TaskTimeouts = TaskTimeouts()
    owner_key: str = ""
    # not runnable before this instant; None means now
    starts_after: datetime | None = None
    # a second create with the same key returns the first task (its id is derived from the key)
    idempotency_key: str = ""


@dataclass(frozen=True)
class Task:
    id: str
    name: str
    group: TaskGroup
    state: TaskState
    args: Mapping[str, Any]
    retry_count: int
    retry_max: int
    # shared by every attempt of the same logical task
    retry_key: str
    owner_key: str
    schedule_id: str | None
    timeouts: TaskTimeouts
    created_at: datetime
    starts_after: datetime
    last_state_transition_at: datetime
    last_heartbeat_at: datetime
    # the output on success, the error on failure, {"reason": …} on expiry or cancellation
    output: Any
    terminated: bool

    @property
    def retries_left(self) -> bool:
        return self.retry_count < self.retry_max


@dataclass(frozen=True)
class FailedTask:
    task: Task
    # the next attempt, when the task had retries left
    retry: Task | None


@dataclass(frozen=True)
class TaskQuery:
    """SearchTasks: every given criterion must hold; newest first."""

    ids: Sequence[str] = ()
    group_key: str | None = None
    schedule_id: str | None = None
    states: Sequence[TaskState] = ()
    limit: int = 100


@dataclass(frozen=True)
class ScheduleSpec:
    """What a caller gives to create (or replace, by name) a recurring schedule."""

    name: str
    group: TaskGroup
    frequency: timedelta
    args: Mapping[str, Any] = field(default_factory=dict)
    state: ScheduleState = ScheduleState.STARTED
    # runs fall on the grid starts_at + k * frequency; None means now
    starts_at: datetime | None = None
    retry_max: int = 0
    timeouts: TaskTimeouts = TaskTimeouts()


@dataclass(frozen=True)
class Schedule:
    id: str
    name: str
    state: ScheduleState
    starts_at: datetime
    frequency: timedelta
    group: TaskGroup
    retry_max: int
    timeouts: TaskTimeouts
    args: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    next_execution_at: datetime
    last_scheduled_task_id: str | None
    last_scheduled_task_state: TaskState | None


@dataclass(frozen=True)
class Candidate:
    """A waiting task considered by a dequeue, before its group's limit is applied."""

    id: str
    group_key: str
    max_concurrency: int
