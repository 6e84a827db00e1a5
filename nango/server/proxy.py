"""The server's side of proxy calls: which connection a call uses, and how the call is logged.

Connections come through the same fresh-credential path as `GET /connections/{id}` (refresh under
the shared lock when due), with a few seconds of in-process reuse; a 401 forces one refresh. Calls
that miss that reuse together on one connection share one read (a burst would otherwise read and
decrypt it once per call). Each call becomes one operation in the operations log, written when the
call ends (or one http line in the caller's operation when `Nango-Activity-Log-Id` names one).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from datetime import UTC, datetime
from typing import Any

from nango.errors import NangoError
from nango.oplog import Message, Operation, OperationsLog
from nango.oplog.models import Level, OperationState
from nango.providers import Provider
from nango.proxycore import MASK, ConnectionView, ProxyCall, ProxyEngine
from nango.proxycore.auth import SIGNED_MODES
from nango.server.connections import Connection, ConnectionService
from nango.server.credential_cache import Key
from nango.server.errors import InvalidCredentials, RefreshBackoff, RefreshExhausted, UnknownProviderConfig
from nango.server.integrations import IntegrationService

_VIEWS_MAX = 10_000


def _needs_app_credentials(provider: Provider, mode: str) -> bool:
    """OAuth 1.0a signatures and `${clientId}` / `${clientSecret}` templates need the integration's app."""
    if mode in SIGNED_MODES:
        return True
    proxy = provider.proxy
    if proxy is None:
        return False
    templates = [proxy.base_url or "", *(proxy.headers or {}).values(), *(proxy.query or {}).values()]
    return any("${clientId}" in t or "${clientSecret}" in t for t in templates)


