"""SQL for `oauth_sessions`: one row per OAuth authorization in progress, keyed by the `state` the
provider echoes back. A row is used once: the callback deletes it in the statement that reads it.

Its secrets (the PKCE code verifier, a per-connection client override) are sealed by the caller with
the row id bound in as associated data; this module only moves rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

# The connect-session row shape is the session store's; reusing its column list keeps both readers in step.

# Nango purges flows older than CRON_DELETE_OLD_OAUTH_SESSION_MAX_DAYS (2); an older state is refused.
MAX_AGE = timedelta(days=2)


@dataclass(frozen=True)
class NewOAuthSession:
    id: str
    environment_id: int
    integration_id: int
    provider: str
    auth_mode: str
    connection_id: str
    connect_session_id: int | None
    callback_url: str
    secrets_sealed: str
    connection_config: dict[str, Any]
    webhook_url_override: str | None
    ws_client_id: str | None


@dataclass(frozen=True)
class OAuthSessionRow:
    id: str
    environment_id: int
    integration_id: int
    provider_config_key: str
    provider: str
    auth_mode: str
    connection_id: str
    connect_session_id: int | None
    callback_url: str
    secrets_sealed: str
    connection_config: dict[str, Any]
    webhook_url_override: str | None
    ws_client_id: str | None
    created_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> OAuthSessionRow:
        return cls(
            id=str(r["id"]),
            environment_id=r["environment_id"],
            integration_id=r["integration_id"],
            provider_config_key=r["unique_key"],
            provider=r["provider"],
            auth_mode=r["auth_mode"],
            connection_id=r["connection_id"],
            connect_session_id=r["connect_session_id"],
            callback_url=r["callback_url"],
            secrets_sealed=r["secrets_sealed"],
            connection_config=json.loads(r["connection_config"]),
            webhook_url_override=r["webhook_url_override"],
            ws_client_id=r["ws_client_id"],
            created_at=r["created_at"],
        )


class OAuthSessionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def insert(self, new: NewOAuthSession) -> None:
        """Store a flow; flows abandoned long ago are purged on the way (flows start at human pace)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM oauth_sessions WHERE created_at < now() - $1::interval", MAX_AGE)
            await conn.execute(
                """INSERT INTO oauth_sessions (id, environment_id, integration_id, provider, auth_mode, connection_id,
                       connect_session_id, callback_url, secrets_sealed, connection_config, webhook_url_override,
                       ws_client_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)""",
                new.id,
                new.environment_id,
                new.integration_id,
                new.provider,
                new.auth_mode,
                new.connection_id,
                new.connect_session_id,
                new.callback_url,
                new.secrets_sealed,
                json.dumps(new.connection_config),
                new.webhook_url_override,
                new.ws_client_id,
            )

    async def take(self, session_id: str) -> OAuthSessionRow | None:
        """Delete and return the flow in one statement, so a replayed state finds nothing."""
        row = await self.pool.fetchrow(
            """DELETE FROM oauth_sessions s USING integrations i
               WHERE s.id = $1 AND i.id = s.integration_id AND s.created_at >= now() - $2::interval
               RETURNING s.*, i.unique_key""",
            session_id,
            MAX_AGE,
        )
        return OAuthSessionRow.from_record(row) if row else None
