"""Pure mappings between a task's result and what jobs writes: the orchestrator's output, the stored
result, the sync job's status, and what a task that lost its runner stands for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from nango.jobs.args import TaskArgs
from nango.jobs.models import FunctionFailure, ModelResult, SyncJobStatus, SyncJobType, TaskCompletion
from nango.orchestrator.client import Task, TaskState
from nango.runner.client import FunctionType


def failure_json(failure: FunctionFailure) -> dict[str, Any]:
    return {
        "type": failure.type,
        "message": failure.message,
        "payload": failure.payload,
        "status": failure.status,
        "upstream": failure.upstream,
    }


def failure_from_json(data: Mapping[str, Any]) -> FunctionFailure:
    return FunctionFailure(
        type=str(data.get("type") or "script_internal_error"),
        message=str(data.get("message") or ""),
        status=int(data.get("status") or 500),
        payload=data.get("payload"),
        upstream=data.get("upstream"),
    )


def orchestrator_output(completion: TaskCompletion) -> dict[str, Any]:
    """What the orchestrator keeps as the task's output; the server reads it back for actions."""
    if completion.error is None:
        return {"output": completion.output}
    return {"error": failure_json(completion.error)}


def model_counts(results: Sequence[ModelResult]) -> tuple[ModelResult, ...]:
    """One entry per model, summed, in model order."""
    totals: dict[str, list[int]] = {}
    for result in results:
        counts = totals.setdefault(result.model, [0, 0, 0])
        counts[0] += result.added
        counts[1] += result.updated
        counts[2] += result.deleted
    return tuple(ModelResult(model, *counts) for model, counts in sorted(totals.items()))


def counts_json(results: Sequence[ModelResult]) -> dict[str, dict[str, int]]:
    return {r.model: {"added": r.added, "updated": r.updated, "deleted": r.deleted} for r in model_counts(results)}


def counts_from_json(data: Mapping[str, Any]) -> tuple[ModelResult, ...]:
    return tuple(
        ModelResult(model, int(c.get("added", 0)), int(c.get("updated", 0)), int(c.get("deleted", 0)))
        for model, c in sorted(data.items())
    )


def completion_json(completion: TaskCompletion) -> dict[str, Any]:
    """The stored form of a result: the orchestrator's output plus the per-model counts."""
    return {**orchestrator_output(completion), "results": counts_json(completion.results)}


def completion_from_json(task_id: str, data: Mapping[str, Any]) -> TaskCompletion:
    results = counts_from_json(data.get("results") or {})
    error = data.get("error")
    if isinstance(error, Mapping):
        return TaskCompletion(task_id, error=failure_from_json(error), results=results)
    return TaskCompletion(task_id, output=data.get("output"), results=results)


def lost_failure(task: Task | None) -> FunctionFailure:
    """Why a task ended without its runner's result: cancelled, expired, or failed by jobs itself."""
    if task is None:
        return FunctionFailure("task_expired", "the orchestrator no longer knows the task")
    output = task.output if isinstance(task.output, Mapping) else {}
    if task.state is TaskState.FAILED and isinstance(output.get("error"), Mapping):
        return failure_from_json(output["error"])
    reason = output.get("reason")
    detail = f" ({reason})" if reason else ""
    if task.state is TaskState.CANCELLED:
        return FunctionFailure("script_aborted", f"the task was cancelled{detail}", 410)
    if task.state is TaskState.EXPIRED:
        return FunctionFailure("task_expired", f"the task expired{detail}")
    return FunctionFailure("task_expired", f"the task ended as {task.state.value}{detail}")


def lost_completion(task_id: str, task: Task | None) -> TaskCompletion:
    return TaskCompletion(task_id, error=lost_failure(task))


def sync_job_outcome(completion: TaskCompletion, ended: Task | None) -> tuple[SyncJobStatus, FunctionFailure | None]:
    """The sync job's final status from how the orchestrator task actually ended."""
    state = ended.state if ended is not None else None
    if state is TaskState.SUCCEEDED:
        return SyncJobStatus.SUCCESS, None
    if state is TaskState.FAILED:
        return SyncJobStatus.ERROR, completion.error or lost_failure(ended)
    if state is TaskState.CANCELLED:
        return SyncJobStatus.STOPPED, lost_failure(ended)
    return SyncJobStatus.ERROR, lost_failure(ended)


def sync_job_type(args: TaskArgs, last_sync_date: datetime | None) -> SyncJobType:
    if args.kind is FunctionType.WEBHOOK:
        return SyncJobType.WEBHOOK
    if args.full or last_sync_date is None:
        return SyncJobType.FULL
    return SyncJobType.INCREMENTAL


def model_name(model: str, variant: str) -> str:
    """The records' model name: `Model`, or `Model::variant` for a variant other than base."""
    return model if not variant or variant == "base" else f"{model}::{variant}"


__all__ = [
    "completion_from_json",
    "completion_json",
    "counts_from_json",
    "counts_json",
    "failure_from_json",
    "failure_json",
    "lost_completion",
    "lost_failure",
    "model_counts",
    "model_name",
    "orchestrator_output",
    "sync_job_outcome",
    "sync_job_type",
]
