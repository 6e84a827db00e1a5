"""Strict validation of bodies, query strings, headers and path parameters.

Models forbid unknown fields, as Nango's schemas do. A failure answers 400 with the code of the
part that failed (`invalid_body`, `invalid_query_params`, `invalid_headers`, `invalid_uri_params`)
and `errors: [{code, message, path}]`, one entry per problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from nango.errors import InvalidBody, InvalidHeaders, InvalidQueryParams, InvalidRequest, InvalidUriParams
from nango.server.gateway.http import json_body

M = TypeVar("M", bound=BaseModel)

_CODES = {
    "missing": "invalid_type",
    "extra_forbidden": "unrecognized_keys",
    "string_too_short": "too_small",
    "too_short": "too_small",
    "greater_than_equal": "too_small",
    "greater_than": "too_small",
    "string_too_long": "too_big",
    "too_long": "too_big",
    "less_than_equal": "too_big",
    "less_than": "too_big",
    "string_pattern_mismatch": "invalid_string",
    "url_parsing": "invalid_string",
    "url_scheme": "invalid_string",
    "value_error": "custom",
    "assertion_error": "custom",
}


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors(include_url=False):
        message = "Required" if err["type"] == "missing" else str(err["msg"])
        message = message.removeprefix("Value error, ")
        path = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        errors.append({"code": _CODES.get(err["type"], "invalid_type"), "message": message, "path": path})
    return errors


def _parse(model: type[M], data: Any, error: type[InvalidRequest]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(errors=validation_errors(exc)) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    data = await json_body(request)
    return _parse(model, {} if data is None else data, InvalidBody)


def parse_query(request: web.Request, model: type[M], *, skip: Callable[[str], bool] | None = None) -> M:
    """Query strings are flat: a repeated key becomes a list. Keys for which `skip` is true are
    left to the caller (e.g. `tags[k]=v` filters)."""
    data: dict[str, Any] = {}
    for key in request.query:
        if skip is not None and skip(key):
            continue
        values = request.query.getall(key)
        data[key] = values if len(values) > 1 else values[0]
    return _parse(model, data, InvalidQueryParams)


def reject_unknown_query(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise InvalidQueryParams(
            errors=[{"code": "unrecognized_keys", "message": f"Unrecognized key: {k}", "path": [k]} for k in unknown]
        )


def parse_headers(headers: Mapping[str, str], model: type[M]) -> M:
    return _parse(model, {k.lower(): v for k, v in headers.items()}, InvalidHeaders)


def parse_path(request: web.Request, model: type[M]) -> M:
    return _parse(model, dict(request.match_info), InvalidUriParams)
