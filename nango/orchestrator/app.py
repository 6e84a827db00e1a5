"""Wiring of the orchestrator process: migrations, the pool, the LISTEN connection, the daemons
and the gRPC server on NANGO_ORCHESTRATOR_PORT."""

from __future__ import annotations

import asyncio
import logging

from nango.db import create_pool, migrate_url
from nango.grpckit import ServiceBinding, start_server
from nango.orchestrator.daemons import CleaningDaemon, ExpiringDaemon, SchedulingDaemon
from nango.orchestrator.events import TaskEvents
from nango.orchestrator.rpc import OrchestratorServicer
from nango.orchestrator.scheduler import Scheduler
from nango.orchestrator.settings import OrchestratorDatabaseSettings, OrchestratorSettings
from nango.orchestrator.store import Store
from nango.process.periodic import Periodic
from nangopb.orchestrator.v1 import orchestrator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "nangopb.orchestrator.v1.OrchestratorService"


async def migrate(db: OrchestratorDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.orchestrator_schema, "nango.orchestrator")


def build_daemons(scheduler: Scheduler, settings: OrchestratorSettings) -> list[Periodic]:
    return [
        ExpiringDaemon(scheduler, settings.expiring_tick()),
        SchedulingDaemon(scheduler, settings.scheduling_tick()),
        CleaningDaemon(scheduler, settings.cleaning_tick(), settings.cleaning_older_than()),
    ]


async def run(settings: OrchestratorSettings, stop: asyncio.Event) -> None:
    if settings.migrate_at_start:
        await migrate(settings)
    url = settings.database()
    pool = await create_pool(
        url,
        schema=settings.orchestrator_schema,
        application_name="nango-orchestrator",
        max_size=settings.orchestrator_pool_max,
    )
    events = TaskEvents(url, settings.orchestrator_schema)
    daemons: list[Periodic] = []
    try:
        await events.start()
        scheduler = Scheduler(Store(pool), events, waiting_per_group_max=settings.task_created_per_group_count_max)
        daemons = build_daemons(scheduler, settings)
        for daemon in daemons:
            daemon.start()
        binding = ServiceBinding(
            SERVICE_NAME,
            OrchestratorServicer(scheduler),
            orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        )
        server = await start_server(
            [binding], host=settings.bind_host, port=settings.port, token=settings.internal_token.get_secret_value()
        )
        log.info("listening", extra={"grpc_port": server.port, "schema": settings.orchestrator_schema})
        await stop.wait()
        log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        # long-polls answer at once instead of holding the drain for their whole wait
        events.interrupt()
        await server.stop(settings.shutdown_grace_seconds)
    finally:
        for daemon in daemons:
            await daemon.stop()
        await events.stop()
        await pool.close()
