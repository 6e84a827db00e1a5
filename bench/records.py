"""Records cache throughput through PersistClient against persist running as its own process
(`python -m nango.persist`), as deployed. Prints figures only.

    .venv/bin/python bench/records.py

Save: ~1 KB records in batches of 1,000, one stream (a sync's runner): new, changed, unchanged
(the same batch retried: same generation) and unchanged in a new sync job (marks records seen), each
first one batch at a time, then new and changed with two batches in flight (as `nango.batch_save`
sends them: persist prepares one while it writes the other), then STREAMS concurrent streams on
distinct connections. Read: GetRecords limit 1,000 to the end, as bytes (what the gateway forwards)
and parsed with json.loads.

The box is shared (client, persist and Postgres on the same cores, and whatever else runs there), so
beside wall-clock records/s each line gives the CPU each part spent per record, which does not depend
on what else competes for the cores: client / persist / Postgres backends of persist's pool.

Postgres: NANGO_BENCH_DATABASE_URL, else a fresh database on 127.0.0.1:5432 (created, then dropped).
Sizes: BENCH_RECORDS (50000), BENCH_STREAMS (2), BENCH_RUNS (3, median reported).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
from common import free_port

from nango.crypto import generate_key
from nango.grpckit import check_health
from nango.persist.client import BatchContext, PersistClient, RecordScope
from nango.process import install_event_loop_policy

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TOKEN = secrets.token_hex(16)
RECORDS = int(os.environ.get("BENCH_RECORDS", "50000"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "2"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
BATCH = 1000
PAGE = 1000
ENV = 1


def record(i: int, version: int) -> dict[str, Any]:
    """~940 bytes of JSON, the shape of the baseline in shared/reference/limits.md row 4."""
    return {
        "id": f"ext-{i}",
        "version": version,
        "title": f"Issue number {i} about something",
        "state": "open",
        "author": {"login": "octocat", "id": 583231, "type": "User"},
        "labels": ["bug", "p1", "backend"],
        "created_at": "2024-05-01T10:00:00Z",
        "body": ("lorem ipsum dolor sit amet " * 40)[:700],
    }


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


class CpuMeter:
    """CPU seconds spent so far by this process, the persist process and persist's Postgres backends."""

    def __init__(self, persist_pid: int, admin: asyncpg.Connection) -> None:
        self.processes = {"client": psutil.Process(), "persist": psutil.Process(persist_pid)}
        self.admin = admin

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return float(times.user + times.system)

    async def snapshot(self) -> dict[str, float]:
        pids = await self.admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = 'nango-persist'")
        postgres = sum(self._cpu(psutil.Process(row["pid"])) for row in pids if psutil.pid_exists(row["pid"]))
        return {**{name: self._cpu(p) for name, p in self.processes.items()}, "postgres": postgres}


@asynccontextmanager
async def persist(url: str) -> AsyncIterator[tuple[PersistClient, int]]:
    port = free_port()
    env = {
        **os.environ,
        "NANGO_DATABASE_URL": url,
        "RECORDS_DATABASE_SCHEMA": "bench_records",
        "NANGO_LOGS_DATABASE_SCHEMA": "bench_logs",
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_PERSIST_PORT": str(port),
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "LOG_LEVEL": "warn",
    }
    process = subprocess.Popen([sys.executable, "-m", "nango.persist"], env=env)
    try:
        target = f"127.0.0.1:{port}"
        async with asyncio.timeout(60):
            while not await check_health(target):
                if process.poll() is not None:
                    raise RuntimeError(f"persist exited with {process.returncode}")
                await asyncio.sleep(0.1)
        async with PersistClient(target, TOKEN) as client:
            yield client, process.pid
    finally:
        process.terminate()
        process.wait(30)


async def save_all(client: PersistClient, scope: RecordScope, batches: list[list[dict[str, Any]]], gen: int) -> None:
    for batch in batches:
        await client.save_records(scope, batch, BatchContext(generation=gen))


async def save_pipelined(
    client: PersistClient, scope: RecordScope, batches: list[list[dict[str, Any]]], gen: int
) -> None:
    """Two batches in flight, answers read oldest first (the SDK's SAVES_IN_FLIGHT)."""
    in_flight: list[asyncio.Future[Any]] = []
    for batch in batches:
        if len(in_flight) == 2:
            await in_flight.pop(0)
        in_flight.append(asyncio.ensure_future(client.save_records(scope, batch, BatchContext(generation=gen))))
    for saving in in_flight:
        await saving


