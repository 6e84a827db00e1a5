from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from nango.db import Migration, MigrationError, migrate

pytestmark = pytest.mark.integration

MIGRATIONS = [
    Migration("0001", "create", "CREATE TABLE things (id int PRIMARY KEY)"),
    Migration("0002", "fill", "INSERT INTO things VALUES (1), (2)"),
]


async def test_applies_once_in_order_into_its_schema(database_url: str) -> None:
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        assert await migrate(conn, schema, MIGRATIONS) == ["0001_create", "0002_fill"]
        assert await migrate(conn, schema, MIGRATIONS) == []
        assert await conn.fetchval(f"SELECT count(*) FROM {schema}.things") == 2
    finally:
        await conn.close()


async def test_replicas_starting_together_apply_each_migration_once(database_url: str) -> None:
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, schema, MIGRATIONS) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, 2]
        assert await conns[0].fetchval(f"SELECT count(*) FROM {schema}.things") == 2
    finally:
        for c in conns:
            await c.close()


async def test_an_edited_migration_is_refused(database_url: str) -> None:
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, schema, MIGRATIONS[:1])
        edited = [Migration("0001", "create", "CREATE TABLE things (id bigint PRIMARY KEY)")]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, schema, edited)
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(database_url: str) -> None:
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    broken = [*MIGRATIONS, Migration("0003", "broken", "CREATE TABLE more (id int); SELECT 1/0")]
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, schema, broken)
        applied = await conn.fetch(f"SELECT version FROM {schema}.migrations ORDER BY version")
        assert [r["version"] for r in applied] == ["0001", "0002"]
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.more") is None
    finally:
        await conn.close()
