"""Sync control routes (reference §3.6): trigger, start, pause, status, connection frequency, variants."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field, StrictBool, model_validator

from nango.errors import InvalidBody, InvalidQueryParams
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, parse_headers, parse_path, parse_query, reject_unknown_query
from nango.server.gateway.views import js_date
from nango.server.inputs import ConnectionId, ProviderConfigKey, Strict
from nango.server.records import BASE_VARIANT
from nango.server.sync_control import SyncRef, SyncStatus

routes = web.RouteTableDef()

NAME = r"^[a-zA-Z0-9_-]+$"
SyncName = Annotated[str, Field(min_length=1, max_length=255, pattern=NAME)]
MAX_SYNCS = 1000


class SyncObject(Strict):
    name: SyncName
    variant: SyncName


def _sync_ref(value: Any) -> Any:
    """`name`, `name::variant` or `{name, variant}`."""
    if isinstance(value, str):
        name, _, variant = value.partition("::")
        return {"name": name, "variant": variant or BASE_VARIANT}
    return value


SyncItem = Annotated[SyncObject, BeforeValidator(_sync_ref)]


class TriggerOpts(Strict):
    reset: StrictBool | None = None
    emptyCache: StrictBool | None = None


class TriggerBody(Strict):
    syncs: list[SyncItem] = Field(default_factory=list, max_length=MAX_SYNCS)
    provider_config_key: ProviderConfigKey | None = None
    connection_id: ConnectionId | None = None
    opts: TriggerOpts | None = None
    sync_mode: Literal["incremental", "full_refresh", "full_refresh_and_clear_cache"] | None = None
    full_resync: StrictBool | None = None

    @model_validator(mode="after")
    def _one_form(self) -> TriggerBody:
        if self.opts is not None and (self.sync_mode is not None or self.full_resync is not None):
            raise ValueError("opts cannot be combined with the deprecated sync_mode or full_resync")
        return self

    def command(self) -> tuple[bool, bool]:
        """(reset, empty cache)"""
        if self.opts is not None:
            return bool(self.opts.reset), bool(self.opts.emptyCache)
        if self.sync_mode is not None:
            return self.sync_mode != "incremental", self.sync_mode == "full_refresh_and_clear_cache"
        return bool(self.full_resync), False


class ControlBody(Strict):
    syncs: list[SyncItem] = Field(max_length=MAX_SYNCS)
    provider_config_key: ProviderConfigKey
    connection_id: ConnectionId | None = None


class TriggerHeaders(Strict):
    provider_config_key: ProviderConfigKey | None = Field(None, alias="provider-config-key")
    connection_id: ConnectionId | None = Field(None, alias="connection-id")


_TRIGGER_HEADERS = ("provider-config-key", "connection-id")


class StatusQuery(Strict):
    syncs: str = Field(min_length=1, max_length=100_000)
    provider_config_key: ProviderConfigKey
    connection_id: ConnectionId | None = None


class FrequencyBody(Strict):
    sync_name: SyncName
    sync_variant: SyncName | None = None
    provider_config_key: ProviderConfigKey
    connection_id: ConnectionId
    frequency: str | None = Field(max_length=255)


class VariantPath(Strict):
    name: SyncName
    variant: SyncName


class VariantBody(Strict):
    provider_config_key: ProviderConfigKey
    connection_id: ConnectionId


def _refs(items: list[SyncObject]) -> list[SyncRef]:
    return [SyncRef(item.name, item.variant) for item in items]


def _status_refs(syncs: str) -> list[SyncRef]:
    if syncs.strip() == "*":
        return []
    refs = []
    for raw in syncs.split(","):
        name, _, variant = raw.strip().partition("::")
        candidate = {"name": name, "variant": variant or BASE_VARIANT}
        try:
            item = SyncObject.model_validate(candidate)
        except ValueError:
            raise InvalidQueryParams(
                errors=[{"code": "custom", "message": f"invalid sync name {raw[:100]!r}", "path": ["syncs"]}]
            ) from None
        refs.append(SyncRef(item.name, item.variant))
    return refs


def _view(status: SyncStatus) -> dict[str, Any]:
    target = status.target
    view: dict[str, Any] = {
        "id": target.sync.id,
        "connection_id": target.connection.connection_id,
        "name": target.sync.name,
        "variant": target.sync.variant,
        "status": status.status,
        "frequency": status.frequency,
        "finishedAt": js_date(status.finished_at),
        "nextScheduledSyncAt": js_date(status.next_scheduled_at),
        "recordCount": status.record_count,
        "checkpoint": status.checkpoint,
    }
    # Nango leaves these out (undefined) until the sync has run
    if status.job_type is not None:
        view["type"] = status.job_type
    if status.latest_result is not None:
        view["latestResult"] = status.latest_result
    if status.latest_execution_status is not None:
        view["latestExecutionStatus"] = status.latest_execution_status
    return view


@routes.post("/sync/trigger")
async def trigger(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    body = await parse_body(request, TriggerBody)
    present = {
        name: request.headers[name] for name in ("provider-config-key", "connection-id") if name in request.headers
    }
    headers = parse_headers(present, TriggerHeaders)
    provider_config_key = body.provider_config_key or headers.provider_config_key
    if not provider_config_key:
        raise InvalidBody(
            "Missing provider_config_key. Provide it in the body or headers.", code="missing_provider_config_key"
        )
    reset, empty_cache = body.command()
    await gw.sync_control.trigger(
        environment.id,
        provider_config_key,
        _refs(body.syncs),
        body.connection_id or headers.connection_id,
        reset=reset,
        empty_cache=empty_cache,
    )
    return json_response({"success": True})


@routes.post("/sync/start")
async def start(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    body = await parse_body(request, ControlBody)
    await gw.sync_control.start(environment.id, body.provider_config_key, _refs(body.syncs), body.connection_id)
    return json_response({"success": True})


@routes.post("/sync/pause")
async def pause(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    body = await parse_body(request, ControlBody)
    await gw.sync_control.pause(environment.id, body.provider_config_key, _refs(body.syncs), body.connection_id)
    return json_response({"success": True})


@routes.get("/sync/status")
async def status(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, StatusQuery)
    found = await gw.sync_control.status(
        environment.id, query.provider_config_key, _status_refs(query.syncs), query.connection_id
    )
    return json_response({"syncs": [_view(s) for s in found]})


@routes.put("/sync/update-connection-frequency")
async def update_connection_frequency(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    body = await parse_body(request, FrequencyBody)
    frequency = await gw.sync_control.set_frequency(
        environment.id,
        body.provider_config_key,
        body.connection_id,
        body.sync_name,
        body.sync_variant or BASE_VARIANT,
        body.frequency,
    )
    return json_response({"frequency": frequency})


@routes.post("/sync/{name}/variant/{variant}")
async def create_variant(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, VariantBody)
    path = parse_path(request, VariantPath)
    reject_unknown_query(request, set())
    sync = await gw.sync_control.create_variant(
        environment.id, body.provider_config_key, body.connection_id, path.name, path.variant
    )
    return json_response({"id": sync.id, "name": sync.name, "variant": sync.variant})


@routes.delete("/sync/{name}/variant/{variant}")
async def delete_variant(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, VariantBody)
    path = parse_path(request, VariantPath)
    reject_unknown_query(request, set())
    await gw.sync_control.delete_variant(
        environment.id, body.provider_config_key, body.connection_id, path.name, path.variant
    )
    return json_response({"success": True})
