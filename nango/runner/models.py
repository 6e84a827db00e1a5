"""The runner's domain types: what a task is, what a bundle declares, what the runner is doing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class FunctionType(StrEnum):
    SYNC = "sync"
    ACTION = "action"
    WEBHOOK = "webhook"
    ON_EVENT = "on-event"


class ErrorType(StrEnum):
    """FunctionError types, as Nango names them."""

    ACTION = "action_script_runtime_error"
    HTTP = "script_http_error"
    SCRIPT = "script_error"
    TIMEOUT = "script_timeout"
    MEMORY = "script_memory_exceeded"
    ABORTED = "script_aborted"
    INTERNAL = "script_internal_error"
    INVALID_INPUT = "invalid_action_input"
    INVALID_OUTPUT = "invalid_action_output"


@dataclass(frozen=True)
class FunctionRef:
    name: str
    version: str = ""
    # blob-store key of the deployed bundle and its hex SHA-256
    bundle_key: str = ""
    bundle_sha256: str = ""


@dataclass(frozen=True)
class ConnectionContext:
    environment_id: int
    nango_connection_id: int
    connection_id: str
    provider_config_key: str
    provider: str = ""
    environment_name: str = ""
    end_user: dict[str, Any] | None = None


@dataclass(frozen=True)
class SyncContext:
    sync_id: str = ""
    # a positive integer: the generation persist's track-deletes uses
    sync_job_id: str = ""
    variant: str = ""
    last_sync_date: datetime | None = None
    track_deletes: bool = False
    # a reconcile pass: ids only, the unseen deleted (docs/functions.md); it has no sync job
    reconcile: bool = False


@dataclass(frozen=True)
class TaskStart:
    task_id: str
    type: FunctionType
    function: FunctionRef
    connection: ConnectionContext
    task_token: str
    sync: SyncContext | None = None
    # action input, webhook payload or event payload (JSON bytes; empty for none)
    input_json: bytes = b""
    activity_log_id: str = ""
    debug: bool = False
    attempt: int = 0


@dataclass(frozen=True)
class FunctionSpec:
    """One function a bundle declares, as its decorator declared it."""

    name: str
    type: FunctionType
    description: str
    version: str
    module: str
    attribute: str
    frequency: str = ""
    auto_start: bool = False
    track_deletes: bool = False
    models: tuple[str, ...] = ()
    models_json_schema: dict[str, Any] = field(default_factory=dict)
    input_json_schema: dict[str, Any] | None = None
    output_json_schema: dict[str, Any] | None = None
    webhook_subscriptions: tuple[str, ...] = ()
    event: str = ""
    scopes: tuple[str, ...] = ()
    reconcile_deletes: str = ""


@dataclass(frozen=True)
class RunnerStatus:
    node_id: str
    capacity: int
    running_task_ids: tuple[str, ...]


__all__ = [
    "ConnectionContext",
    "ErrorType",
    "FunctionRef",
    "FunctionSpec",
    "FunctionType",
    "RunnerStatus",
    "SyncContext",
    "TaskStart",
]
