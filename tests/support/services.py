"""The orchestrator and persist started inside the test's event loop, beside an in-process server, and
deployed-function rows written with the server's own store (deploying needs a runner, which these
tests do not start)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from nango.config import load
from nango.grpckit import check_health
from nango.orchestrator.app import run as run_orchestrator
from nango.orchestrator.settings import OrchestratorSettings
from nango.persist.app import run as run_persist
from nango.persist.settings import PersistSettings
from nango.server.store.functions import FunctionStore, FunctionValues
from tests.conftest import free_port
from tests.support.inprocess import TOKEN, environment


async def _healthy(target: str, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(30):
        while not await check_health(target):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _serving(task: asyncio.Task[None], stop: asyncio.Event, target: str) -> AsyncIterator[str]:
    try:
        await _healthy(target, task)
        yield target
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def orchestrator_service(database_url: str, schema: str) -> contextlib.AbstractAsyncContextManager[str]:
    port = free_port()
    settings = OrchestratorSettings.model_validate(
        {
            "NANGO_INTERNAL_TOKEN": TOKEN,
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_ORCHESTRATOR_PORT": port,
            "NANGO_SHUTDOWN_GRACE_SECONDS": 1,
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_DATABASE_SCHEMA": schema,
            "ORCHESTRATOR_EXPIRING_TICK_INTERVAL_MS": 200,
            "ORCHESTRATOR_SCHEDULING_TICK_INTERVAL_MS": 200,
            "LOG_LEVEL": "warning",
        }
    )
    stop = asyncio.Event()
    return _serving(asyncio.create_task(run_orchestrator(settings, stop)), stop, f"127.0.0.1:{port}")


def persist_service(
    database_url: str, schema: str, data_dir: Path, encryption_key: str
) -> contextlib.AbstractAsyncContextManager[str]:
    port = free_port()
    with environment(
        {
            "NANGO_DATABASE_URL": database_url,
            "NANGO_INTERNAL_TOKEN": TOKEN,
            "NANGO_PERSIST_PORT": str(port),
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_LOGS_DATABASE_SCHEMA": f"{schema}_logs",
            "RECORDS_DATABASE_SCHEMA": schema,
            "NANGO_ENCRYPTION_KEY": encryption_key,
            "NANGO_DATA_DIR": str(data_dir),
            "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
            "LOG_LEVEL": "warning",
        }
    ):
        settings = load(PersistSettings)
    stop = asyncio.Event()
    return _serving(asyncio.create_task(run_persist(settings, stop)), stop, f"127.0.0.1:{port}")


async def add_function(
    pool: asyncpg.Pool, environment_id: int, provider_config_key: str, name: str, type_: str, **fields: Any
) -> str:
    """A deployed-function row (as a deploy writes it) of the integration; returns its id."""
    row = await pool.fetchrow(
        "SELECT id, environment_id FROM integrations WHERE environment_id = $1 AND unique_key = $2",
        environment_id,
        provider_config_key,
    )
    assert row is not None, f"no integration {provider_config_key}"
    values = FunctionValues(
        name=name,
        type=type_,
        version="1",
        description=f"{name} for tests",
        bundle_key=f"bundles/{row['environment_id']}/{provider_config_key}/none.zip",
        bundle_sha256="0" * 64,
        module=name,
        attribute=name,
        frequency=fields.pop("frequency", "every hour" if type_ == "sync" else None),
        auto_start=fields.pop("auto_start", True),
        track_deletes=False,
        models=fields.pop("models", ["Contact"] if type_ == "sync" else []),
        models_json_schema=None,
        input_json_schema=None,
        output_json_schema=None,
        webhook_subscriptions=[],
        event=None,
        scopes=[],
        reconcile_deletes=None,
    )
    assert not fields, f"unknown fields {fields}"
    async with pool.acquire() as conn:
        return await FunctionStore(pool).upsert(conn, str(uuid.uuid4()), row["environment_id"], row["id"], values)
