"""Per-environment webhook settings: where outgoing webhooks go, what they are sent for, and the key
that signs them (reference §7.2; docs/webhooks.md).

Every environment has settings and a signing key: created with the environment, or at the first
start (or read) after the migration that introduced them. The signing key is stored sealed and is
not the environment's secret key. Reads are cached briefly (at most CACHE_SECONDS) so that jobs
asking for the key of every delivery does not cost a query each; a change made on this replica
drops the cached copy at once, so a rotated key stops signing here immediately and on other
replicas within CACHE_SECONDS.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from nango.crypto import Keyring
from nango.server import sealing
from nango.server.errors import UnknownConnection, UnknownEnvironment
from nango.server.store.webhooks import WebhookSettingsRow, WebhookSettingsStore
from nango.telemetry import register_secret

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
MAX_URL_LENGTH = 2048


def new_signing_key() -> str:
    return secrets.token_hex(32)


@dataclass(frozen=True)
class WebhookSettings:
    environment_id: int
    environment_name: str
    primary_url: str | None
    secondary_url: str | None
    on_auth_creation: bool = True
    on_auth_refresh_error: bool = True
    on_sync_error: bool = True
    on_sync_completion_always: bool = False
    on_async_action_completion: bool = True
    # plaintext; sealed at rest
    signing_key: str = field(default="", repr=False)

    def destinations(self, override: str | None) -> tuple[str, ...]:
        """override replaces both URLs (primary := override, secondary := none); empty → no webhook."""
        if override:
            return (override,)
        return tuple(dict.fromkeys(url for url in (self.primary_url, self.secondary_url) if url))

    def with_override(self, override: str | None) -> WebhookSettings:
        """These settings as a connection with this `webhook_url_override` sees them."""
        if not override:
            return self
        return WebhookSettings(
            environment_id=self.environment_id,
            environment_name=self.environment_name,
            primary_url=override,
            secondary_url=None,
            on_auth_creation=self.on_auth_creation,
            on_auth_refresh_error=self.on_auth_refresh_error,
            on_sync_error=self.on_sync_error,
            on_sync_completion_always=self.on_sync_completion_always,
            on_async_action_completion=self.on_async_action_completion,
            signing_key=self.signing_key,
        )

    def public(self) -> dict[str, Any]:
        """The REST shape of `GET /environment/webhook-settings`."""
        return {
            "primary_url": self.primary_url,
            "secondary_url": self.secondary_url,
            "on_auth_creation": self.on_auth_creation,
            "on_auth_refresh_error": self.on_auth_refresh_error,
            "on_sync_error": self.on_sync_error,
            "on_sync_completion_always": self.on_sync_completion_always,
            "on_async_action_completion": self.on_async_action_completion,
            "signing_key": self.signing_key,
        }


class WebhookSettingsService:
    def __init__(self, store: WebhookSettingsStore, keyring: Keyring, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.store = store
        self.keyring = keyring
        self.cache_seconds = min(cache_seconds, CACHE_SECONDS)
        self._cache: dict[int, tuple[float, WebhookSettings]] = {}
        # bumped by every local change: a read that started before it does not cache what it read
        self._generation = 0

    def _seal(self, environment_id: int, signing_key: str) -> str:
        return self.keyring.seal(signing_key, aad=sealing.environment_webhook_signing_key(environment_id))

    def _open(self, row: WebhookSettingsRow) -> WebhookSettings:
        key = self.keyring.open_text(
            row.signing_key_sealed, aad=sealing.environment_webhook_signing_key(row.environment_id)
        )
        register_secret(key)
        return WebhookSettings(
            environment_id=row.environment_id,
            environment_name=row.environment_name,
            primary_url=row.primary_url,
            secondary_url=row.secondary_url,
            on_auth_creation=row.on_auth_creation,
            on_auth_refresh_error=row.on_auth_refresh_error,
            on_sync_error=row.on_sync_error,
            on_sync_completion_always=row.on_sync_completion_always,
            on_async_action_completion=row.on_async_action_completion,
            signing_key=key,
        )

    async def create_for(self, environment_id: int, conn: Any = None) -> None:
        """Give a new environment its settings and signing key (in `conn`'s transaction when given)."""
        await self.store.create(environment_id, self._seal(environment_id, new_signing_key()), conn)

    async def ensure_all(self) -> int:
        """Settings for every environment that has none yet (after the migration); returns how many."""
        missing = await self.store.environments_without_settings()
        for environment_id in missing:
            await self.create_for(environment_id)
        if missing:
            log.info("webhook signing keys created", extra={"environments": len(missing)})
        return len(missing)

    async def get(self, environment_id: int) -> WebhookSettings:
        """The environment's settings (cached at most CACHE_SECONDS); UnknownEnvironment when there is none."""
        now = time.monotonic()
        cached = self._cache.get(environment_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        generation = self._generation
        row = await self.store.get(environment_id)
        if row is None:
            if not await self.store.environment_exists(environment_id):
                raise UnknownEnvironment(f"environment {environment_id} does not exist")
            await self.create_for(environment_id)
            row = await self.store.get(environment_id)
            if row is None:
                raise UnknownEnvironment(f"environment {environment_id} does not exist")
        settings = self._open(row)
        if len(self._cache) > 10_000:
            self._cache.clear()
        if generation == self._generation:
            self._cache[environment_id] = (now + self.cache_seconds, settings)
        return settings

    def _forget(self, environment_id: int) -> None:
        self._generation += 1
        self._cache.pop(environment_id, None)

    async def update(self, environment_id: int, changes: dict[str, Any]) -> WebhookSettings:
        """Change some URLs and toggles (already validated); answers the new settings."""
        await self.get(environment_id)
        await self.store.update(environment_id, changes)
        self._forget(environment_id)
        return await self.get(environment_id)

    async def rotate_signing_key(self, environment_id: int) -> str:
        """A new signing key, in force at once on this replica (within CACHE_SECONDS on the others)."""
        await self.get(environment_id)
        key = new_signing_key()
        await self.store.replace_signing_key(environment_id, self._seal(environment_id, key))
        self._forget(environment_id)
        register_secret(key)
        log.info("webhook signing key rotated", extra={"environment_id": environment_id})
        return key

    async def for_connection(self, environment_id: int, nango_connection_id: int) -> WebhookSettings:
        """The settings as one connection sees them: its `webhook_url_override` replaces the URLs.
        UnknownConnection when the environment has no such live connection."""
        settings = await self.get(environment_id)
        found, override = await self.store.connection_override(environment_id, nango_connection_id)
        if not found:
            raise UnknownConnection(f"connection {nango_connection_id} does not exist in environment {environment_id}")
        return settings.with_override(override)


__all__ = ["CACHE_SECONDS", "MAX_URL_LENGTH", "WebhookSettings", "WebhookSettingsService", "new_signing_key"]
