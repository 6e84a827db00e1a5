"""Wiring of the jobs process: migrations, the pool, clients to the other four services, the
processor (dequeue loops and reconciler) and the gRPC server on NANGO_JOBS_PORT.

Shutdown: stop dequeuing, let running tasks finish within the grace period (the gRPC server stays up
meanwhile, since their runners report back to it), then stop serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nango.db import create_pool, migrate_url
from nango.grpckit import ServiceBinding, start_server
from nango.jobs.daemons import DequeueLoop, Processor, Reconciler
from nango.jobs.dispatch import Dispatcher
from nango.jobs.events import CompletionPublisher, LogPublisher
from nango.jobs.heartbeats import HeartbeatRelay
from nango.jobs.rpc import SERVICE_NAME, JobsServicer
from nango.jobs.settings import JobsDatabaseSettings, JobsSettings
from nango.jobs.settle import Settler
from nango.jobs.store import JobsStore
from nango.orchestrator.client import OrchestratorClient
from nango.persist.client import PersistClient
from nango.runner.client import RunnerClient
from nango.server.client import ServerClient
from nangopb.jobs.v1 import jobs_pb2_grpc

log = logging.getLogger(__name__)


async def migrate(db: JobsDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.jobs_schema, "nango.jobs")


async def run(settings: JobsSettings, stop: asyncio.Event, publisher: CompletionPublisher | None = None) -> None:
    if settings.migrate_at_start:
        await migrate(settings)
    token = settings.internal_token.get_secret_value()
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(
            settings.database(),
            schema=settings.jobs_schema,
            application_name="nango-jobs",
            max_size=settings.jobs_pool_max,
        )
        stack.push_async_callback(pool.close)
        orchestrator = OrchestratorClient(settings.orchestrator_url, token)
        stack.push_async_callback(orchestrator.close)
        server = ServerClient(settings.server_url, token)
        stack.push_async_callback(server.close)
        runner = RunnerClient(settings.runner_url, token)
        stack.push_async_callback(runner.close)
        persist = PersistClient(settings.persist_url, token)
        stack.push_async_callback(persist.close)

        store = JobsStore(pool)
        relay = HeartbeatRelay(orchestrator, settings.heartbeat_batch())
        settler = Settler(store, orchestrator, server, publisher or LogPublisher())
        dispatcher = Dispatcher(
            store=store,
            settler=settler,
            relay=relay,
            orchestrator=orchestrator,
            server=server,
            runner=runner,
            persist=persist,
            secret=token,
            runner_retry=settings.runner_retry(),
        )
        processor = Processor(
            [DequeueLoop(c, orchestrator, dispatcher, settings.dequeue_wait()) for c in settings.processor_config],
            Reconciler(store, settler, orchestrator, settings.reconcile_interval(), settings.old_jobs_age()),
        )
        binding = ServiceBinding(
            SERVICE_NAME, JobsServicer(relay, settler, store), jobs_pb2_grpc.add_JobsServiceServicer_to_server
        )
        grpc_server = await start_server([binding], host=settings.bind_host, port=settings.port, token=token)
        log.info(
            "listening",
            extra={
                "grpc_port": grpc_server.port,
                "loops": {c.group_key_pattern: c.max_concurrency for c in settings.processor_config},
            },
        )
        processor.start()
        try:
            await stop.wait()
            log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        finally:
            await processor.stop(settings.shutdown_grace_seconds)
            await grpc_server.stop(settings.shutdown_grace_seconds)
