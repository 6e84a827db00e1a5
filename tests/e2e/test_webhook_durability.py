"""Outgoing webhooks survive a customer outage and our own restarts: under `nango up`, the customer's
receiver is down for 60 s while 20 connections are created and 100 sync runs finish, and the server
and jobs processes are killed (and restarted by `nango up`) in the middle of it. Once the receiver is
back, every webhook arrives: one `auth` creation per connection, and one `sync` webhook per finished
run (its delivery id derived from the run's task), none missing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import psutil
import pytest
import yaml
from aiohttp import web

from nango.errors import NangoError
from nango.jobs.client import JobsClient, SyncJob, SyncJobStatus
from nango.jobs.webhooks.payloads import event_id
from nango.orchestrator.client import OrchestratorClient, ScheduleState
from tests.conftest import free_port
from tests.support.platform import BIN, Up, start_up
from tests.support.proxy import provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INTEGRATION = "durable"
OUTAGE = 60.0
BEFORE, DURING = 5, 20
RUNS_DURING = 100
# after the receiver is back: a circuit probe within its 60 s cool-down, then everything
RECOVERY = 100.0

MODELS = """
from nango.sdk import Model


class Item(Model):
    id: str
    name: str
"""

ITEMS = """
from models import Item

from nango.sdk import sync


@sync(description="Items", frequency="every hour", models=[Item])
async def items(nango):
    await nango.batch_save([Item(id="1", name=nango.connection_id)], "Item")
"""

T = TypeVar("T")


@dataclass
class Receiver:
    """The customer's endpoint, on a fixed port so that it can go away and come back."""

    port: int
    got: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    last_at: float = 0.0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    async def handle(self, request: web.Request) -> web.Response:
        self.got.setdefault(request.headers["X-Nango-Delivery-Id"], []).append(await request.json())
        self.last_at = time.monotonic()
        return web.json_response({"ok": True})

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver(free_port())
    await found.up()
    yield found
    await found.down()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    tmp = tmp_path_factory.mktemp("durable")
    providers_file = tmp / "providers.yaml"
    providers_file.write_text(yaml.safe_dump({"durable-crm": provider("API_KEY", proxy={"base_url": "http://x"})}))
    extra = {
        "NANGO_PROVIDERS_FILE": str(providers_file),
        "NANGO_OUTBOUND_URL_POLICY": '{"blockLoopback": false}',
        "JOBS_RECONCILE_INTERVAL_MS": "500",
        "NANGO_SHUTDOWN_GRACE_SECONDS": "2",
        "LOG_LEVEL": "warning",
    }
    up = start_up(tmp, extra_env=extra, name="durable").wait_ready()
    yield up
    up.stop()


class Api:
    """The customer's backend: REST calls that ride out the server's restart."""

    def __init__(self, up: Up) -> None:
        self.up = up
        self.http = aiohttp.ClientSession(
            base_url=up.api, headers={"Authorization": f"Bearer {up.dev_key}"}, timeout=aiohttp.ClientTimeout(10)
        )

    async def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)) -> Any:
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.request(method, path, json=body) as response:
                    answer = await response.json(content_type=None)
                    if response.status in ok:
                        return answer
                    if response.status < 500:
                        raise AssertionError(f"{method} {path}: {response.status} {answer}")
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: no answer for 60 s")
            await asyncio.sleep(0.3)


