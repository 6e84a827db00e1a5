"""Delivery of outgoing webhooks by jobs' delivery loop, against real Postgres, a real in-process server
(whose GetWebhookSettings gives the signing key) and a customer's receiver on 127.0.0.1: signatures,
retries and their limits, the circuit breaker, the URL policy, key rotation, leases of crashed claimers,
idempotent enqueueing, several loops sharing one table, and a stop that gives rows back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from nango.config import LogsSettings
from nango.crypto import Keyring, generate_key
from nango.db import create_pool, migrate_url
from nango.jobs.models import OutgoingWebhook
from nango.jobs.webhooks.breaker import CircuitBreaker, Gate
from nango.jobs.webhooks.config import DeliveryConfig
from nango.jobs.webhooks.delivery import DeliveryLoop
from nango.jobs.webhooks.settings_cache import SettingsCache
from nango.jobs.webhooks.store import DeliveryState, DeliveryStore, Finish, StoredDelivery
from nango.kv import KVStore, MemoryKV, open_kv
from nango.oplog import OperationsLog, open_operations_log
from nango.outbound import OutboundClient, OutboundPolicy, PolicyInput, classify_address
from nango.server.client import ServerClient
from tests.conftest import free_port
from tests.support.inprocess import TOKEN, InProcessServer, new_schema, server_env, start_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = DeliveryConfig(
    timeout=timedelta(seconds=2),
    attempts=5,
    retry_base=timedelta(milliseconds=100),
    retry_max_delay=timedelta(seconds=1),
    poll=timedelta(milliseconds=50),
    circuit_failures=1000,
    settings_retry=timedelta(milliseconds=200),
    probe_wait=timedelta(milliseconds=200),
)
LOOPBACK_ALLOWED = OutboundPolicy.build(PolicyInput(blockLoopback=False))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """The customer's endpoint: records every request; each path answers the statuses scripted for it
    in turn (then 200); "hang" sleeps past any timeout."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    script: dict[str, list[int | str]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, *answers: int | str) -> str:
        self.script[path] = list(answers)
        return path

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        answers = self.script.get(request.path)
        answer = answers.pop(0) if answers else 200
        if answer == "hang":
            await asyncio.sleep(30)
            answer = 200
        assert isinstance(answer, int)
        if 300 <= answer < 400:
            return web.Response(status=answer, headers={"Location": self.url("/elsewhere")})
        return web.json_response({"ok": answer < 300}, status=answer)


