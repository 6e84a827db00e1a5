"""The typed client runners use to reach jobs: heartbeats, results and registration.

It speaks the domain types below and raises `NangoError`s; a raw `grpc.RpcError` never escapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any

from google.protobuf.duration_pb2 import Duration

from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc

SERVICE = "jobs"


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


def completion_to_pb(completion: TaskCompletion) -> jobs_pb2.CompleteTaskRequest:
    duration = Duration()
    duration.FromTimedelta(completion.telemetry.duration)
    request = jobs_pb2.CompleteTaskRequest(
        task_id=completion.task_id,
        telemetry=jobs_pb2.TaskTelemetry(
            duration=duration,
            max_memory_bytes=completion.telemetry.max_memory_bytes,
            proxy_calls=completion.telemetry.proxy_calls,
            log_messages=completion.telemetry.log_messages,
        ),
        results=[
            jobs_pb2.ModelResult(model=r.model, added=r.added, updated=r.updated, deleted=r.deleted)
            for r in completion.results
        ],
    )
    error = completion.error
    if error is None:
        request.output_json = json.dumps(completion.output, separators=(",", ":"), default=str).encode()
    else:
        request.error.CopyFrom(
            jobs_pb2.FunctionError(
                type=error.type,
                message=error.message,
                payload_json=json_bytes(error.payload),
                status=error.status,
                upstream_json=json_bytes(error.upstream),
            )
        )
    return request


def completion_from_pb(request: jobs_pb2.CompleteTaskRequest) -> TaskCompletion:
    telemetry = TaskTelemetry(
        duration=request.telemetry.duration.ToTimedelta(),
        max_memory_bytes=request.telemetry.max_memory_bytes,
        proxy_calls=request.telemetry.proxy_calls,
        log_messages=request.telemetry.log_messages,
    )
    results = tuple(ModelResult(r.model, r.added, r.updated, r.deleted) for r in request.results)
    if request.WhichOneof("result") == "error":
        pb = request.error
        error = FunctionFailure(
            type=pb.type,
            message=pb.message,
            status=pb.status,
            payload=json_value(pb.payload_json),
            upstream=json_value(pb.upstream_json),
        )
        return TaskCompletion(request.task_id, error=error, telemetry=telemetry, results=results)
    return TaskCompletion(request.task_id, json_value(request.output_json), telemetry=telemetry, results=results)


class JobsClient:
    """One channel to jobs; every call times out after `timeout` seconds."""

    def __init__(self, target: str, token: str, *, timeout: float = 10.0) -> None:
        self._channel = open_channel(target, token)
        self._stub = jobs_pb2_grpc.JobsServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> JobsClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def heartbeat_task(self, task_id: str) -> bool:
        """Report the task alive; True when jobs says stop (the task was cancelled or expired)."""
        request = jobs_pb2.HeartbeatTaskRequest(task_id=task_id)
        reply = await invoke(SERVICE, self._stub.HeartbeatTask(request, timeout=self._timeout))
        return bool(reply.stop)

    async def complete_task(self, completion: TaskCompletion) -> None:
        """Report the outcome; jobs records it once however often it is sent."""
        await invoke(SERVICE, self._stub.CompleteTask(completion_to_pb(completion), timeout=self._timeout))

    async def register_runner(self, node_id: str, url: str, capacity: int) -> None:
        request = jobs_pb2.RegisterRunnerRequest(node_id=node_id, url=url, capacity=capacity)
        await invoke(SERVICE, self._stub.RegisterRunner(request, timeout=self._timeout))


__all__ = [
    "FunctionFailure",
    "JobsClient",
    "ModelResult",
    "TaskCompletion",
    "TaskTelemetry",
    "completion_from_pb",
    "completion_to_pb",
]
