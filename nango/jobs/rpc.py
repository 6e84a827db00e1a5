"""The jobs service's gRPC API: protobuf in, relay / settler / store calls, protobuf out."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import grpc

from nango.errors import InvalidRequest
from nango.jobs.client import completion_from_pb, sync_job_to_pb, webhook_from_pb
from nango.jobs.heartbeats import HeartbeatRelay
from nango.jobs.settle import Settler
from nango.jobs.store import JobsStore
from nango.jobs.webhooks.store import DeliveryStore
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "nangopb.jobs.v1.JobsService"
MAX_SYNC_IDS = 1000
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_WEBHOOKS = 1000


def _uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"{field} must be a UUID") from None


def _limit(value: int) -> int:
    if value == 0:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}, or 0 for {DEFAULT_LIMIT}")
    return value


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(
        self,
        relay: HeartbeatRelay,
        settler: Settler,
        store: JobsStore,
        deliveries: DeliveryStore,
        *,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.relay = relay
        self.settler = settler
        self.store = store
        self.deliveries = deliveries
        self.on_enqueued = on_enqueued
        self._runners: set[str] = set()

    async def HeartbeatTask(
        self, request: jobs_pb2.HeartbeatTaskRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.HeartbeatTaskResponse:
        stop = await self.relay.beat(_uuid(request.task_id, "task_id"))
        return jobs_pb2.HeartbeatTaskResponse(stop=stop)

    async def CompleteTask(
        self, request: jobs_pb2.CompleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.CompleteTaskResponse:
        _uuid(request.task_id, "task_id")
        try:
            completion = completion_from_pb(request)
        except ValueError:
            raise InvalidRequest("output_json or error.payload_json is not valid JSON") from None
        await self.settler.report(completion)
        return jobs_pb2.CompleteTaskResponse()

    async def RegisterRunner(
        self, request: jobs_pb2.RegisterRunnerRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.RegisterRunnerResponse:
        if not request.node_id or not request.url or request.capacity < 1:
            raise InvalidRequest("node_id, url and a positive capacity are required")
        # tasks go to RUNNER_SERVICE_URL; a registration is only announced, once per node and process
        if request.node_id not in self._runners:
            self._runners.add(request.node_id)
            log.info(
                "runner registered",
                extra={"node_id": request.node_id, "url": request.url, "capacity": request.capacity},
            )
        return jobs_pb2.RegisterRunnerResponse()

    async def ListSyncJobs(
        self, request: jobs_pb2.ListSyncJobsRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.ListSyncJobsResponse:
        if len(request.sync_ids) > MAX_SYNC_IDS:
            raise InvalidRequest(f"sync_ids takes at most {MAX_SYNC_IDS} ids")
        sync_ids = [_uuid(v, f"sync_ids[{i}]") for i, v in enumerate(request.sync_ids)]
        # one latest job per sync: by default all of them
        limit = (len(sync_ids) or 1) if request.latest_only and request.limit == 0 else _limit(request.limit)
        jobs = await self.store.list_sync_jobs(sync_ids, latest_only=request.latest_only, limit=limit)
        return jobs_pb2.ListSyncJobsResponse(jobs=[sync_job_to_pb(job) for job in jobs])

    async def EnqueueWebhooks(
        self, request: jobs_pb2.EnqueueWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.EnqueueWebhooksResponse:
        if len(request.webhooks) > MAX_WEBHOOKS:
            raise InvalidRequest(f"webhooks takes at most {MAX_WEBHOOKS} events")
        webhooks = []
        for index, pb in enumerate(request.webhooks):
            try:
                webhooks.append(webhook_from_pb(pb))
            except ValueError:
                raise InvalidRequest(f"webhooks[{index}].body_json is not valid JSON") from None
        # answered only once committed: the caller may forget the events after this
        if await self.deliveries.enqueue(webhooks) and self.on_enqueued is not None:
            self.on_enqueued()
        return jobs_pb2.EnqueueWebhooksResponse()


__all__ = ["SERVICE_NAME", "JobsServicer"]
