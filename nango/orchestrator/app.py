from __future__ import annotations

import asyncio

from nango.db import migrate_url
from nango.grpckit import ServiceBinding, serve_until
from nango.orchestrator.rpc import OrchestratorServicer
from nango.orchestrator.settings import OrchestratorDatabaseSettings, OrchestratorSettings
from nangopb.orchestrator.v1 import orchestrator_pb2_grpc

SERVICE_NAME = "nangopb.orchestrator.v1.OrchestratorService"


async def migrate(db: OrchestratorDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.orchestrator_schema, "nango.orchestrator")


async def run(settings: OrchestratorSettings, stop: asyncio.Event) -> None:
    if settings.migrate_at_start:
        await migrate(settings)
    # RPCs not served yet answer UNIMPLEMENTED (the base servicer's methods); see rpc.py
    servicer = OrchestratorServicer()  # type: ignore[abstract]
    binding = ServiceBinding(SERVICE_NAME, servicer, orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server)
    await serve_until(
        stop,
        [binding],
        host=settings.bind_host,
        port=settings.port,
        token=settings.internal_token.get_secret_value(),
        grace=settings.shutdown_grace_seconds,
    )
