"""The public aiohttp gateway: REST API, OAuth callbacks, incoming webhooks, websockets."""

from __future__ import annotations

from aiohttp import web

from nango.server.gateway import (
    actions,
    connect,
    connections,
    direct_auth,
    environment_variables,
    functions,
    integrations,
    mcp,
    oauth,
    providers,
    proxy,
    records,
    routes,
    syncs,
    webhook_settings,
    webhooks,
    websockets,
)
from nango.server.gateway.context import GATEWAY, Gateway
from nango.server.gateway.middleware import public_api


def build_app(gateway: Gateway, *, body_limit: int) -> web.Application:
    # CORS, error envelope, authentication and rate limiter, in that order (see public_api)
    app = web.Application(middlewares=[public_api], client_max_size=body_limit)
    app[GATEWAY] = gateway
    for module in (routes, providers, integrations, functions, connections, connect, oauth, direct_auth, proxy):
        app.add_routes(module.routes)
    for module in (environment_variables, records, syncs, actions, mcp):
        app.add_routes(module.routes)
    app.add_routes(webhook_settings.routes)
    app.add_routes(webhooks.routes)
    websockets.install(app, gateway.websockets_path)
    return app


__all__ = ["build_app"]
