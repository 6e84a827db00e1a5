"""Accounts, environments and environment variables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# Serialises first-start bootstrap across server replicas.
_BOOTSTRAP_LOCK = 0x6E616E676F01


@dataclass(frozen=True)
class EnvironmentRow:
    id: int
    account_id: int
    uuid: str
    name: str
    public_key: str
    is_production: bool
    secret_key_hash: str
    secret_key_sealed: str

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> EnvironmentRow:
        return cls(
            id=r["id"],
            account_id=r["account_id"],
            uuid=str(r["uuid"]),
            name=r["name"],
            public_key=str(r["public_key"]),
            is_production=r["is_production"],
            secret_key_hash=r["secret_key_hash"],
            secret_key_sealed=r["secret_key_sealed"],
        )


_ENV_COLUMNS = "id, account_id, uuid, name, public_key, is_production, secret_key_hash, secret_key_sealed"


class EnvironmentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def bootstrap_lock(self, conn: Any) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)

    async def first_account_id(self, conn: Any) -> int | None:
        value = await conn.fetchval("SELECT id FROM accounts ORDER BY id LIMIT 1")
        return int(value) if value is not None else None

    async def insert_account(self, conn: Any, name: str) -> int:
        return int(
            await conn.fetchval("INSERT INTO accounts (uuid, name) VALUES ($1, $2) RETURNING id", uuid.uuid4(), name)
        )

    async def environment_by_name(self, conn: Any, account_id: int, name: str) -> EnvironmentRow | None:
        row = await conn.fetchrow(
            f"SELECT {_ENV_COLUMNS} FROM environments WHERE account_id = $1 AND name = $2", account_id, name
        )
        return EnvironmentRow.from_record(row) if row else None

    async def insert_environment(
        self,
        conn: Any,
        *,
        account_id: int,
        env_uuid: str,
        name: str,
        secret_key_hash: str,
        secret_key_sealed: str,
        is_production: bool,
    ) -> EnvironmentRow:
        row = await conn.fetchrow(
            f"""INSERT INTO environments (account_id, uuid, name, secret_key_hash, secret_key_sealed, public_key,
                                          is_production)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_ENV_COLUMNS}""",
            account_id,
            uuid.UUID(env_uuid),
            name,
            secret_key_hash,
            secret_key_sealed,
            uuid.uuid4(),
            is_production,
        )
        return EnvironmentRow.from_record(row)

    async def replace_secret_key(self, conn: Any, env_id: int, secret_key_hash: str, secret_key_sealed: str) -> None:
        await conn.execute(
            """UPDATE environments SET secret_key_hash = $2, secret_key_sealed = $3, updated_at = now()
               WHERE id = $1""",
            env_id,
            secret_key_hash,
            secret_key_sealed,
        )

    async def environment_by_key_hash(self, secret_key_hash: str) -> EnvironmentRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_ENV_COLUMNS} FROM environments WHERE secret_key_hash = $1", secret_key_hash
        )
        return EnvironmentRow.from_record(row) if row else None

    async def environment_by_id(self, env_id: int) -> EnvironmentRow | None:
        row = await self.pool.fetchrow(f"SELECT {_ENV_COLUMNS} FROM environments WHERE id = $1", env_id)
        return EnvironmentRow.from_record(row) if row else None

    async def environment_by_public_key(self, public_key: str) -> EnvironmentRow | None:
        row = await self.pool.fetchrow(f"SELECT {_ENV_COLUMNS} FROM environments WHERE public_key = $1", public_key)
        return EnvironmentRow.from_record(row) if row else None

    async def account_created_at(self, account_id: int) -> datetime:
        value = await self.pool.fetchval("SELECT created_at FROM accounts WHERE id = $1", account_id)
        assert isinstance(value, datetime)
        return value

    async def list_environments(self) -> list[EnvironmentRow]:
        rows = await self.pool.fetch(f"SELECT {_ENV_COLUMNS} FROM environments ORDER BY id")
        return [EnvironmentRow.from_record(r) for r in rows]

    async def environment_variables(self, env_id: int) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT name, value_sealed FROM environment_variables WHERE environment_id = $1 ORDER BY name",
            env_id,
        )
        return [(r["name"], r["value_sealed"]) for r in rows]

    async def replace_environment_variables(self, env_id: int, sealed: list[tuple[str, str]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM environment_variables WHERE environment_id = $1", env_id)
            await conn.executemany(
                "INSERT INTO environment_variables (environment_id, name, value_sealed) VALUES ($1, $2, $3)",
                [(env_id, name, value) for name, value in sealed],
            )
