"""Integrations: an environment's configured providers with their (sealed) app credentials."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = (
    "id, uuid, environment_id, unique_key, provider, display_name, client_id, client_secret_sealed, scopes, "
    "app_link, webhook_secret_sealed, custom_sealed, integration_config, forward_webhooks, created_at, updated_at"
)


@dataclass(frozen=True)
class IntegrationRow:
    id: int
    uuid: str
    environment_id: int
    unique_key: str
    provider: str
    display_name: str | None
    client_id: str | None
    client_secret_sealed: str | None
    scopes: str | None
    app_link: str | None
    webhook_secret_sealed: str | None
    custom_sealed: str | None
    integration_config: dict[str, Any]
    forward_webhooks: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> IntegrationRow:
        return cls(
            id=r["id"],
            uuid=str(r["uuid"]),
            environment_id=r["environment_id"],
            unique_key=r["unique_key"],
            provider=r["provider"],
            display_name=r["display_name"],
            client_id=r["client_id"],
            client_secret_sealed=r["client_secret_sealed"],
            scopes=r["scopes"],
            app_link=r["app_link"],
            webhook_secret_sealed=r["webhook_secret_sealed"],
            custom_sealed=r["custom_sealed"],
            integration_config=json.loads(r["integration_config"]),
            forward_webhooks=r["forward_webhooks"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )


@dataclass(frozen=True)
class IntegrationValues:
    """Every writable column of an integration."""

    unique_key: str
    provider: str
    display_name: str | None
    client_id: str | None
    client_secret_sealed: str | None
    scopes: str | None
    app_link: str | None
    webhook_secret_sealed: str | None
    custom_sealed: str | None
    integration_config: dict[str, Any]
    forward_webhooks: bool


class IntegrationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def all(self, environment_id: int) -> list[IntegrationRow]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM integrations WHERE environment_id = $1 ORDER BY created_at, id", environment_id
        )
        return [IntegrationRow.from_record(r) for r in rows]

    async def get(self, environment_id: int, unique_key: str) -> IntegrationRow | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM integrations WHERE environment_id = $1 AND unique_key = $2",
            environment_id,
            unique_key,
        )
        return IntegrationRow.from_record(row) if row else None

    async def get_by_id(self, integration_id: int) -> IntegrationRow | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM integrations WHERE id = $1", integration_id)
        return IntegrationRow.from_record(row) if row else None

    async def insert(self, environment_id: int, row_uuid: str, values: IntegrationValues) -> IntegrationRow | None:
        """The new row, or None when the unique key is taken in this environment."""
        row = await self.pool.fetchrow(
            f"""INSERT INTO integrations (uuid, environment_id, unique_key, provider, display_name, client_id,
                    client_secret_sealed, scopes, app_link, webhook_secret_sealed, custom_sealed, integration_config,
                    forward_webhooks)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13)
                ON CONFLICT (environment_id, unique_key) DO NOTHING
                RETURNING {_COLUMNS}""",
            row_uuid,
            environment_id,
            values.unique_key,
            values.provider,
            values.display_name,
            values.client_id,
            values.client_secret_sealed,
            values.scopes,
            values.app_link,
            values.webhook_secret_sealed,
            values.custom_sealed,
            json.dumps(values.integration_config),
            values.forward_webhooks,
        )
        return IntegrationRow.from_record(row) if row else None

    async def update(self, integration_id: int, values: IntegrationValues) -> IntegrationRow | None:
        """The updated row, or None when the new unique key is taken."""
        try:
            row = await self.pool.fetchrow(
                f"""UPDATE integrations SET unique_key = $2, display_name = $3, client_id = $4,
                        client_secret_sealed = $5, scopes = $6, app_link = $7, webhook_secret_sealed = $8,
                        custom_sealed = $9, integration_config = $10::jsonb, forward_webhooks = $11, updated_at = now()
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                integration_id,
                values.unique_key,
                values.display_name,
                values.client_id,
                values.client_secret_sealed,
                values.scopes,
                values.app_link,
                values.webhook_secret_sealed,
                values.custom_sealed,
                json.dumps(values.integration_config),
                values.forward_webhooks,
            )
        except asyncpg.UniqueViolationError:
            return None
        return IntegrationRow.from_record(row) if row else None

    async def delete(self, integration_id: int) -> bool:
        """Deletes the integration and, by cascade, its connections and flows in progress."""
        status = await self.pool.execute("DELETE FROM integrations WHERE id = $1", integration_id)
        return bool(status.endswith(" 1"))
