from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Any, cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from nango.errors import Forbidden, InvalidRequest
from nango.grpckit import json_bytes, json_value, require_scope, task_scope
from nango.oplog import Level, Message, MessageSource, MessageType, OperationsLog
from nango.oplog.models import utcnow
from nango.persist.coordination import Checkpoints, Locks
from nango.persist.models import (
    BatchContext,
    Checkpoint,
    CursorPosition,
    Merging,
    MergingStrategy,
    RecordAction,
    RecordQuery,
    RecordScope,
    RecordSummary,
)
from nango.persist.records import (
    DEFAULT_CLEAR_LIMIT,
    DEFAULT_PAGE_SIZE,
    DEFAULT_PRUNE_LIMIT,
    RecordsCache,
    parse_deletions,
    parse_record_batch,
)
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc

SERVICE_NAME = "nangopb.persist.v1.PersistService"
# what a running function may call with its task token; each method checks the token's scope
TASK_METHODS = frozenset(
    f"/{SERVICE_NAME}/{method}"
    for method in (
        "SaveRecords",
        "UpdateRecords",
        "DeleteRecords",
        "DeleteOutdatedRecords",
        "StartReconcile",
        "MarkRecordsSeen",
        "FinishReconcile",
        "GetRecords",
        "GetCheckpoint",
        "PutCheckpoint",
        "DeleteCheckpoint",
        "WriteLogMessages",
        "TryAcquireLock",
        "ReleaseLock",
        "ReleaseAllLocks",
    )
)

# A runner batches a function's lines; more than this in one call is a bug on its side.
MAX_LOG_MESSAGES_PER_CALL = 10_000

_LEVELS: dict[int, Level] = {
    persist_pb2.LOG_LEVEL_UNSPECIFIED: "info",
    persist_pb2.LOG_LEVEL_DEBUG: "debug",
    persist_pb2.LOG_LEVEL_INFO: "info",
    persist_pb2.LOG_LEVEL_WARN: "warn",
    persist_pb2.LOG_LEVEL_ERROR: "error",
}


def _json_object(data: bytes, where: str) -> dict[str, Any] | None:
    try:
        value = json_value(data)
    except ValueError:
        raise InvalidRequest(f"{where} is not valid JSON") from None
    if value is not None and not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    return value


def log_message_from_pb(pb: persist_pb2.LogMessage, index: int) -> Message:
    where = f"messages[{index}]"
    if not pb.operation_id:
        raise InvalidRequest(f"{where}.operation_id is required")
    level = _LEVELS.get(pb.level)
    if level is None:
        raise InvalidRequest(f"{where}.level is not a known log level ({pb.level})")
    try:
        optional: dict[str, Any] = {}
        if pb.id:
            optional["id"] = pb.id
        return Message(
            **optional,
            operation_id=pb.operation_id,
            message=pb.message,
            created_at=pb.created_at.ToDatetime(tzinfo=UTC) if pb.HasField("created_at") else utcnow(),
            level=level,
            # Lines reaching persist come from functions unless the runner says otherwise; Message
            # refuses values outside the Literal.
            source=cast(MessageSource, pb.source or "user"),
            type=cast(MessageType, pb.type or "log"),
            meta=_json_object(pb.meta_json, f"{where}.meta_json"),
            error=_json_object(pb.error_json, f"{where}.error_json"),
            request=_json_object(pb.request_json, f"{where}.request_json"),
            response=_json_object(pb.response_json, f"{where}.response_json"),
            retry=_json_object(pb.retry_json, f"{where}.retry_json"),
            ended_at=pb.ended_at.ToDatetime(tzinfo=UTC) if pb.HasField("ended_at") else None,
        )
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None


def scope_from_pb(pb: persist_pb2.RecordScope) -> RecordScope:
    require_scope(pb.environment_id, pb.nango_connection_id)
    return RecordScope(pb.environment_id, pb.nango_connection_id, pb.model)


def pass_from(scope_pb: persist_pb2.RecordScope, pass_id: str) -> RecordScope:
    """The records a reconcile call reaches; a task token may only run the pass named after its task."""
    scope = scope_from_pb(scope_pb)
    token = task_scope()
    if token is not None and pass_id != token.task_id:
        raise Forbidden("a task's token may only run the reconcile pass named after its task")
    return scope


