"""Deployed functions and per-connection syncs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_FUNCTION_COLUMNS = """f.id, f.environment_id, f.integration_id, i.unique_key AS provider_config_key, f.name, f.type,
    f.version, f.description, f.bundle_key, f.bundle_sha256, f.module, f.attribute, f.frequency, f.auto_start,
    f.track_deletes, f.models, f.models_json_schema, f.input_json_schema, f.output_json_schema,
    f.webhook_subscriptions, f.event, f.scopes, f.reconcile_deletes, f.enabled, f.created_at, f.updated_at"""
_FUNCTION_FROM = "FROM functions f JOIN integrations i ON i.id = f.integration_id"


def _json(value: Any) -> Any:
    return json.loads(value) if value is not None else None


@dataclass(frozen=True)
class FunctionRow:
    id: str
    environment_id: int
    integration_id: int
    provider_config_key: str
    name: str
    type: str
    version: str
    description: str
    bundle_key: str
    bundle_sha256: str
    module: str
    attribute: str
    frequency: str | None
    auto_start: bool
    track_deletes: bool
    models: list[str]
    models_json_schema: dict[str, Any] | None
    input_json_schema: dict[str, Any] | None
    output_json_schema: dict[str, Any] | None
    webhook_subscriptions: list[str]
    event: str | None
    scopes: list[str]
    reconcile_deletes: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> FunctionRow:
        return cls(
            id=str(r["id"]),
            environment_id=r["environment_id"],
            integration_id=r["integration_id"],
            provider_config_key=r["provider_config_key"],
            name=r["name"],
            type=r["type"],
            version=r["version"],
            description=r["description"],
            bundle_key=r["bundle_key"],
            bundle_sha256=r["bundle_sha256"],
            module=r["module"],
            attribute=r["attribute"],
            frequency=r["frequency"],
            auto_start=r["auto_start"],
            track_deletes=r["track_deletes"],
            models=list(r["models"]),
            models_json_schema=_json(r["models_json_schema"]),
            input_json_schema=_json(r["input_json_schema"]),
            output_json_schema=_json(r["output_json_schema"]),
            webhook_subscriptions=list(r["webhook_subscriptions"]),
            event=r["event"],
            scopes=list(r["scopes"]),
            reconcile_deletes=r["reconcile_deletes"],
            enabled=r["enabled"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )


@dataclass(frozen=True)
class FunctionValues:
    """Every column a deploy writes."""

    name: str
    type: str
    version: str
    description: str
    bundle_key: str
    bundle_sha256: str
    module: str
    attribute: str
    frequency: str | None
    auto_start: bool
    track_deletes: bool
    models: list[str]
    models_json_schema: dict[str, Any] | None
    input_json_schema: dict[str, Any] | None
    output_json_schema: dict[str, Any] | None
    webhook_subscriptions: list[str]
    event: str | None
    scopes: list[str]
    reconcile_deletes: str | None


@dataclass(frozen=True)
class SyncRow:
    id: str
    environment_id: int
    connection_row_id: int
    function_id: str
    name: str
    variant: str
    frequency: str | None
    last_sync_date: datetime | None
    created_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> SyncRow:
        return cls(
            id=str(r["id"]),
            environment_id=r["environment_id"],
            connection_row_id=r["connection_id"],
            function_id=str(r["function_id"]),
            name=r["name"],
            variant=r["variant"],
            frequency=r["frequency"],
            last_sync_date=r["last_sync_date"],
            created_at=r["created_at"],
        )


_SYNC_COLUMNS = "id, environment_id, connection_id, function_id, name, variant, frequency, last_sync_date, created_at"


class FunctionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def of_integration(self, integration_id: int) -> list[FunctionRow]:
        rows = await self.pool.fetch(
            f"SELECT {_FUNCTION_COLUMNS} {_FUNCTION_FROM} WHERE f.integration_id = $1 ORDER BY f.type, f.name",
            integration_id,
        )
        return [FunctionRow.from_record(r) for r in rows]

    async def of_environment(self, environment_id: int) -> list[FunctionRow]:
        rows = await self.pool.fetch(
            f"""SELECT {_FUNCTION_COLUMNS} {_FUNCTION_FROM} WHERE f.environment_id = $1
                ORDER BY i.unique_key, f.type, f.name""",
            environment_id,
        )
        return [FunctionRow.from_record(r) for r in rows]

    async def get(self, function_id: str) -> FunctionRow | None:
        row = await self.pool.fetchrow(f"SELECT {_FUNCTION_COLUMNS} {_FUNCTION_FROM} WHERE f.id = $1", function_id)
        return FunctionRow.from_record(row) if row else None

    async def find(
        self, environment_id: int, provider_config_key: str, name: str, type_: str | None
    ) -> list[FunctionRow]:
        rows = await self.pool.fetch(
            f"""SELECT {_FUNCTION_COLUMNS} {_FUNCTION_FROM}
                WHERE f.environment_id = $1 AND i.unique_key = $2 AND f.name = $3
                  AND ($4::text IS NULL OR f.type = $4)""",
            environment_id,
            provider_config_key,
            name,
            type_,
        )
        return [FunctionRow.from_record(r) for r in rows]

    async def upsert(
        self, conn: Any, function_id: str, environment_id: int, integration_id: int, v: FunctionValues
    ) -> str:
        """Insert or update by (integration, type, name); returns the row's id (the existing one on update)."""
        value = await conn.fetchval(
            """INSERT INTO functions (id, environment_id, integration_id, name, type, version, description, bundle_key,
                   bundle_sha256, module, attribute, frequency, auto_start, track_deletes, models, models_json_schema,
                   input_json_schema, output_json_schema, webhook_subscriptions, event, scopes, reconcile_deletes)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb, $17::jsonb,
                       $18::jsonb, $19, $20, $21, $22)
               ON CONFLICT (integration_id, type, name) DO UPDATE SET
                   version = EXCLUDED.version, description = EXCLUDED.description, bundle_key = EXCLUDED.bundle_key,
                   bundle_sha256 = EXCLUDED.bundle_sha256, module = EXCLUDED.module, attribute = EXCLUDED.attribute,
                   frequency = EXCLUDED.frequency, auto_start = EXCLUDED.auto_start,
                   track_deletes = EXCLUDED.track_deletes, models = EXCLUDED.models,
                   models_json_schema = EXCLUDED.models_json_schema, input_json_schema = EXCLUDED.input_json_schema,
                   output_json_schema = EXCLUDED.output_json_schema,
                   webhook_subscriptions = EXCLUDED.webhook_subscriptions, event = EXCLUDED.event,
                   scopes = EXCLUDED.scopes, reconcile_deletes = EXCLUDED.reconcile_deletes, updated_at = now()
               RETURNING id""",
            function_id,
            environment_id,
            integration_id,
            v.name,
            v.type,
            v.version,
            v.description,
            v.bundle_key,
            v.bundle_sha256,
            v.module,
            v.attribute,
            v.frequency,
            v.auto_start,
            v.track_deletes,
            v.models,
            json.dumps(v.models_json_schema) if v.models_json_schema is not None else None,
            json.dumps(v.input_json_schema) if v.input_json_schema is not None else None,
            json.dumps(v.output_json_schema) if v.output_json_schema is not None else None,
            v.webhook_subscriptions,
            v.event,
            v.scopes,
            v.reconcile_deletes,
        )
        return str(value)

    async def delete(self, conn: Any, function_ids: list[str]) -> None:
        await conn.execute("DELETE FROM functions WHERE id = ANY($1::uuid[])", function_ids)

    # ---- syncs

    async def syncs_of_function(self, function_id: str) -> list[SyncRow]:
        rows = await self.pool.fetch(f"SELECT {_SYNC_COLUMNS} FROM syncs WHERE function_id = $1", function_id)
        return [SyncRow.from_record(r) for r in rows]

    async def syncs_of_connection(self, connection_row_id: int) -> list[SyncRow]:
        rows = await self.pool.fetch(
            f"SELECT {_SYNC_COLUMNS} FROM syncs WHERE connection_id = $1 ORDER BY name, variant", connection_row_id
        )
        return [SyncRow.from_record(r) for r in rows]

    async def sync(self, sync_id: str) -> SyncRow | None:
        row = await self.pool.fetchrow(f"SELECT {_SYNC_COLUMNS} FROM syncs WHERE id = $1", sync_id)
        return SyncRow.from_record(row) if row else None

    async def find_sync(self, connection_row_id: int, name: str, variant: str) -> SyncRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_SYNC_COLUMNS} FROM syncs WHERE connection_id = $1 AND name = $2 AND variant = $3",
            connection_row_id,
            name,
            variant,
        )
        return SyncRow.from_record(row) if row else None

    async def insert_sync(
        self, sync_id: str, environment_id: int, connection_row_id: int, function_id: str, name: str, variant: str
    ) -> tuple[SyncRow, bool]:
        """The sync (created or existing) and whether it was created."""
        row = await self.pool.fetchrow(
            f"""INSERT INTO syncs (id, environment_id, connection_id, function_id, name, variant)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (connection_id, name, variant) DO NOTHING RETURNING {_SYNC_COLUMNS}""",
            sync_id,
            environment_id,
            connection_row_id,
            function_id,
            name,
            variant,
        )
        if row is not None:
            return SyncRow.from_record(row), True
        existing = await self.find_sync(connection_row_id, name, variant)
        assert existing is not None
        return existing, False

    async def delete_syncs(self, sync_ids: list[str]) -> None:
        await self.pool.execute("DELETE FROM syncs WHERE id = ANY($1::uuid[])", sync_ids)

    async def set_sync_frequency(self, sync_id: str, frequency: str | None) -> None:
        await self.pool.execute("UPDATE syncs SET frequency = $2, updated_at = now() WHERE id = $1", sync_id, frequency)

    async def record_sync_run(self, sync_id: str, started_at: datetime) -> None:
        await self.pool.execute(
            """UPDATE syncs SET last_sync_date = GREATEST(COALESCE(last_sync_date, $2), $2), updated_at = now()
               WHERE id = $1""",
            sync_id,
            started_at,
        )

    async def clear_last_sync_date(self, sync_id: str) -> None:
        await self.pool.execute("UPDATE syncs SET last_sync_date = NULL, updated_at = now() WHERE id = $1", sync_id)
