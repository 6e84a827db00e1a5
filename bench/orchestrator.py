"""Orchestrator throughput: batch create, then claim + complete with K concurrent workers through the
gRPC client, on an empty history and again behind 200k finished tasks; then synchronous actions as the
server and jobs drive them (each caller creates a task and waits for its end in one call; each worker
takes one task at a time, as a jobs loop with one free slot, and succeeds it), with the CPU each action
costs this process (the orchestrator and its callers) and the orchestrator's Postgres backends. Prints
figures only.

    .venv/bin/python bench/orchestrator.py

Postgres: NANGO_BENCH_DATABASE_URL, else a fresh database on 127.0.0.1:5432 (created, then dropped).
Sizes: BENCH_TASKS (20000), BENCH_WORKERS (8), BENCH_DEQUEUE_LIMIT (10), BENCH_ACTIONS (3000),
BENCH_CALLERS (16); each phase stops after 60 s.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
from common import free_port

from nango.grpckit import check_health
from nango.orchestrator.app import run
from nango.orchestrator.client import OrchestratorClient, TaskGroup, TaskSpec, TaskTimeouts
from nango.orchestrator.settings import OrchestratorSettings
from nango.process import install_event_loop_policy

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKEN = secrets.token_hex(16)
TASKS = int(os.environ.get("BENCH_TASKS", "20000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "8"))
LIMIT = int(os.environ.get("BENCH_DEQUEUE_LIMIT", "10"))
ACTIONS = int(os.environ.get("BENCH_ACTIONS", "3000"))
CALLERS = int(os.environ.get("BENCH_CALLERS", "16"))
# a synchronous action's group and timeouts, as the server makes them (ACTION_ENVIRONMENT_MAX_CONCURRENCY 500)
ACTION_GROUP_MAX = 500
ACTION_TIMEOUTS = TaskTimeouts(timedelta(seconds=30), timedelta(minutes=15), timedelta(minutes=5))
BATCH = 1000
GROUPS = 10
HISTORY = 200_000
PHASE_SECONDS = 60.0
TIMEOUTS = TaskTimeouts(timedelta(minutes=10), timedelta(minutes=10), timedelta(minutes=10))
# the application name of the orchestrator's pooled connections
APP = "nango-orchestrator"


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    configured = os.environ.get("NANGO_BENCH_DATABASE_URL")
    if configured:
        yield configured
        return
    name = f"nango_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        parts = urlsplit(ADMIN_URL)
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@asynccontextmanager
async def orchestrator(url: str, schema: str) -> AsyncIterator[OrchestratorClient]:
    port = free_port()
    settings = OrchestratorSettings.model_validate(
        {
            "NANGO_INTERNAL_TOKEN": TOKEN,
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_ORCHESTRATOR_PORT": port,
            "ORCHESTRATOR_DATABASE_URL": url,
            "ORCHESTRATOR_DATABASE_SCHEMA": schema,
        }
    )
    stop = asyncio.Event()
    server = asyncio.create_task(run(settings, stop))
    target = f"127.0.0.1:{port}"
    while not await check_health(target):
        if server.done():
            server.result()
        await asyncio.sleep(0.05)
    client = OrchestratorClient(target, TOKEN, timeout=30)
    try:
        yield client
    finally:
        await client.close()
        stop.set()
        await server


async def create(client: OrchestratorClient, run_id: str) -> float:
    specs = [
        TaskSpec(
            name=f"bench:{run_id}:{i}",
            group=TaskGroup(f"bench:{run_id}:g{i % GROUPS}"),
            args={"type": "action", "i": i},
            timeouts=TIMEOUTS,
        )
        for i in range(TASKS)
    ]
    began = time.perf_counter()
    for start in range(0, TASKS, BATCH):
        await client.create_tasks(specs[start : start + BATCH])
    return TASKS / (time.perf_counter() - began)


async def claim_and_complete(client: OrchestratorClient, run_id: str) -> tuple[float, list[float]]:
    done = 0
    latencies: list[float] = []
    deadline = time.monotonic() + PHASE_SECONDS

    async def worker() -> None:
        nonlocal done
        while done < TASKS and time.monotonic() < deadline:
            began = time.perf_counter()
            tasks = await client.dequeue(f"bench:{run_id}:*", limit=LIMIT, wait=timedelta(milliseconds=500))
            if tasks:
                latencies.append(time.perf_counter() - began)
            for task in tasks:
                await client.succeed(task.id, {"ok": True})
            done += len(tasks)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return done / (time.perf_counter() - began), latencies


async def backend_cpu(url: str) -> float:
    """CPU seconds used so far by the orchestrator's Postgres backends (a server on this machine)."""
    conn = await asyncpg.connect(url)
    try:
        records = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APP)
    finally:
        await conn.close()
    used = 0.0
    for pid in (r["pid"] for r in records):
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used += times.user + times.system
    return used


