"""The operations log on real Postgres: search filters and pagination, message order, redaction of
what lands in the tables, the lifecycle in SQL, the timeout sweep and retention."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import pytest

from nango.errors import InvalidRequest
from nango.oplog import (
    LogRetention,
    Message,
    Operation,
    OperationsLog,
    OperationUpdate,
    PostgresLogStore,
    migrate_logs,
)
from nango.oplog.models import utcnow

pytestmark = pytest.mark.integration

SCHEMA = f"oplog_test_{uuid.uuid4().hex[:8]}"
_environments = itertools.count(1000)


@pytest.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[PostgresLogStore]:
    assert await migrate_logs(database_url, SCHEMA) == ["0001_operations"]
    assert await migrate_logs(database_url, SCHEMA) == []
    log_store = await PostgresLogStore.connect(database_url, SCHEMA)
    try:
        yield log_store
    finally:
        await log_store.close()


@pytest.fixture
def env() -> int:
    """An environment of its own for each test, so tests sharing the schema never see each other's rows."""
    return next(_environments)


@pytest.fixture
async def oplog(store: PostgresLogStore) -> AsyncIterator[OperationsLog]:
    # The store is shared by the module: closing the facade must not close it.
    facade = OperationsLog(PostgresLogStore(store.pool, SCHEMA), flush_interval=0.02)
    try:
        yield facade
    finally:
        await facade.close(timeout=5)


def op(env: int, at: datetime, **fields: object) -> Operation:
    values: dict[str, object] = {"type": "sync", "action": "run", "environment_id": env, "created_at": at}
    values.update(fields)
    return Operation(**values)  # type: ignore[arg-type]


