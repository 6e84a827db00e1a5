"""The bodies of the webhooks jobs makes itself (reference §7.2 and §3.7), and their event ids: derived
from the task id, so that publishing the same ended task again enqueues nothing new."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nango.jobs.args import TaskArgs
from nango.jobs.models import FunctionFailure, ModelResult, SyncJob, SyncJobType

# fixed for ever: changing it would re-send every event a re-published task stands for
EVENT_NAMESPACE = uuid.UUID("5a0c1f52-6a43-4c55-9d1e-0b3c8f3f4e21")
# Nango sends its FULL runs as INITIAL (the field is deprecated, the values are not)
SYNC_TYPES = {SyncJobType.FULL: "INITIAL", SyncJobType.INCREMENTAL: "INCREMENTAL", SyncJobType.WEBHOOK: "WEBHOOK"}


def event_id(task_id: str, part: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{task_id}:{part}"))


def iso(moment: datetime) -> str:
    """JavaScript's toISOString(): UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain_model(model: str, variant: str) -> str:
    """A model as the customer declared it (records of a variant are stored as `Model::variant`)."""
    suffix = f"::{variant}"
    return model[: -len(suffix)] if variant and variant != "base" and model.endswith(suffix) else model


def model_totals(results: Sequence[ModelResult], variant: str) -> dict[str, tuple[int, int, int]]:
    totals: dict[str, tuple[int, int, int]] = {}
    for result in results:
        name = plain_model(result.model, variant)
        added, updated, deleted = totals.get(name, (0, 0, 0))
        totals[name] = (added + result.added, updated + result.updated, deleted + result.deleted)
    return totals


def _sync_base(args: TaskArgs, job: SyncJob, model: str) -> dict[str, Any]:
    return {
        "from": "nango",
        "type": "sync",
        "connectionId": args.connection_id,
        "providerConfigKey": args.provider_config_key,
        "syncName": args.function,
        "syncVariant": args.variant,
        "model": model,
        "syncType": SYNC_TYPES[job.type],
    }


def sync_success_bodies(
    args: TaskArgs, job: SyncJob, models: Sequence[str], *, always: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(model, body) for each model of a successful run: those with changes, or all with `always`."""
    totals = model_totals(job.results, args.variant)
    ordered = list(dict.fromkeys([*(plain_model(m, args.variant) for m in models), *sorted(totals)]))
    started = iso(job.started_at)
    bodies = []
    for model in ordered:
        added, updated, deleted = totals.get(model, (0, 0, 0))
        if not always and added + updated + deleted == 0:
            continue
        body = {
            **_sync_base(args, job, model),
            "success": True,
            "responseResults": {"added": added, "updated": updated, "deleted": deleted},
            "modifiedAfter": started,
            "queryTimeStamp": started,
        }
        bodies.append((model, body))
    return bodies


def sync_error_body(args: TaskArgs, job: SyncJob, models: Sequence[str], error: FunctionFailure) -> dict[str, Any]:
    """One body for a failed (or stopped) run, naming every model of the sync."""
    names = list(dict.fromkeys(plain_model(m, args.variant) for m in models))
    return {
        **_sync_base(args, job, ",".join(names)),
        "success": False,
        "error": {"type": error.type, "description": error.message},
        "startedAt": iso(job.started_at),
        "failedAt": iso(job.ended_at or datetime.now(UTC)),
    }


def action_status_url(action_id: str) -> str:
    """Where the customer reads the result: the public API's `GET /action/{id}` (as the server answers it)."""
    return f"/action/{action_id}"


def async_action_body(args: TaskArgs, action_id: str) -> dict[str, Any]:
    return {
        "type": "async_action",
        "from": "nango",
        "connectionId": args.connection_id,
        "providerConfigKey": args.provider_config_key,
        "payload": {"id": action_id, "statusUrl": action_status_url(action_id)},
    }


__all__ = [
    "EVENT_NAMESPACE",
    "SYNC_TYPES",
    "action_status_url",
    "async_action_body",
    "event_id",
    "iso",
    "model_totals",
    "plain_model",
    "sync_error_body",
    "sync_success_bodies",
]
