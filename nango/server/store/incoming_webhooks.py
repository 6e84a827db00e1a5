"""The lookups behind incoming provider webhooks: environments by uuid, connections by an identifier
the provider sends, and the syncs that subscribe to webhooks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

_CONNECTION_COLUMNS = "id, connection_id, webhook_url_override"
_LIVE = "integration_id = $1 AND deleted_at IS NULL"


@dataclass(frozen=True)
class WebhookConnection:
    id: int
    connection_id: str
    webhook_url_override: str | None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> WebhookConnection:
        return cls(r["id"], r["connection_id"], r["webhook_url_override"])


@dataclass(frozen=True)
class WebhookFunction:
    """An enabled sync function of an integration that subscribes to webhook events."""

    id: str
    name: str
    subscriptions: frozenset[str]

    def wants(self, event_type: str | None) -> bool:
        return "*" in self.subscriptions or (event_type is not None and event_type in self.subscriptions)


@dataclass(frozen=True)
class WebhookSync:
    id: str
    connection_row_id: int
    function_id: str
    variant: str


def _containment(key: str, value: str) -> tuple[str, str]:
    """The JSON objects a stored value may match: the text, and the number when it is one (a provider's
    id may have been stored either way)."""
    as_text = json.dumps({key: value})
    if value.isascii() and value.isdigit() and len(value) < 19:
        return as_text, json.dumps({key: int(value)})
    return as_text, as_text


class IncomingWebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def environment_by_uuid(self, environment_uuid: str) -> tuple[int, str] | None:
        """(id, name), or None when no environment has this uuid (or it is not a uuid)."""
        try:
            parsed = uuid.UUID(environment_uuid)
        except ValueError:
            return None
        row = await self.pool.fetchrow("SELECT id, name FROM environments WHERE uuid = $1", parsed)
        return (row["id"], row["name"]) if row else None

    async def by_connection_id(self, integration_id: int, connection_id: str) -> list[WebhookConnection]:
        rows = await self.pool.fetch(
            f"SELECT {_CONNECTION_COLUMNS} FROM connections WHERE {_LIVE} AND connection_id = $2",
            integration_id,
            connection_id,
        )
        return [WebhookConnection.from_record(r) for r in rows]

    async def by_config(self, integration_id: int, key: str, value: str) -> list[WebhookConnection]:
        return await self._containing("connection_config", integration_id, key, value)

    async def by_metadata(self, integration_id: int, key: str, value: str) -> list[WebhookConnection]:
        return await self._containing("metadata", integration_id, key, value)

    async def _containing(self, column: str, integration_id: int, key: str, value: str) -> list[WebhookConnection]:
        as_text, as_number = _containment(key, value)
        rows = await self.pool.fetch(
            f"""SELECT {_CONNECTION_COLUMNS} FROM connections
                WHERE {_LIVE} AND ({column} @> $2::jsonb OR {column} @> $3::jsonb)
                ORDER BY id""",
            integration_id,
            as_text,
            as_number,
        )
        return [WebhookConnection.from_record(r) for r in rows]

    async def all_connections(self, integration_id: int) -> list[WebhookConnection]:
        rows = await self.pool.fetch(
            f"SELECT {_CONNECTION_COLUMNS} FROM connections WHERE {_LIVE} ORDER BY id", integration_id
        )
        return [WebhookConnection.from_record(r) for r in rows]

    async def webhook_functions(self, integration_id: int) -> list[WebhookFunction]:
        rows = await self.pool.fetch(
            """SELECT id, name, webhook_subscriptions FROM functions
               WHERE integration_id = $1 AND type = 'sync' AND enabled AND cardinality(webhook_subscriptions) > 0
               ORDER BY name""",
            integration_id,
        )
        return [WebhookFunction(str(r["id"]), r["name"], frozenset(r["webhook_subscriptions"])) for r in rows]

    async def syncs(self, connection_row_ids: Sequence[int], function_ids: Sequence[str]) -> list[WebhookSync]:
        rows = await self.pool.fetch(
            """SELECT id, connection_id, function_id, variant FROM syncs
               WHERE connection_id = ANY($1::bigint[]) AND function_id = ANY($2::uuid[])
               ORDER BY connection_id, name, variant""",
            list(connection_row_ids),
            list(function_ids),
        )
        return [WebhookSync(str(r["id"]), r["connection_id"], str(r["function_id"]), r["variant"]) for r in rows]
