"""Wiring of the jobs process: migrations, the pool, clients to the other four services, the
processor (dequeue loops and reconciler), the outgoing-webhook delivery loop and the gRPC server on
NANGO_JOBS_PORT.

Shutdown: stop dequeuing and claiming webhooks, let running tasks and sends in flight finish within the
grace period (the gRPC server stays up meanwhile, since runners report back to it), then stop serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nango.db import create_pool, migrate_url
from nango.grpckit import ServiceBinding, start_server
from nango.jobs.daemons import DequeueLoop, Processor, Reconciler
from nango.jobs.dispatch import Dispatcher
from nango.jobs.events import CompletionPublisher
from nango.jobs.heartbeats import HeartbeatRelay
from nango.jobs.rpc import SERVICE_NAME, JobsServicer
from nango.jobs.settings import JobsDatabaseSettings, JobsSettings
from nango.jobs.settle import Settler
from nango.jobs.store import JobsStore
from nango.jobs.webhooks.breaker import CircuitBreaker
from nango.jobs.webhooks.delivery import DeliveryLoop
from nango.jobs.webhooks.publisher import WebhookPublisher
from nango.jobs.webhooks.settings_cache import SettingsCache
from nango.jobs.webhooks.store import DeliveryStore
from nango.kv import open_kv
from nango.oplog import migrate_logs, open_operations_log
from nango.orchestrator.client import OrchestratorClient
from nango.outbound import OutboundClient
from nango.persist.client import PersistClient
from nango.runner.client import RunnerClient
from nango.server.client import ServerClient
from nangopb.jobs.v1 import jobs_pb2_grpc

log = logging.getLogger(__name__)


async def migrate(db: JobsDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.jobs_schema, "nango.jobs")


async def run(settings: JobsSettings, stop: asyncio.Event, publisher: CompletionPublisher | None = None) -> None:
    """`publisher` replaces the outgoing-webhook publisher (tests)."""
    if settings.migrate_at_start:
        await migrate(settings)
        await migrate_logs(settings.main_database_url(), settings.logs_schema)
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
        kv = open_kv(settings.resolved_redis_url(), prefix=settings.redis_key_prefix)
        stack.push_async_callback(kv.close)
        oplog = await open_operations_log(settings.main_database_url(), settings)
        stack.push_async_callback(oplog.close, timeout=settings.shutdown_grace_seconds)
        outbound = await stack.enter_async_context(OutboundClient(settings.outbound_pool()))

        delivery_config = settings.delivery_config()
        deliveries = DeliveryStore(pool)
        webhook_settings = SettingsCache(server)
        breaker = CircuitBreaker(
            kv,
            failures=delivery_config.circuit_failures,
            window=delivery_config.circuit_window,
            cooldown=delivery_config.circuit_cooldown,
            probe_timeout=delivery_config.lease,
            probe_wait=delivery_config.probe_wait,
        )
        delivery = DeliveryLoop(
            deliveries,
            webhook_settings,
            breaker,
            outbound,
            settings.outbound_policy(),
            delivery_config,
            oplog,
        )
        publisher = publisher or WebhookPublisher(webhook_settings, server, deliveries, on_enqueued=delivery.wake)

        store = JobsStore(pool)
        relay = HeartbeatRelay(orchestrator, settings.heartbeat_batch())
        settler = Settler(store, orchestrator, server, publisher)
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
        servicer = JobsServicer(relay, settler, store, deliveries, on_enqueued=delivery.wake)
        binding = ServiceBinding(SERVICE_NAME, servicer, jobs_pb2_grpc.add_JobsServiceServicer_to_server)
        grpc_server = await start_server([binding], host=settings.bind_host, port=settings.port, token=token)
        log.info(
            "listening",
            extra={
                "grpc_port": grpc_server.port,
                "loops": {c.group_key_pattern: c.max_concurrency for c in settings.processor_config},
            },
        )
        processor.start()
        delivery.start()
        try:
            await stop.wait()
            log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        finally:
            grace = settings.shutdown_grace_seconds
            await asyncio.gather(processor.stop(grace), delivery.stop(grace))
            await grpc_server.stop(grace)
