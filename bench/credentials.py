"""Credential reads per second: `GET /connections/{id}` with a fresh token (prints figures; not a test).

Starts 1 (then 2) server processes on one Postgres, creates an integration and --connections API-key
connections through the API, then loads `GET /connections/{id}?provider_config_key=` with wrk
(one wrk per server process, connections spread over the ids). The load generator shares the
machine's cores with the servers and Postgres, as every figure in reference/limits.md does.

    .venv/bin/python bench/credentials.py [--seconds 10] [--runs 3] [--wrk-connections 32]

Database: NANGO_BENCH_DATABASE_URL (an admin URL), else Postgres on 127.0.0.1:5432; a fresh
database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

from nango.crypto import Keyring, generate_key

LUA = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local i = math.random(#ids)
request = function()
  i = i %% #ids + 1
  local path = "/connections/" .. ids[i] .. "?provider_config_key=bench"
  return wrk.format("GET", path, {["Authorization"] = "Bearer %(key)s"})
end
"""


def start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "nango.server"], env=env, stdout=subprocess.DEVNULL)


def parse_wrk(text: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx count)."""

    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return rps, p50, p99, int(bad.group(1)) if bad else 0


def run_wrk(urls: list[str], script: Path, seconds: int, connections: int) -> list[tuple[float, float, float, int]]:
    per = max(connections // len(urls), 1)
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{per}", f"-d{seconds}s", "--latency", "-s", str(script), url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    return [parse_wrk(p.communicate(timeout=seconds + 60)[0]) for p in procs]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=200, help="nango connections to read")
    parser.add_argument("--wrk-connections", type=int, default=32, help="concurrent HTTP connections in total")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")

    admin_url = os.environ.get("NANGO_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    database = f"nango_bench_{uuid.uuid4().hex[:8]}"
    await admin(admin_url, f"CREATE DATABASE {database}")
    db_url = with_database(admin_url, database)
    key = generate_key()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="nango-bench-"))
    try:
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
            "NANGO_DATABASE_URL": db_url,
            "NANGO_ENCRYPTION_KEY": key,
            "NANGO_INTERNAL_TOKEN": "bench-internal-token-0123456789",
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_DATA_DIR": str(tmp),
            "FLAG_API_RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "warning",
            "NANGO_DB_POOL_MAX": "20",
        }
        envs = []
        for _ in range(2):
            envs.append({**base, "SERVER_PORT": str(free_port()), "NANGO_SERVER_GRPC_PORT": str(free_port())})
        urls = [f"http://127.0.0.1:{e['SERVER_PORT']}" for e in envs]
        procs.append(start_server(envs[0]))
        await wait_healthy(urls[0])
        conn = await asyncpg.connect(db_url, server_settings={"search_path": "nango"})
        row = await conn.fetchrow("SELECT uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
        dev = Keyring.from_encoded(key).open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")
        await conn.close()
        headers = {"Authorization": f"Bearer {dev}"}
        ids = [f"conn-{i}" for i in range(args.connections)]
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(urls[0] + "/integrations", json={"provider": "resend", "unique_key": "bench"}) as r:
                assert r.status == 200, await r.text()
            for connection_id in ids:
                body = {
                    "provider_config_key": "bench",
                    "connection_id": connection_id,
                    "credentials": {"type": "API_KEY", "apiKey": f"SG.{connection_id}"},
                }
                async with http.post(urls[0] + "/connections", json=body) as r:
                    assert r.status == 201, await r.text()
            async with http.get(f"{urls[0]}/connections/{ids[0]}?provider_config_key=bench") as r:
                assert json.loads(await r.text())["credentials"]["apiKey"] == f"SG.{ids[0]}"
        ids_file = tmp / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        script = tmp / "read.lua"
        script.write_text(LUA % {"ids": ids_file, "key": dev})

        print(
            f"credential reads: GET /connections/{{id}} over {args.connections} API-key connections, "
            f"{args.wrk_connections} concurrent HTTP connections, {args.seconds} s x {args.runs} runs, "
            f"{os.cpu_count()} cores shared with wrk and Postgres"
        )
        for count in (1, 2):
            if count == 2:
                procs.append(start_server(envs[1]))
                await wait_healthy(urls[1])
            run_wrk(urls[:count], script, 2, args.wrk_connections)  # warm-up
            servers = [psutil.Process(p.pid) for p in procs[:count]]
            cpu_before = sum(sum(s.cpu_times()[:2]) for s in servers)
            totals, p50s, p99s, errors = [], [], [], 0
            for _ in range(args.runs):
                results = run_wrk(urls[:count], script, args.seconds, args.wrk_connections)
                totals.append(sum(r[0] for r in results))
                p50s.append(max(r[1] for r in results))
                p99s.append(max(r[2] for r in results))
                errors += sum(r[3] for r in results)
            # CPU per read is less disturbed by other work on the machine than reads/s
            cpu = sum(sum(s.cpu_times()[:2]) for s in servers) - cpu_before
            per_read = cpu / (sum(totals) * args.seconds) * 1e6
            print(
                f"  {count} server process{'es' if count > 1 else ''}: median {statistics.median(totals):8.0f} reads/s "
                f"(runs {[round(t) for t in totals]}), p50 {statistics.median(p50s):.2f} ms, "
                f"p99 {statistics.median(p99s):.2f} ms, non-2xx {errors} | server CPU {per_read:.0f} us/read"
            )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        time.sleep(0.2)
        await admin(admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
