"""Functions end to end under `nango up` (all five services and the gateway, loopback only). Prints
figures; not a test.

    .venv/bin/python bench/functions.py [--parts abcd]

(a) no-op actions per second through `POST /action/trigger`, BENCH_CLIENTS concurrent clients, each
    waiting for its answer (synchronous actions), BENCH_ACTIONS calls after a warm-up.
(b) records persisted per second by `nango.batch_save` inside a real sync run: BENCH_RECORDS records
    of ~1 KB in batches of 1,000 (built before the clock starts; the sync times its batch_save calls
    and saves the figure as its checkpoint). Run 1 inserts, run 2 changes every record, run 3 changes
    none. The whole run as jobs recorded it (dispatch, worker start, bundle load) is printed beside.
(d) scheduling latency: BENCH_SYNCS connections made across 30 s, each with a sync `every 30s` (the
    minimum frequency), then BENCH_SCHEDULE_SECONDS more; each run's sync job start against its due time
    on the schedule's grid (`starts_at + k * frequency`), split into due -> task created (the orchestrator)
    and task created -> sync job start (a free jobs slot).
(c) records read per second through `GET /records?limit=1000`, paging the run's records to the end,
    one client, then BENCH_READERS concurrent clients.

Every loop is bounded in count and in time. The box is shared: run it twice and read `uptime`.
Postgres is nango up's embedded one unless NANGO_BENCH_DATABASE_URL names a database to use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml
from common import free_port

from nango.jobs.client import JobsClient, SyncJobStatus
from nango.orchestrator.client import OrchestratorClient, Task

BIN = Path(sys.executable).parent
ACTIONS = int(os.environ.get("BENCH_ACTIONS", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
RECORDS = int(os.environ.get("BENCH_RECORDS", "50000"))
READERS = int(os.environ.get("BENCH_READERS", "4"))
SYNCS = int(os.environ.get("BENCH_SYNCS", "100"))
SCHEDULE_SECONDS = float(os.environ.get("BENCH_SCHEDULE_SECONDS", "100"))
# any single wait (a run to end, a page, a call) gives up after this
STEP_TIMEOUT = 300.0
GRPC_PORTS = (
    "NANGO_SERVER_GRPC_PORT",
    "NANGO_ORCHESTRATOR_PORT",
    "NANGO_JOBS_PORT",
    "NANGO_RUNNER_PORT",
    "NANGO_PERSIST_PORT",
)

MODELS = """
from nango.sdk import Model


class Rec(Model):
    id: str
    run: int
    title: str
    state: str
    author: dict
    labels: list[str]
    created_at: str
    body: str


class Tick(Model):
    id: str
"""

ACTION = """
from nango.sdk import action


@action(description="does nothing")
async def noop(nango):
    return None
"""

BULK = f"""
import time

from models import Rec

from nango.sdk import sync

TOTAL = {RECORDS}


@sync(description="~1 KB records in batches of 1,000", frequency="every day", models=[Rec])
async def bulk(nango):
    checkpoint = await nango.get_checkpoint() or {{}}
    runs = int(checkpoint.get("runs", 0)) + 1
    # run 3 saves what run 2 saved: every record unchanged
    version = min(runs, 2)
    body = ("lorem ipsum dolor sit amet " * 40)[:700]
    records = [
        Rec(
            id=f"rec-{{i}}",
            run=version,
            title=f"Issue number {{i}} about something",
            state="open",
            author={{"login": "octocat", "id": 583231, "type": "User"}},
            labels=["bug", "p1", "backend"],
            created_at="2024-05-01T10:00:00Z",
            body=body,
        )
        for i in range(TOTAL)
    ]
    started = time.perf_counter()
    for start in range(0, TOTAL, 1000):
        await nango.batch_save(records[start : start + 1000], "Rec")
    seconds = time.perf_counter() - started
    await nango.save_checkpoint({{"runs": runs, "records": TOTAL, "seconds": seconds}})
"""

TICK = """
from models import Tick

from nango.sdk import sync


@sync(description="does nothing, often", frequency="every 30s", models=[Tick])
async def tick(nango):
    return None
