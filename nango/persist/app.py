"""Wiring of the persist process: migrations, the records pool, the operations log and the gRPC
server on NANGO_PERSIST_PORT."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from nango.db import create_pool, migrate_url
from nango.grpckit import ServiceBinding, serve_until
from nango.oplog import LogRetention, migrate_logs, open_operations_log
from nango.persist.coordination import Checkpoints, Locks
from nango.persist.daemons import PruningDaemon
from nango.persist.keys import check_payload_keys
from nango.persist.records import RecordsCache
from nango.persist.rpc import SERVICE_NAME, TASK_METHODS, PersistServicer
from nango.persist.sealing import payload_sealer
from nango.persist.settings import PersistSettings, RecordsDatabaseSettings
from nango.persist.store import POOL_SETTINGS, CheckpointStore, LockStore, RecordStore
from nangopb.persist.v1 import persist_pb2_grpc

log = logging.getLogger(__name__)


async def migrate(db: RecordsDatabaseSettings) -> list[str]:
    return await migrate_url(db.database(), db.records_schema, "nango.persist")


async def run(settings: PersistSettings, stop: asyncio.Event) -> None:
    data_dir = settings.resolved_data_dir()
    sealer, generated = payload_sealer(settings, mode=settings.mode, data_dir=data_dir)
    if generated:
        log.warning(
            "NANGO_ENCRYPTION_KEY is not set: generated a development key and stored it in the data directory; "
            "set NANGO_ENCRYPTION_KEY (and keep it safe) before running in production",
            extra={"data_dir": str(data_dir)},
        )
    # The operations log lives in the main database, next to the control plane that reads it.
    logs_url = settings.main_database_url()
    if settings.migrate_at_start:
        await migrate(settings)
        await migrate_logs(logs_url, settings.logs_schema)
    pool = await create_pool(
        settings.database(),
        schema=settings.records_schema,
        application_name="nango-persist",
        max_size=settings.records_pool_max,
        server_settings=POOL_SETTINGS,
    )
    try:
        oplog = await open_operations_log(logs_url, settings)
        retention = LogRetention(oplog.store, retention_days=settings.logs_retention_days)
        retention.start()
        await check_payload_keys(pool, sealer)
        records = RecordsCache(RecordStore(pool, custom_plans=True), sealer)
        pruning: PruningDaemon | None = None
        try:
            if settings.auto_pruning_days is not None:
                pruning = PruningDaemon(
                    records,
                    older_than=timedelta(days=settings.auto_pruning_days),
                    interval=timedelta(milliseconds=settings.auto_pruning_interval_ms),
                    limit=settings.auto_pruning_limit,
                )
                pruning.start()
            servicer = PersistServicer(oplog, records, Checkpoints(CheckpointStore(pool)), Locks(LockStore(pool)))
            binding = ServiceBinding(SERVICE_NAME, servicer, persist_pb2_grpc.add_PersistServiceServicer_to_server)
            await serve_until(
                stop,
                [binding],
                host=settings.bind_host,
                port=settings.port,
                token=settings.internal_token.get_secret_value(),
                grace=settings.shutdown_grace_seconds,
                task_methods=TASK_METHODS,
            )
        finally:
            if pruning is not None:
                await pruning.stop()
            await retention.stop()
            await oplog.close(timeout=settings.shutdown_grace_seconds)
    finally:
        await pool.close()
