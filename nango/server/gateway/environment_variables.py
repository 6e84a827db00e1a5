"""`PUT /environment-variables`: replace the key's environment variables (Nango sets them in its
dashboard; here the API does). `GET /environment-variables` is in routes.py."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import Field, RootModel, field_validator

from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, reject_unknown_query
from nango.server.inputs import Strict

routes = web.RouteTableDef()

MAX_VARIABLES = 500


class Variable(Strict):
    name: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    value: Annotated[str, Field(max_length=65_536)]


class Variables(RootModel[list[Variable]]):
    root: list[Variable] = Field(max_length=MAX_VARIABLES)

    @field_validator("root")
    @classmethod
    def _unique(cls, variables: list[Variable]) -> list[Variable]:
        names = [v.name for v in variables]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate variable names: {', '.join(duplicates[:10])}")
        return variables


@routes.put("/environment-variables")
async def replace_environment_variables(request: web.Request) -> web.Response:
    """Replace every variable of the environment with the given `[{name, value}]`; answers them."""
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    body = await parse_body(request, Variables)
    await gw.environments.replace_variables(environment.id, [(v.name, v.value) for v in body.root])
    return json_response([{"name": v.name, "value": v.value} for v in body.root])
