"""Wiring of the server process: database, keyring, environments, the internal gRPC API on
NANGO_SERVER_GRPC_PORT and the public gateway on SERVER_PORT."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from nango.config import DatabaseSettings
from nango.db import create_pool, migrate_url
from nango.grpckit import ServiceBinding, start_server
from nango.server.environments import EnvironmentService
from nango.server.gateway import build_app
from nango.server.rpc import ServerServicer
from nango.server.settings import ServerSettings
from nango.server.store import EnvironmentStore
from nangopb.server.v1 import server_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "nangopb.server.v1.ServerService"


async def migrate(db: DatabaseSettings) -> list[str]:
    return await migrate_url(db.main_database_url(), db.db_schema, "nango.server")


async def run(settings: ServerSettings, stop: asyncio.Event) -> None:
    keyring, generated = settings.keyring(mode=settings.mode, data_dir=settings.resolved_data_dir())
    if generated:
        log.warning(
            "NANGO_ENCRYPTION_KEY is not set: generated a development key and stored it in the data directory; "
            "set NANGO_ENCRYPTION_KEY (and keep it safe) before running in production",
            extra={"data_dir": str(settings.resolved_data_dir())},
        )
    if settings.migrate_at_start:
        await migrate(settings)
    pool = await create_pool(
        settings.main_database_url(),
        schema=settings.db_schema,
        application_name="nango-server",
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
    )
    try:
        environments = EnvironmentService(EnvironmentStore(pool), keyring)
        await environments.bootstrap(
            {
                "dev": settings.secret_key_dev.get_secret_value() if settings.secret_key_dev else None,
                "prod": settings.secret_key_prod.get_secret_value() if settings.secret_key_prod else None,
            }
        )
        # RPCs not served yet answer UNIMPLEMENTED (the base servicer's methods); see rpc.py
        servicer = ServerServicer(environments)  # type: ignore[abstract]
        grpc_server = await start_server(
            [ServiceBinding(SERVICE_NAME, servicer, server_pb2_grpc.add_ServerServiceServicer_to_server)],
            host=settings.bind_host,
            port=settings.grpc_port,
            token=settings.internal_token.get_secret_value(),
        )
        runner = web.AppRunner(
            build_app(environments, body_limit=settings.body_limit_bytes()),
            access_log=None,
            shutdown_timeout=settings.shutdown_grace_seconds,
        )
        await runner.setup()
        await web.TCPSite(runner, settings.bind_host, settings.port, reuse_address=True).start()
        log.info("listening", extra={"rest_port": settings.port, "grpc_port": grpc_server.port})
        await stop.wait()
        log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
        await asyncio.gather(runner.cleanup(), grpc_server.stop(settings.shutdown_grace_seconds))
    finally:
        await pool.close()