async def patiently(call: Callable[[], Awaitable[T]]) -> T:
    """An internal call, retried while its service restarts."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await call()
        except NangoError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def kill(up: Up, service: str) -> int:
    """SIGKILL one of `nango up`'s services (it restarts it); returns the pid killed."""
    for child in psutil.Process(up.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[-2:] == ["-m", f"nango.{service}"]:
                child.send_signal(signal.SIGKILL)
                return child.pid
    raise AssertionError(f"no {service} process under nango up")


@dataclass
class Stack:
    up: Up
    api: Api
    jobs: JobsClient
    orchestrator: OrchestratorClient
    connections: list[str] = field(default_factory=list)
    sync_ids: dict[str, str] = field(default_factory=dict)

    async def connect(self, name: str) -> None:
        body = {
            "provider_config_key": INTEGRATION,
            "connection_id": name,
            "credentials": {"type": "API_KEY", "apiKey": f"key-{name}"},
        }
        # a retry after a lost answer finds the connection made: a conflict is fine
        await self.api.call("POST", "/connections", body, ok=(200, 201, 409))
        self.connections.append(name)
        async with asyncio.timeout(60):
            while name not in self.sync_ids:
                schedules = await patiently(
                    lambda: self.orchestrator.search_schedules(state=ScheduleState.STARTED, limit=1000)
                )
                self.sync_ids.update({str(s.args["connection_id"]): str(s.args["sync_id"]) for s in schedules})
                await asyncio.sleep(0.2)

    async def jobs_of(self, names: list[str]) -> list[SyncJob]:
        ids = [self.sync_ids[n] for n in names]
        found: list[SyncJob] = []
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            found += await patiently(lambda c=chunk: self.jobs.list_sync_jobs(c, limit=1000))
        return found

    async def ended_runs(self, name: str) -> int:
        return sum(j.status is not SyncJobStatus.RUNNING for j in await self.jobs_of([name]))

    async def run_again(self, name: str, runs: int, stop_at: float) -> None:
        """Trigger the connection's sync each time its last run ended, until it ran `runs` times."""
        while time.monotonic() < stop_at:
            jobs = await self.jobs_of([name])
            ended = [j for j in jobs if j.status is not SyncJobStatus.RUNNING]
            if len(ended) >= runs:
                return
            if len(ended) == len(jobs):
                body = {"syncs": ["items"], "provider_config_key": INTEGRATION, "connection_id": name}
                await self.api.call("POST", "/sync/trigger", body)
                async with asyncio.timeout(30):
                    while len(await self.jobs_of([name])) == len(jobs):
                        await asyncio.sleep(0.1)
            await asyncio.sleep(0.1)


def deploy(up: Up, root: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANGO_")}
    environ.update({"NANGO_SECRET_KEY_DEV": up.dev_key, "NANGO_HOSTPORT": up.api})
    done = subprocess.run(
        [str(BIN / "nango"), "deploy", str(root), "--auto-confirm"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
async def stack(platform: Up, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    token = platform.internal_token
    api = Api(platform)
    found = Stack(
        platform,
        api,
        JobsClient(f"127.0.0.1:{platform.ports['NANGO_JOBS_PORT']}", token),
        OrchestratorClient(f"127.0.0.1:{platform.ports['NANGO_ORCHESTRATOR_PORT']}", token),
    )
    await api.call("POST", "/integrations", {"provider": "durable-crm", "unique_key": INTEGRATION})
    root = tmp_path_factory.mktemp("functions")
    (root / INTEGRATION).mkdir()
    (root / INTEGRATION / "models.py").write_text(MODELS)
    (root / INTEGRATION / "items.py").write_text(ITEMS)
    await asyncio.to_thread(deploy, platform, root)
    settings = {"primary_url": receiver.url, "on_sync_completion_always": True, "on_auth_creation": True}
    await api.call("PATCH", "/environment/webhook-settings", settings)
    yield found
    await api.http.close()
    await found.jobs.close()
    await found.orchestrator.close()


def expected_sync_ids(jobs: list[SyncJob]) -> set[str]:
    """The delivery id of each finished run's webhook: per model on success, one on failure."""
    return {
        event_id(j.task_id, "sync:Item" if j.status is SyncJobStatus.SUCCESS else "sync:error")
        for j in jobs
        if j.status is not SyncJobStatus.RUNNING
    }


async def test_every_webhook_arrives_after_an_outage_with_restarts(stack: Stack, receiver: Receiver) -> None:
    before = [f"before-{i}" for i in range(BEFORE)]
    await asyncio.gather(*(stack.connect(n) for n in before))
    async with asyncio.timeout(60):
        while sum([await stack.ended_runs(n) for n in before]) < BEFORE:
            await asyncio.sleep(0.2)

    await receiver.down()
    outage_started = time.monotonic()
    back_at = outage_started + OUTAGE
    during = [f"during-{i}" for i in range(DURING)]
    # 20 connections (each with its first run), then more runs until 100 have finished
    runs_each = RUNS_DURING // DURING

    async def one(name: str) -> None:
        await stack.connect(name)
        await stack.run_again(name, runs_each, back_at - 2)

    async def restarts() -> list[int]:
        await asyncio.sleep(OUTAGE / 4)
        killed = [kill(stack.up, "server")]
        await asyncio.sleep(OUTAGE / 4)
        killed.append(kill(stack.up, "jobs"))
        return killed

    killed, *_ = await asyncio.gather(restarts(), *(one(n) for n in during))
    assert len(killed) == 2
    ended_during = sum([await stack.ended_runs(n) for n in during])
    assert ended_during >= RUNS_DURING, f"only {ended_during} runs finished during the outage"
    await asyncio.sleep(max(0.0, back_at - time.monotonic()))

    await receiver.up()
    receiver_back = time.monotonic()
    # every run has ended by now (none is left RUNNING), so the expected set is final
    names = before + during
    async with asyncio.timeout(60):
        while any(j.status is SyncJobStatus.RUNNING for j in await stack.jobs_of(names)):
            await asyncio.sleep(0.5)
    jobs = await stack.jobs_of(names)
    expected = expected_sync_ids(jobs)
    assert len(expected) >= RUNS_DURING + BEFORE

    def missing() -> tuple[set[str], set[str]]:
        auth = {
            b["connectionId"]
            for bodies in receiver.got.values()
            for b in bodies
            if b.get("type") == "auth" and b.get("operation") == "creation"
        }
        return expected - receiver.got.keys(), set(names) - auth

    deadline = receiver_back + RECOVERY
    while any(missing()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    lost_syncs, lost_auth = missing()
    assert not lost_syncs, f"{len(lost_syncs)} of {len(expected)} sync webhooks never arrived"
    assert not lost_auth, f"auth webhooks never arrived for {sorted(lost_auth)}"

    # exactly the events that happened: one delivery id per run, one per connection's creation
    sync_ids = {d for d, bodies in receiver.got.items() if bodies[0].get("type") == "sync"}
    auth_ids = {d for d, bodies in receiver.got.items() if bodies[0].get("type") == "auth"}
    assert sync_ids == expected
    assert len(auth_ids) == len(names)
    for bodies in receiver.got.values():
        assert all(b == bodies[0] for b in bodies), "a re-sent webhook changed"
    statuses = {j.status for j in jobs}
    assert statuses <= {SyncJobStatus.SUCCESS, SyncJobStatus.ERROR}
    failed = sum(j.status is SyncJobStatus.ERROR for j in jobs)
    print(
        f"\n{len(expected)} sync ({failed} of failed runs) + {len(auth_ids)} auth webhooks delivered, the last "
        f"{receiver.last_at - receiver_back:.1f}s after the receiver came back"
    )
