"""Postgres: asyncpg pools bound to one schema, and versioned migrations applied under a lock.

Each service owns one schema. Its pool sets `search_path` to that schema, so its SQL names its
tables without qualification and cannot reach another service's tables by accident.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from nango.errors import ServiceUnavailable

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool's connection, given back without asyncpg's reset query (`SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`): a round trip, and Postgres work, on every release. Nothing takes
    session state on a pooled connection: locks are transaction-level, settings are `SET LOCAL` or
    `set_config(..., true)`, and LISTEN and the migration lock have connections of their own. asyncpg still
    rolls back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    url: str,
    *,
    schema: str,
    application_name: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 30.0,
    server_settings: Mapping[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool whose connections use `schema` (and any other `server_settings`); waits up to
    `connect_timeout` for the server."""
    search_path = f"{_identifier(schema)},public"
    deadline = time.monotonic() + connect_timeout
    delay = 0.2
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                url,
                min_size=min(min_size, max_size),
                max_size=max_size,
                server_settings={
                    **(server_settings or {}),
                    "search_path": search_path,
                    "application_name": application_name,
                },
                command_timeout=60,
                connection_class=PooledConnection,
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError) as exc:
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(f"cannot reach Postgres for schema {schema}: {type(exc).__name__}") from exc
            log.warning("postgres not reachable yet, retrying", extra={"schema": schema, "error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str) -> list[Migration]:
    """The `NNNN_name.sql` files of a package's `migrations` folder, in order."""
    found = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(match.group(1), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {package}: {versions}")
    return found


class MigrationError(Exception):
    pass


async def migrate(conn: Any, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply the migrations not yet applied to `schema`, each in its own transaction.

    A session advisory lock per schema serialises replicas starting together; an applied
    migration whose file changed since is refused rather than silently skipped.
    """
    schema = _identifier(schema)
    lock_key = int.from_bytes(hashlib.sha256(f"nango-migrate:{schema}".encode()).digest()[:8], "big", signed=True)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.migrations (
                version text PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch(f"SELECT version, name, checksum FROM {schema}.migrations")
        done = {r["version"]: r for r in rows}
        for migration in migrations:
            previous = done.get(migration.version)
            if previous is not None:
                if previous["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {schema}/{migration.version}_{migration.name} changed after it was applied"
                    )
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}, public")
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {schema}.migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(f"{migration.version}_{migration.name}")
            log.info("migration applied", extra={"schema": schema, "migration": applied_now[-1]})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied_now


async def connect(url: str, *, timeout: float = 30.0) -> asyncpg.Connection:
    """One connection, waiting up to `timeout` for the server to accept it."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return await asyncpg.connect(url)
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(f"cannot reach Postgres: {type(exc).__name__}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def migrate_url(url: str, schema: str, package: str) -> list[str]:
    """Open one connection to `url` and apply `package`'s migrations to `schema`."""
    conn = await connect(url)
    try:
        return await migrate(conn, schema, load_migrations(package))
    finally:
        await conn.close()


__all__ = [
    "Migration",
    "MigrationError",
    "connect",
    "create_pool",
    "load_migrations",
    "migrate",
    "migrate_url",
]
