"""Integrations: create, read, update, delete, with client secrets sealed at rest (reference §3.3)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from nango.crypto import Keyring
from nango.errors import InvalidBody
from nango.providers import CatalogRef, Provider
from nango.server import sealing
from nango.server.errors import IncompatibleCredentials, IntegrationExists, UnknownProviderConfig
from nango.server.inputs import Strict
from nango.server.store.integrations import IntegrationRow, IntegrationStore, IntegrationValues

UNIQUE_KEY = r"^[a-zA-Z0-9~:.@ _-]+$"
SCOPES = r"^[0-9a-zA-Z:/_.*-]+(,[0-9a-zA-Z:/_.*-]+)*$"
_PEM = re.compile(r"^-----BEGIN (RSA )?PRIVATE KEY-----")

# Provider auth modes that take OAuth client credentials on the integration.
_OAUTH_CLIENT_MODES = {"OAUTH2", "OAUTH2_CC", "MCP_OAUTH2", "OAUTH1", "TBA", "CUSTOM"}


class OAuthCredentialsInput(Strict):
    type: Literal["OAUTH1", "OAUTH2", "TBA"]
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: str = Field(min_length=1)
    scopes: str | None = Field(None, pattern=SCOPES)
    webhook_secret: str | None = Field(None, max_length=255)


class _AppFields(Strict):
    app_id: str = Field(min_length=1, max_length=255)
    app_link: str = Field(min_length=1, max_length=1024)
    private_key: str = Field(min_length=1)

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: str) -> str:
        if not _PEM.match(value.strip()):
            raise ValueError("private_key must be a PEM private key (-----BEGIN RSA PRIVATE KEY-----)")
        return value


class AppCredentialsInput(_AppFields):
    type: Literal["APP"]


class CustomCredentialsInput(_AppFields):
    type: Literal["CUSTOM"]
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: str = Field(min_length=1)


CredentialsInput = OAuthCredentialsInput | AppCredentialsInput | CustomCredentialsInput


class CreateIntegration(Strict):
    provider: str = Field(min_length=1, max_length=255)
    unique_key: str = Field(min_length=1, max_length=255, pattern=UNIQUE_KEY)
    display_name: str | None = Field(None, min_length=1, max_length=255)
    credentials: CredentialsInput | None = Field(None, discriminator="type")
    forward_webhooks: bool | None = None
    integration_config: dict[str, str] | None = None
    custom: dict[str, str] | None = None


class UpdateIntegration(Strict):
    unique_key: str | None = Field(None, min_length=1, max_length=255, pattern=UNIQUE_KEY)
    display_name: str | None = Field(None, min_length=1, max_length=255)
    credentials: CredentialsInput | None = Field(None, discriminator="type")
    forward_webhooks: bool | None = None
    integration_config: dict[str, str] | None = None
    custom: dict[str, str] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> UpdateIntegration:
        if not self.model_fields_set:
            raise ValueError("at least one field must be given")
        return self


@dataclass(frozen=True)
class Integration:
    id: int
    uuid: str
    environment_id: int
    unique_key: str
    provider: str
    display_name: str | None
    client_id: str | None
    client_secret: str | None
    scopes: str | None
    app_link: str | None
    webhook_secret: str | None
    custom: dict[str, str] | None
    integration_config: dict[str, Any]
    forward_webhooks: bool
    created_at: datetime
    updated_at: datetime

    @property
    def scope_list(self) -> list[str]:
        return [s for s in (self.scopes or "").split(",") if s]


class IntegrationService:
    def __init__(self, store: IntegrationStore, keyring: Keyring, providers: CatalogRef) -> None:
        self.store = store
        self.keyring = keyring
        self.providers = providers

    def provider(self, name: str) -> Provider | None:
        return self.providers.current.get(name)

    def _open(self, row: IntegrationRow) -> Integration:
        def unseal(value: str | None, field: str) -> str | None:
            return (
                None if value is None else self.keyring.open_text(value, aad=sealing.integration_field(row.uuid, field))
            )

        custom = unseal(row.custom_sealed, "custom")
        return Integration(
            id=row.id,
            uuid=row.uuid,
            environment_id=row.environment_id,
            unique_key=row.unique_key,
            provider=row.provider,
            display_name=row.display_name,
            client_id=row.client_id,
            client_secret=unseal(row.client_secret_sealed, "client_secret"),
            scopes=row.scopes,
            app_link=row.app_link,
            webhook_secret=unseal(row.webhook_secret_sealed, "webhook_secret"),
            custom=json.loads(custom) if custom is not None else None,
            integration_config=row.integration_config,
            forward_webhooks=row.forward_webhooks,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def _values(self, integration: Integration) -> IntegrationValues:
        def seal(value: str | None, field: str) -> str | None:
            return (
                None
                if value is None
                else self.keyring.seal(value, aad=sealing.integration_field(integration.uuid, field))
            )

        return IntegrationValues(
            unique_key=integration.unique_key,
            provider=integration.provider,
            display_name=integration.display_name,
            client_id=integration.client_id,
            client_secret_sealed=seal(integration.client_secret, "client_secret"),
            scopes=integration.scopes,
            app_link=integration.app_link,
            webhook_secret_sealed=seal(integration.webhook_secret, "webhook_secret"),
            custom_sealed=seal(json.dumps(integration.custom), "custom") if integration.custom is not None else None,
            integration_config=integration.integration_config,
            forward_webhooks=integration.forward_webhooks,
        )

    async def all(self, environment_id: int) -> list[Integration]:
        return [self._open(r) for r in await self.store.all(environment_id)]

    async def get(self, environment_id: int, unique_key: str) -> Integration:
        row = await self.store.get(environment_id, unique_key)
        if row is None:
            raise UnknownProviderConfig()
        return self._open(row)

    async def find(self, environment_id: int, unique_key: str) -> Integration | None:
        row = await self.store.get(environment_id, unique_key)
        return self._open(row) if row else None

    async def get_by_id(self, integration_id: int) -> Integration | None:
        row = await self.store.get_by_id(integration_id)
        return self._open(row) if row else None

    def _check_credentials(self, provider: Provider, credentials: CredentialsInput | None) -> None:
        if credentials is None:
            return
        mode = provider.auth_mode
        compatible = (
            (credentials.type in ("OAUTH1", "OAUTH2", "TBA") and mode in _OAUTH_CLIENT_MODES and mode != "CUSTOM")
            or (credentials.type == "APP" and mode in ("APP", "CUSTOM"))
            or (credentials.type == "CUSTOM" and mode == "CUSTOM")
        )
        if not compatible:
            raise IncompatibleCredentials(
                errors=[{"code": "custom", "message": IncompatibleCredentials.default_message, "path": ["credentials"]}]
            )

    @staticmethod
    def _with_credentials(integration: Integration, credentials: CredentialsInput | None) -> Integration:
        if isinstance(credentials, OAuthCredentialsInput):
            return replace(
                integration,
                client_id=credentials.client_id,
                client_secret=credentials.client_secret,
                scopes=credentials.scopes,
                webhook_secret=credentials.webhook_secret,
            )
        if isinstance(credentials, CustomCredentialsInput):
            return replace(
                integration,
                client_id=credentials.client_id,
                client_secret=credentials.client_secret,
                app_link=credentials.app_link,
                custom={"app_id": credentials.app_id, "private_key": credentials.private_key},
            )
        if isinstance(credentials, AppCredentialsInput):
            # as Nango stores an app: client_id is the app id, the client secret its private key
            return replace(
                integration,
                client_id=credentials.app_id,
                client_secret=credentials.private_key,
                app_link=credentials.app_link,
            )
        return integration

    def _require_provider(self, name: str) -> Provider:
        provider = self.provider(name)
        if provider is None:
            message = f"Unknown provider {name}"
            raise InvalidBody(message, errors=[{"code": "custom", "message": message, "path": ["provider"]}])
        return provider

    async def create(self, environment_id: int, body: CreateIntegration) -> Integration:
        provider = self._require_provider(body.provider)
        self._check_credentials(provider, body.credentials)
        now = datetime.now().astimezone()
        draft = Integration(
            id=0,
            uuid=str(uuid.uuid4()),
            environment_id=environment_id,
            unique_key=body.unique_key,
            provider=body.provider,
            display_name=body.display_name,
            client_id=None,
            client_secret=None,
            scopes=None,
            app_link=None,
            webhook_secret=None,
            custom=body.custom,
            integration_config=body.integration_config or {},
            forward_webhooks=True if body.forward_webhooks is None else body.forward_webhooks,
            created_at=now,
            updated_at=now,
        )
        draft = self._with_credentials(draft, body.credentials)
        row = await self.store.insert(environment_id, draft.uuid, self._values(draft))
        if row is None:
            raise IntegrationExists()
        return self._open(row)

    async def update(self, environment_id: int, unique_key: str, body: UpdateIntegration) -> Integration:
        current = await self.get(environment_id, unique_key)
        provider = self._require_provider(current.provider)
        self._check_credentials(provider, body.credentials)
        fields = body.model_fields_set
        updated = replace(
            current,
            unique_key=body.unique_key or current.unique_key,
            display_name=body.display_name if "display_name" in fields else current.display_name,
            forward_webhooks=current.forward_webhooks if body.forward_webhooks is None else body.forward_webhooks,
            integration_config=current.integration_config
            if body.integration_config is None
            else body.integration_config,
            custom=current.custom if body.custom is None else body.custom,
        )
        updated = self._with_credentials(updated, body.credentials)
        row = await self.store.update(current.id, self._values(updated))
        if row is None:
            raise IntegrationExists()
        return self._open(row)

    async def delete(self, environment_id: int, unique_key: str) -> None:
        current = await self.get(environment_id, unique_key)
        await self.store.delete(current.id)
