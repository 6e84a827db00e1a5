"""What every end-user auth flow shares: who is connecting what, and storing the result.

A flow (OAuth popup, API key form, client credentials, ...) starts from a `FlowContext` built by
the gateway from the request (see `nango.server.gateway.flow`) and ends with `FlowFinisher.finish`,
which applies the connect session's end user, tags and webhook override, and stores the connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from nango.errors import NangoError
from nango.oplog import OperationsLog
from nango.providers import Provider
from nango.server.connections import Connection, ConnectionService, NewConnection
from nango.server.environments import Environment
from nango.server.integrations import Integration
from nango.server.store.connections import EndUserValues
from nango.server.store.sessions import ConnectSessionRow
from nango.server.webhooks.auth import AuthError

log = logging.getLogger(__name__)

# connection_config keys the client may not set through `params[...]`
_RESERVED_PARAMS = frozenset({"webhook_url"})


@dataclass(frozen=True)
class FlowContext:
    environment: Environment
    integration: Integration
    provider: Provider
    connection_id: str
    session: ConnectSessionRow | None
    # `params[k]` from the client, then the session's defaults for this integration over them
    connection_config: dict[str, Any] = field(default_factory=dict)
    # `authorization_params[k]`; a None value removes the provider's default for that key
    authorization_params: dict[str, str | None] = field(default_factory=dict)
    user_scope: list[str] = field(default_factory=list)
    # `credentials[oauth_client_id_override]` and friends
    credential_overrides: dict[str, str] = field(default_factory=dict)
    ws_client_id: str | None = None

    @property
    def provider_config_key(self) -> str:
        return self.integration.unique_key

    @property
    def scopes(self) -> list[str]:
        """The integration's scopes, or the session's `oauth_scopes_override`."""
        override = self.connection_config.get("oauth_scopes_override")
        if isinstance(override, str) and override:
            return [s for s in override.replace(" ", ",").split(",") if s]
        return self.integration.scope_list


def client_params(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in _RESERVED_PARAMS}


def session_defaults(session: ConnectSessionRow | None, provider_config_key: str) -> dict[str, Any]:
    if session is None or not session.integrations_config_defaults:
        return {}
    defaults = session.integrations_config_defaults.get(provider_config_key)
    return dict(defaults) if isinstance(defaults, dict) else {}


def session_end_user(session: ConnectSessionRow | None) -> EndUserValues | None:
    if session is None or session.end_user is None:
        return None
    end_user = session.end_user
    return EndUserValues(
        end_user_id=end_user.end_user_id,
        email=end_user.email,
        display_name=end_user.display_name,
        organization_id=end_user.organization_id,
        organization_display_name=end_user.organization_display_name,
        tags=end_user.tags,
    )


def session_tags(session: ConnectSessionRow | None) -> dict[str, str] | None:
    """The tags a connection made through this session carries: who connected, then the session's own."""
    if session is None:
        return None
    tags: dict[str, str] = {}
    if session.end_user is not None:
        tags["end_user_id"] = session.end_user.end_user_id
        if session.end_user.email:
            tags["end_user_email"] = session.end_user.email
        if session.end_user.display_name:
            tags["end_user_display_name"] = session.end_user.display_name
        if session.end_user.organization_id:
            tags["organization_id"] = session.end_user.organization_id
    tags.update(session.tags or {})
    return tags


@dataclass(frozen=True)
class Finished:
    connection: Connection
    created: bool

    @property
    def operation(self) -> str:
        """Nango's auth webhook operation."""
        return "creation" if self.created else "override"


class FlowFinisher:
    def __init__(self, connections: ConnectionService, oplog: OperationsLog) -> None:
        self.connections = connections
        self.oplog = oplog

    async def finish(
        self,
        ctx: FlowContext,
        *,
        credentials: dict[str, Any],
        connection_config: dict[str, Any] | None = None,
    ) -> Finished:
        """Store the connection a flow produced; the flow's `connection_config` wins over the client's."""
        operation = self.oplog.start(
            "auth",
            "create_connection",
            state="running",
            environment_id=ctx.environment.id,
            provider_config_key=ctx.provider_config_key,
            provider=ctx.integration.provider,
            connection_id=ctx.connection_id,
            end_user_id=ctx.session.end_user.end_user_id if ctx.session and ctx.session.end_user else None,
        )
        try:
            connection, created = await self.connections.save(
                NewConnection(
                    integration=ctx.integration,
                    connection_id=ctx.connection_id,
                    auth_mode=str(credentials["type"]),
                    credentials=credentials,
                    connection_config={**ctx.connection_config, **(connection_config or {})},
                    tags=session_tags(ctx.session),
                    end_user=session_end_user(ctx.session),
                    webhook_url_override=ctx.session.webhook_url_override if ctx.session else None,
                )
            )
        except Exception as exc:
            operation.fail(exc)
            raise
        operation.info("connection created" if created else "connection credentials replaced")
        operation.succeed()
        return Finished(connection, created)

    async def failed(
        self,
        error: NangoError,
        *,
        environment_id: int,
        provider_config_key: str,
        provider: str,
        connection_id: str,
        auth_mode: str | None,
        session: ConnectSessionRow | None,
        webhook_url_override: str | None,
    ) -> None:
        """A flow failed before storing a connection: the failed `creation` auth webhook. Never raises
        (the flow's own failure is what the end user must see)."""
        webhooks = self.connections.auth_webhooks
        if webhooks is None:
            return
        try:
            await webhooks.creation_failed(
                environment_id=environment_id,
                connection_id=connection_id,
                provider_config_key=provider_config_key,
                provider=provider,
                auth_mode=auth_mode,
                error=AuthError(error.instance_code, error.message),
                tags=session_tags(session),
                end_user=session_end_user(session),
                webhook_url_override=webhook_url_override,
            )
        except Exception:
            log.exception("the failed auth webhook could not be stored", extra={"environment_id": environment_id})
