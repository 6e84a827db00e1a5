"""The `nango` object's backend inside a worker: persist and the server over gRPC with the task's
token (never the internal token), and proxy calls through `nango.proxycore`, the engine of the REST
`/proxy`, so a call made from a function is built, signed and retried exactly like one made through
the API. Channels and the HTTP pool are opened on first use: a function that calls nothing costs
no connection."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from nango.errors import InvalidInternalToken, NotImplementedYet
from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nango.oplog import Message
from nango.outbound import OutboundClient, OutboundPolicy, PoolSettings
from nango.persist.client import BatchContext, CheckpointConflict, PersistClient, RecordScope, RecordSummary
from nango.providers import Provider, ProviderCatalog
from nango.proxycore import ConnectionView, ProxyEngine, ProxySpec, UnsupportedProvider
from nango.proxycore.auth import SIGNED_MODES
from nango.runner.wire import RunTask
from nango.sdk import errors as sdk_errors
from nango.sdk.runtime import (
    BatchSummary,
    LogLine,
    ProxyRequest,
    ProxyResponse,
    ReconcileSummary,
    StoredCheckpoint,
    headers_of,
)
from nango.server.client import ConnectionInfo, ServerClient
from nangopb.common.v1 import common_pb2
from nangopb.server.v1 import server_pb2, server_pb2_grpc

# credentials are re-read from the server (which refreshes them when due) at most this often per connection
_VIEW_TTL = 10.0
_LOG_CHUNK = 1000


def _needs_app_credentials(provider: Provider, mode: str) -> bool:
    """OAuth 1.0a signatures and `${clientId}` / `${clientSecret}` templates need the integration's app."""
    if mode in SIGNED_MODES:
        return True
    proxy = provider.proxy
    if proxy is None:
        return False
    templates = [proxy.base_url or "", *(proxy.headers or {}).values(), *(proxy.query or {}).values()]
    return any("${clientId}" in t or "${clientSecret}" in t for t in templates)


def connection_dict(info: ConnectionInfo) -> dict[str, Any]:
    """A connection as `nango.get_connection()` shows it (the REST API's field names)."""
    return {
        "id": info.id,
        "connection_id": info.connection_id,
        "provider_config_key": info.provider_config_key,
        "provider": info.provider,
        "credentials": info.credentials,
        "connection_config": info.connection_config,
        "metadata": info.metadata,
        "end_user": info.end_user,
        "tags": info.tags,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
    }


def _summary(summary: RecordSummary) -> BatchSummary:
    return BatchSummary(
        summary.added, summary.updated, summary.deleted, summary.unchanged, tuple(summary.non_unique_keys)
    )