def generation_from(value: str, where: str) -> int:
    """Sync job ids are serial numbers, so generations order like the jobs that made them."""
    if not value.isascii() or not value.isdigit() or int(value) <= 0 or int(value) >= 2**63:
        raise InvalidRequest(f"{where} must be a sync job id (a positive integer), got {value[:40]!r}")
    return int(value)


_STRATEGIES: dict[int, MergingStrategy] = {
    persist_pb2.MERGING_STRATEGY_UNSPECIFIED: MergingStrategy.OVERRIDE,
    persist_pb2.MERGING_STRATEGY_OVERRIDE: MergingStrategy.OVERRIDE,
    persist_pb2.MERGING_STRATEGY_IGNORE_IF_MODIFIED_AFTER_CURSOR: MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR,
}
_STRATEGIES_TO_PB = {
    MergingStrategy.OVERRIDE: persist_pb2.MERGING_STRATEGY_OVERRIDE,
    MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR: persist_pb2.MERGING_STRATEGY_IGNORE_IF_MODIFIED_AFTER_CURSOR,
}
_ACTIONS: dict[int, RecordAction] = {
    persist_pb2.RECORD_ACTION_ADDED: RecordAction.ADDED,
    persist_pb2.RECORD_ACTION_UPDATED: RecordAction.UPDATED,
    persist_pb2.RECORD_ACTION_DELETED: RecordAction.DELETED,
}
_POSITIONS: dict[int, CursorPosition] = {
    persist_pb2.CURSOR_POSITION_FIRST: CursorPosition.FIRST,
    persist_pb2.CURSOR_POSITION_LAST: CursorPosition.LAST,
}


def batch_from_pb(pb: persist_pb2.BatchContext) -> BatchContext:
    if pb.sync_id:
        try:
            uuid.UUID(pb.sync_id)
        except ValueError:
            raise InvalidRequest("batch.sync_id must be a UUID") from None
    strategy = _STRATEGIES.get(pb.merging.strategy)
    if strategy is None:
        raise InvalidRequest(f"batch.merging.strategy is not a known strategy ({pb.merging.strategy})")
    return BatchContext(
        sync_id=pb.sync_id or None,
        generation=generation_from(pb.sync_job_id, "batch.sync_job_id") if pb.sync_job_id else None,
        activity_log_id=pb.activity_log_id or None,
        merging=Merging(strategy, pb.merging.cursor or None),
    )


def summary_to_pb(summary: RecordSummary) -> persist_pb2.RecordSummary:
    return persist_pb2.RecordSummary(
        added=summary.added,
        updated=summary.updated,
        deleted=summary.deleted,
        unchanged=summary.unchanged,
        added_keys=summary.added_keys,
        updated_keys=summary.updated_keys,
        deleted_keys=summary.deleted_keys,
        non_unique_keys=summary.non_unique_keys,
    )


def merging_to_pb(merging: Merging) -> persist_pb2.Merging:
    return persist_pb2.Merging(strategy=_STRATEGIES_TO_PB[merging.strategy], cursor=merging.cursor or "")


def checkpoint_to_pb(checkpoint: Checkpoint) -> persist_pb2.Checkpoint:
    deleted_at = None
    if checkpoint.deleted_at is not None:
        deleted_at = Timestamp()
        deleted_at.FromDatetime(checkpoint.deleted_at)
    return persist_pb2.Checkpoint(
        checkpoint_json=json_bytes(checkpoint.checkpoint), version=checkpoint.version, deleted_at=deleted_at
    )


def _limit(value: int, default: int) -> int:
    """0 (unset) is the default; a negative limit is refused by the domain's range check."""
    return default if value == 0 else value


