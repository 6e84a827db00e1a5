from __future__ import annotations

import asyncio

from nango.db import migrate_url
from nango.grpckit import ServiceBinding, serve_until
from nango.oplog import LogRetention, migrate_logs, open_operations_log
from nango.persist.rpc import PersistServicer
from nango.persist.settings import PersistSettings, RecordsDatabaseSettings
from nangopb.persist.v1 import persist_pb2_grpc

SERVICE_NAME = "nangopb.persist.v1.PersistService"


async def migrate(db: RecordsDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.records_schema, "nango.persist")


async def run(settings: PersistSettings, stop: asyncio.Event) -> None:
    # The operations log lives in the main database, next to the control plane that reads it.
    logs_url = settings.main_database_url()
    if settings.migrate_at_start:
        await migrate(settings)
        await migrate_logs(logs_url, settings.logs_schema)
    oplog = await open_operations_log(logs_url, settings)
    retention = LogRetention(oplog.store, retention_days=settings.logs_retention_days)
    retention.start()
    try:
        # RPCs not served yet answer UNIMPLEMENTED (the base servicer's methods); see rpc.py
        servicer = PersistServicer(oplog)  # type: ignore[abstract]
        binding = ServiceBinding(SERVICE_NAME, servicer, persist_pb2_grpc.add_PersistServiceServicer_to_server)
        await serve_until(
            stop,
            [binding],
            host=settings.bind_host,
            port=settings.port,
            token=settings.internal_token.get_secret_value(),
            grace=settings.shutdown_grace_seconds,
        )
    finally:
        await retention.stop()
        await oplog.close(timeout=settings.shutdown_grace_seconds)
