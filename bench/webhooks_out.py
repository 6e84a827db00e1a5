"""Outgoing webhooks delivered per second end to end, and their latency (prints figures; not a test).

Starts one `nango.server` process (whose GetWebhookSettings gives jobs the signing key) and one
`nango.jobs` process on a fresh database, and an aiohttp receiver on 127.0.0.1 in this process. Then:

- burst: hands --count deliveries (~400 B bodies, one URL each) to jobs through `EnqueueWebhooks` in
  batches of 1000, as fast as jobs stores them, and times until the receiver has every one of them
  (deliveries/s = count / (last arrival - first enqueue)); latency is arrival - the enqueue call's return;
- paced: --rate deliveries/s for --seconds, latency from each enqueue to its arrival.

Every delivery is signed (HMAC and legacy), logged as an operation and recorded in webhook_deliveries;
a sample's signature is checked against the environment's key, and the table is counted at the end.
The orchestrator, runner and persist are not started (jobs' dequeue loops wait for them). Everything
shares the machine's cores with Postgres.

    .venv/bin/python bench/webhooks_out.py [--count 20000] [--rate 300] [--seconds 10] [--runs 1]
        [--concurrency 64] [--batch 100]

Database: NANGO_BENCH_DATABASE_URL (an admin URL), else Postgres on 127.0.0.1:5432; a fresh database is
created and dropped. Both services are stopped by their PIDs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiohttp import web
from common import admin, free_port, wait_healthy, with_database

from nango.crypto import generate_key
from nango.grpckit import check_health
from nango.jobs.client import JobsClient, OutgoingWebhook
from nango.server.client import ServerClient

TOKEN = "bench-internal-token-0123456789"  # noqa: S105 - the services' shared token for this run
ENQUEUE_BATCH = 1_000


async def wait_grpc(target: str) -> None:
    for _ in range(600):
        if await check_health(target):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"{target} not healthy")


@dataclass
class Receiver:
    arrivals: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    sample: tuple[bytes, str] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        self.arrivals.setdefault(request.headers["X-Nango-Delivery-Id"], time.monotonic())
        if self.sample is None:
            self.sample = (body, request.headers["X-Nango-Hmac-Sha256"])
        return web.Response(status=204)

    async def all_of(self, ids: list[str], limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(i in self.arrivals for i in ids):
                return True
            await asyncio.sleep(0.05)
        return False


def webhooks(environment_id: int, url: str, count: int) -> list[OutgoingWebhook]:
    return [
        OutgoingWebhook(
            event_id=str(uuid.uuid4()),
            environment_id=environment_id,
            type="sync",
            body={
                "from": "nango",
                "type": "sync",
                "connectionId": f"user-{n % 1000}",
                "providerConfigKey": "bench-crm",
                "syncName": "contacts",
                "syncVariant": "base",
                "model": "Contact",
                "syncType": "INCREMENTAL",
                "success": True,
                "responseResults": {"added": n % 7, "updated": n % 5, "deleted": 0},
                "modifiedAfter": "2026-11-27T09:00:00.000Z",
                "queryTimeStamp": "2026-11-27T09:00:00.000Z",
                "pad": "x" * 120,
            },
            urls=(url,),
            connection_id=f"user-{n % 1000}",
            provider_config_key="bench-crm",
        )
        for n in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def burst(jobs: JobsClient, receiver: Receiver, environment_id: int, url: str, count: int) -> str:
    batches = [webhooks(environment_id, url, min(ENQUEUE_BATCH, count - i)) for i in range(0, count, ENQUEUE_BATCH)]
    enqueued_at: dict[str, float] = {}
    started = time.monotonic()
    for batch in batches:
        await jobs.enqueue_webhooks(batch)
        now = time.monotonic()
        enqueued_at.update({w.event_id: now for w in batch})
    stored = time.monotonic() - started
    ids = list(enqueued_at)
    complete = await receiver.all_of(ids, limit=max(120.0, count / 100))
    arrived = [receiver.arrivals[i] for i in ids if i in receiver.arrivals]
    elapsed = max(arrived) - started
    latencies = [(receiver.arrivals[i] - enqueued_at[i]) * 1000 for i in ids if i in receiver.arrivals]
    return (
        f"burst of {count}: {len(arrived) / elapsed:7.0f} deliveries/s end to end ({elapsed:.1f} s; stored by jobs "
        f"at {count / stored:.0f}/s), latency p50 {percentile(latencies, 0.5):.0f} ms p99 "
        f"{percentile(latencies, 0.99):.0f} ms{'' if complete else f', MISSING {count - len(arrived)}'}"
    )


async def paced(jobs: JobsClient, receiver: Receiver, environment_id: int, url: str, rate: int, seconds: int) -> str:
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    enqueued_at: dict[str, float] = {}
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        batch = webhooks(environment_id, url, per_tick)
        sent = time.monotonic()
        await jobs.enqueue_webhooks(batch)
        enqueued_at.update({w.event_id: sent for w in batch})
        n += 1
        await asyncio.sleep(max(0.0, started + n * tick - time.monotonic()))
    ids = list(enqueued_at)
    complete = await receiver.all_of(ids, limit=60)
    latencies = [(receiver.arrivals[i] - enqueued_at[i]) * 1000 for i in ids if i in receiver.arrivals]
    offered = len(ids) / seconds
    return (
        f"paced at {offered:.0f}/s for {seconds} s: latency enqueue->arrival p50 {percentile(latencies, 0.5):.0f} ms "
        f"p90 {percentile(latencies, 0.9):.0f} ms p99 {percentile(latencies, 0.99):.0f} ms"
        f"{'' if complete else f', MISSING {len(ids) - len(latencies)}'}"
    )


async def counted(db_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM nango_jobs.webhook_deliveries GROUP BY state")
        operations = await conn.fetchval("SELECT count(*) FROM nango_logs.operations WHERE type = 'webhook'")
        return {**{r["state"]: int(r["n"]) for r in rows}, "operations": int(operations)}
    finally:
        await conn.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="deliveries of the burst")
    parser.add_argument("--rate", type=int, default=300, help="offered deliveries/s of the paced run (0: none)")
    parser.add_argument("--seconds", type=int, default=10, help="length of the paced run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64, help="NANGO_WEBHOOK_CONCURRENCY of jobs")
    parser.add_argument("--batch", type=int, default=100, help="NANGO_WEBHOOK_BATCH_SIZE of jobs")
    args = parser.parse_args()

    admin_url = os.environ.get("NANGO_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    database = f"nango_bench_{uuid.uuid4().hex[:8]}"
    await admin(admin_url, f"CREATE DATABASE {database}")
    db_url = with_database(admin_url, database)
    tmp = Path(tempfile.mkdtemp(prefix="nango-bench-webhooks-out-"))
    server_port, server_grpc, jobs_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NANGO_", "JOBS_"))},
        "NANGO_DATABASE_URL": db_url,
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "SERVER_PORT": str(server_port),
        "NANGO_SERVER_GRPC_PORT": str(server_grpc),
        "NANGO_JOBS_PORT": str(jobs_port),
        "SERVER_SERVICE_URL": f"127.0.0.1:{server_grpc}",
        "JOBS_SERVICE_URL": f"127.0.0.1:{jobs_port}",
        # not started: jobs' dequeue loops wait for them, the webhook loop does not need them
        "ORCHESTRATOR_SERVICE_URL": "127.0.0.1:9",
        "RUNNER_SERVICE_URL": "127.0.0.1:9",
        "PERSIST_SERVICE_URL": "127.0.0.1:9",
        # the receiver listens on 127.0.0.1
        "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
        "NANGO_WEBHOOK_CONCURRENCY": str(args.concurrency),
        "NANGO_WEBHOOK_BATCH_SIZE": str(args.batch),
        "LOG_LEVEL": "error",
    }
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/hooks"
    server = subprocess.Popen([sys.executable, "-m", "nango.server"], env=env, stdout=subprocess.DEVNULL)
    jobs_process: subprocess.Popen[bytes] | None = None
    try:
        await wait_healthy(f"http://127.0.0.1:{server_port}")
        jobs_process = subprocess.Popen([sys.executable, "-m", "nango.jobs"], env=env, stdout=subprocess.DEVNULL)
        await wait_grpc(f"127.0.0.1:{jobs_port}")
        conn = await asyncpg.connect(db_url)
        environment_id = int(await conn.fetchval("SELECT id FROM nango.environments WHERE name = 'dev'"))
        await conn.close()
        jobs = JobsClient(f"127.0.0.1:{jobs_port}", TOKEN, timeout=60)
        print(
            f"outgoing webhooks: jobs (concurrency {args.concurrency}, claim batch {args.batch}) -> aiohttp receiver "
            f"on loopback, ~430 B signed bodies, {os.cpu_count()} cores shared with Postgres, the server and the "
            "receiver"
        )
        await burst(jobs, receiver, environment_id, url, 500)  # warm-up: pools, caches
        for _ in range(args.runs):
            print("  " + await burst(jobs, receiver, environment_id, url, args.count))
        if args.rate:
            for _ in range(args.runs):
                print("  " + await paced(jobs, receiver, environment_id, url, args.rate, args.seconds))
        await jobs.close()
        server_client = ServerClient(f"127.0.0.1:{server_grpc}", TOKEN)
        key = (await server_client.get_webhook_settings(environment_id)).signing_key
        await server_client.close()
        assert receiver.sample is not None
        body, signature = receiver.sample
        valid = hmac.compare_digest(hmac.new(key.encode(), body, hashlib.sha256).hexdigest(), signature)
        await asyncio.sleep(1.0)  # the operations log writes in batches
        counts = await counted(db_url)
        print(
            f"  table: {counts}; receiver: {receiver.requests} requests for {len(receiver.arrivals)} delivery ids; "
            f"sample signature {'valid' if valid else 'INVALID'}"
        )
    finally:
        if jobs_process is not None:
            stop(jobs_process)
        stop(server)
        await runner.cleanup()
        time.sleep(0.2)
        await admin(admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
