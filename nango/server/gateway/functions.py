"""Function routes: deploy (ours: Python bundles), and Nango's list/get/code/delete and scripts config."""

from __future__ import annotations

import io
import zipfile
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from nango.errors import NotFound
from nango.server.functions import Change, DeployBody, Plan
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, parse_query
from nango.server.gateway.views import js_date
from nango.server.inputs import Strict
from nango.server.store.functions import FunctionRow

routes = web.RouteTableDef()

FunctionType = Literal["sync", "action", "on-event"]


class ListQuery(Strict):
    type: FunctionType | None = None
    search: str | None = Field(None, max_length=255)
    page: int = Field(0, ge=0, le=100_000)
    limit: int = Field(20, ge=1, le=100)


class TypeQuery(Strict):
    type: FunctionType | None = None


class DeleteQuery(Strict):
    type: Literal["sync", "action"]


class ConfigQuery(Strict):
    format: Literal["nango", "openai"] = "nango"


def _changes(changes: list[Change]) -> list[dict[str, str]]:
    return [{"integration": c.integration, "name": c.name, "type": c.type, "version": c.version} for c in changes]


def _plan_view(plan: Plan, applied: bool) -> dict[str, Any]:
    return {
        "applied": applied,
        "added": _changes(plan.added),
        "updated": _changes(plan.updated),
        "deleted": _changes(plan.deleted),
        "unchanged": _changes(plan.unchanged),
    }


@routes.post("/functions/deploy")
async def deploy(request: web.Request) -> web.Response:
    """Plan a deploy (`confirm: false`) or apply it (`confirm: true`)."""
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    body = await parse_body(request, DeployBody)
    plan = await gw.functions.plan(environment.id, body)
    if body.confirm:
        await gw.functions.apply(environment.id, plan)
    return json_response(_plan_view(plan, body.confirm))


def _listed(row: FunctionRow) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "description": row.description,
        "scopes": row.scopes,
        "version": row.version,
        "enabled": row.enabled,
        "last_deployed": js_date(row.updated_at),
        "source": "repo",
    }
    if row.type == "on-event":
        return {**base, "event": row.event}
    base["returns"] = row.models
    base["json_schema"] = _json_schema(row)
    if row.input_json_schema is not None:
        base["input"] = row.input_json_schema.get("title", "Input")
    if row.type == "sync":
        base.update(runs=row.frequency, auto_start=row.auto_start, track_deletes=row.track_deletes)
    return base


def _json_schema(row: FunctionRow) -> dict[str, Any] | None:
    definitions = dict(row.models_json_schema or {})
    if row.input_json_schema is not None:
        definitions.setdefault(row.input_json_schema.get("title", "Input"), row.input_json_schema)
    if row.output_json_schema is not None:
        definitions.setdefault(row.output_json_schema.get("title", "Output"), row.output_json_schema)
    return {"definitions": definitions} if definitions else None


@routes.get("/integrations/{unique_key}/functions")
async def list_functions(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, ListQuery)
    rows = await gw.functions.functions_of(environment.id, request.match_info["unique_key"])
    if query.type is not None:
        rows = [r for r in rows if r.type == query.type]
    if query.search:
        needle = query.search.lower()
        rows = [r for r in rows if needle in r.name.lower() or needle in r.description.lower()]
    page = rows[query.page * query.limit : (query.page + 1) * query.limit]
    return json_response(
        {
            "data": [_listed(r) for r in page],
            "pagination": {"total": len(rows), "page": query.page, "limit": query.limit},
        }
    )


@routes.get("/integrations/{unique_key}/functions/{name}")
async def get_function(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, TypeQuery)
    row = await gw.functions.get(
        environment.id, request.match_info["unique_key"], request.match_info["name"], query.type
    )
    return json_response({"data": _listed(row)})


@routes.get("/integrations/{unique_key}/functions/{name}/code")
async def get_function_code(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, TypeQuery)
    row = await gw.functions.get(
        environment.id, request.match_info["unique_key"], request.match_info["name"], query.type
    )
    bundle = await gw.functions.blobs.get(row.bundle_key)
    path = row.module.replace(".", "/") + ".py"
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        if path not in archive.namelist():
            raise NotFound(f"the bundle has no file {path}")
        code = archive.read(path).decode("utf-8", errors="replace")
    return json_response({"type": row.type, "code": code})


@routes.delete("/integrations/{unique_key}/functions/{name}")
async def delete_function(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, DeleteQuery)
    await gw.functions.delete(environment.id, request.match_info["unique_key"], request.match_info["name"], query.type)
    return json_response({"data": {"success": True}})


@routes.get("/scripts/config")
async def scripts_config(request: web.Request) -> web.Response:
    """Every deployed function, grouped by integration (Nango's StandardNangoConfig), or as OpenAI tools."""
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    query = parse_query(request, ConfigQuery)
    rows = await gw.functions.store.of_environment(environment.id)
    if query.format == "openai":
        tools = [
            {
                "name": r.name,
                "description": r.description,
                "parameters": r.input_json_schema or {"type": "object", "properties": {}},
            }
            for r in rows
            if r.type == "action"
        ]
        return json_response({"data": tools})
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = grouped.setdefault(
            row.provider_config_key, {"providerConfigKey": row.provider_config_key, "syncs": [], "actions": []}
        )
        if row.type == "sync":
            entry["syncs"].append(_listed(row))
        elif row.type == "action":
            entry["actions"].append(_listed(row))
    for key, entry in grouped.items():
        integration = await gw.integrations.find(environment.id, key)
        entry["provider"] = integration.provider if integration else None
    return json_response(list(grouped.values()))
