"""Proxy throughput and added latency (prints figures; not a test).

Four ways to the same small-JSON upstream (nginx serving a 199-byte file on loopback), in one run:

1. direct to the upstream;
2. through nginx as a plain reverse proxy (keep-alive upstream, adds an Authorization header);
3. through a bare aiohttp pass-through of a few lines that only adds a header: the ceiling of any
   Python proxy on this machine;
4. through our `/proxy` with an API-key connection (a `nango.server` process on a fresh database).

Each is loaded with `wrk -t2 -c50 -d<seconds>s` after a warm-up, then measured at one connection for
the added p50 latency. The load generator shares the machine's cores with everything it measures,
as every figure in reference/limits.md does.

    .venv/bin/python bench/proxy.py [--seconds 10] [--runs 1]

Needs `wrk` and `nginx` (Debian packages). Database: NANGO_BENCH_DATABASE_URL (an admin URL), else
Postgres on 127.0.0.1:5432; a fresh database is created and dropped. Every process started here is
stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
from common import admin, free_port, wait_healthy, with_database

from nango.crypto import generate_key

PAYLOAD = {
    "id": "abc123",
    "object": "user",
    "name": "Example User",
    "email": "user@example.com",
    "active": True,
    "roles": ["admin", "dev"],
    "created": "2024-01-01T00:00:00Z",
    "n": 42,
}

UPSTREAM_CONF = """
worker_processes 1;
pid {dir}/upstream.pid;
error_log {dir}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {dir}/www;
    location / {{ }}
  }}
}}
"""

PROXY_CONF = """
worker_processes 1;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer tok_0123456789abcdef";
    }}
  }}
}}
"""

# the ceiling of a Python proxy: one shared client session, adds a header, nothing else
BARE_PROXY_SCRIPT = """
import os, aiohttp, uvloop
from aiohttp import web
UPSTREAM, PORT = os.environ["UPSTREAM"], int(os.environ["PORT"])
HOP = {"connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}
async def start(app):
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
                                           auto_decompress=False)
async def stop(app):
    await app["session"].close()
async def handler(request):
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    headers["Authorization"] = "Bearer tok_0123456789abcdef"
    body = await request.read() if request.body_exists else None
    async with request.app["session"].request(request.method, UPSTREAM + request.path_qs, headers=headers,
                                              data=body, allow_redirects=False) as r:
        data = await r.read()
        return web.Response(status=r.status, body=data,
                            headers={k: v for k, v in r.headers.items() if k.lower() not in HOP})
uvloop.install()
app = web.Application()
app.on_startup.append(start)
app.on_cleanup.append(stop)
app.router.add_route("*", "/{tail:.*}", handler)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None, backlog=4096)
"""

PROVIDERS = """
bench-api:
  display_name: Bench API
  categories: [dev-tools]
  docs: https://example.com/docs
  auth_mode: API_KEY
  proxy:
    base_url: http://127.0.0.1:{port}
    headers:
      authorization: Bearer ${{apiKey}}
