"""The orchestrator's rules free of I/O: the transition tables, the grid, glob patterns, admission."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nango.orchestrator.models import Candidate, Task, TaskGroup, TaskTimeouts
from nango.orchestrator.patterns import GroupPattern
from nango.orchestrator.rules import ExpiryReason, admit, expiry_reason, next_grid_point, retry_name
from nango.orchestrator.states import (
    ACTIVE_TASK_STATES,
    TERMINAL_TASK_STATES,
    ScheduleState,
    TaskState,
    schedule_sources,
    schedule_transition_allowed,
    task_sources,
    task_transition_allowed,
)

S = TaskState
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# transitions

ALLOWED = {
    (S.CREATED, S.STARTED),
    (S.CREATED, S.CANCELLED),
    (S.CREATED, S.EXPIRED),
    (S.STARTED, S.SUCCEEDED),
    (S.STARTED, S.FAILED),
    (S.STARTED, S.CANCELLED),
    (S.STARTED, S.EXPIRED),
}


@pytest.mark.parametrize("frm", list(TaskState))
@pytest.mark.parametrize("to", list(TaskState))
def test_task_transition_table_is_nangos(frm: TaskState, to: TaskState) -> None:
    assert task_transition_allowed(frm, to) == ((frm, to) in ALLOWED)


def test_terminal_states_are_the_four_outcomes() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED} == TERMINAL_TASK_STATES
    assert {S.CREATED, S.STARTED} == ACTIVE_TASK_STATES


def test_sources_feed_the_sql_guard() -> None:
    assert task_sources(S.STARTED) == ["CREATED"]
    assert task_sources(S.SUCCEEDED) == ["STARTED"]
    assert task_sources(S.FAILED) == ["STARTED"]
    assert task_sources(S.CANCELLED) == ["CREATED", "STARTED"]
    assert task_sources(S.EXPIRED) == ["CREATED", "STARTED"]
    assert task_sources(S.CREATED) == []


def test_schedule_transitions() -> None:
    assert schedule_transition_allowed(ScheduleState.STARTED, ScheduleState.PAUSED)
    assert schedule_transition_allowed(ScheduleState.PAUSED, ScheduleState.STARTED)
    assert schedule_transition_allowed(ScheduleState.PAUSED, ScheduleState.DELETED)
    assert not schedule_transition_allowed(ScheduleState.DELETED, ScheduleState.STARTED)
    assert not schedule_transition_allowed(ScheduleState.STARTED, ScheduleState.STARTED)
    assert schedule_sources(ScheduleState.DELETED) == ["PAUSED", "STARTED"]


# the grid


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0 - timedelta(hours=3), T0),  # before the first run: the first run
        (T0, T0),
        (T0 + timedelta(microseconds=1), T0 + timedelta(minutes=5)),
        (T0 + timedelta(minutes=4, seconds=59), T0 + timedelta(minutes=5)),
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=5)),
        (T0 + timedelta(minutes=5, microseconds=1), T0 + timedelta(minutes=10)),
        (T0 + timedelta(days=400, minutes=1), T0 + timedelta(days=400, minutes=5)),
    ],
)
def test_next_grid_point(now: datetime, expected: datetime) -> None:
    assert next_grid_point(T0, timedelta(minutes=5), now) == expected


def test_grid_point_is_never_in_the_past_and_always_on_the_grid() -> None:
    frequency = timedelta(seconds=7, microseconds=3)
    for step in range(0, 10_000, 37):
        now = T0 + timedelta(milliseconds=step * 13)
        point = next_grid_point(T0, frequency, now)
        assert point >= now
        assert point - frequency < now
        assert (point - T0) % frequency == timedelta(0)


def test_grid_refuses_a_non_positive_frequency() -> None:
    with pytest.raises(ValueError, match="positive"):
        next_grid_point(T0, timedelta(0), T0)


# glob patterns


@pytest.mark.parametrize(
    ("glob", "like"),
    [
        ("sync:*", "sync:%"),
        ("*", "%"),
        ("action:environment:1", "action:environment:1"),
        ("a_b%c", r"a\_b\%c"),
        ("back\\slash*", "back\\\\slash%"),
        ("*:env_1:*", r"%:env\_1:%"),
    ],
)
def test_glob_becomes_an_escaped_like(glob: str, like: str) -> None:
    assert GroupPattern(glob).like == like


@pytest.mark.parametrize(
    ("glob", "key", "matches"),
    [
        ("sync:*", "sync:environment:1", True),
        ("sync:*", "sync:", True),
        ("sync:*", "action:environment:1", False),
        ("*", "anything at all", True),
        ("a_b", "a_b", True),
        ("a_b", "axb", False),  # `_` is literal, not LIKE's any-character
        ("a%", "abc", False),  # `%` is literal
        ("a?c", "abc", False),  # only `*` is special
        ("a[b]c", "a[b]c", True),
        ("*:1", "x:1", True),
        ("*:1", "x:10", False),
        ("line*", "line\nbreak", True),
    ],
)
def test_glob_matches_like_postgres_would(glob: str, key: str, matches: bool) -> None:
    assert GroupPattern(glob).matches(key) is matches


# admission within group limits


def test_admit_keeps_order_and_limit() -> None:
    candidates = [Candidate(f"t{i}", "g", 0) for i in range(5)]
    assert admit(candidates, {}, 3) == ["t0", "t1", "t2"]


def test_admit_honours_running_tasks_per_group() -> None:
    candidates = [
        Candidate("a1", "a", 2),
        Candidate("b1", "b", 1),
        Candidate("a2", "a", 2),
        Candidate("a3", "a", 2),
        Candidate("b2", "b", 1),
        Candidate("c1", "c", 0),
    ]
    assert admit(candidates, {"a": 1}, 10) == ["a1", "b1", "c1"]
    assert admit(candidates, {"a": 2, "b": 1}, 10) == ["c1"]
    assert admit(candidates, {}, 10) == ["a1", "b1", "a2", "c1"]


# expiry reasons and retry names


def _task(state: TaskState, *, started: datetime, heartbeat: datetime, name: str = "job", retry_count: int = 0) -> Task:
    return Task(
        id="00000000-0000-0000-0000-000000000001",
        name=name,
        group=TaskGroup("g"),
        state=state,
        args={},
        retry_count=retry_count,
        retry_max=3,
        retry_key="00000000-0000-0000-0000-000000000002",
        owner_key="",
        schedule_id=None,
        timeouts=TaskTimeouts(timedelta(seconds=30), timedelta(minutes=10), timedelta(minutes=1)),
        created_at=T0,
        starts_after=T0,
        last_state_transition_at=started,
        last_heartbeat_at=heartbeat,
        output=None,
        terminated=False,
    )


def test_expiry_reason_names_the_timeout_that_ran_out_first() -> None:
    assert expiry_reason(_task(S.CREATED, started=T0, heartbeat=T0)) is ExpiryReason.CREATED_TO_STARTED
    silent = _task(S.STARTED, started=T0, heartbeat=T0 + timedelta(minutes=2))
    assert expiry_reason(silent) is ExpiryReason.HEARTBEAT
    slow = _task(S.STARTED, started=T0, heartbeat=T0 + timedelta(minutes=9, seconds=30))
    assert expiry_reason(slow) is ExpiryReason.STARTED_TO_COMPLETED
    assert ExpiryReason.HEARTBEAT.value == "heartbeatTimeoutSecs_exceeded"


def test_retry_names_count_attempts_from_the_first_name() -> None:
    assert retry_name(_task(S.FAILED, started=T0, heartbeat=T0, name="job")) == "job:1"
    assert retry_name(_task(S.FAILED, started=T0, heartbeat=T0, name="job:1", retry_count=1)) == "job:2"
    assert retry_name(_task(S.FAILED, started=T0, heartbeat=T0, name="v:1", retry_count=0)) == "v:1:1"
