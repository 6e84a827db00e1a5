"""The typed client runners (heartbeats, results, registration) and the server (sync-job history) use
to reach jobs.

It speaks the domain types of `nango.jobs.models` and raises `NangoError`s (`UnknownTask` for a result of a
task jobs never dispatched); a raw `grpc.RpcError` never escapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from types import TracebackType

from google.protobuf.duration_pb2 import Duration

from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nango.jobs.errors import UnknownTask
from nango.jobs.models import (
    FunctionFailure,
    ModelResult,
    OutgoingWebhook,
    SyncJob,
    SyncJobStatus,
    SyncJobType,
    TaskCompletion,
    TaskTelemetry,
)
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc

SERVICE = "jobs"


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
        request.error.CopyFrom(failure_to_pb(error))
    return request


def failure_to_pb(error: FunctionFailure) -> jobs_pb2.FunctionError:
    return jobs_pb2.FunctionError(
        type=error.type,
        message=error.message,
        payload_json=json_bytes(error.payload),
        status=error.status,
        upstream_json=json_bytes(error.upstream),
    )


def failure_from_pb(pb: jobs_pb2.FunctionError) -> FunctionFailure:
    return FunctionFailure(
        type=pb.type,
        message=pb.message,
        status=pb.status,
        payload=json_value(pb.payload_json),
        upstream=json_value(pb.upstream_json),
    )


def completion_from_pb(request: jobs_pb2.CompleteTaskRequest) -> TaskCompletion:
    telemetry = TaskTelemetry(
        duration=request.telemetry.duration.ToTimedelta(),
        max_memory_bytes=request.telemetry.max_memory_bytes,
        proxy_calls=request.telemetry.proxy_calls,
        log_messages=request.telemetry.log_messages,
    )
    results = tuple(ModelResult(r.model, r.added, r.updated, r.deleted) for r in request.results)
    if request.WhichOneof("result") == "error":
        error = failure_from_pb(request.error)
        return TaskCompletion(request.task_id, error=error, telemetry=telemetry, results=results)
    return TaskCompletion(request.task_id, json_value(request.output_json), telemetry=telemetry, results=results)


_STATUS_TO_PB = {s: jobs_pb2.SyncJobStatus.Value(f"SYNC_JOB_STATUS_{s.value}") for s in SyncJobStatus}
_STATUS_FROM_PB: dict[int, SyncJobStatus] = {v: s for s, v in _STATUS_TO_PB.items()}
_TYPE_TO_PB = {t: jobs_pb2.SyncJobType.Value(f"SYNC_JOB_TYPE_{t.value}") for t in SyncJobType}
_TYPE_FROM_PB: dict[int, SyncJobType] = {v: t for t, v in _TYPE_TO_PB.items()}


def sync_job_to_pb(job: SyncJob) -> jobs_pb2.SyncJob:
    message = jobs_pb2.SyncJob(
        id=str(job.id),
        sync_id=job.sync_id,
        task_id=job.task_id,
        type=_TYPE_TO_PB[job.type],
        status=_STATUS_TO_PB[job.status],
        results=[
            jobs_pb2.ModelResult(model=r.model, added=r.added, updated=r.updated, deleted=r.deleted)
            for r in job.results
        ],
    )
    message.started_at.FromDatetime(job.started_at)
    if job.ended_at is not None:
        message.ended_at.FromDatetime(job.ended_at)
    if job.error is not None:
        message.error.CopyFrom(failure_to_pb(job.error))
    return message


def sync_job_from_pb(pb: jobs_pb2.SyncJob) -> SyncJob:
    return SyncJob(
        id=int(pb.id),
        sync_id=pb.sync_id,
        task_id=pb.task_id,
        type=_TYPE_FROM_PB[pb.type],
        status=_STATUS_FROM_PB[pb.status],
        results=tuple(ModelResult(r.model, r.added, r.updated, r.deleted) for r in pb.results),
        started_at=pb.started_at.ToDatetime(tzinfo=UTC),
        ended_at=pb.ended_at.ToDatetime(tzinfo=UTC) if pb.HasField("ended_at") else None,
        error=failure_from_pb(pb.error) if pb.HasField("error") else None,
    )


def webhook_to_pb(webhook: OutgoingWebhook) -> jobs_pb2.OutgoingWebhook:
    return jobs_pb2.OutgoingWebhook(
        event_id=webhook.event_id,
        environment_id=webhook.environment_id,
        type=webhook.type,
        body_json=json.dumps(webhook.body, separators=(",", ":"), ensure_ascii=False).encode(),
        urls=list(webhook.urls),
        headers=dict(webhook.headers),
        connection_id=webhook.connection_id,
        provider_config_key=webhook.provider_config_key,
    )


def webhook_from_pb(pb: jobs_pb2.OutgoingWebhook) -> OutgoingWebhook:
    """Raises ValueError when body_json is not JSON."""
    return OutgoingWebhook(
        event_id=pb.event_id,
        environment_id=pb.environment_id,
        type=pb.type,
        body=json.loads(pb.body_json) if pb.body_json else None,
        urls=tuple(pb.urls),
        headers=dict(pb.headers),
        connection_id=pb.connection_id,
        provider_config_key=pb.provider_config_key,
    )


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

    async def list_sync_jobs(
        self, sync_ids: Sequence[str], *, latest_only: bool = False, limit: int = 0
    ) -> list[SyncJob]:
        """Jobs of these syncs, newest first (`latest_only`: one per sync); `limit` 0 means 100."""
        request = jobs_pb2.ListSyncJobsRequest(sync_ids=list(sync_ids), latest_only=latest_only, limit=limit)
        reply = await invoke(SERVICE, self._stub.ListSyncJobs(request, timeout=self._timeout))
        return [sync_job_from_pb(job) for job in reply.jobs]

    async def enqueue_webhooks(self, webhooks: Sequence[OutgoingWebhook]) -> None:
        """Hand outgoing webhooks to jobs, which delivers them at least once. Returns once they are stored;
        sending the same (event_id, url) again stores nothing (safe to repeat after a failure)."""
        request = jobs_pb2.EnqueueWebhooksRequest(webhooks=[webhook_to_pb(w) for w in webhooks])
        await invoke(SERVICE, self._stub.EnqueueWebhooks(request, timeout=self._timeout))


__all__ = [
    "FunctionFailure",
    "JobsClient",
    "ModelResult",
    "OutgoingWebhook",
    "SyncJob",
    "SyncJobStatus",
    "SyncJobType",
    "TaskCompletion",
    "TaskTelemetry",
    "UnknownTask",
    "completion_from_pb",
    "completion_to_pb",
    "failure_from_pb",
    "failure_to_pb",
    "sync_job_from_pb",
    "sync_job_to_pb",
    "webhook_from_pb",
    "webhook_to_pb",
]
