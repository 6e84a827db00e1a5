"""Auth webhooks (reference §7.2): a connection created or re-authorised, an auth flow that failed,
a refresh that failed. Each is written into the outbox, in the transaction of the change it
announces when there is one, and sent by jobs.

Toggles: `on_auth_creation` for creations (successful or failed), `on_auth_refresh_error` for
refresh failures; an override is sent whenever there is a URL. A connection's (or its flow's)
`webhook_url_override` replaces the environment's URLs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from nango.server.store.connections import ConnectionRow, EndUserRow, EndUserValues
from nango.server.webhooks.outbox import Delivery, WebhookOutbox
from nango.server.webhooks.settings import WebhookSettings, WebhookSettingsService

log = logging.getLogger(__name__)

Operation = Literal["creation", "override", "refresh"]


@dataclass(frozen=True)
class AuthError:
    type: str
    description: str


def auth_payload(
    *,
    operation: Operation,
    connection_id: str,
    provider_config_key: str,
    auth_mode: str | None,
    provider: str,
    environment_name: str,
    success: bool,
    tags: Mapping[str, str] | None = None,
    end_user: EndUserRow | EndUserValues | None = None,
    error: AuthError | None = None,
) -> dict[str, Any]:
    """The body of an auth webhook, as Nango sends it."""
    body: dict[str, Any] = {
        "from": "nango",
        "type": "auth",
        "operation": operation,
        "connectionId": connection_id,
        "providerConfigKey": provider_config_key,
        "authMode": auth_mode or "unknown",
        "provider": provider,
        "environment": environment_name,
        "success": success,
    }
    if tags:
        body["tags"] = dict(tags)
    if end_user is not None:
        user: dict[str, Any] = {"endUserId": end_user.end_user_id}
        if end_user.email:
            user["endUserEmail"] = end_user.email
        if end_user.organization_id:
            user["organizationId"] = end_user.organization_id
        user["tags"] = dict(end_user.tags or {})
        body["endUser"] = user
    if error is not None:
        body["error"] = {"type": error.type, "description": error.description}
    return body


class AuthWebhooks:
    def __init__(self, settings: WebhookSettingsService, outbox: WebhookOutbox) -> None:
        self.settings = settings
        self.outbox = outbox

    def _delivery(self, settings: WebhookSettings, override: str | None, body: dict[str, Any]) -> Delivery | None:
        urls = settings.destinations(override)
        if not urls:
            return None
        return Delivery(
            environment_id=settings.environment_id,
            type="auth",
            body=body,
            urls=urls,
            connection_id=body["connectionId"],
            provider_config_key=body["providerConfigKey"],
        )

    def _for_row(
        self,
        settings: WebhookSettings,
        row: ConnectionRow,
        operation: Operation,
        *,
        error: AuthError | None = None,
    ) -> Delivery | None:
        body = auth_payload(
            operation=operation,
            connection_id=row.connection_id,
            provider_config_key=row.provider_config_key,
            auth_mode=row.auth_mode,
            provider=row.provider,
            environment_name=settings.environment_name,
            success=error is None,
            tags=row.tags,
            end_user=row.end_user,
            error=error,
        )
        return self._delivery(settings, row.webhook_url_override, body)

    async def connection_saved(
        self, conn: asyncpg.Connection, row: ConnectionRow, created: bool, settings: WebhookSettings
    ) -> None:
        """A connection was created (`creation`) or re-authorised (`override`); `conn` is the
        transaction that stored it."""
        if created and not settings.on_auth_creation:
            return
        delivery = self._for_row(settings, row, "creation" if created else "override")
        if delivery is not None:
            await self.outbox.add([delivery], conn)

    async def refresh_failed(
        self, conn: asyncpg.Connection, row: ConnectionRow, error: AuthError, settings: WebhookSettings
    ) -> None:
        """Refreshing the connection's credentials failed; `conn` is the transaction that recorded it."""
        if not settings.on_auth_refresh_error:
            return
        delivery = self._for_row(settings, row, "refresh", error=error)
        if delivery is not None:
            await self.outbox.add([delivery], conn)

    async def creation_failed(
        self,
        *,
        environment_id: int,
        connection_id: str,
        provider_config_key: str,
        provider: str,
        auth_mode: str | None,
        error: AuthError,
        tags: Mapping[str, str] | None = None,
        end_user: EndUserRow | EndUserValues | None = None,
        webhook_url_override: str | None = None,
    ) -> None:
        """An auth flow failed before any connection was stored (nothing to share a transaction with)."""
        settings = await self.settings.get(environment_id)
        if not settings.on_auth_creation:
            return
        body = auth_payload(
            operation="creation",
            connection_id=connection_id,
            provider_config_key=provider_config_key,
            auth_mode=auth_mode,
            provider=provider,
            environment_name=settings.environment_name,
            success=False,
            tags=tags,
            end_user=end_user,
            error=error,
        )
        delivery = self._delivery(settings, webhook_url_override, body)
        if delivery is not None:
            await self.outbox.add([delivery])


__all__ = ["AuthError", "AuthWebhooks", "auth_payload"]