@contextlib.asynccontextmanager
async def receiving(port: int | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(port or free_port())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


@dataclass
class Platform:
    server: InProcessServer
    environment_id: int
    secret_key: str
    database_url: str
    logs_schema: str


@pytest.fixture(scope="module")
async def platform(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    schema, key = new_schema("nango_whout"), generate_key()
    server = await start_server(
        server_env(database_url, schema, tmp_path_factory.mktemp("whout"), NANGO_ENCRYPTION_KEY=key)
    )
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    row = await conn.fetchrow("SELECT id, uuid, secret_key_sealed FROM environments WHERE name = 'dev'")
    await conn.close()
    dev = Keyring.from_encoded(key).open_text(row["secret_key_sealed"], aad=f"environment:{row['uuid']}:secret_key")
    yield Platform(server, row["id"], dev, database_url, f"{schema}_logs")
    await server.stop()


@dataclass
class Harness:
    """A fresh deliveries table, the server's settings, the operations log, and loops over them."""

    platform: Platform
    store: DeliveryStore
    pool: asyncpg.Pool
    oplog: OperationsLog
    server: ServerClient
    outbound: OutboundClient
    kv: KVStore = field(default_factory=MemoryKV)
    loops: list[DeliveryLoop] = field(default_factory=list)

    def loop(
        self,
        config: DeliveryConfig = FAST,
        *,
        policy: OutboundPolicy = LOOPBACK_ALLOWED,
        kv: KVStore | None = None,
        outbound: OutboundClient | None = None,
    ) -> DeliveryLoop:
        breaker = CircuitBreaker(
            kv or self.kv,
            failures=config.circuit_failures,
            window=config.circuit_window,
            cooldown=config.circuit_cooldown,
            probe_timeout=config.lease,
            probe_wait=config.probe_wait,
        )
        loop = DeliveryLoop(
            self.store,
            SettingsCache(self.server),
            breaker,
            outbound or self.outbound,
            policy,
            config,
            self.oplog,
        )
        self.loops.append(loop)
        loop.start()
        return loop

    async def enqueue(self, url: str, *, body: Any = None, event_id: str | None = None, **extra: Any) -> str:
        event = event_id or str(uuid.uuid4())
        webhook = OutgoingWebhook(
            event_id=event,
            environment_id=self.platform.environment_id,
            type=extra.pop("type", "auth"),
            body=body if body is not None else {"from": "nango", "type": "auth", "connectionId": event},
            urls=(url,),
            **extra,
        )
        await self.store.enqueue([webhook])
        for loop in self.loops:
            loop.wake()
        return event

    async def rows(self, event_ids: Sequence[str] | None = None) -> list[StoredDelivery]:
        return await self.store.rows(event_ids=event_ids)

    async def settled(self, event_ids: Sequence[str], timeout: float = 20.0) -> list[StoredDelivery]:
        """The rows of these events once none is pending."""
        async with asyncio.timeout(timeout):
            while True:
                rows = await self.rows(event_ids)
                if rows and all(r.state is not DeliveryState.PENDING for r in rows):
                    return rows
                await asyncio.sleep(0.05)

    async def signing_key(self) -> str:
        return (await self.server.get_webhook_settings(self.platform.environment_id)).signing_key


@pytest.fixture
async def harness(platform: Platform) -> AsyncIterator[Harness]:
    schema = new_schema("nango_jobs_wh")
    await migrate_url(platform.database_url, schema, "nango.jobs")
    pool = await create_pool(platform.database_url, schema=schema, application_name="test-webhooks", max_size=8)
    logs = LogsSettings.model_validate({"NANGO_LOGS_DATABASE_SCHEMA": platform.logs_schema})
    oplog = await open_operations_log(platform.database_url, logs)
    server = ServerClient(platform.server.grpc, TOKEN)
    outbound = OutboundClient()
    found = Harness(platform, DeliveryStore(pool), pool, oplog, server, outbound)
    try:
        yield found
    finally:
        await asyncio.gather(*(loop.stop(0.5) for loop in found.loops))
        await oplog.close()
        await outbound.close()
        await server.close()
        await found.kv.close()
        await pool.close()


async def operations(platform: Platform, delivery_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(platform.database_url)
    try:
        return await conn.fetch(
            f"""SELECT state, request, response, error, meta, created_at FROM {platform.logs_schema}.operations
                WHERE type = 'webhook' AND meta->>'delivery_id' = $1 ORDER BY created_at""",
            delivery_id,
        )
    finally:
        await conn.close()


async def test_delivers_a_signed_stable_body_and_logs_the_attempt(harness: Harness) -> None:
    async with receiving() as receiver:
        harness.loop()
        body = {"z": 1, "a": {"é": "ü", "b": [3, 1]}, "from": "nango", "type": "forward"}
        event = await harness.enqueue(
            receiver.url("/hooks"),
            body=body,
            type="forward",
            headers={"X-GitHub-Event": "push", "content-type": "text/plain", "X-Nango-Delivery-Id": "forged"},
            connection_id="alice",
            provider_config_key="github",
        )
        (row,) = await harness.settled([event])
        assert (row.state, row.attempts, row.last_status) == (DeliveryState.DELIVERED, 1, 200)
        (got,) = receiver.to("/hooks")
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert got.body == raw
        key = await harness.signing_key()
        assert key
        assert got.headers["X-Nango-Hmac-Sha256"] == hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()
        assert got.headers["X-Nango-Signature"] == hashlib.sha256(key.encode() + raw).hexdigest()
        assert got.headers["X-Nango-Delivery-Id"] == event
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["User-Agent"].startswith("nango-py/")
        assert got.headers["X-GitHub-Event"] == "push"

        await harness.oplog.flush()
        (operation,) = await operations(harness.platform, event)
        assert operation["state"] == "success"
        meta = json.loads(operation["meta"])
        assert (meta["status"], meta["attempt"], meta["url"], meta["webhook_type"]) == (
            200,
            1,
            receiver.url("/hooks"),
            "forward",
        )
        assert isinstance(meta["duration_ms"], int)
        stored = " ".join(str(v) for v in operation.values())
        assert key not in stored
        assert got.headers["X-Nango-Hmac-Sha256"] not in stored


async def test_retries_server_errors_rate_limits_and_timeouts_with_growing_waits(harness: Harness) -> None:
    async with receiving() as receiver:
        harness.loop(replace(FAST, timeout=timedelta(milliseconds=500)))
        flaky = await harness.enqueue(receiver.url(receiver.on("/flaky", 500, 503, 429)))
        slow = await harness.enqueue(receiver.url(receiver.on("/slow", "hang")))
        rows = {r.event_id: r for r in await harness.settled([flaky, slow])}
        assert (rows[flaky].state, rows[flaky].attempts) == (DeliveryState.DELIVERED, 4)
        assert (rows[slow].state, rows[slow].attempts) == (DeliveryState.DELIVERED, 2)
        times = [r.at for r in receiver.to("/flaky")]
        waits = [b - a for a, b in itertools.pairwise(times)]
        # 100 ms, 200 ms, 400 ms (+ up to 10 % jitter), each longer than the one before
        assert waits[0] >= 0.1
        assert waits[1] >= 0.2
        assert waits[2] >= 0.4
        assert {r.headers["X-Nango-Delivery-Id"] for r in receiver.to("/flaky")} == {flaky}

        await harness.oplog.flush()
        states = [(o["state"], json.loads(o["meta"])["outcome"]) for o in await operations(harness.platform, flaky)]
        assert states == [("failed", "retry")] * 3 + [("success", "delivered")]


async def test_other_answers_fail_at_once_and_retries_run_out(harness: Harness) -> None:
    async with receiving() as receiver:
        harness.loop(replace(FAST, attempts=3))
        refused = await harness.enqueue(receiver.url(receiver.on("/bad", 400)))
        moved = await harness.enqueue(receiver.url(receiver.on("/moved", 302)))
        down = await harness.enqueue(receiver.url(receiver.on("/down", 500, 500, 500, 500)))
        rows = {r.event_id: r for r in await harness.settled([refused, moved, down])}
        assert (rows[refused].state, rows[refused].attempts, rows[refused].last_status) == (
            DeliveryState.FAILED,
            1,
            400,
        )
        assert (rows[moved].state, rows[moved].attempts, rows[moved].last_status) == (DeliveryState.FAILED, 1, 302)
        assert receiver.to("/elsewhere") == []
        assert (rows[down].state, rows[down].attempts) == (DeliveryState.FAILED, 3)
        assert rows[down].last_error == "retries_exhausted: http_500"
        assert len(receiver.to("/bad")) == 1
        assert len(receiver.to("/down")) == 3


async def test_circuit_opens_postpones_without_attempts_and_its_probe_wakes_the_url(harness: Harness) -> None:
    # a receiver that is down; rows back off for 30 s after a failure unless the circuit says otherwise
    config = replace(
        FAST,
        retry_base=timedelta(seconds=30),
        retry_max_delay=timedelta(seconds=30),
        circuit_failures=3,
        circuit_window=timedelta(seconds=10),
        circuit_cooldown=timedelta(seconds=1.5),
        attempts=12,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    loop = harness.loop(config)
    first = [await harness.enqueue(url) for _ in range(6)]
    async with asyncio.timeout(10):
        while loop.breaker.open_here(url) is None:
            await asyncio.sleep(0.02)
    later = [await harness.enqueue(url) for _ in range(6)]
    await asyncio.sleep(0.3)
    rows = {r.event_id: r for r in await harness.rows(later)}
    # sent into an open circuit: postponed, no attempt used
    assert {(r.state, r.attempts) for r in rows.values()} == {(DeliveryState.PENDING, 0)}
    assert {r.last_error for r in rows.values()} == {"circuit_open"}

    async with receiving(port) as receiver:
        back = time.monotonic()
        delivered = await harness.settled(first + later, timeout=15)
        assert {r.state for r in delivered} == {DeliveryState.DELIVERED}
        # the probe after the cool-down found it back and woke every waiting row, long before 30 s
        assert max(r.at for r in receiver.requests) - back < 5
        assert max(r.attempts for r in delivered) <= 2
        assert sum(r.attempts for r in delivered if r.event_id in later) == len(later)
        assert Counter(r.headers["X-Nango-Delivery-Id"] for r in receiver.requests) == Counter(first + later)
    assert (await loop.breaker.admit(url)).gate is Gate.CLOSED


async def test_circuit_state_is_shared_through_redis(harness: Harness, redis_url: str, redis_prefix: str) -> None:
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:6]}:"
    first, second = open_kv(redis_url, prefix=prefix), open_kv(redis_url, prefix=prefix)
    try:
        one = CircuitBreaker(first, failures=2, cooldown=timedelta(seconds=1))
        other = CircuitBreaker(second, failures=2, cooldown=timedelta(seconds=1))
        url = "https://receiver.example/hooks"
        assert not await one.failed(url, probe=False)
        assert await other.failed(url, probe=False)
        assert (await one.admit(url)).gate is Gate.OPEN
        await asyncio.sleep(1.1)
        assert (await one.admit(url)).gate is Gate.PROBE
        # one probe at a time, whichever replica asks
        assert (await other.admit(url)).gate is Gate.OPEN
        assert await one.succeeded(url, probe=True)
        assert (await other.admit(url)).gate is Gate.CLOSED
    finally:
        await first.close()
        await second.close()


def _loopback_name() -> str:
    """A host name (not `localhost`, which is on the denylist) that resolves to this machine."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        addresses = set()
    if not addresses or any(classify_address(address) is None for address in addresses):
        pytest.skip(f"{name!r} does not resolve to loopback or private addresses only here")
    return name


async def test_urls_the_policy_refuses_fail_at_once(harness: Harness) -> None:
    async with receiving() as receiver:
        # the default policy: loopback, private and metadata addresses refused
        harness.loop(policy=OutboundPolicy.build(PolicyInput()))
        literal = await harness.enqueue(receiver.url("/literal"))
        resolved = await harness.enqueue(f"http://{_loopback_name()}:{receiver.port}/resolved")
        metadata = await harness.enqueue("http://169.254.169.254/latest/meta-data")
        private = await harness.enqueue("http://10.1.2.3/hooks")
        rows = {r.event_id: r for r in await harness.settled([literal, resolved, metadata, private])}
        assert {(r.state, r.attempts) for r in rows.values()} == {(DeliveryState.FAILED, 1)}
        assert rows[literal].last_error == "webhook_url_denied: denied_hostname"
        assert rows[metadata].last_error == "webhook_url_denied: denied_hostname"
        assert rows[private].last_error == "webhook_url_denied: denied_ip"
        assert rows[resolved].last_error == "webhook_url_denied: denied_dns"
        assert receiver.requests == []
        await harness.oplog.flush()
        (operation,) = await operations(harness.platform, resolved)
        assert json.loads(operation["error"])["code"] == "webhook_url_denied"


async def test_a_rotated_key_signs_every_later_attempt(harness: Harness) -> None:
    async with receiving() as receiver, aiohttp.ClientSession() as http:
        harness.loop()
        before = await harness.signing_key()
        first = await harness.enqueue(receiver.url("/rotate"))
        await harness.settled([first])
        headers = {"Authorization": f"Bearer {harness.platform.secret_key}"}
        async with http.post(
            harness.platform.server.url + "/environment/webhook-signing-key/rotate", headers=headers
        ) as response:
            assert response.status == 200
            after = (await response.json())["signing_key"]
        assert after != before
        # the loop reads the key at send time, cached at most 2 s
        await asyncio.sleep(2.1)
        second = await harness.enqueue(receiver.url("/rotate"))
        await harness.settled([second])

        def signed_with(key: str, got: Received) -> bool:
            expected = hmac.new(key.encode(), got.body, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected, got.headers["X-Nango-Hmac-Sha256"])

        old, new = receiver.to("/rotate")
        assert signed_with(before, old)
        assert signed_with(after, new)
        assert not signed_with(before, new)


async def test_rows_of_a_crashed_claimer_come_back_after_its_lease(harness: Harness) -> None:
    async with receiving() as receiver:
        events = [await harness.enqueue(receiver.url("/lease")) for _ in range(5)]
        # a replica claims them and dies without a word
        crashed = await harness.store.claim(10, timedelta(seconds=1))
        assert sorted(d.event_id for d in crashed) == sorted(events)
        harness.loop()
        await asyncio.sleep(0.5)
        assert receiver.requests == []
        rows = await harness.settled(events, timeout=10)
        assert {(r.state, r.attempts) for r in rows} == {(DeliveryState.DELIVERED, 1)}
        # a late word from the dead claimer changes nothing
        late = [Finish(d.id, d.claim, DeliveryState.FAILED, used=1, error="late") for d in crashed]
        assert await harness.store.finish(late) == 0
        assert {r.state for r in await harness.rows(events)} == {DeliveryState.DELIVERED}


async def test_enqueue_is_idempotent_and_every_url_gets_the_same_delivery_id(harness: Harness) -> None:
    async with receiving() as receiver:
        webhook = OutgoingWebhook(
            event_id=str(uuid.uuid4()),
            environment_id=harness.platform.environment_id,
            type="auth",
            body={"from": "nango", "type": "auth"},
            urls=(receiver.url("/primary"), receiver.url("/secondary")),
        )
        assert await harness.store.enqueue([webhook]) == 2
        assert await harness.store.enqueue([webhook, webhook]) == 0
        harness.loop()
        await harness.settled([webhook.event_id])
        assert await harness.store.enqueue([webhook]) == 0
        ids = [r.headers["X-Nango-Delivery-Id"] for r in receiver.requests]
        assert sorted(r.path for r in receiver.requests) == ["/primary", "/secondary"]
        assert ids == [webhook.event_id] * 2


async def test_loops_side_by_side_deliver_each_row_once(harness: Harness) -> None:
    async with receiving() as receiver:
        events = [str(uuid.uuid4()) for _ in range(300)]
        await harness.store.enqueue(
            [
                OutgoingWebhook(e, harness.platform.environment_id, "auth", {"n": i}, (receiver.url("/many"),))
                for i, e in enumerate(events)
            ]
        )
        config = replace(FAST, concurrency=16, batch_size=20)
        loops = [harness.loop(config, outbound=OutboundClient()) for _ in range(3)]
        try:
            rows = await harness.settled(events, timeout=30)
        finally:
            for loop in loops:
                await loop.stop(1)
                await loop.outbound.close()
        assert {(r.state, r.attempts) for r in rows} == {(DeliveryState.DELIVERED, 1)}
        assert Counter(r.headers["X-Nango-Delivery-Id"] for r in receiver.requests) == Counter(events)
        assert all(loop.sent > 0 for loop in loops)


async def test_stopping_gives_claimed_rows_back_without_using_an_attempt(harness: Harness) -> None:
    async with receiving() as receiver:
        loop = harness.loop(replace(FAST, timeout=timedelta(seconds=20)))
        event = await harness.enqueue(receiver.url(receiver.on("/stuck", "hang")))
        async with asyncio.timeout(5):
            while not receiver.to("/stuck"):
                await asyncio.sleep(0.02)
        await loop.stop(0.1)
        (row,) = await harness.rows([event])
        assert (row.state, row.attempts, row.claimed) == (DeliveryState.PENDING, 0, False)
        # due again at once, for the next loop
        harness.loop()
        (row,) = await harness.settled([event])
        assert (row.state, row.attempts) == (DeliveryState.DELIVERED, 1)


async def test_unknown_environment_fails_and_unreachable_server_postpones(harness: Harness) -> None:
    async with receiving() as receiver:
        unknown = OutgoingWebhook(str(uuid.uuid4()), 999_999, "auth", {"x": 1}, (receiver.url("/nobody"),))
        await harness.store.enqueue([unknown])
        nowhere = ServerClient(f"127.0.0.1:{free_port()}", TOKEN)
        try:
            loop = DeliveryLoop(
                harness.store,
                SettingsCache(nowhere),
                CircuitBreaker(harness.kv),
                harness.outbound,
                LOOPBACK_ALLOWED,
                FAST,
            )
            postponed = await harness.enqueue(receiver.url("/later"))
            loop.start()
            await asyncio.sleep(1.0)
            await loop.stop(0.5)
        finally:
            await nowhere.close()
        rows = {r.event_id: r for r in await harness.rows([postponed, unknown.event_id])}
        assert (rows[postponed].state, rows[postponed].attempts) == (DeliveryState.PENDING, 0)
        assert (rows[postponed].last_error or "").startswith("settings_unavailable")
        harness.loop()
        rows = {r.event_id: r for r in await harness.settled([postponed, unknown.event_id])}
        assert (rows[postponed].state, rows[postponed].attempts) == (DeliveryState.DELIVERED, 1)
        assert (rows[unknown.event_id].state, rows[unknown.event_id].last_error) == (
            DeliveryState.FAILED,
            "unknown_environment",
        )
        assert [r.path for r in receiver.requests] == ["/later"]


async def test_finished_rows_are_forgotten_after_their_retention(harness: Harness) -> None:
    async with receiving() as receiver:
        harness.loop()
        ok = await harness.enqueue(receiver.url("/kept"))
        bad = await harness.enqueue(receiver.url(receiver.on("/gone", 404)))
        await harness.settled([ok, bad])
        delete = harness.store.delete_finished
        assert await delete(delivered_before=timedelta(hours=1), failed_before=timedelta(0), limit=10) == 1
        assert [r.event_id for r in await harness.rows([ok, bad])] == [ok]
        assert await delete(delivered_before=timedelta(0), failed_before=timedelta(0), limit=10) == 1
        assert await harness.rows([ok, bad]) == []
