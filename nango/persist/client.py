"""The typed client other services (the runner, jobs, the server) use to reach persist.

It speaks the domain types of `nango.persist.models` and raises `NangoError`s (`InvalidCursor`,
`CheckpointConflict` for persist's own codes); a raw `grpc.RpcError` never escapes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from nango.errors import InvalidRequest
from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nango.oplog import Level, Message
from nango.persist.errors import CheckpointConflict, InvalidCursor, ReconcilePassNotOpen
from nango.persist.models import (
    MAX_BATCH_BYTES,
    MB,
    BatchContext,
    BatchResult,
    Checkpoint,
    ClearResult,
    CursorPosition,
    Merging,
    MergingStrategy,
    OutdatedDeletion,
    PruneResult,
    ReconcileResult,
    RecordAction,
    RecordCount,
    RecordPage,
    RecordScope,
    RecordSummary,
)
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc

SERVICE = "persist"

# Records: one call is a whole batch of up to MAX_BATCH_BYTES, written in one transaction.
_RECORDS_TIMEOUT = 60.0

_LEVELS: dict[Level, persist_pb2.LogLevel.ValueType] = {
    "debug": persist_pb2.LOG_LEVEL_DEBUG,
    "info": persist_pb2.LOG_LEVEL_INFO,
    "warn": persist_pb2.LOG_LEVEL_WARN,
    "error": persist_pb2.LOG_LEVEL_ERROR,
}


def log_message_to_pb(message: Message) -> persist_pb2.LogMessage:
    created_at = Timestamp()
    created_at.FromDatetime(message.created_at)
    ended_at = None
    if message.ended_at is not None:
        ended_at = Timestamp()
        ended_at.FromDatetime(message.ended_at)
    return persist_pb2.LogMessage(
        id=message.id,
        ended_at=ended_at,
        retry_json=json_bytes(message.retry),
        operation_id=message.operation_id,
        created_at=created_at,
        level=_LEVELS[message.level],
        source=message.source,
        type=message.type,
        message=message.message,
        meta_json=json_bytes(message.meta),
        error_json=json_bytes(message.error),
        request_json=json_bytes(message.request),
        response_json=json_bytes(message.response),
    )


_STRATEGY_TO_PB = {
    MergingStrategy.OVERRIDE: persist_pb2.MERGING_STRATEGY_OVERRIDE,
    MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR: persist_pb2.MERGING_STRATEGY_IGNORE_IF_MODIFIED_AFTER_CURSOR,
}
_STRATEGY_FROM_PB: dict[int, MergingStrategy] = {v: k for k, v in _STRATEGY_TO_PB.items()}
_ACTION_TO_PB = {
    RecordAction.ADDED: persist_pb2.RECORD_ACTION_ADDED,
    RecordAction.UPDATED: persist_pb2.RECORD_ACTION_UPDATED,
    RecordAction.DELETED: persist_pb2.RECORD_ACTION_DELETED,
}
_POSITION_TO_PB = {
    CursorPosition.FIRST: persist_pb2.CURSOR_POSITION_FIRST,
    CursorPosition.LAST: persist_pb2.CURSOR_POSITION_LAST,
}

RecordsInput = Sequence[Mapping[str, Any]] | bytes


def _records_json(records: RecordsInput) -> bytes:
    """Records as the JSON array persist takes; bytes pass through as already encoded. A batch too large
    for persist is refused here, where the message can still say why (gRPC would only say the call failed)."""
    raw = (
        records
        if isinstance(records, bytes)
        else json.dumps(list(records), separators=(",", ":"), ensure_ascii=False, default=str).encode()
    )
    if len(raw) > MAX_BATCH_BYTES:
        raise InvalidRequest(f"a batch is at most {MAX_BATCH_BYTES // MB} MB of JSON ({len(raw) / MB:.1f} MB sent)")
    return raw


def _scope_pb(scope: RecordScope) -> persist_pb2.RecordScope:
    return persist_pb2.RecordScope(
        environment_id=scope.environment_id, nango_connection_id=scope.connection_id, model=scope.model
    )


def _batch_pb(batch: BatchContext) -> persist_pb2.BatchContext:
    return persist_pb2.BatchContext(
        sync_id=batch.sync_id or "",
        sync_job_id="" if batch.generation is None else str(batch.generation),
        activity_log_id=batch.activity_log_id or "",
        merging=persist_pb2.Merging(
            strategy=_STRATEGY_TO_PB[batch.merging.strategy], cursor=batch.merging.cursor or ""
        ),
    )


def _summary(pb: persist_pb2.RecordSummary) -> RecordSummary:
    return RecordSummary(
        added=pb.added,
        updated=pb.updated,
        deleted=pb.deleted,
        unchanged=pb.unchanged,
        added_keys=tuple(pb.added_keys),
        updated_keys=tuple(pb.updated_keys),
        deleted_keys=tuple(pb.deleted_keys),
        non_unique_keys=tuple(pb.non_unique_keys),
    )


def _batch_result(summary: persist_pb2.RecordSummary, merging: persist_pb2.Merging) -> BatchResult:
    strategy = _STRATEGY_FROM_PB.get(merging.strategy, MergingStrategy.OVERRIDE)
    return BatchResult(_summary(summary), Merging(strategy, merging.cursor or None))


def _checkpoint(pb: persist_pb2.Checkpoint) -> Checkpoint:
    deleted_at = pb.deleted_at.ToDatetime(tzinfo=UTC) if pb.HasField("deleted_at") else None
    return Checkpoint(json_value(pb.checkpoint_json, {}), pb.version, deleted_at)


class PersistClient:
    """One channel to persist. Record batches time out after 60 s, other calls after `timeout` seconds.
    With `token` the internal token; with `task_token` the scoped token of one running function."""

    def __init__(self, target: str, token: str | None, *, task_token: str | None = None, timeout: float = 10.0) -> None:
        self._channel = open_channel(target, token, task_token=task_token)
        self._stub = persist_pb2_grpc.PersistServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> PersistClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # records

    async def save_records(
        self, scope: RecordScope, records: RecordsInput, batch: BatchContext | None = None
    ) -> BatchResult:
        """Upsert a batch (objects with a string or number `id`), all or nothing."""
        request = persist_pb2.SaveRecordsRequest(
            scope=_scope_pb(scope), batch=_batch_pb(batch or BatchContext()), records_json=_records_json(records)
        )
        reply = await invoke(SERVICE, self._stub.SaveRecords(request, timeout=_RECORDS_TIMEOUT))
        return _batch_result(reply.summary, reply.next_merging)

    async def update_records(
        self, scope: RecordScope, records: RecordsInput, batch: BatchContext | None = None
    ) -> BatchResult:
        """Merge partial records (top-level keys) into the live records with their ids."""
        request = persist_pb2.UpdateRecordsRequest(
            scope=_scope_pb(scope), batch=_batch_pb(batch or BatchContext()), records_json=_records_json(records)
        )
        reply = await invoke(SERVICE, self._stub.UpdateRecords(request, timeout=_RECORDS_TIMEOUT))
        return _batch_result(reply.summary, reply.next_merging)

    async def delete_records(
        self, scope: RecordScope, records: RecordsInput, batch: BatchContext | None = None
    ) -> BatchResult:
        """Soft-delete records by `id` (each may carry its own ISO-8601 `deletedAt`)."""
        request = persist_pb2.DeleteRecordsRequest(
            scope=_scope_pb(scope), batch=_batch_pb(batch or BatchContext()), records_json=_records_json(records)
        )
        reply = await invoke(SERVICE, self._stub.DeleteRecords(request, timeout=_RECORDS_TIMEOUT))
        return _batch_result(reply.summary, reply.next_merging)

    async def delete_outdated_records(
        self, scope: RecordScope, generation: int, *, activity_log_id: str = ""
    ) -> OutdatedDeletion:
        """Soft-delete every live record that no batch of `generation` (a sync job id) or later carried."""
        request = persist_pb2.DeleteOutdatedRecordsRequest(
            scope=_scope_pb(scope), generation=str(generation), activity_log_id=activity_log_id
        )
        reply = await invoke(SERVICE, self._stub.DeleteOutdatedRecords(request, timeout=_RECORDS_TIMEOUT))
        return OutdatedDeletion(reply.deleted, tuple(reply.deleted_keys))

    async def start_reconcile(self, scope: RecordScope, pass_id: str) -> datetime:
        """Open a reconcile pass of the model (replacing an unfinished one); records written from the
        returned moment on are never deleted by it."""
        request = persist_pb2.StartReconcileRequest(scope=_scope_pb(scope), pass_id=pass_id)
        reply = await invoke(SERVICE, self._stub.StartReconcile(request, timeout=_RECORDS_TIMEOUT))
        started_at: datetime = reply.started_at.ToDatetime(tzinfo=UTC)
        return started_at

    async def mark_records_seen(self, scope: RecordScope, pass_id: str, external_ids: Sequence[str]) -> None:
        """Mark ids (at most 10,000) seen by the open pass; ReconcilePassNotOpen once it is not."""
        request = persist_pb2.MarkRecordsSeenRequest(
            scope=_scope_pb(scope), pass_id=pass_id, external_ids=list(external_ids)
        )
        await invoke(SERVICE, self._stub.MarkRecordsSeen(request, timeout=_RECORDS_TIMEOUT))

    async def finish_reconcile(self, scope: RecordScope, pass_id: str, *, activity_log_id: str = "") -> ReconcileResult:
        """Close the pass: the live records it did not see, and nobody wrote since it opened, are soft-deleted."""
        request = persist_pb2.FinishReconcileRequest(
            scope=_scope_pb(scope), pass_id=pass_id, activity_log_id=activity_log_id
        )
        reply = await invoke(SERVICE, self._stub.FinishReconcile(request, timeout=_RECORDS_TIMEOUT))
        return ReconcileResult(reply.seen, reply.deleted, tuple(reply.deleted_keys))

    async def get_records(
        self,
        scope: RecordScope,
        *,
        cursor: str | None = None,
        limit: int = 100,
        external_ids: Sequence[str] = (),
        modified_after: datetime | None = None,
        actions: Sequence[RecordAction] = (),
    ) -> RecordPage:
        """One page in cursor order; `actions` is a union (empty: every record)."""
        request = persist_pb2.GetRecordsRequest(
            scope=_scope_pb(scope),
            cursor=cursor or "",
            limit=limit,
            external_ids=list(external_ids),
            filter=[_ACTION_TO_PB[a] for a in actions],
        )
        if modified_after is not None:
            request.modified_after.FromDatetime(modified_after)
        reply = await invoke(SERVICE, self._stub.GetRecords(request, timeout=_RECORDS_TIMEOUT))
        return RecordPage(reply.records_json, reply.next_cursor or None)

    async def get_cursor(self, scope: RecordScope, position: CursorPosition) -> str | None:
        """The cursor of the first or last record of the model; None when it has none."""
        request = persist_pb2.GetCursorRequest(scope=_scope_pb(scope), position=_POSITION_TO_PB[position])
        reply = await invoke(SERVICE, self._stub.GetCursor(request, timeout=self._timeout))
        return reply.cursor or None

    async def prune_records(self, scope: RecordScope, until_cursor: str, *, limit: int = 0) -> PruneResult:
        """Empty the payloads of up to `limit` records (0: persist's default) up to `until_cursor`."""
        request = persist_pb2.PruneRecordsRequest(scope=_scope_pb(scope), until_cursor=until_cursor, limit=limit)
        reply = await invoke(SERVICE, self._stub.PruneRecords(request, timeout=_RECORDS_TIMEOUT))
        return PruneResult(reply.count, reply.has_more)

    async def clear_records(
        self, environment_id: int, connection_id: int, models: Sequence[str] = (), *, limit: int = 0
    ) -> ClearResult:
        """Hard-delete up to `limit` records (0: persist's default) of a connection; call again while `has_more`."""
        request = persist_pb2.ClearRecordsRequest(
            environment_id=environment_id, nango_connection_id=connection_id, models=list(models), limit=limit
        )
        reply = await invoke(SERVICE, self._stub.ClearRecords(request, timeout=_RECORDS_TIMEOUT))
        return ClearResult(reply.deleted_count, reply.has_more)

    async def count_records(
        self, environment_id: int, connection_ids: Sequence[int] = (), models: Sequence[str] = ()
    ) -> list[RecordCount]:
        request = persist_pb2.CountRecordsRequest(
            environment_id=environment_id, nango_connection_ids=list(connection_ids), models=list(models)
        )
        reply = await invoke(SERVICE, self._stub.CountRecords(request, timeout=self._timeout))
        return [RecordCount(c.nango_connection_id, c.model, c.count, c.size_bytes) for c in reply.counts]

    # checkpoints

    async def get_checkpoint(self, environment_id: int, connection_id: int, key: str) -> Checkpoint | None:
        request = persist_pb2.GetCheckpointRequest(
            environment_id=environment_id, nango_connection_id=connection_id, key=key
        )
        reply = await invoke(SERVICE, self._stub.GetCheckpoint(request, timeout=self._timeout))
        return _checkpoint(reply.checkpoint) if reply.HasField("checkpoint") else None

    async def put_checkpoint(
        self,
        environment_id: int,
        connection_id: int,
        key: str,
        checkpoint: Mapping[str, Any],
        *,
        expected_version: int,
    ) -> Checkpoint:
        """Write if the stored version is still `expected_version` (0: none yet); CheckpointConflict otherwise."""
        request = persist_pb2.PutCheckpointRequest(
            environment_id=environment_id,
            nango_connection_id=connection_id,
            key=key,
            checkpoint_json=json_bytes(dict(checkpoint)),
            expected_version=expected_version,
        )
        reply = await invoke(SERVICE, self._stub.PutCheckpoint(request, timeout=self._timeout))
        return _checkpoint(reply.checkpoint)

    async def delete_checkpoint(
        self, environment_id: int, connection_id: int, key: str, *, expected_version: int
    ) -> Checkpoint:
        """Soft-delete the live checkpoint at `expected_version`; CheckpointConflict otherwise."""
        request = persist_pb2.DeleteCheckpointRequest(
            environment_id=environment_id, nango_connection_id=connection_id, key=key, expected_version=expected_version
        )
        reply = await invoke(SERVICE, self._stub.DeleteCheckpoint(request, timeout=self._timeout))
        return _checkpoint(reply.checkpoint)

    # locks

    async def try_acquire_lock(self, environment_id: int, owner: str, key: str, ttl: timedelta) -> bool:
        """Take the lock if it is free or expired (its owner taking it again extends it)."""
        duration = Duration()
        duration.FromTimedelta(ttl)
        request = persist_pb2.TryAcquireLockRequest(environment_id=environment_id, owner=owner, key=key, ttl=duration)
        reply = await invoke(SERVICE, self._stub.TryAcquireLock(request, timeout=self._timeout))
        return bool(reply.acquired)

    async def release_lock(self, environment_id: int, owner: str, key: str) -> bool:
        """True when `owner` held the lock."""
        request = persist_pb2.ReleaseLockRequest(environment_id=environment_id, owner=owner, key=key)
        reply = await invoke(SERVICE, self._stub.ReleaseLock(request, timeout=self._timeout))
        return bool(reply.released)

    async def release_all_locks(self, environment_id: int, owner: str) -> int:
        request = persist_pb2.ReleaseAllLocksRequest(environment_id=environment_id, owner=owner)
        reply = await invoke(SERVICE, self._stub.ReleaseAllLocks(request, timeout=self._timeout))
        return int(reply.released)

    # logs

    async def write_log_messages(self, environment_id: int, messages: list[Message]) -> int:
        """Append function log lines to their operations; returns how many persist accepted."""
        request = persist_pb2.WriteLogMessagesRequest(
            environment_id=environment_id, messages=[log_message_to_pb(m) for m in messages]
        )
        reply = await invoke("persist", self._stub.WriteLogMessages(request, timeout=10))
        return int(reply.written)


__all__ = [
    "BatchContext",
    "BatchResult",
    "Checkpoint",
    "CheckpointConflict",
    "ClearResult",
    "CursorPosition",
    "InvalidCursor",
    "Merging",
    "MergingStrategy",
    "OutdatedDeletion",
    "PersistClient",
    "PruneResult",
    "ReconcilePassNotOpen",
    "ReconcileResult",
    "RecordAction",
    "RecordCount",
    "RecordPage",
    "RecordScope",
    "RecordSummary",
    "RecordsInput",
    "log_message_to_pb",
]
