"""`nango serve <service>` (how containers run one service): graceful shutdown on SIGTERM lets an
in-flight call finish before the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from nango.grpckit import check_health
from nango.orchestrator.client import OrchestratorClient
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

TOKEN = "serve-shutdown-token-0123456789"


async def test_sigterm_drains_in_flight_calls(database_url: str) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
        "NANGO_DATABASE_URL": database_url,
        "ORCHESTRATOR_DATABASE_SCHEMA": f"serve_{uuid.uuid4().hex[:8]}",
        "NANGO_ORCHESTRATOR_PORT": str(port),
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_SHUTDOWN_GRACE_SECONDS": "10",
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "nango"), "serve", "orchestrator"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    target = f"127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            while not await check_health(target):
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                await asyncio.sleep(0.1)
        async with OrchestratorClient(target, TOKEN) as client:
            # a long-poll that is still waiting when the signal arrives gets its (empty) answer, not an error
            in_flight = asyncio.create_task(client.dequeue("nothing:*", limit=1, wait=timedelta(seconds=20)))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert await in_flight == []
            assert time.monotonic() - started < 10
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0
        output = process.stdout.read().decode() if process.stdout else ""
        assert '"msg": "stopping"' in output
        assert '"msg": "stopped"' in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
