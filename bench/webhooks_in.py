"""Incoming provider webhooks accepted per second, and their latency (prints figures; not a test).

Starts one `nango.server` process on a fresh database with a GitHub App integration (webhook secret
set, forwarding on, the environment's primary webhook URL set) and --connections connections, each
with its own installation id, then loads `POST /webhook/<env uuid>/<key>` with wrk: GitHub-style
`issues` deliveries signed with X-Hub-Signature-256, each naming one installation at random. Every
accepted webhook is stored before it is answered: one forward delivery, plus one webhook task when
--with-syncs gives every connection a sync subscribed to `issues`. At the end the outbox is counted
against the 2xx answers wrk saw. jobs and the orchestrator are not started, so rows stay in the outbox.
The load generator shares the machine's cores with the server and Postgres.

    .venv/bin/python bench/webhooks_in.py [--seconds 10] [--runs 3] [--rates 1000,2000] [--wrk-connections 16,64]
        [--with-syncs]

Paced runs offer about --rates requests/s (wrk with a fixed pause per request on 64 connections; wrk
has no open-loop mode, so latency is measured from each request's send); unpaced runs drive as fast
as the server answers.

Needs `wrk`. Database: NANGO_BENCH_DATABASE_URL (an admin URL), else Postgres on 127.0.0.1:5432; a
fresh database is created and dropped. The server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import psutil
from common import admin, free_port, wait_healthy, with_database

from nango.crypto import generate_key

SECRET = "bench-github-app-webhook-secret"  # noqa: S105 - the bench signs with it
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9\n-----END RSA PRIVATE KEY-----"
# requests are formatted in init(): only then does wrk know the Host header
LUA = """
local requests = {}
local i = 0
init = function(args)
  for line in io.lines("%(bodies)s") do
    local signature, body = line:match("([^\\t]+)\\t(.*)")
    requests[#requests + 1] = wrk.format("POST", "%(path)s", {
      ["Content-Type"] = "application/json",
      ["User-Agent"] = "GitHub-Hookshot/bench",
      ["X-GitHub-Event"] = "issues",
      ["X-GitHub-Hook-Installation-Target-Type"] = "integration",
      ["X-Hub-Signature-256"] = signature,
    }, body)
  end
  i = math.random(#requests)
end
request = function()
  i = i %% #requests + 1
  return requests[i]
end
"""
# paced runs: each HTTP connection waits this long before each request, so the offered rate is about
# connections / (pause + latency)
PACED_LUA = """
delay = function()
  return math.random(0, 2 * %(pause_ms)d)
end
"""


def parse_wrk(text: str) -> tuple[float, float, float, int, int]:
    """(requests/s, p50 ms, p99 ms, requests, non-2xx count)."""

    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return rps, p50, p99, total, failed


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, float, float, int, int]:
    """Closed-loop load (or paced, when the script has a delay())."""
    process = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return parse_wrk(process.stdout)


async def populate(db_url: str, url: str, dev_key: str, connections: int, with_syncs: bool) -> str:
    """The integration, its connections (written as a GitHub App install leaves them) and the settings;
    returns the environment's uuid."""
    headers = {"Authorization": f"Bearer {dev_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.patch(
            url + "/environment/webhook-settings", json={"primary_url": "https://customer.example/hooks"}
        ) as r:
            assert r.status == 200, await r.text()
        integration = {
            "provider": "github-app",
            "unique_key": "bench",
            "credentials": {"type": "APP", "app_id": "1", "app_link": "https://github.com/apps/b", "private_key": PEM},
            "custom": {"webhookSecret": SECRET},
        }
        async with http.post(url + "/integrations", json=integration) as r:
            assert r.status == 200, await r.text()
    conn = await asyncpg.connect(db_url, server_settings={"search_path": "nango"})
    try:
        environment = await conn.fetchrow("SELECT id, uuid FROM environments WHERE name = 'dev'")
        integration_id = await conn.fetchval("SELECT id FROM integrations WHERE unique_key = 'bench'")
        rows = [
            (
                uuid.uuid4(),
                environment["id"],
                integration_id,
                f"install-{n}",
                json.dumps({"installation_id": str(1_000_000 + n), "app_id": "1"}),
            )
            for n in range(connections)
        ]
        await conn.executemany(
            """INSERT INTO connections (uuid, environment_id, integration_id, connection_id, connection_config,
                   auth_mode, credentials_sealed) VALUES ($1, $2, $3, $4, $5::jsonb, 'APP', 'unused')""",
            rows,
        )
        if with_syncs:
            function_id = uuid.uuid4()
            await conn.execute(
                """INSERT INTO functions (id, environment_id, integration_id, name, type, version, bundle_key,
                       bundle_sha256, module, attribute, webhook_subscriptions)
                   VALUES ($1, $2, $3, 'issues', 'sync', '1', 'none', $4, 'issues', 'issues', '{issues}')""",
                function_id,
                environment["id"],
                integration_id,
                "0" * 64,
            )
            await conn.execute(
                """INSERT INTO syncs (id, environment_id, connection_id, function_id, name)
                   SELECT gen_random_uuid(), $1, id, $2, 'issues' FROM connections WHERE integration_id = $3""",
                environment["id"],
                function_id,
                integration_id,
            )
        await conn.execute("ANALYZE connections")
        return str(environment["uuid"])
    finally:
        await conn.close()


def write_bodies(path: Path, connections: int, count: int = 2_000) -> None:
    rng = random.Random(7)
    lines = []
    for n in range(count):
        payload = {
            "action": "opened",
            "issue": {"number": n, "title": f"Issue {n}", "body": "x" * 400, "labels": [{"name": "bug"}]},
            "repository": {"id": 123, "full_name": "acme/app"},
            "sender": {"login": "octocat", "id": 1},
            "installation": {"id": 1_000_000 + rng.randrange(connections)},
        }
        body = json.dumps(payload, separators=(",", ":"))
        signature = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        lines.append(f"{signature}\t{body}")
    path.write_text("\n".join(lines) + "\n")


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def outbox_rows(db_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(db_url, server_settings={"search_path": "nango"})
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE kind = 'delivery') AS d, count(*) FILTER (WHERE kind = 'task') AS t "
            "FROM webhook_outbox"
        )
        return int(row["d"]), int(row["t"])
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1_000, help="GitHub App connections (installations)")
    parser.add_argument("--wrk-connections", default="16,64", help="concurrent HTTP connections, comma-separated")
    parser.add_argument("--rates", default="1000,2000", help="offered rates of the paced runs (64 connections)")
    parser.add_argument("--with-syncs", action="store_true", help="every connection has a sync subscribed to issues")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    admin_url = os.environ.get("NANGO_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    database = f"nango_bench_{uuid.uuid4().hex[:8]}"
    await admin(admin_url, f"CREATE DATABASE {database}")
    db_url = with_database(admin_url, database)
    tmp = Path(tempfile.mkdtemp(prefix="nango-bench-webhooks-"))
    dev_key = str(uuid.uuid4())
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
        "NANGO_DATABASE_URL": db_url,
        "NANGO_ENCRYPTION_KEY": generate_key(),
        "NANGO_INTERNAL_TOKEN": "bench-internal-token-0123456789",
        "NANGO_SECRET_KEY_DEV": dev_key,
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(tmp),
        "SERVER_PORT": str(port),
        "NANGO_SERVER_GRPC_PORT": str(free_port()),
        # nothing listens here: accepted webhooks stay in the outbox, where they are counted
        "JOBS_SERVICE_URL": "127.0.0.1:9",
        "ORCHESTRATOR_SERVICE_URL": "127.0.0.1:9",
        "LOG_LEVEL": "warning",
    }
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "nango.server"], env=env, stdout=subprocess.DEVNULL)
    try:
        await wait_healthy(url)
        environment_uuid = await populate(db_url, url, dev_key, args.connections, args.with_syncs)
        bodies = tmp / "bodies.tsv"
        write_bodies(bodies, args.connections)
        script = tmp / "webhooks.lua"
        script.write_text(LUA % {"bodies": bodies, "path": f"/webhook/{environment_uuid}/bench"})
        print(
            f"incoming webhooks: signed GitHub App `issues` deliveries (~700 B) over {args.connections} connections, "
            f"{'forward + webhook task' if args.with_syncs else 'forward'} stored per webhook, "
            f"{args.seconds} s x {args.runs} runs, {os.cpu_count()} cores shared with wrk and Postgres"
        )
        run_wrk(url, script, 2, 16)  # warm-up: caches, connection pool
        accepted = 0
        paced_connections = 64
        for rate in [int(r) for r in args.rates.split(",") if r]:
            paced = tmp / f"paced-{rate}.lua"
            pause = max(round(paced_connections * 1000 / rate), 1)
            paced.write_text(script.read_text() + PACED_LUA % {"pause_ms": pause})
            rates, p50s, p99s, cpus, failures = [], [], [], [], 0
            for _ in range(args.runs):
                before = cpu_seconds(server.pid)
                rps, p50, p99, total, failed = run_wrk(url, paced, args.seconds, paced_connections)
                cpus.append((cpu_seconds(server.pid) - before) / max(total - failed, 1) * 1e6)
                rates.append(rps)
                p50s.append(p50)
                p99s.append(p99)
                failures += failed
                accepted += total - failed
            print(
                f"  paced at ~{rate}/s: median {statistics.median(rates):7.0f} accepted/s "
                f"(runs {[round(r) for r in rates]}), p50 {statistics.median(p50s):.2f} ms, "
                f"p99 {statistics.median(p99s):.2f} ms, server CPU {statistics.median(cpus):.0f} µs/webhook, "
                f"failed {failures}"
            )
        for concurrency in [int(c) for c in args.wrk_connections.split(",")]:
            rates, p50s, p99s, cpus, failures = [], [], [], [], 0
            for _ in range(args.runs):
                before = cpu_seconds(server.pid)
                rps, p50, p99, total, failed = run_wrk(url, script, args.seconds, concurrency)
                cpus.append((cpu_seconds(server.pid) - before) / max(total - failed, 1) * 1e6)
                rates.append(rps)
                p50s.append(p50)
                p99s.append(p99)
                failures += failed
                accepted += total - failed
            print(
                f"  unpaced, {concurrency:3d} concurrent: median {statistics.median(rates):7.0f} accepted/s "
                f"(runs {[round(r) for r in rates]}), p50 {statistics.median(p50s):.2f} ms, "
                f"p99 {statistics.median(p99s):.2f} ms, server CPU {statistics.median(cpus):.0f} µs/webhook, "
                f"failed {failures}"
            )
        deliveries, tasks = await outbox_rows(db_url)
        print(
            f"  outbox: {deliveries} forward deliveries, {tasks} webhook tasks for {accepted} accepted "
            "(plus the warm-up's)"
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        time.sleep(0.2)
        await admin(admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
