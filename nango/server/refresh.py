"""Deciding when credentials are due, and obtaining new ones (reference §4.7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from nango.providers import Provider
from nango.server.auth import credentials as creds
from nango.server.auth.oauth2 import ClientCredentials, OAuth2Client, TokenRequestFailed
from nango.server.integrations import Integration

DEFAULT_BUFFER = timedelta(minutes=15)
# Providers whose tokens are only refreshed on demand (their refresh rotates long-lived tokens).
_FORCE_ONLY = frozenset({"facebook", "instagram", "threads"})


@dataclass(frozen=True)
class Refreshed:
    credentials: dict[str, Any]
    expires_at: datetime | None
    connection_config: dict[str, Any] = field(default_factory=dict)


class TokenMinter(Protocol):
    """Regenerates tokens for modes that sign their own (APP installation tokens, JWT)."""

    async def mint(
        self,
        provider: Provider,
        integration: Integration,
        credentials: dict[str, Any],
        connection_config: dict[str, Any],
    ) -> Refreshed: ...


def buffer(provider: Provider) -> timedelta:
    if provider.token_expiration_buffer is not None:
        return timedelta(seconds=provider.token_expiration_buffer)
    return DEFAULT_BUFFER


def client_for(
    integration: Integration, credentials: dict[str, Any], connection_config: dict[str, Any]
) -> ClientCredentials:
    """The OAuth client to use: a per-connection override wins over the integration's app."""
    override = credentials.get("config_override") or {}
    client_id = override.get("client_id") or connection_config.get("oauth_client_id_override") or integration.client_id
    secret = (
        override.get("client_secret")
        or connection_config.get("oauth_client_secret_override")
        or integration.client_secret
    )
    if not client_id or not secret:
        raise TokenRequestFailed("missing_client_credentials", "the integration has no client id or secret")
    return ClientCredentials(str(client_id), str(secret))


class Refresher:
    def __init__(self, oauth2: OAuth2Client, minters: dict[str, TokenMinter] | None = None) -> None:
        self.oauth2 = oauth2
        self.minters = minters or {}

    def due(self, provider: Provider, provider_name: str, credentials: dict[str, Any], *, force: bool) -> bool:
        mode = credentials.get("type")
        if mode == "OAUTH2":
            if not credentials.get("refresh_token"):
                return False
            if force:
                return True
            if provider_name in _FORCE_ONLY:
                return False
        elif mode in ("OAUTH2_CC", "APP", "CUSTOM", "JWT"):
            if force:
                return True
        else:
            return False
        expires_at = creds.expires_at(credentials)
        return expires_at is not None and expires_at - creds.now() < buffer(provider)

    async def refresh(
        self,
        provider: Provider,
        integration: Integration,
        credentials: dict[str, Any],
        connection_config: dict[str, Any],
    ) -> Refreshed:
        mode = credentials.get("type")
        if mode == "OAUTH2":
            raw = await self.oauth2.refresh(
                provider,
                client_for(integration, credentials, connection_config),
                refresh_token=str(credentials["refresh_token"]),
                connection_config=connection_config,
            )
            fresh = creds.oauth2_credentials(
                raw,
                expires_in_unit=provider.expires_in_unit,
                alternate_path=provider.alternate_access_token_response_path,
                previous_refresh_token=str(credentials["refresh_token"]),
            )
            if credentials.get("config_override"):
                fresh["config_override"] = credentials["config_override"]
            return Refreshed(fresh, creds.expires_at(fresh))
        if mode == "OAUTH2_CC":
            client = ClientCredentials(str(credentials["client_id"]), str(credentials["client_secret"]))
            raw = await self.oauth2.client_credentials(
                provider, client, scopes=integration.scope_list, connection_config=connection_config
            )
            fresh = creds.client_credentials(
                raw,
                client_id=client.client_id,
                client_secret=client.client_secret,
                expires_in_unit=provider.expires_in_unit,
            )
            for extra in ("client_certificate", "client_private_key"):
                if credentials.get(extra):
                    fresh[extra] = credentials[extra]
            return Refreshed(fresh, creds.expires_at(fresh))
        minter = self.minters.get(str(mode))
        if minter is None:
            raise TokenRequestFailed("unsupported_auth_mode", f"{mode} credentials cannot be refreshed")
        return await minter.mint(provider, integration, credentials, connection_config)
