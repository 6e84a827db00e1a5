"""Connect sessions (end-user auth tokens) and OAuth sessions (auth flows in progress)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from nango.server.store.connections import EndUserRow, EndUserValues

_SESSION_COLUMNS = """s.id, s.uuid, s.environment_id, s.token_hash, s.allowed_integrations,
    s.integrations_config_defaults, s.overrides, s.webhook_url_override, s.tags, s.connection_id, s.expires_at,
    s.created_at,
    eu.end_user_id AS eu_id, eu.email AS eu_email, eu.display_name AS eu_display_name,
    eu.organization_id AS eu_org_id, eu.organization_display_name AS eu_org_name, eu.tags AS eu_tags,
    c.connection_id AS reconnect_connection_id, i.unique_key AS reconnect_integration"""

_SESSION_FROM = """FROM connect_sessions s
    LEFT JOIN end_users eu ON eu.id = s.end_user_id
    LEFT JOIN connections c ON c.id = s.connection_id AND c.deleted_at IS NULL
    LEFT JOIN integrations i ON i.id = c.integration_id"""


def _json(value: Any) -> Any:
    return json.loads(value) if value is not None else None


@dataclass(frozen=True)
class ConnectSessionRow:
    id: int
    uuid: str
    environment_id: int
    allowed_integrations: list[str] | None
    integrations_config_defaults: dict[str, Any] | None
    overrides: dict[str, Any] | None
    webhook_url_override: str | None
    tags: dict[str, str] | None
    end_user: EndUserRow | None
    connection_row_id: int | None
    reconnect_connection_id: str | None
    reconnect_integration: str | None
    expires_at: datetime
    created_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> ConnectSessionRow:
        end_user = None
        if r["eu_id"] is not None:
            end_user = EndUserRow(
                r["eu_id"], r["eu_email"], r["eu_display_name"], r["eu_org_id"], r["eu_org_name"], _json(r["eu_tags"])
            )
        return cls(
            id=r["id"],
            uuid=str(r["uuid"]),
            environment_id=r["environment_id"],
            allowed_integrations=list(r["allowed_integrations"]) if r["allowed_integrations"] is not None else None,
            integrations_config_defaults=_json(r["integrations_config_defaults"]),
            overrides=_json(r["overrides"]),
            webhook_url_override=r["webhook_url_override"],
            tags=_json(r["tags"]),
            end_user=end_user,
            connection_row_id=r["connection_id"],
            reconnect_connection_id=r["reconnect_connection_id"],
            reconnect_integration=r["reconnect_integration"],
            expires_at=r["expires_at"],
            created_at=r["created_at"],
        )


@dataclass(frozen=True)
class NewConnectSession:
    uuid: str
    environment_id: int
    token_hash: str
    token_sealed: str
    end_user: EndUserValues | None
    allowed_integrations: list[str] | None
    integrations_config_defaults: dict[str, Any] | None
    overrides: dict[str, Any] | None
    webhook_url_override: str | None
    tags: dict[str, str] | None
    connection_row_id: int | None
    expires_at: datetime


class SessionStore:
    def __init__(self, pool: asyncpg.Pool, connections: Any) -> None:
        self.pool = pool
        self._connections = connections

    async def insert_connect_session(self, new: NewConnectSession) -> ConnectSessionRow:
        async with self.pool.acquire() as conn, conn.transaction():
            end_user_pk = (
                await self._connections.upsert_end_user(conn, new.environment_id, new.end_user)
                if new.end_user
                else None
            )
            row_id = await conn.fetchval(
                """INSERT INTO connect_sessions (uuid, environment_id, token_hash, token_sealed, end_user_id,
                       allowed_integrations, integrations_config_defaults, overrides, webhook_url_override, tags,
                       connection_id, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10::jsonb, $11, $12) RETURNING id""",
                new.uuid,
                new.environment_id,
                new.token_hash,
                new.token_sealed,
                end_user_pk,
                new.allowed_integrations,
                json.dumps(new.integrations_config_defaults) if new.integrations_config_defaults is not None else None,
                json.dumps(new.overrides) if new.overrides is not None else None,
                new.webhook_url_override,
                json.dumps(new.tags) if new.tags is not None else None,
                new.connection_row_id,
                new.expires_at,
            )
            row = await conn.fetchrow(f"SELECT {_SESSION_COLUMNS} {_SESSION_FROM} WHERE s.id = $1", row_id)
        return ConnectSessionRow.from_record(row)

    async def connect_session_by_hash(self, token_hash: str) -> ConnectSessionRow | None:
        """A live (not expired) session; its last use is recorded."""
        row = await self.pool.fetchrow(
            f"""WITH touched AS (
                    UPDATE connect_sessions SET last_access_at = now()
                    WHERE token_hash = $1 AND expires_at > now() RETURNING id)
                SELECT {_SESSION_COLUMNS} {_SESSION_FROM} WHERE s.id = (SELECT id FROM touched)""",
            token_hash,
        )
        return ConnectSessionRow.from_record(row) if row else None

    async def connect_session_by_id(self, session_id: int) -> ConnectSessionRow | None:
        """A session by id, expired or not (a flow it started may finish after it expired)."""
        row = await self.pool.fetchrow(f"SELECT {_SESSION_COLUMNS} {_SESSION_FROM} WHERE s.id = $1", session_id)
        return ConnectSessionRow.from_record(row) if row else None

    async def delete_connect_session(self, session_id: int) -> None:
        await self.pool.execute("DELETE FROM connect_sessions WHERE id = $1", session_id)

    async def purge_expired_connect_sessions(self, older_than_days: int) -> int:
        status = await self.pool.execute(
            "DELETE FROM connect_sessions WHERE expires_at < now() - make_interval(days => $1)", older_than_days
        )
        return int(status.rsplit(" ", 1)[1])
