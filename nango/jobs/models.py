"""The jobs service's domain types: what a runner reports, and the sync-job history jobs keeps.

`client.py` re-exports them; the service and its callers speak these, never protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class FunctionFailure:
    """Why a function did not produce an output (`type` as Nango names it, e.g. `script_timeout`)."""

    type: str
    message: str
    status: int = 500
    payload: Any = None
    # script_http_error: {status, headers, body} of the upstream answer the function let escape
    upstream: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelResult:
    model: str
    added: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class TaskTelemetry:
    duration: timedelta = timedelta(0)
    max_memory_bytes: int = 0
    proxy_calls: int = 0
    log_messages: int = 0


@dataclass(frozen=True)
class TaskCompletion:
    """A finished task: its JSON-able `output`, or `error`."""

    task_id: str
    output: Any = None
    error: FunctionFailure | None = None
    telemetry: TaskTelemetry = field(default_factory=TaskTelemetry)
    results: Sequence[ModelResult] = ()


class SyncJobStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    STOPPED = "STOPPED"


class SyncJobType(StrEnum):
    FULL = "FULL"
    INCREMENTAL = "INCREMENTAL"
    WEBHOOK = "WEBHOOK"


@dataclass(frozen=True)
class SyncJob:
    """One run of a sync. Its id is also the run's track-deletes generation in persist."""

    id: int
    sync_id: str
    task_id: str
    type: SyncJobType
    status: SyncJobStatus
    results: tuple[ModelResult, ...]
    started_at: datetime
    ended_at: datetime | None = None
    error: FunctionFailure | None = None


WEBHOOK_TYPES = frozenset({"auth", "sync", "forward", "async_action"})


@dataclass(frozen=True)
class OutgoingWebhook:
    """One event for the customer, to POST to each of `urls` (docs/webhooks.md). Receivers de-duplicate by
    `event_id`, sent as X-Nango-Delivery-Id; enqueueing the same (event_id, url) again stores nothing."""

    event_id: str
    environment_id: int
    # "auth", "sync", "forward" or "async_action"
    type: str
    # the payload (§7 of the reference); sent stable-stringified and signed
    body: Any
    urls: tuple[str, ...]
    # forwarded provider headers (forward only)
    headers: Mapping[str, str] = field(default_factory=dict)
    connection_id: str = ""
    provider_config_key: str = ""


__all__ = [
    "WEBHOOK_TYPES",
    "FunctionFailure",
    "ModelResult",
    "OutgoingWebhook",
    "SyncJob",
    "SyncJobStatus",
    "SyncJobType",
    "TaskCompletion",
    "TaskTelemetry",
]