async def all_pages(store: PostgresLogStore, limit: int, **filters: object) -> list[Operation]:
    found: list[Operation] = []
    cursor: str | None = None
    for _ in range(1000):
        page, cursor = await store.search_operations(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        assert len(page) <= limit
        found.extend(page)
        if cursor is None:
            return found
    raise AssertionError("pagination did not end")


async def test_search_by_each_filter(store: PostgresLogStore, env: int) -> None:
    t0 = utcnow() - timedelta(hours=1)
    rows = {
        "sync-github-a": op(env, t0, type="sync", state="success", provider_config_key="github", connection_id="a"),
        "sync-github-b": op(
            env, t0 + timedelta(minutes=1), type="sync", state="failed", provider_config_key="github", connection_id="b"
        ),
        "action-slack-a": op(
            env,
            t0 + timedelta(minutes=2),
            type="action",
            state="running",
            provider_config_key="slack",
            connection_id="a",
        ),
        "proxy-slack-c": op(
            env,
            t0 + timedelta(minutes=3),
            type="proxy",
            action="call",
            state="success",
            provider_config_key="slack",
            connection_id="c",
        ),
        "auth-hubspot-d": op(
            env,
            t0 + timedelta(minutes=4),
            type="auth",
            action="create_connection",
            state="timeout",
            provider_config_key="hubspot",
            connection_id="d",
        ),
        "webhook-github-a": op(
            env,
            t0 + timedelta(minutes=5),
            type="webhook",
            action="incoming",
            state="cancelled",
            provider_config_key="github",
            connection_id="a",
        ),
    }
    other_environment = op(env + 100_000, t0, type="sync", provider_config_key="github", connection_id="a")
    await store.insert_operations([*rows.values(), other_environment])
    name_of = {o.id: name for name, o in rows.items()}

    async def names(**filters: object) -> list[str]:
        found, cursor = await store.search_operations(environment_id=env, **filters)  # type: ignore[arg-type]
        assert cursor is None
        return [name_of[o.id] for o in found]

    assert await names() == [
        "webhook-github-a",
        "auth-hubspot-d",
        "proxy-slack-c",
        "action-slack-a",
        "sync-github-b",
        "sync-github-a",
    ]
    assert await names(types=["sync"]) == ["sync-github-b", "sync-github-a"]
    assert await names(types=["proxy", "auth"]) == ["auth-hubspot-d", "proxy-slack-c"]
    assert await names(states=["success"]) == ["proxy-slack-c", "sync-github-a"]
    assert await names(states=["timeout", "cancelled"]) == ["webhook-github-a", "auth-hubspot-d"]
    assert await names(integrations=["slack"]) == ["proxy-slack-c", "action-slack-a"]
    assert await names(connections=["a"]) == ["webhook-github-a", "action-slack-a", "sync-github-a"]
    assert await names(integrations=["github"], connections=["a"], types=["sync"]) == ["sync-github-a"]
    assert await names(integrations=["nothing"]) == []
    # the period is inclusive at both ends
    assert await names(period=(t0 + timedelta(minutes=1), t0 + timedelta(minutes=3))) == [
        "proxy-slack-c",
        "action-slack-a",
        "sync-github-b",
    ]
    assert await names(period=(t0 + timedelta(minutes=4), None)) == ["webhook-github-a", "auth-hubspot-d"]
    assert await names(period=(None, t0)) == ["sync-github-a"]

    found = await store.get_operation(rows["auth-hubspot-d"].id)
    assert found == rows["auth-hubspot-d"]


async def test_keyset_pagination_returns_every_row_once(store: PostgresLogStore, env: int) -> None:
    t0 = utcnow() - timedelta(days=1)
    # many rows share a timestamp, so the id must break ties for the cursor to be exact
    operations = [
        op(env, t0 + timedelta(seconds=i // 7), type="proxy" if i % 3 else "action", action="call") for i in range(237)
    ]
    await store.insert_operations(operations)

    everything = await all_pages(store, 50, environment_id=env)
    assert len(everything) == 237
    assert {o.id for o in everything} == {o.id for o in operations}
    keys = [(o.created_at, o.id) for o in everything]
    assert keys == sorted(keys, reverse=True)

    proxies = await all_pages(store, 13, environment_id=env, types=["proxy"])
    assert sorted(o.id for o in proxies) == sorted(o.id for o in operations if o.type == "proxy")

    single, cursor = await store.search_operations(environment_id=env, limit=237)
    assert len(single) == 237
    assert cursor is None


async def test_search_rejects_bad_input(store: PostgresLogStore, env: int) -> None:
    for limit in (0, 501):
        with pytest.raises(InvalidRequest):
            await store.search_operations(environment_id=env, limit=limit)
    with pytest.raises(InvalidRequest):
        await store.search_operations(environment_id=env, cursor="not a cursor")
    with pytest.raises(InvalidRequest):
        await store.search_operations(environment_id=env, types=["bogus"])  # type: ignore[list-item]
    with pytest.raises(InvalidRequest):
        await store.list_messages(str(uuid.uuid4()), cursor="MTIzfGFiYw")


async def test_messages_are_listed_in_order_and_searchable(store: PostgresLogStore) -> None:
    operation_id = str(uuid.uuid4())
    t0 = utcnow()
    # batches of lines sharing a timestamp keep the order they were written in
    lines = [
        Message(operation_id=operation_id, message=f"line {i:03d}", created_at=t0 + timedelta(milliseconds=i // 4))
        for i in range(250)
    ]
    lines[42] = Message(operation_id=operation_id, message="Fetched 100% of PAGE_2", created_at=lines[42].created_at)
    await store.insert_messages(lines[:100])
    await store.insert_messages(lines[100:])
    await store.insert_messages([Message(operation_id=str(uuid.uuid4()), message="line of another operation")])

    listed: list[Message] = []
    cursor: str | None = None
    for _ in range(10):
        page, cursor = await store.list_messages(operation_id, limit=100, cursor=cursor)
        listed.extend(page)
        if cursor is None:
            break
    assert [m.message for m in listed] == [m.message for m in lines]
    assert [m.id for m in listed] == [m.id for m in lines]

    found, _ = await store.list_messages(operation_id, search="100% of page_")
    assert [m.message for m in found] == ["Fetched 100% of PAGE_2"]
    found, _ = await store.list_messages(operation_id, search="LINE 24")
    assert [m.message for m in found] == [f"line {i}" for i in range(240, 250)]
    assert await store.list_messages("not-a-uuid") == ([], None)


async def test_the_facade_records_a_whole_operation(oplog: OperationsLog, store: PostgresLogStore, env: int) -> None:
    handle = oplog.start(
        "proxy", "call", environment_id=env, provider_config_key="github", connection_id="conn-1", provider="github"
    )
    handle.info("starting", page=1)
    started = utcnow()
    await asyncio.sleep(0.05)
    handle.http(
        "GET /user",
        request={"method": "GET", "url": "https://api.github.com/user", "headers": {}},
        response={"code": 503, "headers": {}},
        retry={"attempt": 1, "max": 3, "waited_ms": 200},
        started_at=started,
    )
    handle.warn("retrying")
    handle.succeed(response={"code": 200}, meta={"pages": 1})
    handle.fail(RuntimeError("ignored: the operation already ended"))
    assert await oplog.flush(timeout=5)

    stored = await store.get_operation(handle.id)
    assert stored is not None
    assert (stored.state, stored.level, stored.type, stored.action) == ("success", "info", "proxy", "call")
    assert stored.response == {"code": 200}
    assert stored.meta == {"pages": 1}
    assert stored.error is None
    assert stored.started_at is not None
    assert stored.ended_at is not None
    assert stored.duration_ms is not None
    assert stored.expires_at is not None
    assert stored.expires_at > stored.created_at

    lines, _ = await store.list_messages(handle.id)
    assert [(m.level, m.type, m.message) for m in lines] == [
        ("info", "log", "starting"),
        ("error", "http", "GET /user"),
        ("warn", "log", "retrying"),
    ]
    assert lines[0].meta == {"page": 1}
    assert lines[1].retry == {"attempt": 1, "max": 3, "waited_ms": 200}
    assert lines[1].duration_ms is not None
    assert lines[1].duration_ms >= 50


async def test_fail_cancel_and_waiting_operations(oplog: OperationsLog, store: PostgresLogStore, env: int) -> None:
    failing = oplog.start("action", "run", environment_id=env)
    failing.fail(InvalidRequest("bad input"))
    cancelled = oplog.start("sync", "run", environment_id=env)
    cancelled.cancel()
    waiting = oplog.start("sync", "run", environment_id=env, state="waiting")
    assert await oplog.flush(timeout=5)
    queued = await store.get_operation(waiting.id)
    assert queued is not None
    assert (queued.state, queued.started_at) == ("waiting", None)
    waiting.mark_running()
    assert await oplog.flush(timeout=5)

    failed = await store.get_operation(failing.id)
    assert failed is not None
    assert (failed.state, failed.level) == ("failed", "error")
    assert failed.error == {"type": "InvalidRequest", "message": "bad input", "code": "invalid_request"}
    stopped = await store.get_operation(cancelled.id)
    assert stopped is not None
    assert stopped.state == "cancelled"
    running = await store.get_operation(waiting.id)
    assert running is not None
    assert running.state == "running"
    assert running.started_at is not None
    assert running.ended_at is None


async def test_secrets_never_land_in_the_tables(
    oplog: OperationsLog, store: PostgresLogStore, pg: asyncpg.Connection, env: int
) -> None:
    secrets = {
        "SECRET-bearer-0001",
        "SECRET-query-0002",
        "SECRET-meta-0003",
        "SECRET-cookie-0004",
        "SECRET-error-0005",
        "SECRET-userline-0006",
        "SECRET-apikey-0007",
        "SECRET-failure-0008",
    }
    handle = oplog.start(
        "auth",
        "refresh_token",
        environment_id=env,
        request={
            "url": "https://oauth.test/token?client_id=app&refresh_token=SECRET-query-0002",
            "headers": {"Authorization": "Bearer SECRET-bearer-0001"},
        },
        meta={"credentials": {"clientSecret": "SECRET-meta-0003"}, "scopes": ["read"]},
    )
    handle.http(
        "POST https://oauth.test/token?client_id=app&refresh_token=SECRET-query-0002",
        request={"method": "POST", "url": "https://oauth.test/token", "headers": {"X-Api-Key": "SECRET-apikey-0007"}},
        response={"code": 200, "headers": {"Set-Cookie": "session=SECRET-cookie-0004"}},
    )
    handle.error("refresh failed", error={"message": "upstream said password=SECRET-error-0005"})
    oplog.log_messages(
        [Message(operation_id=handle.id, source="user", message="calling with Bearer SECRET-userline-0006")]
    )
    handle.fail({"message": "token endpoint rejected", "access_token": "SECRET-failure-0008"})
    assert await oplog.flush(timeout=5)

    operation_rows = await pg.fetch(f"SELECT o::text AS row FROM {SCHEMA}.operations o WHERE id = $1", handle.id)
    message_rows = await pg.fetch(f"SELECT m::text AS row FROM {SCHEMA}.messages m WHERE operation_id = $1", handle.id)
    assert len(operation_rows) == 1
    assert len(message_rows) == 3
    raw = "\n".join(r["row"] for r in [*operation_rows, *message_rows])
    for secret in secrets:
        assert secret not in raw
    assert "[REDACTED]" in raw
    assert "client_id=app" in raw


async def test_a_retried_batch_stores_each_row_once(store: PostgresLogStore, env: int) -> None:
    now = utcnow()
    first = [op(env, now, action=f"first-{i}") for i in range(3)]
    await store.insert_operations(first)
    # a retried write: the ids already stored are skipped, the new ones land
    again = [*first, op(env, now, action="new")]
    await store.insert_operations(again)
    found, _ = await store.search_operations(environment_id=env, limit=10)
    assert sorted(o.action for o in found) == ["first-0", "first-1", "first-2", "new"]
    operation_id = first[0].id
    lines = [Message(operation_id=operation_id, message=f"line {i}") for i in range(2)]
    await store.insert_messages(lines)
    await store.insert_messages([*lines, Message(operation_id=operation_id, message="line 2")])
    page, _ = await store.list_messages(operation_id)
    assert [m.message for m in page] == ["line 0", "line 1", "line 2"]


async def test_nul_characters_do_not_break_a_batch(store: PostgresLogStore) -> None:
    operation_id = str(uuid.uuid4())
    await store.insert_messages(
        [
            Message(operation_id=operation_id, message="before\x00after", meta={"k\x00": "v\x00", "path": "a\\u0000b"}),
            Message(operation_id=operation_id, message="plain"),
        ]
    )
    lines, _ = await store.list_messages(operation_id)
    assert [m.message for m in lines] == ["before\ufffdafter", "plain"]
    assert lines[0].meta == {"k\ufffd": "v\ufffd", "path": "a\\u0000b"}


async def test_ended_operations_cannot_change_state_again(store: PostgresLogStore, env: int) -> None:
    operation = op(env, utcnow(), state="running")
    await store.insert_operations([operation])
    await store.update_operations([OperationUpdate(operation.id, "failed", error={"message": "first"})])
    await store.update_operations([OperationUpdate(operation.id, "success"), OperationUpdate(operation.id, "running")])
    stored = await store.get_operation(operation.id)
    assert stored is not None
    assert (stored.state, stored.error) == ("failed", {"message": "first"})


async def test_timeout_sweep(store: PostgresLogStore, env: int) -> None:
    now = utcnow()
    past, future = now - timedelta(minutes=1), now + timedelta(hours=1)
    expired_running = op(env, now - timedelta(hours=2), state="running", expires_at=past)
    expired_waiting = op(env, now - timedelta(hours=2), state="waiting", expires_at=past)
    still_running = op(env, now, state="running", expires_at=future)
    finished = op(env, now - timedelta(hours=2), state="success", expires_at=past)
    await store.insert_operations([expired_running, expired_waiting, still_running, finished])

    assert await store.timeout_expired(now=now) >= 2
    states = {}
    for o in (expired_running, expired_waiting, still_running, finished):
        stored = await store.get_operation(o.id)
        assert stored is not None
        states[o.id] = stored
    assert states[expired_running.id].state == "timeout"
    assert states[expired_running.id].level == "error"
    assert states[expired_running.id].ended_at == now
    assert states[expired_waiting.id].state == "timeout"
    assert states[still_running.id].state == "running"
    assert states[finished.id].state == "success"
    # a late success does not undo the timeout
    await store.update_operations([OperationUpdate(expired_running.id, "success")])
    late = await store.get_operation(expired_running.id)
    assert late is not None
    assert late.state == "timeout"


async def test_retention_deletes_old_operations_and_their_messages(
    store: PostgresLogStore, pg: asyncpg.Connection, env: int
) -> None:
    now = utcnow()
    old = op(env, now - timedelta(days=20), state="success")
    recent = op(env, now - timedelta(days=2), state="success")
    await store.insert_operations([old, recent])
    await store.insert_messages(
        [
            Message(operation_id=old.id, message="old line", created_at=now - timedelta(days=20)),
            # a line written late for an old operation goes with its operation
            Message(operation_id=old.id, message="late line", created_at=now - timedelta(days=1)),
            Message(operation_id=recent.id, message="recent line", created_at=now - timedelta(days=2)),
            Message(operation_id=str(uuid.uuid4()), message="orphan line", created_at=now - timedelta(days=30)),
        ]
    )

    assert await store.delete_older_than(15, now=now) >= 1

    assert await store.get_operation(old.id) is None
    assert await store.get_operation(recent.id) is not None
    remaining = await pg.fetch(
        f"SELECT message FROM {SCHEMA}.messages WHERE message = ANY($1::text[])",
        ["old line", "late line", "recent line", "orphan line"],
    )
    assert [r["message"] for r in remaining] == ["recent line"]


async def test_retention_daemon_times_out_and_deletes(store: PostgresLogStore, env: int) -> None:
    now = utcnow()
    stale = op(env, now - timedelta(days=40), state="success")
    stuck = op(env, now - timedelta(hours=1), state="running", expires_at=now - timedelta(minutes=5))
    await store.insert_operations([stale, stuck])

    daemon = LogRetention(store, retention_days=30, interval=0.05)
    daemon.start()
    try:
        async with asyncio.timeout(10):
            while True:
                gone = await store.get_operation(stale.id) is None
                current = await store.get_operation(stuck.id)
                if gone and current is not None and current.state == "timeout":
                    break
                await asyncio.sleep(0.05)
    finally:
        await daemon.stop()


async def test_a_failing_database_never_raises_into_the_caller(store: PostgresLogStore, env: int) -> None:
    broken = OperationsLog(PostgresLogStore(store.pool, "oplog_schema_that_does_not_exist"), flush_interval=0.01)
    handle = broken.start("proxy", "call", environment_id=env)
    handle.info("hello", secret_value="never logged")
    handle.succeed()
    assert await broken.flush(timeout=5)
    assert broken.failed == 3
    await broken.close(timeout=5)
