from __future__ import annotations

from datetime import UTC
from typing import Any, cast

import grpc

from nango.errors import InvalidRequest
from nango.grpckit import json_value
from nango.oplog import Level, Message, MessageSource, MessageType, OperationsLog
from nango.oplog.models import utcnow
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc

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


class PersistServicer(persist_pb2_grpc.PersistServiceServicer):
    """Turns protobuf into domain calls. Record, checkpoint and lock RPCs arrive with the
    functions issue; until then they answer UNIMPLEMENTED (code `not_implemented`)."""

    def __init__(self, oplog: OperationsLog) -> None:
        self.oplog = oplog

    async def WriteLogMessages(
        self, request: persist_pb2.WriteLogMessagesRequest, context: grpc.aio.ServicerContext
    ) -> persist_pb2.WriteLogMessagesResponse:
        if len(request.messages) > MAX_LOG_MESSAGES_PER_CALL:
            raise InvalidRequest(f"at most {MAX_LOG_MESSAGES_PER_CALL} log messages per call")
        # environment_id is not matched against the operation: that may not be written yet.
        messages = [log_message_from_pb(pb, i) for i, pb in enumerate(request.messages)]
        return persist_pb2.WriteLogMessagesResponse(written=self.oplog.log_messages(messages))