async def read_all(client: PersistClient, scope: RecordScope, *, parse: bool) -> int:
    count, cursor = 0, None
    while True:
        page = await client.get_records(scope, cursor=cursor, limit=PAGE)
        if parse:
            count += len(page.records())
        else:
            count += page.records_json.count(b'"_nango_metadata"')
        if page.next_cursor is None:
            return count
        cursor = page.next_cursor


async def timed(meter: CpuMeter, label: str, records: int, runs: list[Callable[[], Awaitable[Any]]]) -> None:
    rates = []
    spent = dict.fromkeys(("client", "persist", "postgres"), 0.0)
    for run in runs:
        before = await meter.snapshot()
        started = time.perf_counter()
        await run()
        rates.append(records / (time.perf_counter() - started))
        after = await meter.snapshot()
        for part in spent:
            spent[part] += after[part] - before[part]
    per_record = {part: seconds / (records * len(runs)) * 1e6 for part, seconds in spent.items()}
    cpu = " / ".join(f"{per_record[p]:5.1f}" for p in ("client", "persist", "postgres"))
    print(
        f"{label:42s} median {statistics.median(rates):7,.0f} rec/s [{min(rates):,.0f}-{max(rates):,.0f}]"
        f"  CPU us/rec {cpu} = {sum(per_record.values()):5.1f}"
    )


async def main() -> None:
    v1 = [[record(i, 1) for i in range(s, s + BATCH)] for s in range(0, RECORDS, BATCH)]
    v2 = [[record(i, 2) for i in range(s, s + BATCH)] for s in range(0, RECORDS, BATCH)]
    print(
        f"{RECORDS} records of ~{len(str(v1[0][0]).encode())} B, batches of {BATCH}, {RUNS} runs, cpus={os.cpu_count()}"
    )
    async with database() as url, persist(url) as (client, pid):
        admin = await asyncpg.connect(url)
        meter = CpuMeter(pid, admin)
        await client.save_records(RecordScope(ENV, 1, "Warmup"), v1[0])
        scopes = [RecordScope(ENV, 100 + r, "Issue") for r in range(RUNS)]
        await timed(meter, "save new (1 stream)", RECORDS, [partial(save_all, client, s, v1, 1) for s in scopes])
        await timed(meter, "save changed (1 stream)", RECORDS, [partial(save_all, client, s, v2, 2) for s in scopes])
        await timed(
            meter,
            "save unchanged, same sync job (1 stream)",
            RECORDS,
            [partial(save_all, client, s, v2, 2) for s in scopes],
        )
        await timed(
            meter,
            "save unchanged, next sync job (1 stream)",
            RECORDS,
            [partial(save_all, client, s, v2, 3) for s in scopes],
        )

        piped = [RecordScope(ENV, 200 + r, "Issue") for r in range(RUNS)]
        await timed(
            meter,
            "save new, 2 in flight (1 stream)",
            RECORDS,
            [partial(save_pipelined, client, s, v1, 1) for s in piped],
        )
        await timed(
            meter,
            "save changed, 2 in flight (1 stream)",
            RECORDS,
            [partial(save_pipelined, client, s, v2, 2) for s in piped],
        )

        async def concurrent(base: int, batches: list[list[dict[str, Any]]], gen: int) -> None:
            await asyncio.gather(
                *(save_all(client, RecordScope(ENV, base + k, "Issue"), batches, gen) for k in range(STREAMS))
            )

        bases = [1000 + 100 * r for r in range(RUNS)]
        await timed(
            meter, f"save new ({STREAMS} streams)", RECORDS * STREAMS, [partial(concurrent, b, v1, 1) for b in bases]
        )
        await timed(
            meter,
            f"save changed ({STREAMS} streams)",
            RECORDS * STREAMS,
            [partial(concurrent, b, v2, 2) for b in bases],
        )

        for scope in scopes:
            assert await read_all(client, scope, parse=True) == RECORDS
        await timed(
            meter,
            "read limit 1000, bytes as served",
            RECORDS,
            [partial(read_all, client, s, parse=False) for s in scopes],
        )
        await timed(
            meter,
            "read limit 1000, parsed by the client",
            RECORDS,
            [partial(read_all, client, s, parse=True) for s in scopes],
        )
        await admin.close()


if __name__ == "__main__":
    install_event_loop_policy()
    asyncio.run(main())