"""


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Platform:
    """`nango up` in a temporary data directory, stopped by its pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {"SERVER_PORT": free_port(), "NANGO_CONNECT_UI_PORT": free_port()}
        self.ports.update({name: free_port() for name in GRPC_PORTS})
        self.data_dir = tmp / "data"
        self.log = tmp / "nango-up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.key = ""

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['SERVER_PORT']}"

    def internal(self, port: str) -> str:
        return f"127.0.0.1:{self.ports[port]}"

    def token(self) -> str:
        return (self.data_dir / "internal.token").read_text().strip()

    def start(self) -> None:
        providers = self.tmp / "providers.yaml"
        bench = {
            "display_name": "Bench",
            "categories": ["dev-tools"],
            "docs": "https://example.com/docs",
            "auth_mode": "API_KEY",
            "proxy": {"base_url": "http://127.0.0.1:9", "headers": {"x-api-key": "${apiKey}"}},
        }
        providers.write_text(yaml.safe_dump({"bench": bench}))
        prefixes = ("NANGO_", "ORCHESTRATOR_", "RECORDS_", "JOBS_", "RUNNER_", "PERSIST_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.update({name: str(port) for name, port in self.ports.items()})
        env.update(
            NANGO_DATA_DIR=str(self.data_dir),
            NANGO_BIND_HOST="127.0.0.1",
            NANGO_PROVIDERS_FILE=str(providers),
            DEFAULT_RATE_LIMIT_PER_MIN="10000000",
            LOG_LEVEL="warning",
        )
        if os.environ.get("NANGO_BENCH_DATABASE_URL"):
            env["NANGO_DATABASE_URL"] = os.environ["NANGO_BENCH_DATABASE_URL"]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen([str(BIN / "nango"), "up"], env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            marker = "dev secret key"
            if marker in text and "is up." in text:
                self.key = text.split(marker, 1)[1].split()[0]
                return
            if self.process.poll() is not None:
                raise SystemExit(f"nango up exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise SystemExit("nango up was not up within 180 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


SERVICES = ("server", "orchestrator", "jobs", "runner", "persist")


def service_cpu(platform: Platform) -> dict[str, float]:
    """CPU seconds used so far by each service (the runner with its zygote and reaped workers), and by the
    Postgres backends when nango up runs its embedded Postgres. Figures that the load of others on the
    box does not change, unlike a rate."""
    assert platform.process is not None
    used = dict.fromkeys((*SERVICES, "postgres"), 0.0)
    for child in psutil.Process(platform.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            command = " ".join(child.cmdline())
            times = child.cpu_times()
            name = next((s for s in SERVICES if f"nango.{s}" in command), None)
            if name is not None:
                used[name] += times.user + times.system + times.children_user + times.children_system
    pgdata = str(platform.data_dir / "pgdata")
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "postgres" and pgdata in " ".join(process.info["cmdline"] or []):
                for member in (process, *process.children(recursive=True)):
                    times = member.cpu_times()
                    used["postgres"] += times.user + times.system
    return used


def cpu_line(before: dict[str, float], after: dict[str, float], count: int, unit: str) -> str:
    spent = {name: (after[name] - before.get(name, 0.0)) / count * 1e6 for name in after}
    parts = "  ".join(f"{name} {spent[name]:,.0f}" for name in (*SERVICES, "postgres") if spent[name] >= 0.5)
    return f"    CPU us per {unit}: {parts}  (sum {sum(spent.values()):,.0f})"


class Rest:
    def __init__(self, platform: Platform, http: aiohttp.ClientSession) -> None:
        self.platform = platform
        self.http = http
        self.auth = {"Authorization": f"Bearer {platform.key}"}

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, **query: Any
    ) -> tuple[int, bytes]:
        async with self.http.request(
            method,
            self.platform.api + path,
            json=body,
            params=query or None,
            headers={**self.auth, **(headers or {})},
            timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT),
        ) as response:
            return response.status, await response.read()

    async def ok(self, method: str, path: str, body: Any = None, **options: Any) -> Any:
        status, data = await self.call(method, path, body, **options)
        if status >= 300:
            raise SystemExit(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data) if data else None

    async def connect(self, integration: str, connection_id: str) -> None:
        body = {
            "provider_config_key": integration,
            "connection_id": connection_id,
            "credentials": {"type": "API_KEY", "apiKey": "bench"},
        }
        await self.ok("POST", "/connections", body)

    async def status(self, integration: str, connection_id: str, sync: str) -> dict[str, Any]:
        answer = await self.ok(
            "GET", "/sync/status", syncs=sync, provider_config_key=integration, connection_id=connection_id
        )
        return dict(answer["syncs"][0])

    async def wait_run(self, integration: str, connection_id: str, sync: str, after: str | None) -> dict[str, Any]:
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                status = await self.status(integration, connection_id, sync)
                finished = status.get("finishedAt")
                if status["status"] != "RUNNING" and finished is not None and (after is None or finished > after):
                    return status
                await asyncio.sleep(0.2)


async def bench_actions(rest: Rest) -> None:
    headers = {"Connection-Id": "actions", "Provider-Config-Key": "bench-actions"}
    body = {"action_name": "noop", "input": None}
    failures = 0

    async def calls(count: int, latencies: list[float]) -> None:
        nonlocal failures
        remaining = count

        async def client() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                status, _ = await rest.call("POST", "/action/trigger", body, headers=headers)
                latencies.append(time.perf_counter() - began)
                if status != 200:
                    failures += 1

        async with asyncio.timeout(STEP_TIMEOUT):
            await asyncio.gather(*(client() for _ in range(CLIENTS)))

    await calls(min(100, ACTIONS), [])
    latencies: list[float] = []
    before = service_cpu(rest.platform)
    started = time.perf_counter()
    await calls(ACTIONS, latencies)
    elapsed = time.perf_counter() - started
    after = service_cpu(rest.platform)
    print(
        f"(a) no-op actions via POST /action/trigger: {ACTIONS} calls, {CLIENTS} concurrent clients: "
        f"{ACTIONS / elapsed:,.0f} actions/s; latency p50 {quantile(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {quantile(latencies, 0.99) * 1000:.0f} ms; failures {failures}   (target >= 100/s)"
    )
    print(cpu_line(before, after, ACTIONS, "action"))


async def bench_records(rest: Rest, jobs: JobsClient) -> None:
    await rest.connect("bench-records", "records")
    finished: str | None = None
    for run, label in ((1, "new"), (2, "changed"), (3, "unchanged")):
        if run > 1:
            await rest.ok(
                "POST",
                "/sync/trigger",
                {"syncs": ["bulk"], "provider_config_key": "bench-records", "connection_id": "records"},
            )
        before = service_cpu(rest.platform)
        status = await rest.wait_run("bench-records", "records", "bulk", finished)
        after = service_cpu(rest.platform)
        finished = status["finishedAt"]
        if status["latestExecutionStatus"] != "SUCCESS":
            (job,) = await jobs.list_sync_jobs([status["id"]], latest_only=True)
            raise SystemExit(f"bulk run {run} failed: {job.error}")
        checkpoint = status["checkpoint"]
        (job,) = await jobs.list_sync_jobs([status["id"]], latest_only=True)
        assert job.ended_at is not None
        whole = (job.ended_at - job.started_at).total_seconds()
        print(
            f"(b) batch_save inside a sync run, {checkpoint['records']:,} x ~1 KB records, batches of 1,000, "
            f"{label}: {checkpoint['records'] / checkpoint['seconds']:,.0f} records/s "
            f"({checkpoint['seconds']:.2f} s of batch_save; whole run {whole:.2f} s = "
            f"{checkpoint['records'] / whole:,.0f} records/s)   (target >= 20,000/s)"
        )
        print(cpu_line(before, after, checkpoint["records"], "record, whole run"))


def next_cursor(page: bytes) -> str | None:
    """The `next_cursor` a page starts with, read without parsing its records (the client's JSON decoding
    would otherwise be most of what this measures, on the same two cores)."""
    head = page[: page.index(b',"records":')] + b"}"
    value = json.loads(head)["next_cursor"]
    return None if value is None else str(value)


async def read_all(rest: Rest) -> int:
    headers = {"Connection-Id": "records", "Provider-Config-Key": "bench-records"}
    cursor: str | None = None
    count = 0
    for _ in range(RECORDS // 1000 + 10):
        query = {"model": "Rec", "limit": 1000, **({"cursor": cursor} if cursor else {})}
        status, data = await rest.call("GET", "/records", headers=headers, **query)
        if status != 200:
            raise SystemExit(f"GET /records: {status} {data[:300]!r}")
        count += data.count(b'"_nango_metadata":')
        cursor = next_cursor(data)
        if cursor is None:
            return count
    raise SystemExit("GET /records did not reach the end")


async def bench_reads(rest: Rest) -> None:
    await read_all(rest)
    rates = []
    before = service_cpu(rest.platform)
    for _ in range(3):
        started = time.perf_counter()
        count = await read_all(rest)
        rates.append(count / (time.perf_counter() - started))
    after = service_cpu(rest.platform)
    print(
        f"(c) GET /records limit 1,000, one client, {count:,} records to the end: median "
        f"{statistics.median(rates):,.0f} records/s (runs {[round(r) for r in rates]})   (target >= 50,000/s)"
    )
    print(cpu_line(before, after, 3 * count, "record read"))
    started = time.perf_counter()
    counts = await asyncio.gather(*(read_all(rest) for _ in range(READERS)))
    elapsed = time.perf_counter() - started
    print(f"(c) GET /records limit 1,000, {READERS} concurrent clients: {sum(counts) / elapsed:,.0f} records/s in all")


async def bench_schedules(rest: Rest, jobs: JobsClient, orchestrator: OrchestratorClient) -> None:
    # connections made across one period, as real ones come: their syncs' grids spread over it, so the
    # figure is about scheduling, not about a burst of SYNCS runs due in the same second
    created = time.monotonic()
    for i in range(SYNCS):
        await rest.connect("bench-schedule", f"tick-{i}")
        await asyncio.sleep(max(0.0, created + (i + 1) * 30 / SYNCS - time.monotonic()))
    print(f"    ({SYNCS} connections with a sync every 30s created over {time.monotonic() - created:.1f} s)")
    await asyncio.sleep(SCHEDULE_SECONDS)
    schedules = [
        s
        for s in await orchestrator.search_schedules(limit=1000)
        if s.args.get("function") == "tick" and s.args.get("type") == "sync"
    ]
    by_sync = {str(s.args["sync_id"]): s for s in schedules}
    latencies: list[float] = []
    # the two halves: due -> task created (the orchestrator's scheduling) and task created -> sync job start
    # (waiting for a jobs slot and a runner, which is capacity rather than scheduling)
    scheduled: list[float] = []
    queued: list[float] = []
    failed = 0
    ids = list(by_sync)
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        found = await jobs.list_sync_jobs(chunk, limit=1000)
        tasks: dict[str, Task] = {}
        task_ids = [job.task_id for job in found]
        for offset in range(0, len(task_ids), 1000):
            for task in await orchestrator.search_tasks(ids=task_ids[offset : offset + 1000], limit=1000):
                tasks[task.id] = task
        for job in found:
            if job.status is not SyncJobStatus.SUCCESS:
                failed += 1
            schedule = by_sync[job.sync_id]
            periods = (job.started_at - schedule.starts_at) // schedule.frequency
            due: datetime = schedule.starts_at + periods * schedule.frequency
            latencies.append((job.started_at - due) / timedelta(seconds=1))
            made = tasks.get(job.task_id)
            if made is not None:
                scheduled.append((made.created_at - due) / timedelta(seconds=1))
                queued.append((job.started_at - made.created_at) / timedelta(seconds=1))
    if not latencies:
        raise SystemExit("no sync job ran")

    def spread(values: list[float]) -> str:
        return (
            f"p50 {quantile(values, 0.5) * 1000:.0f} ms, p99 {quantile(values, 0.99) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms"
        )

    print(
        f"(d) scheduling latency, due time on the grid -> sync job start, {len(latencies)} runs of {len(by_sync)} "
        f"syncs every 30s over {SCHEDULE_SECONDS:.0f} s: {spread(latencies)}; runs not SUCCESS {failed}   "
        "(target p99 <= 1 s)"
    )
    if scheduled:
        print(f"    due -> task created: {spread(scheduled)};  task created -> sync job start: {spread(queued)}")


@contextlib.asynccontextmanager
async def platform_up() -> AsyncIterator[Platform]:
    with tempfile.TemporaryDirectory(prefix="nango-bench-functions-") as tmp:
        platform = Platform(Path(tmp))
        try:
            await asyncio.to_thread(platform.start)
            yield platform
        finally:
            await asyncio.to_thread(platform.stop)


async def main(parts: str) -> None:
    print(f"functions end to end, nango up on 127.0.0.1, {os.cpu_count()} cores; load: {os.getloadavg()}")
    async with platform_up() as platform, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        rest = Rest(platform, http)
        files = {
            "bench-actions": {"models.py": MODELS, "noop.py": ACTION},
            "bench-records": {"models.py": MODELS, "bulk.py": BULK},
            "bench-schedule": {"models.py": MODELS, "tick.py": TICK},
        }
        for integration in files:
            await rest.ok("POST", "/integrations", {"provider": "bench", "unique_key": integration})
        deploy = {"integrations": {k: {"files": v} for k, v in files.items()}, "confirm": True}
        await rest.ok("POST", "/functions/deploy", deploy)
        async with (
            JobsClient(platform.internal("NANGO_JOBS_PORT"), platform.token()) as jobs,
            OrchestratorClient(platform.internal("NANGO_ORCHESTRATOR_PORT"), platform.token()) as orchestrator,
        ):
            if "a" in parts:
                await rest.connect("bench-actions", "actions")
                await bench_actions(rest)
            if "b" in parts or "c" in parts:
                await bench_records(rest, jobs)
            if "c" in parts:
                await bench_reads(rest)
            if "d" in parts:
                await bench_schedules(rest, jobs, orchestrator)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="abcd", help="which figures: any of a, b, c, d")
    asyncio.run(main(parser.parse_args().parts))