class PersistServicer(persist_pb2_grpc.PersistServiceServicer):
    """Turns protobuf into domain calls and domain results back into protobuf."""

    def __init__(self, oplog: OperationsLog, records: RecordsCache, checkpoints: Checkpoints, locks: Locks) -> None:
        self.oplog = oplog
        self.records = records
        self.checkpoints = checkpoints
        self.locks = locks

    async def WriteLogMessages(
        self, request: persist_pb2.WriteLogMessagesRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.WriteLogMessagesResponse:
        if len(request.messages) > MAX_LOG_MESSAGES_PER_CALL:
            raise InvalidRequest(f"at most {MAX_LOG_MESSAGES_PER_CALL} log messages per call")
        require_scope(request.environment_id)
        # environment_id is not matched against the operation: that may not be written yet.
        messages = [log_message_from_pb(pb, i) for i, pb in enumerate(request.messages)]
        return persist_pb2.WriteLogMessagesResponse(written=self.oplog.log_messages(messages))

    async def SaveRecords(
        self, request: persist_pb2.SaveRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.SaveRecordsResponse:
        scope = scope_from_pb(request.scope)
        batch = batch_from_pb(request.batch)
        result = await self.records.save_json(scope, request.records_json, batch)
        return persist_pb2.SaveRecordsResponse(
            summary=summary_to_pb(result.summary), next_merging=merging_to_pb(result.next_merging)
        )

    async def UpdateRecords(
        self, request: persist_pb2.UpdateRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.UpdateRecordsResponse:
        scope = scope_from_pb(request.scope)
        batch = batch_from_pb(request.batch)
        records = [incoming.record for incoming in parse_record_batch(request.records_json)]
        result = await self.records.update(scope, records, batch)
        return persist_pb2.UpdateRecordsResponse(
            summary=summary_to_pb(result.summary), next_merging=merging_to_pb(result.next_merging)
        )

    async def DeleteRecords(
        self, request: persist_pb2.DeleteRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.DeleteRecordsResponse:
        scope = scope_from_pb(request.scope)
        batch = batch_from_pb(request.batch)
        result = await self.records.delete(scope, parse_deletions(request.records_json), batch)
        return persist_pb2.DeleteRecordsResponse(
            summary=summary_to_pb(result.summary), next_merging=merging_to_pb(result.next_merging)
        )

    async def DeleteOutdatedRecords(
        self, request: persist_pb2.DeleteOutdatedRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.DeleteOutdatedRecordsResponse:
        scope = scope_from_pb(request.scope)
        if not request.generation:
            raise InvalidRequest("generation (the sync job id that started tracking deletes) is required")
        result = await self.records.delete_outdated(scope, generation_from(request.generation, "generation"))
        return persist_pb2.DeleteOutdatedRecordsResponse(deleted=result.deleted, deleted_keys=result.deleted_keys)

    async def StartReconcile(
        self, request: persist_pb2.StartReconcileRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.StartReconcileResponse:
        scope = pass_from(request.scope, request.pass_id)
        started_at = Timestamp()
        started_at.FromDatetime(await self.records.start_reconcile(scope, request.pass_id))
        return persist_pb2.StartReconcileResponse(started_at=started_at)

    async def MarkRecordsSeen(
        self, request: persist_pb2.MarkRecordsSeenRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.MarkRecordsSeenResponse:
        scope = pass_from(request.scope, request.pass_id)
        await self.records.mark_seen(scope, request.pass_id, list(request.external_ids))
        return persist_pb2.MarkRecordsSeenResponse()

    async def FinishReconcile(
        self, request: persist_pb2.FinishReconcileRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.FinishReconcileResponse:
        scope = pass_from(request.scope, request.pass_id)
        result = await self.records.finish_reconcile(scope, request.pass_id)
        return persist_pb2.FinishReconcileResponse(
            deleted=result.deleted, deleted_keys=result.deleted_keys, seen=result.seen
        )

    async def GetRecords(
        self, request: persist_pb2.GetRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.GetRecordsResponse:
        scope = scope_from_pb(request.scope)
        actions = set()
        for value in request.filter:
            action = _ACTIONS.get(value)
            if action is None:
                raise InvalidRequest(f"filter holds an unknown record action ({value})")
            actions.add(action)
        modified_after = request.modified_after.ToDatetime(tzinfo=UTC) if request.HasField("modified_after") else None
        query = RecordQuery(
            cursor=request.cursor or None,
            limit=_limit(request.limit, DEFAULT_PAGE_SIZE),
            external_ids=tuple(request.external_ids),
            modified_after=modified_after,
            actions=frozenset(actions),
        )
        page = await self.records.page(scope, query)
        return persist_pb2.GetRecordsResponse(records_json=page.records_json, next_cursor=page.next_cursor or "")

    async def GetCursor(
        self, request: persist_pb2.GetCursorRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.GetCursorResponse:
        scope = scope_from_pb(request.scope)
        position = _POSITIONS.get(request.position)
        if position is None:
            raise InvalidRequest("position must be FIRST or LAST")
        return persist_pb2.GetCursorResponse(cursor=await self.records.cursor(scope, position) or "")

    async def PruneRecords(
        self, request: persist_pb2.PruneRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.PruneRecordsResponse:
        scope = scope_from_pb(request.scope)
        if not request.until_cursor:
            raise InvalidRequest("until_cursor is required")
        result = await self.records.prune(scope, request.until_cursor, _limit(request.limit, DEFAULT_PRUNE_LIMIT))
        return persist_pb2.PruneRecordsResponse(count=result.count, has_more=result.has_more)

    async def ClearRecords(
        self, request: persist_pb2.ClearRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.ClearRecordsResponse:
        result = await self.records.clear(
            request.environment_id,
            request.nango_connection_id,
            list(request.models),
            _limit(request.limit, DEFAULT_CLEAR_LIMIT),
        )
        return persist_pb2.ClearRecordsResponse(deleted_count=result.deleted_count, has_more=result.has_more)

    async def CountRecords(
        self, request: persist_pb2.CountRecordsRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.CountRecordsResponse:
        counts = await self.records.counts(
            request.environment_id, list(request.nango_connection_ids), list(request.models)
        )
        return persist_pb2.CountRecordsResponse(
            counts=[
                persist_pb2.RecordCount(
                    nango_connection_id=c.connection_id, model=c.model, count=c.count, size_bytes=c.size_bytes
                )
                for c in counts
            ]
        )

    async def GetCheckpoint(
        self, request: persist_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.GetCheckpointResponse:
        require_scope(request.environment_id, request.nango_connection_id)
        found = await self.checkpoints.get(request.environment_id, request.nango_connection_id, request.key)
        return persist_pb2.GetCheckpointResponse(checkpoint=None if found is None else checkpoint_to_pb(found))

    async def PutCheckpoint(
        self, request: persist_pb2.PutCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.PutCheckpointResponse:
        require_scope(request.environment_id, request.nango_connection_id)
        checkpoint = _json_object(request.checkpoint_json, "checkpoint_json")
        if checkpoint is None:
            raise InvalidRequest("checkpoint_json is required")
        written = await self.checkpoints.put(
            request.environment_id, request.nango_connection_id, request.key, checkpoint, request.expected_version
        )
        return persist_pb2.PutCheckpointResponse(checkpoint=checkpoint_to_pb(written))

    async def DeleteCheckpoint(
        self, request: persist_pb2.DeleteCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.DeleteCheckpointResponse:
        require_scope(request.environment_id, request.nango_connection_id)
        deleted = await self.checkpoints.delete(
            request.environment_id, request.nango_connection_id, request.key, request.expected_version
        )
        return persist_pb2.DeleteCheckpointResponse(checkpoint=checkpoint_to_pb(deleted))

    async def TryAcquireLock(
        self, request: persist_pb2.TryAcquireLockRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.TryAcquireLockResponse:
        require_scope(request.environment_id)
        ttl = request.ttl.ToTimedelta() if request.HasField("ttl") else timedelta(0)
        acquired = await self.locks.try_acquire(request.environment_id, request.owner, request.key, ttl)
        return persist_pb2.TryAcquireLockResponse(acquired=acquired)

    async def ReleaseLock(
        self, request: persist_pb2.ReleaseLockRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.ReleaseLockResponse:
        require_scope(request.environment_id)
        released = await self.locks.release(request.environment_id, request.owner, request.key)
        return persist_pb2.ReleaseLockResponse(released=released)

    async def ReleaseAllLocks(
        self, request: persist_pb2.ReleaseAllLocksRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.ReleaseAllLocksResponse:
        require_scope(request.environment_id)
        return persist_pb2.ReleaseAllLocksResponse(
            released=await self.locks.release_all(request.environment_id, request.owner)
        )