class GrpcBackend:
    def __init__(
        self,
        task: RunTask,
        *,
        persist_url: str,
        server_url: str,
        catalog: ProviderCatalog,
        policy: OutboundPolicy,
        pool: PoolSettings,
        override_enabled: bool,
    ) -> None:
        self.task = task
        self._persist_url = persist_url
        self._server_url = server_url
        self._catalog = catalog
        self._policy = policy
        self._pool = pool
        self._override_enabled = override_enabled
        self._persist: PersistClient | None = None
        self._server: ServerClient | None = None
        self._outbound: OutboundClient | None = None
        self._engine: ProxyEngine | None = None
        self._views: dict[tuple[str, str], tuple[float, ConnectionView]] = {}
        # where the lines of proxy calls go (the `nango` object's buffered log)
        self.on_log: Callable[[LogLine], None] | None = None
        self._generation = int(task.sync_job_id) if task.sync_job_id.isdigit() else None

    @property
    def persist(self) -> PersistClient:
        if self._persist is None:
            self._persist = PersistClient(self._persist_url, None, task_token=self.task.task_token)
        return self._persist

    @property
    def server(self) -> ServerClient:
        if self._server is None:
            self._server = ServerClient(self._server_url, task_token=self.task.task_token)
        return self._server

    @property
    def engine(self) -> ProxyEngine:
        if self._engine is None:
            self._outbound = OutboundClient(self._pool)
            self._engine = ProxyEngine(self._outbound, self._policy, override_enabled=self._override_enabled)
        return self._engine

    async def close(self) -> None:
        for client in (self._persist, self._server, self._outbound):
            if client is not None:
                await client.close()

    # proxy

    async def _view(self, provider_config_key: str, connection_id: str, *, force: bool = False) -> ConnectionView:
        key = (provider_config_key, connection_id)
        cached = self._views.get(key)
        if cached is not None and not force and time.monotonic() - cached[0] < _VIEW_TTL:
            return cached[1]
        info = await self.server.get_connection(
            self.task.environment_id, provider_config_key, connection_id, force_refresh=force
        )
        provider = self._catalog.get(info.provider)
        if provider is None:
            raise UnsupportedProvider(f"The provider {info.provider!r} is not in the runner's catalog")
        client_id = client_secret = None
        if _needs_app_credentials(provider, str(info.credentials.get("type"))):
            integration = await self.server.get_integration(
                self.task.environment_id, provider_config_key, include_credentials=True
            )
            app = integration.credentials or {}
            client_id, client_secret = app.get("client_id"), app.get("client_secret")
        view = ConnectionView(
            provider_name=info.provider,
            provider=provider,
            credentials=info.credentials,
            connection_config=info.connection_config,
            metadata=info.metadata or {},
            client_id=client_id,
            client_secret=client_secret,
        )
        self._views[key] = (time.monotonic(), view)
        return view

    async def proxy(self, request: ProxyRequest) -> ProxyResponse:
        key = request.provider_config_key or self.task.provider_config_key
        connection = request.connection_id or self.task.connection_id
        backend = self

        class Source:
            async def current(self) -> ConnectionView:
                return await backend._view(key, connection)

            async def refreshed(self) -> ConnectionView | None:
                before = await backend._view(key, connection)
                after = await backend._view(key, connection, force=True)
                return None if after.credentials == before.credentials else after

        spec = ProxySpec(
            method=request.method,
            endpoint=request.endpoint,
            headers=tuple(request.headers.items()),
            retries=request.retries,
            retry_on=frozenset(request.retry_on),
            base_url_override=request.base_url_override,
            decompress=request.decompress,
            params=dict(request.params) or None,
        )
        call = self.engine.call(spec, Source(), request.body)
        answer = await call.send()
        try:
            body = await answer.response.read()
            headers = headers_of(answer.response.headers.items())
        finally:
            answer.response.release()
        status = answer.response.status
        url = call.target.log_url if call.target is not None else request.endpoint
        if self.on_log is not None:
            self.on_log(
                LogLine(
                    f"{request.method} {url}",
                    "error" if status >= 400 else "info",
                    type="http",
                    request={"method": request.method, "url": url},
                    response={"code": status},
                    meta={"retries": max(len(call.attempts) - 1, 0)},
                )
            )
        return ProxyResponse(status, headers, body, request.method, request.endpoint)

    async def pagination_defaults(self) -> dict[str, Any] | None:
        name = (
            self.task.provider
            or (await self._view(self.task.provider_config_key, self.task.connection_id)).provider_name
        )
        provider = self._catalog.get(name)
        if provider is None or provider.proxy is None or provider.proxy.paginate is None:
            return None
        return provider.proxy.paginate.model_dump(exclude_none=True)

    # records

    def _scope(self, model: str) -> RecordScope:
        return RecordScope(self.task.environment_id, self.task.nango_connection_id, model)

    def _batch(self) -> BatchContext:
        return BatchContext(
            sync_id=self.task.sync_id or None,
            generation=self._generation,
            activity_log_id=self.task.activity_log_id or None,
        )

    async def save_records(self, model: str, records: bytes) -> BatchSummary:
        return _summary((await self.persist.save_records(self._scope(model), records, self._batch())).summary)

    async def update_records(self, model: str, records: bytes) -> BatchSummary:
        return _summary((await self.persist.update_records(self._scope(model), records, self._batch())).summary)

    async def delete_records(self, model: str, records: bytes) -> BatchSummary:
        return _summary((await self.persist.delete_records(self._scope(model), records, self._batch())).summary)

    async def delete_outdated_records(self, model: str, generation: int) -> list[str]:
        deleted = await self.persist.delete_outdated_records(
            self._scope(model), generation, activity_log_id=self.task.activity_log_id
        )
        return list(deleted.deleted_keys)

    # reconcile passes: one per model, named after the task (persist lets a task token run only that one)

    async def start_reconcile(self, model: str) -> None:
        await self.persist.start_reconcile(self._scope(model), self.task.task_id)

    async def mark_seen(self, model: str, ids: Sequence[str]) -> None:
        await self.persist.mark_records_seen(self._scope(model), self.task.task_id, ids)

    async def finish_reconcile(self, model: str) -> ReconcileSummary:
        result = await self.persist.finish_reconcile(
            self._scope(model), self.task.task_id, activity_log_id=self.task.activity_log_id
        )
        return ReconcileSummary(result.seen, result.deleted, list(result.deleted_keys))

    async def get_records(self, model: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        # a page of large records can stop before the last id: follow its cursor
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.persist.get_records(
                self._scope(model), cursor=cursor, external_ids=ids, limit=max(len(ids), 1)
            )
            found += page.records()
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    # checkpoints

    async def get_checkpoint(self, key: str) -> StoredCheckpoint | None:
        found = await self.persist.get_checkpoint(self.task.environment_id, self.task.nango_connection_id, key)
        if found is None:
            return None
        return StoredCheckpoint(None if found.deleted_at is not None else found.checkpoint, found.version)

    async def put_checkpoint(self, key: str, value: dict[str, Any], expected_version: int) -> int:
        try:
            written = await self.persist.put_checkpoint(
                self.task.environment_id,
                self.task.nango_connection_id,
                key,
                value,
                expected_version=expected_version,
            )
        except CheckpointConflict as exc:
            raise sdk_errors.CheckpointConflict(exc.message) from None
        return written.version

    async def delete_checkpoint(self, key: str, expected_version: int) -> int:
        try:
            deleted = await self.persist.delete_checkpoint(
                self.task.environment_id, self.task.nango_connection_id, key, expected_version=expected_version
            )
        except CheckpointConflict as exc:
            raise sdk_errors.CheckpointConflict(exc.message) from None
        return deleted.version

    # connection, metadata, environment

    async def get_connection(self, provider_config_key: str, connection_id: str) -> dict[str, Any]:
        info = await self.server.get_connection(self.task.environment_id, provider_config_key, connection_id)
        return connection_dict(info)

    async def set_metadata(self, metadata: dict[str, Any], *, merge: bool) -> dict[str, Any]:
        return await self.server.set_connection_metadata(
            self.task.environment_id, self.task.provider_config_key, self.task.connection_id, metadata, merge=merge
        )

    async def get_integration(self, include_credentials: bool) -> dict[str, Any]:
        found = await self.server.get_integration(
            self.task.environment_id, self.task.provider_config_key, include_credentials=include_credentials
        )
        integration: dict[str, Any] = {
            "unique_key": found.unique_key,
            "provider": found.provider,
            "display_name": found.display_name,
            "custom": found.custom,
        }
        if include_credentials:
            integration["credentials"] = found.credentials
        return integration

    async def environment_variables(self) -> list[dict[str, str]]:
        variables = await self.server.environment_variables(self.task.environment_id)
        return [{"name": name, "value": value} for name, value in variables.items()]

    async def trigger_action(
        self,
        provider_config_key: str,
        connection_id: str,
        action_name: str,
        input: Any,
    ) -> Any:
        # ServerClient has no trigger_action yet: the call goes through the contract's stub directly
        channel = open_channel(self._server_url, None, task_token=self.task.task_token)
        try:
            request = server_pb2.TriggerActionRequest(
                connection=common_pb2.ConnectionRef(
                    environment_id=self.task.environment_id,
                    provider_config_key=provider_config_key,
                    connection_id=connection_id,
                ),
                action_name=action_name,
                input_json=json_bytes(input),
            )
            stub = server_pb2_grpc.ServerServiceStub(channel)
            try:
                reply = await invoke("server", stub.TriggerAction(request, timeout=900))
            except (NotImplementedYet, InvalidInternalToken):
                raise sdk_errors.FeatureUnavailable(
                    "trigger_action is not available yet: the server does not run actions for functions"
                ) from None
            return json_value(reply.output_json)
        finally:
            await channel.close()

    # locks

    async def try_acquire_lock(self, key: str, ttl: timedelta) -> bool:
        return await self.persist.try_acquire_lock(self.task.environment_id, self.task.task_id, key, ttl)

    async def release_lock(self, key: str) -> bool:
        return await self.persist.release_lock(self.task.environment_id, self.task.task_id, key)

    async def release_all_locks(self) -> int:
        return await self.persist.release_all_locks(self.task.environment_id, self.task.task_id)

    # logs

    async def write_logs(self, lines: Sequence[LogLine]) -> None:
        if not self.task.activity_log_id or not lines:
            return
        messages = [
            Message(
                operation_id=self.task.activity_log_id,
                message=line.message,
                created_at=line.created_at,
                level=line.level,
                # proxy lines are the platform's account of the call; the rest is the function's own
                source="internal" if line.type == "http" else "user",
                type=line.type,
                meta=line.meta,
                error=line.error,
                request=line.request,
                response=line.response,
            )
            for line in lines
        ]
        for start in range(0, len(messages), _LOG_CHUNK):
            await self.persist.write_log_messages(self.task.environment_id, messages[start : start + _LOG_CHUNK])


__all__ = ["GrpcBackend", "connection_dict"]
