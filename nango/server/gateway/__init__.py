"""The public aiohttp gateway: REST API, OAuth callbacks, incoming webhooks, websockets."""

from __future__ import annotations

from aiohttp import web

from nango.server.environments import EnvironmentService
from nango.server.gateway.middleware import ENVIRONMENTS, authenticate, cors, error_envelope
from nango.server.gateway.routes import routes


def build_app(environments: EnvironmentService, *, body_limit: int) -> web.Application:
    app = web.Application(middlewares=[error_envelope, cors, authenticate], client_max_size=body_limit)
    app[ENVIRONMENTS] = environments
    app.add_routes(routes)
    return app


__all__ = ["build_app"]