"""


@dataclass
class Figures:
    rps: float
    p50: float
    p99: float
    bad: int


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def parse_wrk(text: str) -> Figures:
    def ms(value: str) -> float:
        for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
            if value.endswith(unit):
                return float(value[: -len(unit)]) * factor
        raise ValueError(value)

    lines = text.splitlines()
    rps = next(float(line.split()[1]) for line in lines if line.startswith("Requests/sec:"))
    p50 = next(ms(line.split()[1]) for line in lines if line.strip().startswith("50%"))
    p99 = next(ms(line.split()[1]) for line in lines if line.strip().startswith("99%"))
    bad = sum(int(line.split()[-1]) for line in lines if "Non-2xx or 3xx responses" in line)
    errors = [line for line in lines if "Socket errors" in line]
    if errors:
        print(f"    wrk: {errors[0].strip()}")
    return Figures(rps, p50, p99, bad)


def wrk(url: str, *, connections: int, threads: int, seconds: int, headers: dict[str, str]) -> Figures:
    flags = [part for name, value in headers.items() for part in ("-H", f"{name}: {value}")]
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *flags, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def setup_connection(url: str, key: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        async with http.post(url + "/integrations", json={"provider": "bench-api", "unique_key": "bench"}) as r:
            assert r.status == 200, await r.text()
        body = {
            "provider_config_key": "bench",
            "connection_id": "bench-connection",
            "credentials": {"type": "API_KEY", "apiKey": "tok_0123456789abcdef"},
        }
        async with http.post(url + "/connections", json=body) as r:
            assert r.status == 201, await r.text()


def postgres_cpu(database: str) -> dict[int, float]:
    """CPU seconds so far of each local Postgres backend connected to `database` (found by its process
    title, `postgres: [cluster: ]user database host(port) state`; the name is unique to this run);
    empty when Postgres is not on this machine."""
    cpu: dict[int, float] = {}
    for process in psutil.process_iter(["cmdline"]):
        words = " ".join(process.info["cmdline"] or []).split()
        if words[:1] == ["postgres:"] and database in words:
            try:
                cpu[process.pid] = sum(process.cpu_times()[:2])
            except psutil.Error:
                continue
    return cpu


def measure(
    name: str,
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    server: int | None = None,
    database: str | None = None,
) -> tuple[Figures, Figures]:
    """Median figures at 50 connections and at 1; with `server` (a PID), also that process's CPU time
    per request under load, which other work on the machine disturbs less than requests/s; with
    `database`, also the CPU time of the Postgres backends serving it (the operations log's writes)."""
    wrk(url, connections=50, threads=2, seconds=2, headers=headers)
    process = psutil.Process(server) if server is not None else None
    cpu_before = sum(process.cpu_times()[:2]) if process else 0.0
    postgres_before = postgres_cpu(database) if database else {}
    loaded = [wrk(url, connections=50, threads=2, seconds=args.seconds, headers=headers) for _ in range(args.runs)]
    cpu = (sum(process.cpu_times()[:2]) - cpu_before) if process else 0.0
    # a backend that started during the run counts from zero
    postgres = (
        sum(after - postgres_before.get(pid, 0.0) for pid, after in postgres_cpu(database).items()) if database else 0.0
    )
    single = [
        wrk(url, connections=1, threads=1, seconds=args.single_seconds, headers=headers) for _ in range(args.runs)
    ]

    def median(figures: list[Figures]) -> Figures:
        return Figures(
            statistics.median(f.rps for f in figures),
            statistics.median(f.p50 for f in figures),
            statistics.median(f.p99 for f in figures),
            sum(f.bad for f in figures),
        )

    load, one = median(loaded), median(single)
    requests = sum(f.rps for f in loaded) * args.seconds
    per_request = f"  | server CPU {cpu / requests * 1e6:5.0f} us/request" if process else ""
    if database:
        per_request += f"  | Postgres CPU {postgres / requests * 1e6:4.0f} us/request"
    print(
        f"  {name:<26} {load.rps:9.0f} req/s  p50 {load.p50:6.2f} ms  p99 {load.p99:6.2f} ms  "
        f"| 1 connection: p50 {one.p50:6.3f} ms  | non-2xx {load.bad + one.bad}{per_request}",
        flush=True,
    )
    return load, one


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="seconds of each 50-connection run")
    parser.add_argument("--single-seconds", type=int, default=5, help="seconds of each 1-connection run")
    parser.add_argument("--runs", type=int, default=1, help="runs per target (medians are printed)")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if shutil.which("wrk") is None or nginx is None:
        raise SystemExit("wrk and nginx are needed: apt-get install -y wrk nginx")

    admin_url = os.environ.get("NANGO_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    database = f"nango_bench_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="nango-bench-proxy-"))
    # nginx workers run as an unprivileged user when started by root: they must read the file
    tmp.chmod(0o755)
    (tmp / "www").mkdir(mode=0o755)
    (tmp / "www" / "data.json").write_text(json.dumps(PAYLOAD))
    (tmp / "www" / "data.json").chmod(0o644)
    ports = {name: free_port() for name in ("upstream", "nginx", "bare", "nango", "grpc")}
    processes: list[subprocess.Popen[bytes]] = []
    await admin(admin_url, f"CREATE DATABASE {database}")
    try:
        for name, template, extra in (
            ("upstream", UPSTREAM_CONF, {}),
            ("proxy", PROXY_CONF, {"upstream": ports["upstream"]}),
        ):
            port = ports["upstream"] if name == "upstream" else ports["nginx"]
            conf = tmp / f"{name}.conf"
            conf.write_text(template.format(dir=tmp, port=port, **extra))
            # `daemon off` keeps nginx in the foreground as our child, so it is stopped by its PID
            processes.append(
                subprocess.Popen(
                    [nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"], stderr=subprocess.DEVNULL
                )
            )
        (tmp / "bare.py").write_text(BARE_PROXY_SCRIPT)
        bare_env = {**os.environ, "UPSTREAM": f"http://127.0.0.1:{ports['upstream']}", "PORT": str(ports["bare"])}
        bare_process = subprocess.Popen([sys.executable, str(tmp / "bare.py")], env=bare_env)
        processes.append(bare_process)
        (tmp / "providers.yaml").write_text(PROVIDERS.format(port=ports["upstream"]))
        key = str(uuid.uuid4())
        server_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NANGO_")},
            "NANGO_DATABASE_URL": with_database(admin_url, database),
            "NANGO_ENCRYPTION_KEY": generate_key(),
            "NANGO_INTERNAL_TOKEN": "bench-internal-token-0123456789",
            "NANGO_BIND_HOST": "127.0.0.1",
            "NANGO_DATA_DIR": str(tmp),
            "NANGO_SECRET_KEY_DEV": key,
            "NANGO_PROVIDERS_FILE": str(tmp / "providers.yaml"),
            # the upstream is on loopback, which the default outbound policy refuses
            "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
            "SERVER_PORT": str(ports["nango"]),
            "NANGO_SERVER_GRPC_PORT": str(ports["grpc"]),
            "DEFAULT_RATE_LIMIT_PER_MIN": "10000000",
            "LOG_LEVEL": "warning",
        }
        nango_process = subprocess.Popen([sys.executable, "-m", "nango.server"], env=server_env)
        processes.append(nango_process)
        for port in (ports["upstream"], ports["nginx"], ports["bare"]):
            wait_port(port)
        nango_url = f"http://127.0.0.1:{ports['nango']}"
        await wait_healthy(nango_url)
        await setup_connection(nango_url, key)

        print(
            f"proxy: wrk -t2 -c50 -d{args.seconds}s (and -t1 -c1 -d{args.single_seconds}s), {args.runs} run(s) each, "
            f"199-byte JSON from nginx on loopback, {os.cpu_count()} cores shared with wrk",
            flush=True,
        )
        proxy_headers = {
            "Authorization": f"Bearer {key}",
            "Connection-Id": "bench-connection",
            "Provider-Config-Key": "bench",
        }
        _, direct_one = measure("direct to upstream", f"http://127.0.0.1:{ports['upstream']}/data.json", {}, args)
        nginx_load, nginx_one = measure("nginx reverse proxy", f"http://127.0.0.1:{ports['nginx']}/data.json", {}, args)
        bare_url = f"http://127.0.0.1:{ports['bare']}/data.json"
        bare, bare_one = measure("bare aiohttp pass-through", bare_url, {}, args, server=bare_process.pid)
        ours_url = f"{nango_url}/proxy/data.json"
        ours, ours_one = measure(
            "nango /proxy (API key)", ours_url, proxy_headers, args, server=nango_process.pid, database=database
        )
        print(
            f"  ours / nginx: {ours.rps / nginx_load.rps:.2f}   ours / bare pass-through: {ours.rps / bare.rps:.2f} "
            f"(target >= 0.75)"
        )
        print(
            f"  p50 added at 1 connection (vs direct): nginx {nginx_one.p50 - direct_one.p50:.3f} ms, "
            f"bare {bare_one.p50 - direct_one.p50:.3f} ms, ours {ours_one.p50 - direct_one.p50:.3f} ms "
            f"(target <= 1.5 ms)",
            flush=True,
        )
    finally:
        for process in reversed(processes):
            # nginx stops gracefully on QUIT; the Python servers on TERM
            stop(process, signal.SIGQUIT if process.args[0] == nginx else signal.SIGTERM)
        await admin(admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
