"""What an action task's end means on the public API: its output, or the error a caller sees."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from nango.orchestrator.client import Task, TaskState
from nango.server.actions import MAX_OUTPUT_BYTES, ActionFailed, outcome
from tests.support.tasks import make_task

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def task(state: TaskState, output: Any) -> Task:
    return make_task(state, output, owner_key="environment:1")


def failed(state: TaskState, output: Any) -> dict[str, Any]:
    with pytest.raises(ActionFailed) as raised:
        outcome(task(state, output))
    return {"status": raised.value.status, **raised.value.to_envelope()["error"]}


def test_success_is_the_raw_output() -> None:
    assert outcome(task(TaskState.SUCCEEDED, {"output": {"a": [1]}})) == {"a": [1]}
    assert outcome(task(TaskState.SUCCEEDED, {"output": None})) is None


def test_an_output_over_two_megabytes_is_refused() -> None:
    big = "x" * MAX_OUTPUT_BYTES
    assert failed(TaskState.SUCCEEDED, {"output": big})["code"] == "action_output_too_big"


def test_action_error_and_upstream_error_shapes() -> None:
    error = {"type": "action_script_runtime_error", "message": "boom", "payload": {"p": 1}, "status": 500}
    assert failed(TaskState.FAILED, {"error": error}) == {
        "status": 500,
        "code": "action_script_runtime_error",
        "message": "The action script failed with a runtime error",
        "payload": {"p": 1},
    }
    upstream = {"status": 429, "headers": {}, "body": "slow down"}
    error = {"type": "script_http_error", "message": "GET /x", "payload": None, "upstream": upstream}
    got = failed(TaskState.FAILED, {"error": error})
    assert (got["status"], got["code"], got["upstream"]) == (424, "script_http_error", upstream)


@pytest.mark.parametrize(
    ("output", "status", "code"),
    [
        ({"error": {"type": "script_aborted", "message": "stop", "status": 410}}, 410, "script_aborted"),
        ({"error": {"type": "script_timeout", "message": "slow", "status": 999}}, 500, "script_timeout"),
        ({"error": "not an object"}, 500, "action_script_failure"),
        (None, 500, "action_script_failure"),
    ],
)
def test_other_failures(output: Any, status: int, code: str) -> None:
    got = failed(TaskState.FAILED, output)
    assert (got["status"], got["code"]) == (status, code)


def test_expired_and_cancelled_tasks_are_clear_errors() -> None:
    never = failed(TaskState.EXPIRED, {"reason": "createdToStartedTimeoutSecs_exceeded"})
    assert (never["status"], never["code"]) == (504, "action_timeout")
    assert "jobs" in never["message"]
    slow = failed(TaskState.EXPIRED, {"reason": "heartbeatTimeoutSecs_exceeded"})
    assert (slow["status"], slow["payload"]) == (504, {"reason": "heartbeatTimeoutSecs_exceeded"})
    cancelled = failed(TaskState.CANCELLED, {"reason": "by hand"})
    assert (cancelled["status"], cancelled["code"], cancelled["payload"]) == (
        410,
        "script_aborted",
        {"reason": "by hand"},
    )
