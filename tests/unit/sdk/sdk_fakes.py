"""An in-memory Backend for the SDK's unit tests: scripted proxy answers, recorded writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from nango.sdk.runtime import (
    BatchSummary,
    LogLine,
    ProxyRequest,
    ProxyResponse,
    ReconcileSummary,
    StoredCheckpoint,
    TaskContext,
    headers_of,
)

Answer = tuple[int, Any, dict[str, str]]


def context(**overrides: Any) -> TaskContext:
    values: dict[str, Any] = {
        "function_name": "contacts",
        "function_type": "sync",
        "environment_id": 1,
        "nango_connection_id": 7,
        "connection_id": "alice",
        "provider_config_key": "crm",
        "provider": "crm-provider",
        "sync_job_id": "42",
    }
    return TaskContext(**{**values, **overrides})


@dataclass
class FakeBackend:
    # answers a request with (status, JSON body, headers)
    answer: Callable[[ProxyRequest], Answer] = lambda _request: (200, {}, {})
    defaults: dict[str, Any] | None = None
    requests: list[ProxyRequest] = field(default_factory=list)
    saved: list[tuple[str, list[Any]]] = field(default_factory=list)
    updated: list[tuple[str, list[Any]]] = field(default_factory=list)
    deleted: list[tuple[str, list[Any]]] = field(default_factory=list)
    outdated: list[tuple[str, int]] = field(default_factory=list)
    # reconcile passes: model -> ids marked seen (None until opened); finished models in order
    reconciling: dict[str, list[str]] = field(default_factory=dict)
    reconciled: list[str] = field(default_factory=list)
    checkpoints: dict[str, StoredCheckpoint] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)
    log_calls: int = 0

    async def proxy(self, request: ProxyRequest) -> ProxyResponse:
        self.requests.append(request)
        status, body, headers = self.answer(request)
        return ProxyResponse(
            status, headers_of(headers.items()), json.dumps(body).encode(), request.method, request.endpoint
        )

    async def pagination_defaults(self) -> dict[str, Any] | None:
        return self.defaults

    async def save_records(self, model: str, records: bytes) -> BatchSummary:
        batch = json.loads(records)
        self.saved.append((model, batch))
        return BatchSummary(added=len(batch))

    async def update_records(self, model: str, records: bytes) -> BatchSummary:
        batch = json.loads(records)
        self.updated.append((model, batch))
        return BatchSummary(updated=len(batch))

    async def delete_records(self, model: str, records: bytes) -> BatchSummary:
        batch = json.loads(records)
        self.deleted.append((model, batch))
        return BatchSummary(deleted=len(batch))

    async def delete_outdated_records(self, model: str, generation: int) -> list[str]:
        self.outdated.append((model, generation))
        return ["gone"]

    async def start_reconcile(self, model: str) -> None:
        self.reconciling[model] = []

    async def mark_seen(self, model: str, ids: Sequence[str]) -> None:
        self.reconciling[model].extend(ids)

    async def finish_reconcile(self, model: str) -> ReconcileSummary:
        self.reconciled.append(model)
        seen = set(self.reconciling.pop(model))
        gone = sorted({str(r["id"]) for m, batch in self.saved if m == model for r in batch} - seen)
        return ReconcileSummary(len(seen), len(gone), gone)

    async def get_records(self, model: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [r for m, batch in self.saved if m == model for r in batch if str(r["id"]) in ids]

    async def get_checkpoint(self, key: str) -> StoredCheckpoint | None:
        return self.checkpoints.get(key)

    async def put_checkpoint(self, key: str, value: dict[str, Any], expected_version: int) -> int:
        from nango.sdk.errors import CheckpointConflict

        stored = self.checkpoints.get(key)
        if (stored.version if stored else 0) != expected_version:
            raise CheckpointConflict(key)
        self.checkpoints[key] = StoredCheckpoint(value, expected_version + 1)
        return expected_version + 1

    async def delete_checkpoint(self, key: str, expected_version: int) -> int:
        self.checkpoints[key] = StoredCheckpoint(None, expected_version + 1)
        return expected_version + 1

    async def get_connection(self, provider_config_key: str, connection_id: str) -> dict[str, Any]:
        return {"connection_id": connection_id, "credentials": {"type": "API_KEY", "apiKey": "k-123"}, "metadata": None}

    async def set_metadata(self, metadata: dict[str, Any], *, merge: bool) -> dict[str, Any]:
        return metadata

    async def get_integration(self, include_credentials: bool) -> dict[str, Any]:
        return {}

    async def environment_variables(self) -> list[dict[str, str]]:
        return [{"name": "A", "value": "1"}]

    async def trigger_action(self, provider_config_key: str, connection_id: str, action_name: str, input: Any) -> Any:
        return {"triggered": action_name}

    async def try_acquire_lock(self, key: str, ttl: timedelta) -> bool:
        return True

    async def release_lock(self, key: str) -> bool:
        return True

    async def release_all_locks(self) -> int:
        return 0

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        self.log_calls += 1
        self.logs.extend(lines)
