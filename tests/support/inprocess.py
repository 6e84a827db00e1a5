"""A server process's `run()` started inside the test's event loop, with its own settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from nango.config import load
from nango.server.app import run
from nango.server.settings import ServerSettings
from tests.conftest import free_port

TOKEN = "internal-token-for-tests-0123456789"


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set variables only while settings are read; the settings object keeps them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class InProcessServer:
    url: str
    grpc: str
    env: dict[str, str]
    task: asyncio.Task[None]
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 20)


def server_env(database_url: str, schema: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "NANGO_DATABASE_URL": database_url,
        "NANGO_DB_SCHEMA": schema,
        "NANGO_LOGS_DATABASE_SCHEMA": f"{schema}_logs",
        "SERVER_PORT": str(free_port()),
        "NANGO_SERVER_GRPC_PORT": str(free_port()),
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(data_dir),
        "NANGO_SHUTDOWN_GRACE_SECONDS": "1",
        "DEFAULT_RATE_LIMIT_PER_MIN": "1000000",
        # test token servers and providers listen on 127.0.0.1, which outbound calls refuse by default
        "NANGO_OUTBOUND_URL_POLICY_OAUTH": '{"blockLoopback": false}',
        **extra,
    }


def new_schema(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def start_server(env: dict[str, str], *, wait: bool = True) -> InProcessServer:
    with environment(env):
        settings = load(ServerSettings)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    server = InProcessServer(
        f"http://127.0.0.1:{env['SERVER_PORT']}", f"127.0.0.1:{env['NANGO_SERVER_GRPC_PORT']}", env, task, stop
    )
    if wait:
        await wait_healthy(server)
    return server


async def wait_healthy(server: InProcessServer, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            if server.task.done():
                server.task.result()
                raise AssertionError("the server stopped before it was healthy")
            try:
                async with session.get(server.url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
