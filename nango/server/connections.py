"""Connections: stored credentials, kept fresh on read under a lock shared by every replica."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from nango.crypto import Keyring
from nango.kv import KVStore, LockTimeout
from nango.oplog import OperationsLog
from nango.providers import Provider
from nango.server import sealing
from nango.server.auth import credentials as creds
from nango.server.auth.oauth2 import TokenRequestFailed
from nango.server.credential_cache import CredentialCache
from nango.server.errors import (
    InvalidCredentials,
    RefreshBackoff,
    RefreshExhausted,
    UnknownConnection,
    UnknownProviderConfig,
)
from nango.server.integrations import Integration, IntegrationService
from nango.server.refresh import Refresher, buffer
from nango.server.store.connections import ConnectionFilter, ConnectionRow, ConnectionStore, EndUserValues
from nango.server.webhooks.auth import AuthError, AuthWebhooks
from nango.server.webhooks.settings import WebhookSettings

log = logging.getLogger(__name__)

BACKOFF = timedelta(seconds=30)
EXHAUSTED_AFTER_DAYS = 4
LOCK_TTL = 10.0
LOCK_WAIT = 12.0
# last_fetched_at is informational; writing it on every read would double the cost of a read.
FETCHED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Connection:
    row: ConnectionRow
    credentials: dict[str, Any]

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def connection_id(self) -> str:
        return self.row.connection_id

    @property
    def provider_config_key(self) -> str:
        return self.row.provider_config_key


class ConnectionListener(Protocol):
    async def connection_created(self, connection: Connection) -> None: ...

    async def connection_deleted(self, connection: Connection) -> None: ...


@dataclass(frozen=True)
class NewConnection:
    """What an auth flow or an import hands over to be stored."""

    integration: Integration
    connection_id: str
    auth_mode: str
    credentials: dict[str, Any]
    connection_config: dict[str, Any]
    metadata: dict[str, Any] | None = None
    tags: dict[str, str] | None = None
    end_user: EndUserValues | None = None
    webhook_url_override: str | None = None


class ConnectionService:
    def __init__(
        self,
        store: ConnectionStore,
        integrations: IntegrationService,
        keyring: Keyring,
        kv: KVStore,
        refresher: Refresher,
        oplog: OperationsLog,
        *,
        cache_seconds: float = 0.0,
        auth_webhooks: AuthWebhooks | None = None,
    ) -> None:
        self.store = store
        self.integrations = integrations
        self.keyring = keyring
        self.kv = kv
        self.refresher = refresher
        self.oplog = oplog
        self.cache = CredentialCache(cache_seconds)
        # what must follow a connection's creation or deletion (e.g. its syncs' schedules)
        self.listeners: list[ConnectionListener] = []
        # creation, override and refresh failure announced in the transaction that stores them
        self.auth_webhooks = auth_webhooks

    def _seal(self, row_uuid: str, credentials: dict[str, Any]) -> str:
        return self.keyring.seal(
            json.dumps(credentials, separators=(",", ":")), aad=sealing.connection_credentials(row_uuid)
        )

    def open(self, row: ConnectionRow) -> Connection:
        return Connection(
            row, json.loads(self.keyring.open(row.credentials_sealed, aad=sealing.connection_credentials(row.uuid)))
        )

    async def search(self, query: ConnectionFilter) -> list[ConnectionRow]:
        return await self.store.search(query)

    async def find(self, environment_id: int, provider_config_key: str, connection_id: str) -> Connection | None:
        row = await self.store.get_by_key(environment_id, provider_config_key, connection_id)
        return self.open(row) if row else None

    async def get(self, environment_id: int, provider_config_key: str, connection_id: str) -> Connection:
        found = await self.find(environment_id, provider_config_key, connection_id)
        if found is None:
            if await self.integrations.find(environment_id, provider_config_key) is None:
                raise UnknownProviderConfig()
            raise UnknownConnection()
        return found

    async def _webhook_settings(self, environment_id: int) -> WebhookSettings | None:
        return await self.auth_webhooks.settings.get(environment_id) if self.auth_webhooks else None

    async def save(self, new: NewConnection) -> tuple[Connection, bool]:
        """Create the connection, or override the live one with the same id. Returns (connection, created).
        The auth webhook (`creation` or `override`) is written in the same transaction."""
        settings = await self._webhook_settings(new.integration.environment_id)

        async def announce(conn: Any, row: ConnectionRow, created: bool) -> None:
            if self.auth_webhooks is not None and settings is not None:
                await self.auth_webhooks.connection_saved(conn, row, created, settings)

        row, created = await self.store.upsert(
            row_uuid=str(uuid.uuid4()),
            environment_id=new.integration.environment_id,
            integration_id=new.integration.id,
            connection_id=new.connection_id,
            auth_mode=new.auth_mode,
            credentials_sealed=None,
            seal=lambda row_uuid: self._seal(row_uuid, new.credentials),
            credentials_expires_at=creds.expires_at(new.credentials),
            connection_config=new.connection_config,
            metadata=new.metadata,
            tags=new.tags,
            end_user=new.end_user,
            webhook_url_override=new.webhook_url_override,
            in_transaction=announce,
        )
        self.cache.forget((new.integration.environment_id, new.integration.unique_key, new.connection_id))
        connection = self.open(row)
        if created:
            for listener in self.listeners:
                await listener.connection_created(connection)
        return connection, created

    async def get_fresh(
        self, environment_id: int, provider_config_key: str, connection_id: str, *, force_refresh: bool = False
    ) -> Connection:
        """The connection with credentials valid now, refreshing them when they are due."""
        connection = await self.get(environment_id, provider_config_key, connection_id)
        fresh = await self.ensure_fresh(connection, force=force_refresh)
        last = fresh.row.last_fetched_at
        if last is None or creds.now() - last > FETCHED_RESOLUTION:
            await self.store.touch_fetched(fresh.id)
        return fresh

    async def get_fresh_cached(self, environment_id: int, provider_config_key: str, connection_id: str) -> Connection:
        """`get_fresh` for hot paths: a connection read in the last few seconds is reused, until its
        credentials come due for a refresh or this replica changes it."""
        key = (environment_id, provider_config_key, connection_id)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        fresh = await self.get_fresh(environment_id, provider_config_key, connection_id)
        self.cache.put(key, fresh, fresh_for=self._fresh_for(fresh))
        return fresh

    def _fresh_for(self, connection: Connection) -> float | None:
        """Seconds until the credentials are due for a refresh; None when they never are."""
        provider = self.integrations.provider(connection.row.provider)
        expires = creds.expires_at(connection.credentials)
        if provider is None or expires is None:
            return None
        return (expires - buffer(provider) - creds.now()).total_seconds()

    async def ensure_fresh(self, connection: Connection, *, force: bool) -> Connection:
        provider = self.integrations.provider(connection.row.provider)
        # most reads need no refresh: decide before loading anything else
        if provider is None or not self.refresher.due(
            provider, connection.row.provider, connection.credentials, force=force
        ):
            return connection
        integration = await self.integrations.get_by_id(connection.row.integration_id)
        if integration is None:
            return connection
        if not force:
            self._check_backoff(connection.row)
        key = (
            f"lock:refresh:{connection.row.environment_id}:{connection.provider_config_key}:{connection.connection_id}"
        )
        try:
            async with self.kv.lock(key, ttl=LOCK_TTL, wait=LOCK_WAIT):
                current_row = await self.store.get_by_id(connection.id)
                if current_row is None:
                    raise UnknownConnection()
                current = self.open(current_row)
                # another replica may have refreshed while we waited for the lock
                if current_row.credentials_sealed != connection.row.credentials_sealed and not self.refresher.due(
                    provider, current_row.provider, current.credentials, force=False
                ):
                    return current
                return await self._refresh(current, integration, provider)
        except LockTimeout:
            latest = await self.store.get_by_id(connection.id)
            return self.open(latest) if latest else connection

    def _check_backoff(self, row: ConnectionRow) -> None:
        if row.refresh_exhausted:
            raise RefreshExhausted()
        if row.last_refresh_failure is not None and creds.now() - row.last_refresh_failure < BACKOFF:
            raise RefreshBackoff()

    async def _refresh(self, connection: Connection, integration: Integration, provider: Provider) -> Connection:
        operation = self.oplog.start(
            "auth",
            "refresh_token",
            state="running",
            environment_id=connection.row.environment_id,
            provider_config_key=connection.provider_config_key,
            provider=connection.row.provider,
            connection_id=connection.connection_id,
            nango_connection_id=connection.id,
        )
        try:
            refreshed = await self.refresher.refresh(
                provider, integration, connection.credentials, connection.row.connection_config
            )
        except TokenRequestFailed as exc:
            operation.fail({"type": exc.error_type, "description": exc.description})
            row = await self._record_refresh_failure(
                connection, operation.id, AuthError(exc.error_type, exc.description)
            )
            log.info(
                "credential refresh failed",
                extra={
                    "connection": connection.id,
                    "error_type": exc.error_type,
                    "exhausted": bool(row and row.refresh_exhausted),
                },
            )
            raise InvalidCredentials(
                f"The credentials could not be refreshed: {exc.error_type}: {exc.description}",
                payload={"error": {"type": exc.error_type, "description": exc.description}},
            ) from None
        except creds.TokenResponseError as exc:
            operation.fail({"type": "invalid_token_response", "description": str(exc)})
            await self._record_refresh_failure(connection, operation.id, AuthError("invalid_token_response", str(exc)))
            raise InvalidCredentials(f"The credentials could not be refreshed: {exc}") from None
        await self.store.store_refreshed(
            connection.id,
            self._seal(connection.row.uuid, refreshed.credentials),
            refreshed.expires_at,
            refreshed.connection_config,
        )
        self.cache.forget_id(connection.id)
        operation.succeed()
        row = await self.store.get_by_id(connection.id)
        if row is None:
            raise UnknownConnection()
        return self.open(row)

    async def _record_refresh_failure(
        self, connection: Connection, log_id: str, error: AuthError
    ) -> ConnectionRow | None:
        """Count the failure; the `refresh` auth webhook is written in the same transaction."""
        settings = await self._webhook_settings(connection.row.environment_id)

        async def announce(conn: Any, row: ConnectionRow) -> None:
            if self.auth_webhooks is not None and settings is not None:
                await self.auth_webhooks.refresh_failed(conn, row, error, settings)

        return await self.store.record_refresh_failure(
            connection.id, log_id, EXHAUSTED_AFTER_DAYS, in_transaction=announce
        )

    async def set_metadata(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_ids: list[str],
        metadata: dict[str, Any],
        *,
        merge: bool,
    ) -> None:
        rows = []
        for connection_id in connection_ids:
            rows.append(await self.get(environment_id, provider_config_key, connection_id))
        await self.store.set_metadata([c.id for c in rows], metadata, merge=merge)
        for connection in rows:
            self.cache.forget_id(connection.id)

    async def patch(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        *,
        end_user: EndUserValues | None,
        tags: dict[str, str] | None,
        webhook_url_override: str | None,
        clear_webhook_url_override: bool = False,
    ) -> None:
        connection = await self.get(environment_id, provider_config_key, connection_id)
        await self.store.patch(
            connection.id,
            environment_id,
            end_user=end_user,
            tags=tags,
            webhook_url_override=webhook_url_override,
            clear_webhook_url_override=clear_webhook_url_override,
        )

    async def delete(self, environment_id: int, provider_config_key: str, connection_id: str) -> None:
        connection = await self.get(environment_id, provider_config_key, connection_id)
        for listener in self.listeners:
            await listener.connection_deleted(connection)
        await self.store.soft_delete(connection.id)
        self.cache.forget_id(connection.id)

    async def refresh_due(self, *, limit: int, stale_after: timedelta) -> int:
        """One pass of the keep-alive loop: refresh what expires soon or was not used lately."""
        now = creds.now()
        refreshed = 0
        for row_id in await self.store.due_for_refresh(now + timedelta(minutes=15), now - stale_after, limit):
            row = await self.store.get_by_id(row_id)
            if row is None:
                continue
            connection = self.open(row)
            stale = (row.last_fetched_at or row.created_at) < now - stale_after
            try:
                await self.ensure_fresh(connection, force=stale and connection.credentials.get("type") == "OAUTH2")
                refreshed += 1
            except (InvalidCredentials, RefreshBackoff, RefreshExhausted):
                continue
        return refreshed

    @staticmethod
    def expiry_of(connection: Connection) -> datetime | None:
        return creds.expires_at(connection.credentials)
