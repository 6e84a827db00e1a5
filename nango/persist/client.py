"""The typed client other services (the runner, jobs) use to reach persist."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from nango.grpckit import invoke, json_bytes, open_channel
from nango.oplog import Level, Message
from nangopb.persist.v1 import persist_pb2, persist_pb2_grpc

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


class PersistClient:
    def __init__(self, target: str, token: str) -> None:
        self._channel = open_channel(target, token)
        self._stub = persist_pb2_grpc.PersistServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def write_log_messages(self, environment_id: int, messages: list[Message]) -> int:
        """Append function log lines to their operations; returns how many persist accepted."""
        request = persist_pb2.WriteLogMessagesRequest(
            environment_id=environment_id, messages=[log_message_to_pb(m) for m in messages]
        )
        reply = await invoke("persist", self._stub.WriteLogMessages(request, timeout=10))
        return int(reply.written)
