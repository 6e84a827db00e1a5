"""Connections, their end users and their active errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = """c.id, c.uuid, c.environment_id, c.integration_id, c.connection_id, c.tags, c.connection_config,
    c.metadata, c.auth_mode, c.credentials_sealed, c.credentials_expires_at, c.last_fetched_at,
    c.last_refresh_success, c.last_refresh_failure, c.refresh_attempts, c.refresh_exhausted,
    c.webhook_url_override, c.created_at, c.updated_at, c.deleted_at,
    i.unique_key AS provider_config_key, i.provider,
    eu.end_user_id AS eu_id, eu.email AS eu_email, eu.display_name AS eu_display_name,
    eu.organization_id AS eu_org_id, eu.organization_display_name AS eu_org_name, eu.tags AS eu_tags,
    COALESCE((SELECT json_agg(json_build_object('type', e.type, 'log_id', e.log_id) ORDER BY e.type)
              FROM connection_errors e WHERE e.connection_id = c.id), '[]') AS errors"""

_FROM = """FROM connections c
    JOIN integrations i ON i.id = c.integration_id
    LEFT JOIN end_users eu ON eu.id = c.end_user_id"""


@dataclass(frozen=True)
class EndUserRow:
    end_user_id: str
    email: str | None
    display_name: str | None
    organization_id: str | None
    organization_display_name: str | None
    tags: dict[str, str] | None


@dataclass(frozen=True)
class ConnectionRow:
    id: int
    uuid: str
    environment_id: int
    integration_id: int
    provider_config_key: str
    provider: str
    connection_id: str
    end_user: EndUserRow | None
    tags: dict[str, str]
    connection_config: dict[str, Any]
    metadata: dict[str, Any] | None
    auth_mode: str
    credentials_sealed: str
    credentials_expires_at: datetime | None
    last_fetched_at: datetime | None
    last_refresh_success: datetime | None
    last_refresh_failure: datetime | None
    refresh_attempts: int | None
    refresh_exhausted: bool
    webhook_url_override: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    errors: list[dict[str, str]]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> ConnectionRow:
        end_user = None
        if r["eu_id"] is not None:
            end_user = EndUserRow(
                r["eu_id"],
                r["eu_email"],
                r["eu_display_name"],
                r["eu_org_id"],
                r["eu_org_name"],
                json.loads(r["eu_tags"]) if r["eu_tags"] else None,
            )
        return cls(
            id=r["id"],
            uuid=str(r["uuid"]),
            environment_id=r["environment_id"],
            integration_id=r["integration_id"],
            provider_config_key=r["provider_config_key"],
            provider=r["provider"],
            connection_id=r["connection_id"],
            end_user=end_user,
            tags=json.loads(r["tags"]),
            connection_config=json.loads(r["connection_config"]),
            metadata=json.loads(r["metadata"]) if r["metadata"] is not None else None,
            auth_mode=r["auth_mode"],
            credentials_sealed=r["credentials_sealed"],
            credentials_expires_at=r["credentials_expires_at"],
            last_fetched_at=r["last_fetched_at"],
            last_refresh_success=r["last_refresh_success"],
            last_refresh_failure=r["last_refresh_failure"],
            refresh_attempts=r["refresh_attempts"],
            refresh_exhausted=r["refresh_exhausted"],
            webhook_url_override=r["webhook_url_override"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            deleted_at=r["deleted_at"],
            errors=json.loads(r["errors"]),
        )


@dataclass(frozen=True)
class ConnectionFilter:
    environment_id: int
    connection_id: str | None = None
    search: str | None = None
    end_user_id: str | None = None
    end_user_organization_id: str | None = None
    integration_keys: list[str] | None = None
    tags: dict[str, str] | None = None
    limit: int = 10_000
    offset: int = 0


@dataclass(frozen=True)
class EndUserValues:
    end_user_id: str
    email: str | None
    display_name: str | None
    organization_id: str | None
    organization_display_name: str | None
    tags: dict[str, str] | None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ConnectionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def search(self, f: ConnectionFilter) -> list[ConnectionRow]:
        where = ["c.environment_id = $1", "c.deleted_at IS NULL"]
        args: list[Any] = [f.environment_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if f.connection_id is not None:
            where.append(f"c.connection_id = {arg(f.connection_id)}")
        if f.search:
            pattern = arg(f"%{_escape_like(f.search)}%")
            where.append(
                f"(c.connection_id ILIKE {pattern} OR eu.display_name ILIKE {pattern} OR eu.email ILIKE {pattern})"
            )
        if f.end_user_id is not None:
            where.append(f"eu.end_user_id = {arg(f.end_user_id)}")
        if f.end_user_organization_id is not None:
            where.append(f"eu.organization_id = {arg(f.end_user_organization_id)}")
        if f.integration_keys:
            where.append(f"i.unique_key = ANY({arg(f.integration_keys)}::text[])")
        if f.tags:
            where.append(f"c.tags @> {arg(json.dumps(f.tags))}::jsonb")
        sql = (
            f"SELECT {_COLUMNS} {_FROM} WHERE {' AND '.join(where)} ORDER BY c.created_at DESC, c.id DESC "
            f"LIMIT {arg(f.limit)} OFFSET {arg(f.offset)}"
        )
        return [ConnectionRow.from_record(r) for r in await self.pool.fetch(sql, *args)]

    async def get(self, integration_id: int, connection_id: str) -> ConnectionRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} {_FROM} WHERE c.integration_id = $1 AND c.connection_id = $2 AND c.deleted_at IS NULL",
            integration_id,
            connection_id,
        )
        return ConnectionRow.from_record(row) if row else None

    async def get_by_key(
        self, environment_id: int, provider_config_key: str, connection_id: str
    ) -> ConnectionRow | None:
        """One round trip for the hot path (credential reads)."""
        row = await self.pool.fetchrow(
            f"""SELECT {_COLUMNS} {_FROM}
                WHERE i.environment_id = $1 AND i.unique_key = $2 AND c.connection_id = $3 AND c.deleted_at IS NULL""",
            environment_id,
            provider_config_key,
            connection_id,
        )
        return ConnectionRow.from_record(row) if row else None

    async def get_by_id(self, row_id: int) -> ConnectionRow | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE c.id = $1 AND c.deleted_at IS NULL", row_id)
        return ConnectionRow.from_record(row) if row else None

    async def upsert_end_user(self, conn: Any, environment_id: int, values: EndUserValues) -> int:
        return int(
            await conn.fetchval(
                """INSERT INTO end_users (environment_id, end_user_id, email, display_name, organization_id,
                                          organization_display_name, tags)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
                   ON CONFLICT (environment_id, end_user_id) DO UPDATE SET
                       email = EXCLUDED.email, display_name = EXCLUDED.display_name,
                       organization_id = EXCLUDED.organization_id,
                       organization_display_name = EXCLUDED.organization_display_name,
                       tags = EXCLUDED.tags, updated_at = now()
                   RETURNING id""",
                environment_id,
                values.end_user_id,
                values.email,
                values.display_name,
                values.organization_id,
                values.organization_display_name,
                json.dumps(values.tags) if values.tags is not None else None,
            )
        )

    async def upsert(
        self,
        *,
        row_uuid: str,
        environment_id: int,
        integration_id: int,
        connection_id: str,
        auth_mode: str,
        credentials_sealed: str | None,
        seal: Any,
        credentials_expires_at: datetime | None,
        connection_config: dict[str, Any],
        metadata: dict[str, Any] | None,
        tags: dict[str, str] | None,
        end_user: EndUserValues | None,
        webhook_url_override: str | None,
        in_transaction: Callable[[Any, ConnectionRow, bool], Awaitable[None]] | None = None,
    ) -> tuple[ConnectionRow, bool]:
        """Insert or override the live connection; returns (row, created). Credentials are sealed by
        `seal(row_uuid)` so an override keeps the existing row's uuid as associated data.
        `in_transaction(conn, row, created)` runs before the commit (what must commit with it)."""
        async with self.pool.acquire() as conn, conn.transaction():
            end_user_pk = await self.upsert_end_user(conn, environment_id, end_user) if end_user else None
            existing = await conn.fetchrow(
                """SELECT id, uuid FROM connections
                   WHERE integration_id = $1 AND connection_id = $2 AND deleted_at IS NULL FOR UPDATE""",
                integration_id,
                connection_id,
            )
            if existing is None:
                row_id = await conn.fetchval(
                    """INSERT INTO connections (uuid, environment_id, integration_id, connection_id, end_user_id, tags,
                           connection_config, metadata, auth_mode, credentials_sealed, credentials_expires_at,
                           webhook_url_override)
                       VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10, $11, $12)
                       RETURNING id""",
                    row_uuid,
                    environment_id,
                    integration_id,
                    connection_id,
                    end_user_pk,
                    json.dumps(tags or {}),
                    json.dumps(connection_config),
                    json.dumps(metadata) if metadata is not None else None,
                    auth_mode,
                    seal(row_uuid),
                    credentials_expires_at,
                    webhook_url_override,
                )
                created = True
            else:
                row_id = existing["id"]
                await conn.execute(
                    """UPDATE connections SET
                           end_user_id = COALESCE($2, end_user_id),
                           tags = COALESCE($3::jsonb, tags),
                           connection_config = connection_config || $4::jsonb,
                           metadata = COALESCE($5::jsonb, metadata),
                           auth_mode = $6, credentials_sealed = $7, credentials_expires_at = $8,
                           webhook_url_override = COALESCE($9, webhook_url_override),
                           last_refresh_failure = NULL, refresh_attempts = NULL, refresh_exhausted = false,
                           updated_at = now()
                       WHERE id = $1""",
                    row_id,
                    end_user_pk,
                    json.dumps(tags) if tags is not None else None,
                    json.dumps(connection_config),
                    json.dumps(metadata) if metadata is not None else None,
                    auth_mode,
                    seal(str(existing["uuid"])),
                    credentials_expires_at,
                    webhook_url_override,
                )
                await conn.execute("DELETE FROM connection_errors WHERE connection_id = $1 AND type = 'auth'", row_id)
                created = False
            row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE c.id = $1", row_id)
            saved = ConnectionRow.from_record(row)
            if in_transaction is not None:
                await in_transaction(conn, saved, created)
        return saved, created

    async def store_refreshed(
        self, row_id: int, credentials_sealed: str, expires_at: datetime | None, connection_config: dict[str, Any]
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE connections SET credentials_sealed = $2, credentials_expires_at = $3,
                       connection_config = connection_config || $4::jsonb,
                       last_refresh_success = now(), last_refresh_failure = NULL, refresh_attempts = NULL,
                       refresh_exhausted = false, updated_at = now()
                   WHERE id = $1""",
                row_id,
                credentials_sealed,
                expires_at,
                json.dumps(connection_config),
            )
            await conn.execute("DELETE FROM connection_errors WHERE connection_id = $1 AND type = 'auth'", row_id)

    async def record_refresh_failure(
        self,
        row_id: int,
        log_id: str,
        exhaust_after: int,
        in_transaction: Callable[[Any, ConnectionRow], Awaitable[None]] | None = None,
    ) -> ConnectionRow | None:
        """Counts at most one failed attempt per calendar day; exhausted after `exhaust_after` days.
        `in_transaction(conn, row)` runs before the commit."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE connections SET
                       refresh_attempts = CASE
                           WHEN last_refresh_failure IS NOT NULL AND last_refresh_failure::date = now()::date
                                AND refresh_attempts IS NOT NULL THEN refresh_attempts
                           ELSE COALESCE(refresh_attempts, 0) + 1 END,
                       last_refresh_failure = now(), last_refresh_success = NULL
                   WHERE id = $1""",
                row_id,
            )
            await conn.execute(
                "UPDATE connections SET refresh_exhausted = refresh_attempts >= $2 WHERE id = $1", row_id, exhaust_after
            )
            await conn.execute(
                """INSERT INTO connection_errors (connection_id, type, log_id) VALUES ($1, 'auth', $2)
                   ON CONFLICT (connection_id, type) DO UPDATE SET log_id = EXCLUDED.log_id, created_at = now()""",
                row_id,
                log_id,
            )
            row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE c.id = $1", row_id)
            failed = ConnectionRow.from_record(row) if row else None
            if failed is not None and in_transaction is not None:
                await in_transaction(conn, failed)
        return failed

    async def touch_fetched(self, row_id: int) -> None:
        await self.pool.execute("UPDATE connections SET last_fetched_at = now() WHERE id = $1", row_id)

    async def set_metadata(self, row_ids: list[int], metadata: dict[str, Any], *, merge: bool) -> int:
        expression = "COALESCE(metadata, '{}'::jsonb) || $2::jsonb" if merge else "$2::jsonb"
        status = await self.pool.execute(
            f"UPDATE connections SET metadata = {expression}, updated_at = now() "
            "WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL",
            row_ids,
            json.dumps(metadata),
        )
        return int(status.rsplit(" ", 1)[1])

    async def patch(
        self,
        row_id: int,
        environment_id: int,
        *,
        end_user: EndUserValues | None,
        tags: dict[str, str] | None,
        webhook_url_override: str | None,
        clear_webhook_url_override: bool,
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            end_user_pk = await self.upsert_end_user(conn, environment_id, end_user) if end_user else None
            await conn.execute(
                """UPDATE connections SET end_user_id = COALESCE($2, end_user_id), tags = COALESCE($3::jsonb, tags),
                       webhook_url_override = CASE WHEN $5 THEN NULL ELSE COALESCE($4, webhook_url_override) END,
                       updated_at = now()
                   WHERE id = $1""",
                row_id,
                end_user_pk,
                json.dumps(tags) if tags is not None else None,
                webhook_url_override,
                clear_webhook_url_override,
            )

    async def soft_delete(self, row_id: int) -> bool:
        status = await self.pool.execute(
            "UPDATE connections SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL", row_id
        )
        return bool(status.endswith(" 1"))

    async def purge_deleted(self, older_than_days: int, limit: int = 1000) -> int:
        status = await self.pool.execute(
            """DELETE FROM connections WHERE id IN (
                   SELECT id FROM connections WHERE deleted_at < now() - make_interval(days => $1) LIMIT $2)""",
            older_than_days,
            limit,
        )
        return int(status.rsplit(" ", 1)[1])

    async def due_for_refresh(self, expiring_before: datetime, not_fetched_since: datetime, limit: int) -> list[int]:
        """Live, not exhausted connections whose token expires soon or that nobody read for a while."""
        rows = await self.pool.fetch(
            """SELECT id FROM connections
               WHERE deleted_at IS NULL AND refresh_exhausted = false
                 AND (credentials_expires_at < $1 OR COALESCE(last_fetched_at, created_at) < $2)
               ORDER BY credentials_expires_at NULLS LAST LIMIT $3""",
            expiring_before,
            not_fetched_since,
            limit,
        )
        return [r["id"] for r in rows]
