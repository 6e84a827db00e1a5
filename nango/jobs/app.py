from __future__ import annotations

import asyncio

from nango.db import migrate_url
from nango.grpckit import ServiceBinding, serve_until
from nango.jobs.rpc import JobsServicer
from nango.jobs.settings import JobsDatabaseSettings, JobsSettings
from nangopb.jobs.v1 import jobs_pb2_grpc

SERVICE_NAME = "nangopb.jobs.v1.JobsService"


async def migrate(db: JobsDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.jobs_schema, "nango.jobs")


async def run(settings: JobsSettings, stop: asyncio.Event) -> None:
    if settings.migrate_at_start:
        await migrate(settings)
    # RPCs not served yet answer UNIMPLEMENTED (the base servicer's methods); see rpc.py
    servicer = JobsServicer()  # type: ignore[abstract]
    binding = ServiceBinding(SERVICE_NAME, servicer, jobs_pb2_grpc.add_JobsServiceServicer_to_server)
    await serve_until(
        stop,
        [binding],
        host=settings.bind_host,
        port=settings.port,
        token=settings.internal_token.get_secret_value(),
        grace=settings.shutdown_grace_seconds,
    )
