"""How domain objects look on the public API (the shapes `@nangohq/node` expects)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from nango.providers import Provider
from nango.server.auth.credentials import public_view
from nango.server.connections import Connection
from nango.server.gateway.context import Gateway
from nango.server.integrations import Integration
from nango.server.store.connections import ConnectionRow, EndUserRow


def js_date(value: datetime | None) -> str | None:
    """ISO-8601 with milliseconds and Z, as JavaScript's Date.toISOString prints it."""
    if value is None:
        return None
    return _js_date(value)


# a connection read prints the same few dates again and again; equal instants print the same text
@functools.lru_cache(maxsize=8192)
def _js_date(value: datetime) -> str:
    v = value if value.tzinfo is UTC else value.astimezone(UTC)
    # formatted field by field: strftime costs several times as much, on every connection read
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}."
        f"{v.microsecond // 1000:03d}Z"
    )


def integration_credentials(integration: Integration, provider: Provider | None) -> dict[str, Any] | None:
    mode = provider.auth_mode if provider else None
    if mode == "APP":
        return {
            "type": "APP",
            "app_id": integration.client_id,
            "private_key": integration.client_secret,
            "app_link": integration.app_link,
        }
    if mode == "CUSTOM":
        custom = integration.custom or {}
        return {
            "type": "CUSTOM",
            "client_id": integration.client_id,
            "client_secret": integration.client_secret,
            "app_id": custom.get("app_id"),
            "app_link": integration.app_link,
            "private_key": custom.get("private_key"),
        }
    if integration.client_id is None and integration.client_secret is None:
        return None
    return {
        "type": mode if mode in ("OAUTH1", "TBA") else "OAUTH2",
        "client_id": integration.client_id,
        "client_secret": integration.client_secret,
        "scopes": integration.scopes,
        "webhook_secret": integration.webhook_secret,
    }


def public_integration(
    gw: Gateway, integration: Integration, environment_uuid: str, include: set[str]
) -> dict[str, Any]:
    provider = gw.integrations.provider(integration.provider)
    body: dict[str, Any] = {
        "unique_key": integration.unique_key,
        "display_name": integration.display_name or (provider.display_name if provider else integration.provider),
        "provider": integration.provider,
        "logo": gw.logo_url(integration.provider),
        "forward_webhooks": integration.forward_webhooks,
        "created_at": js_date(integration.created_at),
        "updated_at": js_date(integration.updated_at),
    }
    if "webhook" in include:
        body["webhook_url"] = gw.webhook_url(environment_uuid, integration.unique_key)
    if "credentials" in include:
        body["credentials"] = integration_credentials(integration, provider)
    return body


def end_user_view(end_user: EndUserRow | None) -> dict[str, Any] | None:
    if end_user is None:
        return None
    organization = None
    if end_user.organization_id is not None:
        organization = {"id": end_user.organization_id, "display_name": end_user.organization_display_name}
    return {
        "id": end_user.end_user_id,
        "display_name": end_user.display_name,
        "email": end_user.email,
        "tags": end_user.tags,
        "organization": organization,
    }


def public_connection(row: ConnectionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "connection_id": row.connection_id,
        "provider_config_key": row.provider_config_key,
        "provider": row.provider,
        "errors": row.errors,
        "end_user": end_user_view(row.end_user),
        "tags": row.tags,
        "metadata": row.metadata,
        "created": js_date(row.created_at),
    }


def public_connection_full(connection: Connection, *, include_refresh_token: bool) -> dict[str, Any]:
    row = connection.row
    return {
        "id": row.id,
        "connection_id": row.connection_id,
        "provider_config_key": row.provider_config_key,
        "provider": row.provider,
        "errors": row.errors,
        "end_user": end_user_view(row.end_user),
        "tags": row.tags,
        "metadata": row.metadata,
        "connection_config": row.connection_config,
        "webhook_url_override": row.webhook_url_override,
        "created_at": js_date(row.created_at),
        "updated_at": js_date(row.updated_at),
        "last_fetched_at": js_date(row.last_fetched_at),
        "credentials": public_view(connection.credentials, include_refresh_token=include_refresh_token),
    }