class ProxyService:
    def __init__(
        self,
        engine: ProxyEngine,
        connections: ConnectionService,
        integrations: IntegrationService,
        oplog: OperationsLog,
        *,
        max_body: int,
    ) -> None:
        self.engine = engine
        self.connections = connections
        self.integrations = integrations
        self.oplog = oplog
        self.max_body = max_body
        # a view per cached connection object, so the engine's rendered templates are kept with it
        self._views: dict[int, tuple[Connection, ConnectionView]] = {}
        # connections being read because the cache missed, shared by the calls that miss meanwhile
        self._loading: dict[Key, asyncio.Future[Connection]] = {}

    def source(self, environment_id: int, provider_config_key: str, connection_id: str) -> ConnectionSource:
        return ConnectionSource(self, environment_id, provider_config_key, connection_id)

    async def connection(self, environment_id: int, provider_config_key: str, connection_id: str) -> Connection:
        """`get_fresh_cached`, where calls that miss the cache while a read of the same connection is
        under way wait for that read instead of starting their own (only when the cache is on: with
        it off, every call reads for itself)."""
        connections = self.connections
        key = (environment_id, provider_config_key, connection_id)
        cached = connections.cache.get(key)
        if cached is not None:
            return cached
        if not connections.cache.enabled:
            return await connections.get_fresh_cached(environment_id, provider_config_key, connection_id)
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.ensure_future(
                connections.get_fresh_cached(environment_id, provider_config_key, connection_id)
            )
            self._loading[key] = pending
            pending.add_done_callback(functools.partial(self._loaded, key))
        # shielded: a caller that leaves does not cancel the read the others wait for
        return await asyncio.shield(pending)

    def _loaded(self, key: Key, done: asyncio.Future[Connection]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if not done.cancelled():
            # retrieved here, so that a failure every waiter left behind is not reported as unseen
            done.exception()

    async def view(self, connection: Connection) -> ConnectionView:
        known = self._views.get(connection.id)
        if known is not None and known[0] is connection:
            return known[1]
        provider = self.integrations.provider(connection.row.provider)
        if provider is None:
            raise UnknownProviderConfig(f"The provider {connection.row.provider!r} is not in the catalog")
        client_id = client_secret = None
        if _needs_app_credentials(provider, str(connection.credentials.get("type"))):
            integration = await self.integrations.get_by_id(connection.row.integration_id)
            if integration is not None:
                client_id, client_secret = integration.client_id, integration.client_secret
        view = ConnectionView(
            provider_name=connection.row.provider,
            provider=provider,
            credentials=connection.credentials,
            connection_config=connection.row.connection_config or {},
            metadata=connection.row.metadata or {},
            client_id=client_id,
            client_secret=client_secret,
        )
        if len(self._views) >= _VIEWS_MAX:
            self._views.clear()
        self._views[connection.id] = (connection, view)
        return view

    def log(
        self,
        call: ProxyCall,
        source: ConnectionSource,
        started_at: datetime,
        state: OperationState,
        *,
        status: int | None = None,
        response_headers: dict[str, str] | None = None,
        error: NangoError | None = None,
        bytes_sent: int | None = None,
        activity_log_id: str | None = None,
    ) -> None:
        """One operation for the call, or one http line in the caller's operation; never waits and
        never logs a credential (injected values are masked). Headers and each attempt are kept only
        for calls that failed or were retried."""
        ended_at = datetime.now(UTC)
        attempts = call.attempts
        failed = state != "success"
        request: dict[str, Any] = {"method": call.spec.method, "url": _logged_url(call)}
        response: dict[str, Any] | None = None if status is None else {"code": status}
        meta: dict[str, Any] = {"retries": max(len(attempts) - 1, 0)}
        if bytes_sent is not None:
            meta["response_bytes"] = bytes_sent
        if failed or len(attempts) > 1:
            request["headers"] = _logged_request_headers(call)
            meta["attempts"] = [attempt.as_dict() for attempt in attempts]
            if response is not None:
                response["headers"] = response_headers or {}
        described = {"code": error.instance_code, "message": error.message} if error else None
        level: Level = "error" if failed else "info"
        if activity_log_id is not None:
            line = Message(
                operation_id=activity_log_id,
                message=f"{request['method']} {request['url']}",
                type="http",
                level=level,
                created_at=started_at,
                ended_at=ended_at,
                request=request,
                response=response,
                retry=meta,
                error=described,
            )
            self.oplog.log_messages([line])
            return
        connection = source.connection
        self.oplog.record(
            Operation.finished(
                "proxy",
                "call",
                state,
                level,
                started_at=started_at,
                ended_at=ended_at,
                environment_id=source.environment_id,
                provider_config_key=source.provider_config_key,
                provider=connection.row.provider if connection is not None else None,
                connection_id=source.connection_id,
                nango_connection_id=connection.id if connection is not None else None,
                request=request,
                response=response,
                error=described,
                meta=meta,
            )
        )


def _logged_url(call: ProxyCall) -> str:
    target = call.target
    return target.log_url if target is not None else call.spec.endpoint


def _logged_request_headers(call: ProxyCall) -> dict[str, str]:
    target = call.target
    if target is None:
        return dict(call.spec.headers)
    return {name: MASK if name.lower() in target.injected else value for name, value in target.headers.items()}


def activity_log_id(value: str | None) -> str | None:
    """The caller's operation to log into (`Nango-Activity-Log-Id`), when it names one."""
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


class ConnectionSource:
    """A call's connection: fresh credentials on each attempt, one forced refresh after a 401."""

    def __init__(self, service: ProxyService, environment_id: int, provider_config_key: str, connection_id: str):
        self.service = service
        self.environment_id = environment_id
        self.provider_config_key = provider_config_key
        self.connection_id = connection_id
        self.connection: Connection | None = None
        self.view: ConnectionView | None = None

    async def current(self) -> ConnectionView:
        self.connection = await self.service.connection(
            self.environment_id, self.provider_config_key, self.connection_id
        )
        self.view = await self.service.view(self.connection)
        return self.view

    async def refreshed(self) -> ConnectionView | None:
        connection = self.connection
        connections = self.service.connections
        if connection is None:
            return None
        provider = self.service.integrations.provider(connection.row.provider)
        if provider is None or not connections.refresher.due(
            provider, connection.row.provider, connection.credentials, force=True
        ):
            return None
        try:
            fresh = await connections.ensure_fresh(connection, force=True)
        except (InvalidCredentials, RefreshBackoff, RefreshExhausted):
            return None
        if fresh.credentials == connection.credentials:
            return None
        self.connection = fresh
        self.view = await self.service.view(fresh)
        return self.view


__all__ = ["ConnectionSource", "ProxyService", "activity_log_id"]
