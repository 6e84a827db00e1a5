"""Result mapping free of I/O: orchestrator outputs, stored results, sync-job outcomes, lost tasks,
the protobuf forms of sync jobs, and the jobs settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nango.config import SettingsError, load
from nango.jobs.args import parse_task_args
from nango.jobs.client import completion_from_pb, completion_to_pb, sync_job_from_pb, sync_job_to_pb
from nango.jobs.dispatch import hold_interval, input_json
from nango.jobs.models import (
    FunctionFailure,
    ModelResult,
    SyncJob,
    SyncJobStatus,
    SyncJobType,
    TaskCompletion,
)
from nango.jobs.results import (
    completion_from_json,
    completion_json,
    lost_failure,
    model_counts,
    model_name,
    orchestrator_output,
    sync_job_outcome,
    sync_job_type,
)
from nango.jobs.settings import JobsSettings
from nango.orchestrator.client import Task, TaskGroup, TaskState
from tests.support.inprocess import environment
from tests.support.tasks import make_task

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACTION_ERROR = FunctionFailure("action_script_runtime_error", "no", 500, {"reason": "not today"})
HTTP_ERROR = FunctionFailure("script_http_error", "404", 424, upstream={"status": 404, "headers": {}, "body": "x"})


def task(state: TaskState, output: Any = None) -> Task:
    return make_task(state, output, id="t1", group=TaskGroup("sync:environment:1"), at=T0)


def test_the_orchestrator_keeps_the_output_or_the_error() -> None:
    assert orchestrator_output(TaskCompletion("t1", output={"id": 1})) == {"output": {"id": 1}}
    assert orchestrator_output(TaskCompletion("t1")) == {"output": None}
    assert orchestrator_output(TaskCompletion("t1", error=ACTION_ERROR)) == {
        "error": {
            "type": "action_script_runtime_error",
            "message": "no",
            "payload": {"reason": "not today"},
            "status": 500,
            "upstream": None,
        }
    }


def test_counts_are_summed_per_model() -> None:
    results = [ModelResult("B", 1, 0, 0), ModelResult("A", 2, 1, 0), ModelResult("B", 3, 4, 5)]
    assert model_counts(results) == (ModelResult("A", 2, 1, 0), ModelResult("B", 4, 4, 5))


@pytest.mark.parametrize(
    "completion",
    [
        TaskCompletion("t1", output=[1, "two"], results=[ModelResult("Contact", 1, 2, 3)]),
        TaskCompletion("t1", error=HTTP_ERROR),
        TaskCompletion("t1", error=ACTION_ERROR, results=[ModelResult("A", 1), ModelResult("A", 1)]),
    ],
)
def test_a_stored_result_reads_back_the_same(completion: TaskCompletion) -> None:
    stored = json.loads(json.dumps(completion_json(completion)))
    back = completion_from_json("t1", stored)
    assert (back.output, back.error) == (completion.output, completion.error)
    assert back.results == model_counts(completion.results)


def test_a_lost_task_says_why() -> None:
    assert lost_failure(None).type == "task_expired"
    expired = lost_failure(task(TaskState.EXPIRED, {"reason": "heartbeatTimeoutSecs_exceeded"}))
    assert (expired.type, expired.status) == ("task_expired", 500)
    assert "heartbeatTimeoutSecs_exceeded" in expired.message
    cancelled = lost_failure(task(TaskState.CANCELLED, {"reason": "paused"}))
    assert (cancelled.type, cancelled.status) == ("script_aborted", 410)
    assert "paused" in cancelled.message
    failed = lost_failure(
        task(TaskState.FAILED, {"error": {"type": "runner_unavailable", "message": "m", "status": 503}})
    )
    assert (failed.type, failed.message, failed.status) == ("runner_unavailable", "m", 503)


@pytest.mark.parametrize(
    ("completion", "ended", "status", "error_type"),
    [
        (TaskCompletion("t1"), task(TaskState.SUCCEEDED), SyncJobStatus.SUCCESS, None),
        (TaskCompletion("t1", error=HTTP_ERROR), task(TaskState.FAILED), SyncJobStatus.ERROR, "script_http_error"),
        # the runner's success came after the orchestrator had expired the task
        (TaskCompletion("t1"), task(TaskState.EXPIRED, {"reason": "r"}), SyncJobStatus.ERROR, "task_expired"),
        (TaskCompletion("t1"), None, SyncJobStatus.ERROR, "task_expired"),
        (TaskCompletion("t1", error=HTTP_ERROR), task(TaskState.CANCELLED), SyncJobStatus.STOPPED, "script_aborted"),
    ],
)
def test_the_sync_job_ends_as_the_task_actually_ended(
    completion: TaskCompletion, ended: Task | None, status: SyncJobStatus, error_type: str | None
) -> None:
    got, error = sync_job_outcome(completion, ended)
    assert got is status
    assert (error.type if error is not None else None) == error_type


def test_sync_job_types() -> None:
    base = {
        "type": "sync",
        "environment_id": 1,
        "nango_connection_id": 2,
        "connection_id": "c",
        "provider_config_key": "p",
        "function": "f",
        "sync_id": "0b7e1a0c-3f3e-4d52-9b8e-5a1f2c3d4e5f",
    }
    assert sync_job_type(parse_task_args(base), None) is SyncJobType.FULL
    assert sync_job_type(parse_task_args(base), T0) is SyncJobType.INCREMENTAL
    assert sync_job_type(parse_task_args({**base, "full": True}), T0) is SyncJobType.FULL
    assert sync_job_type(parse_task_args({**base, "type": "webhook"}), None) is SyncJobType.WEBHOOK


def test_model_names_carry_the_variant() -> None:
    assert [model_name("Contact", v) for v in ("", "base", "eu")] == ["Contact", "Contact", "Contact::eu"]


def test_held_tasks_heartbeat_well_within_their_timeout() -> None:
    assert hold_interval(timedelta(minutes=5)) == 30.0
    assert hold_interval(timedelta(seconds=3)) == 1.0
    assert hold_interval(timedelta(0)) == 0.1


def test_input_is_sent_as_json() -> None:
    assert input_json(None) == b""
    assert json.loads(input_json({"a": [1, "é"]})) == {"a": [1, "é"]}


@pytest.mark.parametrize(
    "job",
    [
        SyncJob(7, "s", "t", SyncJobType.FULL, SyncJobStatus.RUNNING, (), T0),
        SyncJob(
            8,
            "s",
            "t",
            SyncJobType.WEBHOOK,
            SyncJobStatus.ERROR,
            (ModelResult("A", 1, 2, 3),),
            T0,
            T0 + timedelta(seconds=1),
            HTTP_ERROR,
        ),
    ],
)
def test_sync_jobs_cross_the_wire_unchanged(job: SyncJob) -> None:
    assert sync_job_from_pb(sync_job_to_pb(job)) == job


def test_completions_cross_the_wire_unchanged() -> None:
    done = TaskCompletion("t1", output={"x": 1}, results=(ModelResult("A", 1),))
    assert completion_from_pb(completion_to_pb(done)) == done
    failed = TaskCompletion("t1", error=HTTP_ERROR)
    assert completion_from_pb(completion_to_pb(failed)) == failed


def test_settings_defaults_and_nango_processor_config() -> None:
    with environment({"NANGO_INTERNAL_TOKEN": "t" * 20}):
        settings = load(JobsSettings)
    assert {c.group_key_pattern: c.max_concurrency for c in settings.processor_config} == {
        "sync:*": 8,
        "action:*": 8,
        "webhook:*": 4,
        "on-event:*": 4,
    }
    config = '[{"groupKeyPattern": "sync*", "maxConcurrency": 200}]'
    with environment({"NANGO_INTERNAL_TOKEN": "t" * 20, "JOBS_PROCESSOR_CONFIG": config}):
        settings = load(JobsSettings)
    assert [(c.group_key_pattern, c.max_concurrency) for c in settings.processor_config] == [("sync*", 200)]
    for wrong in ('[{"groupKeyPattern": "a*", "maxConcurrency": 0}]', "[]", '[{"groupKeyPattern": "a*"}]', "nope"):
        with (
            environment({"NANGO_INTERNAL_TOKEN": "t" * 20, "JOBS_PROCESSOR_CONFIG": wrong}),
            pytest.raises(SettingsError, match="JOBS_PROCESSOR_CONFIG"),
        ):
            load(JobsSettings)
    twice = '[{"groupKeyPattern": "a*", "maxConcurrency": 1}, {"groupKeyPattern": "a*", "maxConcurrency": 2}]'
    with (
        environment({"NANGO_INTERNAL_TOKEN": "t" * 20, "JOBS_PROCESSOR_CONFIG": twice}),
        pytest.raises(SettingsError, match="once"),
    ):
        load(JobsSettings)
