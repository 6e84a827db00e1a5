"""An orchestrator task as a test needs it: ended unless it is CREATED or STARTED, everything else at
plain defaults a test can override."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nango.orchestrator.models import Task, TaskGroup, TaskTimeouts
from nango.orchestrator.states import TaskState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_task(
    state: TaskState,
    output: Any = None,
    *,
    id: str = "t",
    group: TaskGroup | None = None,
    owner_key: str = "",
    at: datetime = NOW,
    ended_at: datetime | None = None,
) -> Task:
    return Task(
        id=id,
        name="n",
        group=group or TaskGroup("action:environment:1"),
        state=state,
        args={},
        retry_count=0,
        retry_max=0,
        retry_key="r",
        owner_key=owner_key,
        schedule_id=None,
        timeouts=TaskTimeouts(),
        created_at=at,
        starts_after=at,
        last_state_transition_at=ended_at or at,
        last_heartbeat_at=at,
        output=output,
        terminated=state not in (TaskState.CREATED, TaskState.STARTED),
    )
