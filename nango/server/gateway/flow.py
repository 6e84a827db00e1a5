"""Reading an end-user auth flow's request into a `FlowContext` (reference §4.1, §4.4).

The browser SDK sends `connection_id`, `params[k]`, `authorization_params[k]`, `user_scope`,
`credentials[oauth_*_override]` and `ws_client_id` in the query string of every flow route.
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from nango.errors import InvalidQueryParams, NangoError, RpcStatus
from nango.server.auth.flows import FlowContext, client_params, session_defaults
from nango.server.errors import UnknownProviderConfig
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.middleware import CONNECT_SESSION, ENVIRONMENT
from nango.server.inputs import CONNECTION_ID

_BRACKETED = re.compile(r"^(params|authorization_params|credentials)\[(.+)\]$")
_CONNECTION_ID = re.compile(CONNECTION_ID)
_OVERRIDES = frozenset({"oauth_client_id_override", "oauth_client_secret_override", "oauth_refresh_token_override"})


class IntegrationNotAllowed(NangoError):
    code = "integration_not_allowed"
    http_status = 400
    rpc_status = RpcStatus.PERMISSION_DENIED
    default_message = "This connect session does not allow this integration"


def _bracketed(request: web.Request) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {"params": {}, "authorization_params": {}, "credentials": {}}
    for key, value in request.query.items():
        match = _BRACKETED.match(key)
        if match:
            found[match.group(1)][match.group(2)] = value
    return found


async def resolve_flow(request: web.Request, provider_config_key: str) -> FlowContext:
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    session = request.get(CONNECT_SESSION)
    integration = await gw.integrations.find(environment.id, provider_config_key)
    if integration is None:
        raise UnknownProviderConfig(http_status=400)
    provider = gw.integrations.provider(integration.provider)
    if provider is None:
        raise UnknownProviderConfig("The integration's provider is not in the catalog", http_status=400)
    allowed = session.allowed_integrations if session is not None else None
    if allowed is not None and provider_config_key not in allowed:
        raise IntegrationNotAllowed()

    requested_id = request.query.get("connection_id")
    if session is not None:
        if requested_id:
            raise InvalidQueryParams("connection_id cannot be given with a connect session token")
        if session.reconnect_connection_id is not None:
            if session.reconnect_integration != provider_config_key:
                raise IntegrationNotAllowed("This reconnect session is for another integration")
            connection_id = session.reconnect_connection_id
        else:
            connection_id = str(uuid.uuid4())
    elif requested_id:
        if len(requested_id) > 255 or not _CONNECTION_ID.match(requested_id):
            raise InvalidQueryParams("connection_id has characters outside the allowed set")
        connection_id = requested_id
    else:
        connection_id = str(uuid.uuid4())

    bracketed = _bracketed(request)
    defaults = session_defaults(session, provider_config_key)
    connection_config = {**client_params(bracketed["params"]), **(defaults.get("connection_config") or {})}
    authorization_params: dict[str, str | None] = {
        k: (None if v == "undefined" else v) for k, v in bracketed["authorization_params"].items()
    }
    authorization_params.update(defaults.get("authorization_params") or {})
    scope_text = defaults.get("user_scopes") or request.query.get("user_scope") or ""
    return FlowContext(
        environment=environment,
        integration=integration,
        provider=provider,
        connection_id=connection_id,
        session=session,
        connection_config=connection_config,
        authorization_params=authorization_params,
        user_scope=[s for s in str(scope_text).split(",") if s],
        credential_overrides={k: v for k, v in bracketed["credentials"].items() if k in _OVERRIDES},
        ws_client_id=request.query.get("ws_client_id"),
    )
