"""Records routes (reference §3.5): `GET /records` and `PATCH /records/prune`.

Deviation, on purpose: `filter=updated,deleted` is a union (updated *or* deleted records).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aiohttp import web
from pydantic import BeforeValidator, Field, field_validator

from nango.persist.client import RecordAction
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, parse_headers, parse_query
from nango.server.inputs import ConnectionId, ProviderConfigKey, Strict
from nango.server.records import RecordQuery

routes = web.RouteTableDef()

MAX_IDS = 100
# modified_after further back than this is refused: the cache does not promise older history
MODIFIED_AFTER_WINDOW = timedelta(days=365)
_ACTIONS = {a.value.lower(): a for a in RecordAction}

Model = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Z][a-zA-Z0-9_-]+$")]
Variant = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_-]+$")]


def _iso_datetime(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("must be an ISO-8601 date and time, e.g. 2024-05-01T10:00:00.000Z")
    try:
        moment = datetime.fromisoformat(value)
        # a moment whose UTC form is past year 9999 cannot be passed on
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError("must be an ISO-8601 date and time, e.g. 2024-05-01T10:00:00.000Z") from None
    if moment < datetime.now(UTC) - MODIFIED_AFTER_WINDOW:
        raise ValueError("must be within the last 12 months")
    return moment


def _filter(value: Any) -> frozenset[RecordAction]:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ValueError("must be a comma-separated list of added, updated, deleted")
    parts = [p.strip().lower() for p in value.split(",")]
    unknown = [p for p in parts if p not in _ACTIONS]
    if unknown:
        raise ValueError("must be a comma-separated list of added, updated, deleted")
    return frozenset(_ACTIONS[p] for p in parts)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ModifiedAfter = Annotated[datetime, BeforeValidator(_iso_datetime)]
ActionFilter = Annotated[frozenset[RecordAction], BeforeValidator(_filter)]


class RecordHeaders(Strict):
    provider_config_key: ProviderConfigKey = Field(alias="provider-config-key")
    connection_id: ConnectionId = Field(alias="connection-id")


class ListQuery(Strict):
    model: Model
    variant: Variant | None = None
    modified_after: ModifiedAfter | None = None
    delta: ModifiedAfter | None = None
    limit: int = Field(100, ge=1, le=10_000)
    filter: ActionFilter | None = None
    cursor: str | None = Field(None, min_length=1, max_length=1000)
    ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], BeforeValidator(_as_list)] = Field(
        default_factory=list, max_length=MAX_IDS
    )


class PruneBody(Strict):
    model: Model
    variant: Variant | None = None
    until_cursor: str = Field(min_length=1, max_length=1000)
    limit: int = Field(1000, ge=1, le=10_000)

    @field_validator("limit", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        return value


_HEADER_NAMES = ("provider-config-key", "connection-id")


def record_headers(request: web.Request) -> RecordHeaders:
    present = {name: request.headers[name] for name in _HEADER_NAMES if name in request.headers}
    return parse_headers(present, RecordHeaders)


def page_body(next_cursor: str | None, records_json: bytes) -> bytes:
    """`{next_cursor, records}` around persist's JSON array, which is passed through as it came."""
    # one copy of the page (chained `+` would copy it once per operator after it)
    return b"".join((b'{"next_cursor":', json.dumps(next_cursor).encode(), b',"records":', records_json, b"}"))


@routes.get("/records")
@routes.get("/records/")
async def list_records(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    headers = record_headers(request)
    query = parse_query(request, ListQuery)
    page = await gw.records.page(
        environment.id,
        headers.provider_config_key,
        headers.connection_id,
        RecordQuery(
            model=query.model,
            variant=query.variant,
            modified_after=query.modified_after or query.delta,
            limit=query.limit,
            actions=query.filter or frozenset(),
            cursor=query.cursor,
            ids=tuple(query.ids),
        ),
    )
    return web.Response(body=page_body(page.next_cursor, page.records_json), content_type="application/json")


@routes.patch("/records/prune")
async def prune_records(request: web.Request) -> web.Response:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    headers = record_headers(request)
    body = await parse_body(request, PruneBody)
    result = await gw.records.prune(
        environment.id,
        headers.provider_config_key,
        headers.connection_id,
        body.model,
        body.variant,
        body.until_cursor,
        body.limit,
    )
    return json_response({"count": result.count, "has_more": result.has_more})
