"""Connect sessions (reference §3.1): short-lived tokens that let an end user connect an account.

A token is `nango_connect_session_<64 hex>`, shown once. The database keeps its SHA-256 (to find
it; the token has 256 bits of entropy, so a slow hash would buy nothing) and its sealed value.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, model_validator

from nango.crypto import Keyring, sha256_hex
from nango.errors import InvalidBody, Unauthenticated
from nango.server import sealing
from nango.server.auth.credentials import now
from nango.server.connections import ConnectionService
from nango.server.errors import UnknownConnection
from nango.server.inputs import (
    ConnectionId,
    EndUserInput,
    OrganizationInput,
    ProviderConfigKey,
    Strict,
    Tags,
    end_user_values,
)
from nango.server.integrations import IntegrationService
from nango.server.store.sessions import ConnectSessionRow, NewConnectSession, SessionStore

TTL = timedelta(minutes=30)
TOKEN_PREFIX = "nango_connect_session_"  # noqa: S105 - the public token prefix
_TOKEN = re.compile(r"^nango_connect_session_[0-9a-f]{64}$")


class InvalidConnectSessionTokenFormat(Unauthenticated):
    code = "invalid_connect_session_token_format"
    default_message = "Invalid connect session token format. Correct format: nango_connect_session_RANDOM"


class UnknownConnectSessionToken(Unauthenticated):
    code = "unknown_connect_session_token"
    default_message = "The connect session token is unknown or expired"


class IntegrationDefaults(Strict):
    user_scopes: str | None = Field(None, max_length=4096)
    authorization_params: dict[str, str] | None = None
    connection_config: dict[str, Any] | None = None


class Override(Strict):
    docs_connect: str | None = Field(None, max_length=2048, pattern=r"^https?://")


class CreateConnectSession(Strict):
    end_user: EndUserInput | None = None
    organization: OrganizationInput | None = None
    allowed_integrations: list[ProviderConfigKey] | None = Field(None, max_length=1000)
    integrations_config_defaults: dict[str, IntegrationDefaults] | None = None
    overrides: dict[str, Override] | None = None
    webhook_url_override: str | None = Field(None, max_length=1024, pattern=r"^https?://")
    tags: Tags | None = None

    @model_validator(mode="after")
    def _who(self) -> CreateConnectSession:
        if self.end_user is None and self.tags is None:
            raise ValueError("end_user is required unless tags are given")
        return self


class ReconnectSession(Strict):
    connection_id: ConnectionId
    integration_id: ProviderConfigKey
    end_user: EndUserInput | None = None
    organization: OrganizationInput | None = None
    integrations_config_defaults: dict[str, IntegrationDefaults] | None = None
    overrides: dict[str, Override] | None = None
    webhook_url_override: str | None = Field(None, max_length=1024, pattern=r"^https?://")
    tags: Tags | None = None


@dataclass(frozen=True)
class IssuedSession:
    token: str
    session: ConnectSessionRow


class ConnectSessionService:
    def __init__(
        self, store: SessionStore, keyring: Keyring, integrations: IntegrationService, connections: ConnectionService
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.integrations = integrations
        self.connections = connections

    async def _check_integrations(self, environment_id: int, keys: list[str] | None, field: str) -> None:
        known = {i.unique_key for i in await self.integrations.all(environment_id)}
        missing = [(index, key) for index, key in enumerate(keys or []) if key not in known]
        if missing:
            errors = [
                {"code": "custom", "message": f"Integration does not exist: {key}", "path": [field, index]}
                for index, key in missing
            ]
            raise InvalidBody(f"Integration does not exist: {missing[0][1]}", errors=errors)

    async def _issue(
        self,
        environment_id: int,
        *,
        end_user: EndUserInput | None,
        organization: OrganizationInput | None,
        allowed_integrations: list[str] | None,
        defaults: dict[str, IntegrationDefaults] | None,
        overrides: dict[str, Override] | None,
        webhook_url_override: str | None,
        tags: dict[str, str] | None,
        connection_row_id: int | None,
    ) -> IssuedSession:
        token = TOKEN_PREFIX + secrets.token_hex(32)
        session_uuid = str(uuid.uuid4())
        row = await self.store.insert_connect_session(
            NewConnectSession(
                uuid=session_uuid,
                environment_id=environment_id,
                token_hash=sha256_hex(token),
                token_sealed=self.keyring.seal(token, aad=sealing.connect_session_token(session_uuid)),
                end_user=end_user_values(end_user, organization),
                allowed_integrations=allowed_integrations,
                integrations_config_defaults={k: v.model_dump(exclude_none=True) for k, v in defaults.items()}
                if defaults
                else None,
                overrides={k: v.model_dump(exclude_none=True) for k, v in overrides.items()} if overrides else None,
                webhook_url_override=webhook_url_override,
                tags=tags,
                connection_row_id=connection_row_id,
                expires_at=now() + TTL,
            )
        )
        return IssuedSession(token, row)

    async def create(self, environment_id: int, body: CreateConnectSession) -> IssuedSession:
        await self._check_integrations(environment_id, body.allowed_integrations, "allowed_integrations")
        await self._check_integrations(
            environment_id, list(body.integrations_config_defaults or {}), "integrations_config_defaults"
        )
        return await self._issue(
            environment_id,
            end_user=body.end_user,
            organization=body.organization,
            allowed_integrations=body.allowed_integrations,
            defaults=body.integrations_config_defaults,
            overrides=body.overrides,
            webhook_url_override=body.webhook_url_override,
            tags=body.tags,
            connection_row_id=None,
        )

    async def reconnect(self, environment_id: int, body: ReconnectSession) -> IssuedSession:
        connection = await self.connections.find(environment_id, body.integration_id, body.connection_id)
        if connection is None:
            raise UnknownConnection(http_status=400)
        return await self._issue(
            environment_id,
            end_user=body.end_user,
            organization=body.organization,
            allowed_integrations=[body.integration_id],
            defaults=body.integrations_config_defaults,
            overrides=body.overrides,
            webhook_url_override=body.webhook_url_override,
            tags=body.tags,
            connection_row_id=connection.id,
        )

    async def authenticate(self, token: str) -> ConnectSessionRow:
        if not _TOKEN.match(token):
            raise InvalidConnectSessionTokenFormat()
        session = await self.store.connect_session_by_hash(sha256_hex(token))
        if session is None:
            raise UnknownConnectSessionToken()
        return session

    async def delete(self, session: ConnectSessionRow) -> None:
        await self.store.delete_connect_session(session.id)

    @staticmethod
    def expires_at(session: ConnectSessionRow) -> datetime:
        return session.expires_at
