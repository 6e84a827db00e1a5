"""Webhook settings of environments, and the webhook outbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

TOGGLES = (
    "on_auth_creation",
    "on_auth_refresh_error",
    "on_sync_error",
    "on_sync_completion_always",
    "on_async_action_completion",
)
URLS = ("primary_url", "secondary_url")
_SETTINGS_COLUMNS = f"s.environment_id, e.name AS environment_name, {', '.join(URLS)}, {', '.join(TOGGLES)}, " + (
    "s.signing_key_sealed"
)


@dataclass(frozen=True)
class WebhookSettingsRow:
    environment_id: int
    environment_name: str
    primary_url: str | None
    secondary_url: str | None
    on_auth_creation: bool
    on_auth_refresh_error: bool
    on_sync_error: bool
    on_sync_completion_always: bool
    on_async_action_completion: bool
    signing_key_sealed: str

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> WebhookSettingsRow:
        return cls(**{k: r[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    environment_id: int
    item: str
    attempts: int


class WebhookSettingsStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, environment_id: int) -> WebhookSettingsRow | None:
        row = await self.pool.fetchrow(
            f"""SELECT {_SETTINGS_COLUMNS} FROM environment_webhook_settings s
                JOIN environments e ON e.id = s.environment_id WHERE s.environment_id = $1""",
            environment_id,
        )
        return WebhookSettingsRow.from_record(row) if row else None

    async def environment_exists(self, environment_id: int) -> bool:
        return bool(
            await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM environments WHERE id = $1)", environment_id)
        )

    async def environments_without_settings(self) -> list[int]:
        rows = await self.pool.fetch(
            """SELECT e.id FROM environments e
               WHERE NOT EXISTS (SELECT 1 FROM environment_webhook_settings s WHERE s.environment_id = e.id)
               ORDER BY e.id"""
        )
        return [r["id"] for r in rows]

    async def create(self, environment_id: int, signing_key_sealed: str, conn: Any = None) -> None:
        """The environment's settings with the defaults; a row that exists already is kept."""
        await (conn or self.pool).execute(
            """INSERT INTO environment_webhook_settings (environment_id, signing_key_sealed) VALUES ($1, $2)
               ON CONFLICT (environment_id) DO NOTHING""",
            environment_id,
            signing_key_sealed,
        )

    async def update(self, environment_id: int, changes: Mapping[str, Any]) -> None:
        """Set the given URL and toggle columns (names from URLS and TOGGLES only)."""
        allowed = set(URLS) | set(TOGGLES)
        names = [name for name in changes if name in allowed]
        if len(names) != len(changes):
            raise ValueError(f"not a webhook setting: {sorted(set(changes) - allowed)}")
        if not names:
            return
        assignments = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
        await self.pool.execute(
            f"UPDATE environment_webhook_settings SET {assignments}, updated_at = now() WHERE environment_id = $1",
            environment_id,
            *(changes[name] for name in names),
        )

    async def replace_signing_key(self, environment_id: int, signing_key_sealed: str) -> None:
        await self.pool.execute(
            """UPDATE environment_webhook_settings SET signing_key_sealed = $2, updated_at = now()
               WHERE environment_id = $1""",
            environment_id,
            signing_key_sealed,
        )

    async def connection_override(self, environment_id: int, nango_connection_id: int) -> tuple[bool, str | None]:
        """(found, webhook_url_override) of a live connection of the environment."""
        row = await self.pool.fetchrow(
            """SELECT webhook_url_override FROM connections
               WHERE id = $1 AND environment_id = $2 AND deleted_at IS NULL""",
            nango_connection_id,
            environment_id,
        )
        return (row is not None, row["webhook_url_override"] if row else None)


class OutboxStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(self, rows: Sequence[tuple[str, int, str]], conn: Any = None) -> None:
        """(kind, environment_id, item JSON) rows, in one statement."""
        if not rows:
            return
        await (conn or self.pool).execute(
            """INSERT INTO webhook_outbox (kind, environment_id, item)
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])""",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
        )

    async def claim(self, conn: Any, limit: int) -> list[OutboxRow]:
        """Due rows, oldest first, locked for this transaction; rows another replica holds are skipped."""
        rows = await conn.fetch(
            """SELECT id, kind, environment_id, item, attempts FROM webhook_outbox
               WHERE available_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [OutboxRow(r["id"], r["kind"], r["environment_id"], r["item"], r["attempts"]) for r in rows]

    async def delete(self, conn: Any, ids: Sequence[int]) -> None:
        if ids:
            await conn.execute("DELETE FROM webhook_outbox WHERE id = ANY($1::bigint[])", list(ids))

    async def postpone(self, conn: Any, ids: Sequence[int], max_delay_seconds: float) -> None:
        """Rows refused for themselves: tried again later, the delay doubling with each refusal."""
        if ids:
            await conn.execute(
                """UPDATE webhook_outbox SET attempts = attempts + 1,
                       available_at = now() + make_interval(secs => least($2, 2 ^ least(attempts, 20)))
                   WHERE id = ANY($1::bigint[])""",
                list(ids),
                max_delay_seconds,
            )

    async def count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM webhook_outbox"))
