"""Runner throughput: no-op actions started back to back through RunnerClient, each timed from
StartTask to the CompleteTask that a small in-bench jobs servicer receives. Prints figures only.

    .venv/bin/python bench/runner.py

The runner runs as its own process (`python -m nango.runner`), as in production; this process plays
jobs (the recorder) and the caller. Sizes: BENCH_TASKS (2000), BENCH_IN_FLIGHT (16, also the runner's
RUNNER_CAPACITY), BENCH_WARMUP (50).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import grpc
import psutil
from common import free_port

from nango.blob import LocalBlobStore
from nango.grpckit import ServiceBinding, TaskScope, check_health, mint_task_token, start_server
from nango.process import install_event_loop_policy
from nango.runner.client import ConnectionContext, FunctionRef, FunctionType, RunnerClient, TaskStart
from nangopb.jobs.v1 import jobs_pb2, jobs_pb2_grpc

TOKEN = secrets.token_hex(16)
TASKS = int(os.environ.get("BENCH_TASKS", "2000"))
IN_FLIGHT = int(os.environ.get("BENCH_IN_FLIGHT", "16"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "50"))
BUNDLE = b"""
from nango.sdk import action


@action(description="does nothing")
async def noop(nango):
    return None
"""


class JobsRecorder(jobs_pb2_grpc.JobsServiceServicer):
    """Plays jobs: completes the waiter of each task when its result arrives."""

    def __init__(self) -> None:
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.failures = 0

    async def HeartbeatTask(
        self, request: jobs_pb2.HeartbeatTaskRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.HeartbeatTaskResponse:
        return jobs_pb2.HeartbeatTaskResponse(stop=False)

    async def CompleteTask(
        self, request: jobs_pb2.CompleteTaskRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.CompleteTaskResponse:
        if request.WhichOneof("result") == "error":
            self.failures += 1
        waiter = self.waiters.pop(request.task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())
        return jobs_pb2.CompleteTaskResponse()

    async def RegisterRunner(
        self, request: jobs_pb2.RegisterRunnerRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.RegisterRunnerResponse:
        return jobs_pb2.RegisterRunnerResponse()


async def run_tasks(client: RunnerClient, jobs: JobsRecorder, key: str, sha: str, count: int) -> list[float]:
    latencies: list[float] = []
    slots = asyncio.Semaphore(IN_FLIGHT)
    loop = asyncio.get_running_loop()

    async def one() -> None:
        async with slots:
            task_id = str(uuid.uuid4())
            token = mint_task_token(TOKEN, TaskScope(task_id, 1, 1, time.time() + 600))
            done: asyncio.Future[float] = loop.create_future()
            jobs.waiters[task_id] = done
            task = TaskStart(
                task_id,
                FunctionType.ACTION,
                FunctionRef("noop", "0.0.1", key, sha),
                ConnectionContext(1, 1, "bench", "bench"),
                token,
            )
            started = time.perf_counter()
            while not await client.start_task(task):
                await asyncio.sleep(0.001)
            latencies.append(await asyncio.wait_for(done, 60) - started)

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by the runner, its zygote, its templates and every worker they reaped."""
    used = 0.0
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        used += times.user + times.system + times.children_user + times.children_system
    return used


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="nango-bench-runner-"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("noop.py", BUNDLE)
    data = archive.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    key = f"bundles/1/bench/{sha}.zip"
    await LocalBlobStore(workdir / "blobs").put(key, data)

    jobs = JobsRecorder()
    jobs_port, runner_port = free_port(), free_port()
    binding = ServiceBinding("nangopb.jobs.v1.JobsService", jobs, jobs_pb2_grpc.add_JobsServiceServicer_to_server)
    jobs_server = await start_server([binding], host="127.0.0.1", port=jobs_port, token=TOKEN)
    env = {
        **os.environ,
        "NANGO_INTERNAL_TOKEN": TOKEN,
        "NANGO_RUNNER_PORT": str(runner_port),
        "NANGO_BIND_HOST": "127.0.0.1",
        "NANGO_DATA_DIR": str(workdir),
        "JOBS_SERVICE_URL": f"127.0.0.1:{jobs_port}",
        "RUNNER_CAPACITY": str(IN_FLIGHT),
        "LOG_LEVEL": "warning",
    }
    runner = subprocess.Popen([sys.executable, "-m", "nango.runner"], env=env)
    target = f"127.0.0.1:{runner_port}"
    try:
        deadline = time.monotonic() + 60
        while not await check_health(target):
            if runner.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the runner did not start")
            await asyncio.sleep(0.1)
        async with RunnerClient(target, TOKEN) as client:
            await run_tasks(client, jobs, key, sha, WARMUP)
            cpu_before, own_before = tree_cpu(runner.pid), time.process_time()
            started = time.perf_counter()
            latencies = await run_tasks(client, jobs, key, sha, TASKS)
            elapsed = time.perf_counter() - started
            cpu_used, own_used = tree_cpu(runner.pid) - cpu_before, time.process_time() - own_before
        latencies.sort()
        print(f"runner: {TASKS} no-op actions, {IN_FLIGHT} in flight, runner as its own process (2 cores shared)")
        print(f"  throughput  {TASKS / elapsed:8.1f} tasks/s end to end (StartTask -> CompleteTask received)")
        print(
            f"  latency     p50 {statistics.median(latencies) * 1000:6.1f} ms   "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:6.1f} ms   max {latencies[-1] * 1000:6.1f} ms"
        )
        print(
            f"  CPU         {cpu_used / TASKS * 1e6:,.0f} us per task in the runner (with its zygote, templates "
            f"and workers); {own_used / TASKS * 1e6:,.0f} us in this process (caller and jobs)"
        )
        print(f"  failures    {jobs.failures}")
    finally:
        runner.terminate()
        runner.wait(30)
        await jobs_server.stop(0)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    install_event_loop_policy()
    asyncio.run(main())
