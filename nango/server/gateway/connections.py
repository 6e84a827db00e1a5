"""Connection routes (reference §3.2), with Nango's deprecated `/connection` aliases."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, field_validator

from nango.errors import InvalidBody
from nango.providers import Provider
from nango.server.auth import credentials as creds
from nango.server.connections import NewConnection
from nango.server.errors import UnknownConnection, UnknownProviderConfig
from nango.server.gateway.context import GATEWAY, Gateway
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, parse_query
from nango.server.gateway.views import public_connection, public_connection_full
from nango.server.gateway.webhook_settings import check_webhook_url
from nango.server.inputs import (
    ConnectionId,
    EndUserInput,
    ProviderConfigKey,
    Strict,
    Tags,
    end_user_tags,
    end_user_values,
)
from nango.server.integrations import Integration
from nango.server.store.connections import ConnectionFilter

routes = web.RouteTableDef()

StringBool = Literal["true", "false"]
_TAG_PARAM = re.compile(r"^tags\[(.+)\]$")


class ListQuery(Strict):
    connectionId: str | None = Field(None, max_length=255)
    search: str | None = Field(None, max_length=255)
    endUserId: str | None = Field(None, max_length=255)
    endUserOrganizationId: str | None = Field(None, max_length=255)
    integrationId: str | None = Field(None, max_length=2550)
    limit: int | None = Field(None, ge=1, le=10_000)
    page: int | None = Field(None, ge=0, le=1_000_000)


class GetQuery(Strict):
    provider_config_key: ProviderConfigKey
    force_refresh: StringBool | None = None
    refresh_token: StringBool | None = None
    refresh_github_app_jwt_token: StringBool | None = None


class KeyQuery(Strict):
    provider_config_key: ProviderConfigKey


class ConfigOverride(Strict):
    client_id: str | None = Field(None, min_length=1, max_length=255)
    client_secret: str | None = Field(None, min_length=1)


class ImportOAuth2(Strict):
    type: Literal["OAUTH2"]
    access_token: str = Field(min_length=1)
    refresh_token: str | None = Field(None, min_length=1)
    expires_at: datetime | None = None
    no_expiration: bool | None = None
    config_override: ConfigOverride | None = None


class ImportOAuth2CC(Strict):
    type: Literal["OAUTH2_CC"]
    token: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1)
    expires_at: datetime | None = None
    client_certificate: str | None = None
    client_private_key: str | None = None


class ImportOAuth1(Strict):
    type: Literal["OAUTH1"]
    oauth_token: str = Field(min_length=1)
    oauth_token_secret: str = Field(min_length=1)


class ImportApiKey(Strict):
    type: Literal["API_KEY"]
    apiKey: str = Field(min_length=1)


class ImportBasic(Strict):
    type: Literal["BASIC"]
    username: str = Field(min_length=1)
    password: str = ""


class ImportTba(Strict):
    type: Literal["TBA"]
    token_id: str = Field(min_length=1)
    token_secret: str = Field(min_length=1)
    config_override: ConfigOverride | None = None


class ImportApp(Strict):
    type: Literal["APP", "CUSTOM"]
    app_id: str = Field(min_length=1)
    installation_id: str = Field(min_length=1)


class ImportNone(Strict):
    type: Literal["NONE"]


ImportCredentials = (
    ImportOAuth2 | ImportOAuth2CC | ImportOAuth1 | ImportApiKey | ImportBasic | ImportTba | ImportApp | ImportNone
)


class ImportConnection(Strict):
    provider_config_key: ProviderConfigKey
    connection_id: ConnectionId | None = None
    metadata: dict[str, Any] | None = None
    connection_config: dict[str, Any] | None = None
    webhook_url_override: str | None = Field(None, max_length=1024, pattern=r"^https?://")
    end_user: EndUserInput | None = None
    tags: Tags | None = None
    credentials: ImportCredentials = Field(discriminator="type")


class PatchConnection(Strict):
    end_user: EndUserInput | None = None
    tags: Tags | None = None
    webhook_url_override: str | None = Field(None, max_length=1024)

    @field_validator("webhook_url_override")
    @classmethod
    def _url_or_empty(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://", value):
            raise ValueError("must be an http(s) URL, or empty to remove it")
        return value


class MetadataBody(Strict):
    connection_id: ConnectionId | list[ConnectionId] = Field(union_mode="left_to_right")
    provider_config_key: ProviderConfigKey
    metadata: dict[str, Any]

    @field_validator("connection_id")
    @classmethod
    def _some(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= 100:
            raise ValueError("between 1 and 100 connection ids")
        return value


def _tag_filters(request: web.Request) -> dict[str, str]:
    """The `tags[k]=v` filters of the query, keys lowercased as tags are stored."""
    tags: dict[str, str] = {}
    for key, value in request.query.items():
        match = _TAG_PARAM.match(key)
        if match:
            tags[match.group(1).lower()] = value
    return tags


@routes.get("/connections")
@routes.get("/connection")
async def list_connections(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    tags = _tag_filters(request)
    query = parse_query(request, ListQuery, skip=lambda key: _TAG_PARAM.match(key) is not None)
    limit = query.limit or 10_000
    rows = await gw.connections.search(
        ConnectionFilter(
            environment_id=environment.id,
            connection_id=query.connectionId,
            search=query.search,
            end_user_id=query.endUserId,
            end_user_organization_id=query.endUserOrganizationId,
            integration_keys=[k for k in (query.integrationId or "").split(",") if k] or None,
            tags=tags or None,
            limit=limit,
            offset=(query.page or 0) * limit,
        )
    )
    return json_response({"connections": [public_connection(row) for row in rows]})


@routes.post("/connections/metadata")
@routes.post("/connection/metadata")
async def set_metadata(request: web.Request) -> web.Response:
    return await _metadata(request, merge=False, status=201)


@routes.patch("/connections/metadata")
@routes.patch("/connection/metadata")
async def update_metadata(request: web.Request) -> web.Response:
    return await _metadata(request, merge=True, status=200)


async def _metadata(request: web.Request, *, merge: bool, status: int) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, MetadataBody)
    ids = body.connection_id if isinstance(body.connection_id, list) else [body.connection_id]
    try:
        await gw.connections.set_metadata(environment.id, body.provider_config_key, ids, body.metadata, merge=merge)
    except UnknownConnection:
        raise UnknownConnection(http_status=404) from None
    return json_response(body.model_dump(), status=status)


@routes.get("/connections/{connection_id}")
@routes.get("/connection/{connection_id}")
async def get_connection(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, GetQuery)
    try:
        connection = await gw.connections.get_fresh(
            environment.id,
            query.provider_config_key,
            request.match_info["connection_id"],
            force_refresh=query.force_refresh == "true",
        )
    except UnknownConnection:
        raise UnknownConnection(http_status=404) from None
    wants_app_jwt = query.refresh_github_app_jwt_token == "true"  # noqa: S105 - a query flag, not a secret
    if wants_app_jwt and connection.credentials.get("type") == "APP":
        integration = await gw.integrations.get(environment.id, query.provider_config_key)
        fresh = gw.direct_auth.fresh_app_jwt(integration, connection.credentials, connection.row.connection_config)
        connection = dataclasses.replace(connection, credentials=fresh)
    wants_refresh_token = query.refresh_token == "true"  # noqa: S105 - a query flag, not a secret
    return json_response(public_connection_full(connection, include_refresh_token=wants_refresh_token))


@routes.post("/connections")
@routes.post("/connection")
async def import_connection(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, ImportConnection)
    check_webhook_url(gw.webhook_url_policy, "webhook_url_override", body.webhook_url_override)
    integration = await gw.integrations.find(environment.id, body.provider_config_key)
    if integration is None:
        raise UnknownProviderConfig("Integration does not exist")
    provider = gw.integrations.provider(integration.provider)
    if provider is None:
        raise UnknownProviderConfig("Provider does not exist")
    credentials, connection_config = await _imported_credentials(
        gw, body.credentials, provider, integration, body.connection_config or {}
    )
    tags = {**end_user_tags(body.end_user), **(body.tags or {})}
    connection, _ = await gw.connections.save(
        NewConnection(
            integration=integration,
            connection_id=body.connection_id or str(uuid.uuid4()),
            auth_mode=credentials["type"],
            credentials=credentials,
            connection_config=connection_config,
            metadata=body.metadata,
            tags=tags,
            end_user=end_user_values(body.end_user),
            webhook_url_override=body.webhook_url_override,
        )
    )
    return json_response(public_connection_full(connection, include_refresh_token=False), status=201)


async def _imported_credentials(
    gw: Gateway,
    given: ImportCredentials,
    provider: Provider,
    integration: Integration,
    connection_config: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The credentials to store and the connection config to store with them."""
    auth_mode = provider.auth_mode
    compatible = given.type == auth_mode or (given.type in ("APP", "CUSTOM") and auth_mode in ("APP", "CUSTOM"))
    if not compatible:
        message = f"credentials of type {given.type} do not match the provider's auth mode {auth_mode}"
        raise InvalidBody(message, errors=[{"code": "custom", "message": message, "path": ["credentials", "type"]}])
    if isinstance(given, ImportApp):
        config = {**connection_config, "installation_id": given.installation_id, "app_id": given.app_id}
        if integration.app_link:
            config.setdefault("appPublicLink", integration.app_link)
        return await gw.direct_auth.app_installation(provider, integration, config), config
    data = given.model_dump(exclude_none=True)
    if isinstance(given, ImportTba) and not connection_config.get("accountId"):
        raise InvalidBody("Missing accountId in connection_config. This is required to create a TBA connection.")
    if isinstance(given, ImportApiKey | ImportBasic | ImportTba):
        # reference §3.2: imported keys are tested where the provider defines a verification call
        await gw.direct_auth.check(provider, integration, data, connection_config)
    if isinstance(given, ImportOAuth2 | ImportOAuth2CC):
        data.pop("no_expiration", None)
        if given.expires_at is not None:
            data["expires_at"] = creds.iso(creds.parse_datetime(given.expires_at) or given.expires_at)
        data.setdefault("raw", {})
    return data, connection_config


@routes.patch("/connections/{connection_id}")
@routes.patch("/connection/{connection_id}")
async def patch_connection(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, KeyQuery)
    body = await parse_body(request, PatchConnection)
    if not body.model_fields_set:
        raise InvalidBody("nothing to update: give end_user, tags or webhook_url_override")
    check_webhook_url(gw.webhook_url_policy, "webhook_url_override", body.webhook_url_override)
    await gw.connections.patch(
        environment.id,
        query.provider_config_key,
        request.match_info["connection_id"],
        end_user=end_user_values(body.end_user),
        tags=body.tags,
        webhook_url_override=body.webhook_url_override or None,
        clear_webhook_url_override="webhook_url_override" in body.model_fields_set and not body.webhook_url_override,
    )
    return json_response({"success": True})


@routes.delete("/connections/{connection_id}")
@routes.delete("/connection/{connection_id}")
async def delete_connection(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, KeyQuery)
    await gw.connections.delete(environment.id, query.provider_config_key, request.match_info["connection_id"])
    return json_response({"success": True})