async def actions(client: OrchestratorClient, url: str, run_id: str) -> tuple[float, float, float]:
    """Actions per second, and the CPU seconds per action of this process and of the Postgres backends."""
    spec = TaskSpec(
        name=f"action:{run_id}",
        group=TaskGroup(f"action:{run_id}", ACTION_GROUP_MAX),
        args={"type": "action", "input": None},
        timeouts=ACTION_TIMEOUTS,
    )
    deadline = time.monotonic() + PHASE_SECONDS
    remaining = ACTIONS
    done = 0
    stopping = asyncio.Event()

    async def caller() -> None:
        nonlocal remaining, done
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            task = await client.create_task(spec, wait=timedelta(seconds=30))
            while not task.terminated and time.monotonic() < deadline:
                task = await client.get_task_output(task.id, wait=timedelta(seconds=1))
            done += 1

    async def worker() -> None:
        while not stopping.is_set():
            for task in await client.dequeue(f"action:{run_id}", limit=1, wait=timedelta(milliseconds=200)):
                await client.succeed(task.id, {"output": None})

    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    try:
        cpu, backends, began = time.process_time(), await backend_cpu(url), time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CALLERS)))
        elapsed = time.perf_counter() - began
        cpu, backends = time.process_time() - cpu, await backend_cpu(url) - backends
    finally:
        stopping.set()
        await asyncio.gather(*workers)
    return done / elapsed, cpu / max(done, 1), backends / max(done, 1)


async def add_history(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""INSERT INTO {schema}.tasks (id, name, payload, group_key, group_max_concurrency, retry_max,
                    retry_count, retry_key, starts_after, created_to_started_timeout, started_to_completed_timeout,
                    heartbeat_timeout, state, output, expires_at)
                SELECT gen_random_uuid(), 'old:' || g, '{{"type":"action"}}', 'bench:old:g' || (g % {GROUPS}), 0,
                       0, 0, gen_random_uuid(), now(), '30 s', '30 s', '60 s', 'SUCCEEDED', '{{"ok":true}}', NULL
                FROM generate_series(1, {HISTORY}) AS g"""
        )
        await conn.execute(f"ANALYZE {schema}.tasks")
    finally:
        await conn.close()


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) >= 2 else float("nan")


async def main() -> None:
    schema = f"nango_scheduler_bench_{uuid.uuid4().hex[:8]}"
    print(f"orchestrator: {TASKS} tasks, create batch {BATCH}, {WORKERS} workers, dequeue limit {LIMIT}")
    async with database() as url:
        try:
            async with orchestrator(url, schema) as client:
                for label in ("empty history", f"{HISTORY // 1000}k finished tasks"):
                    if label != "empty history":
                        await add_history(url, schema)
                    run_id = uuid.uuid4().hex[:6]
                    created = await create(client, run_id)
                    completed, latencies = await claim_and_complete(client, run_id)
                    print(
                        f"{label}: create {created:,.0f} tasks/s | claim+complete {completed:,.0f} tasks/s | "
                        f"dequeue p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
                    )
                rate, own, backends = await actions(client, url, uuid.uuid4().hex[:6])
                print(
                    f"actions ({CALLERS} callers: create + wait; {WORKERS} workers: dequeue 1 + succeed): "
                    f"{rate:,.0f} actions/s; CPU per action: {own * 1e6:,.0f} us in this process (orchestrator "
                    f"and callers), {backends * 1e6:,.0f} us in the orchestrator's Postgres backends"
                )
        finally:
            conn = await asyncpg.connect(url)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await conn.close()


if __name__ == "__main__":
    install_event_loop_policy()
    asyncio.run(main())
