"""Long-poll wake-ups in one orchestrator process: a task ended here is handed to its waiters as it was
committed, and a notification of it that arrives while this process is still ending it waits for that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nango.orchestrator.events import TaskEvents
from nango.orchestrator.models import Task, TaskGroup
from nango.orchestrator.states import TaskState
from tests.support.tasks import make_task

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TASK_ID = "7b0f0d7e-6a3f-4d1e-9d6c-0123456789ab"


def ended(state: TaskState = TaskState.SUCCEEDED) -> Task:
    return make_task(
        state,
        {"output": 1},
        id=TASK_ID,
        group=TaskGroup("action:environment:1", 500),
        ended_at=NOW + timedelta(seconds=1),
    )


def notify(events: TaskEvents, task_id: str = TASK_ID) -> None:
    """What the LISTEN connection calls for a `task_terminated` notification."""
    events._on_terminated(None, 0, events.terminated_channel, f"{task_id} r 500 action:environment:1")


@pytest.fixture
def events() -> TaskEvents:
    return TaskEvents("postgresql://unused", "nango_scheduler")


async def test_a_task_ended_here_is_handed_to_its_waiters(events: TaskEvents) -> None:
    task = ended()
    with events.watching_task(TASK_ID) as watch, events.watching_task("other") as other:
        events.ended_here([task])
        assert watch.is_set()
        assert watch.ended is task
        assert not other.is_set()
        assert other.ended is None


async def test_a_notification_wakes_waiters_at_once_when_this_process_is_not_ending_the_task(
    events: TaskEvents,
) -> None:
    with events.watching_task(TASK_ID) as watch:
        notify(events)
        assert watch.is_set()
        assert watch.ended is None


async def test_a_notification_during_the_end_here_waits_for_the_handover(events: TaskEvents) -> None:
    task = ended()
    with events.watching_task(TASK_ID) as watch:
        with events.ending_here(TASK_ID):
            notify(events)
            assert not watch.is_set()
            events.ended_here([task])
            assert watch.is_set()
        assert watch.ended is task


def fail_to_end_here(events: TaskEvents) -> None:
    """This process ends the task, is notified of it, but loses the statement's reply."""
    with events.ending_here(TASK_ID):
        notify(events)
        raise RuntimeError("the reply was lost")


async def test_a_failed_end_here_still_wakes_waiters_that_were_notified(events: TaskEvents) -> None:
    with events.watching_task(TASK_ID) as watch:
        with pytest.raises(RuntimeError):
            fail_to_end_here(events)
        # woken without a task: the waiter queries it
        assert watch.is_set()
        assert watch.ended is None
        # and later notifications wake it directly again
        watch.clear()
        notify(events)
        assert watch.is_set()
