"""The typed client other services (and `nango up`) use to reach the server's internal API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nango.grpckit import invoke, json_bytes, json_value, open_channel
from nangopb.common.v1 import common_pb2
from nangopb.server.v1 import server_pb2, server_pb2_grpc


@dataclass(frozen=True)
class EnvironmentKeys:
    id: int
    name: str
    uuid: str
    secret_key: str


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection with credentials valid at the time of the call."""

    id: int
    environment_id: int
    connection_id: str
    provider_config_key: str
    provider: str
    auth_mode: str
    credentials: dict[str, Any]
    connection_config: dict[str, Any]
    metadata: dict[str, Any] | None
    end_user: dict[str, Any] | None
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class IntegrationInfo:
    id: int
    environment_id: int
    unique_key: str
    provider: str
    display_name: str
    credentials: dict[str, Any] | None
    custom: dict[str, Any] | None
    forward_webhooks: bool


@dataclass(frozen=True)
class FunctionConfig:
    """A deployed function: what to run (bundle key and hash) and how it was declared."""

    id: str
    environment_id: int
    provider_config_key: str
    name: str
    # "sync", "action" or "on-event"
    type: str
    version: str
    bundle_key: str
    bundle_sha256: str
    models: tuple[str, ...]
    track_deletes: bool
    auto_start: bool
    frequency: str
    webhook_subscriptions: tuple[str, ...]
    input_json_schema: dict[str, Any] | None
    models_json_schema: dict[str, Any]
    enabled: bool


@dataclass(frozen=True)
class SyncInfo:
    id: str
    name: str
    variant: str
    nango_connection_id: int
    frequency: str
    last_sync_date: datetime | None


@dataclass(frozen=True)
class SyncRunContext:
    """What jobs needs to run a sync: the sync, its function, its connection (without credentials)."""

    sync: SyncInfo
    function: FunctionConfig
    connection: ConnectionInfo
    environment_name: str


@dataclass(frozen=True)
class WebhookSettings:
    """An environment's outgoing-webhook settings, as one connection sees them when asked for one
    (its `webhook_url_override` already in `primary_url`, `secondary_url` then empty)."""

    environment_name: str
    primary_url: str
    secondary_url: str
    on_auth_creation: bool
    on_auth_refresh_error: bool
    on_sync_error: bool
    on_sync_completion_always: bool
    on_async_action_completion: bool
    signing_key: str = field(repr=False)

    def destinations(self) -> tuple[str, ...]:
        """Where every webhook goes: the URLs that are set, each once."""
        return tuple(dict.fromkeys(url for url in (self.primary_url, self.secondary_url) if url))


def _function(pb: server_pb2.FunctionConfig) -> FunctionConfig:
    return FunctionConfig(
        id=pb.id,
        environment_id=pb.environment_id,
        provider_config_key=pb.provider_config_key,
        name=pb.name,
        type=pb.type,
        version=pb.version,
        bundle_key=pb.bundle_key,
        bundle_sha256=pb.bundle_sha256,
        models=tuple(pb.models),
        track_deletes=pb.track_deletes,
        auto_start=pb.auto_start,
        frequency=pb.frequency,
        webhook_subscriptions=tuple(pb.webhook_subscriptions),
        input_json_schema=json_value(pb.input_json_schema),
        models_json_schema=json_value(pb.models_json_schema, {}),
        enabled=pb.enabled,
    )


def _connection(pb: server_pb2.Connection) -> ConnectionInfo:
    return ConnectionInfo(
        id=pb.id,
        environment_id=pb.environment_id,
        connection_id=pb.connection_id,
        provider_config_key=pb.provider_config_key,
        provider=pb.provider,
        auth_mode=pb.auth_mode,
        credentials=json_value(pb.credentials_json, {}),
        connection_config=json_value(pb.connection_config_json, {}),
        metadata=json_value(pb.metadata_json),
        end_user=json_value(pb.end_user_json),
        tags=json_value(pb.tags_json, {}),
        created_at=pb.created_at.ToDatetime(),
        updated_at=pb.updated_at.ToDatetime(),
    )


class ServerClient:
    """With `token` the internal token; with `task_token` the scoped token of one running function."""

    def __init__(self, target: str, token: str | None = None, *, task_token: str | None = None) -> None:
        self._channel = open_channel(target, token, task_token=task_token)
        self._stub = server_pb2_grpc.ServerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def list_environments(self) -> list[EnvironmentKeys]:
        reply = await invoke("server", self._stub.ListEnvironments(server_pb2.ListEnvironmentsRequest(), timeout=10))
        return [EnvironmentKeys(e.id, e.name, e.uuid, e.secret_key) for e in reply.environments]

    async def environment_variables(self, environment_id: int) -> dict[str, str]:
        request = server_pb2.GetEnvironmentVariablesRequest(environment_id=environment_id)
        reply = await invoke("server", self._stub.GetEnvironmentVariables(request, timeout=10))
        return {v.name: v.value for v in reply.variables}

    async def get_connection(
        self, environment_id: int, provider_config_key: str, connection_id: str, *, force_refresh: bool = False
    ) -> ConnectionInfo:
        ref = common_pb2.ConnectionRef(
            environment_id=environment_id, provider_config_key=provider_config_key, connection_id=connection_id
        )
        request = server_pb2.GetConnectionRequest(connection=ref, force_refresh=force_refresh)
        reply = await invoke("server", self._stub.GetConnection(request, timeout=60))
        return _connection(reply.connection)

    async def set_connection_metadata(
        self,
        environment_id: int,
        provider_config_key: str,
        connection_id: str,
        metadata: dict[str, Any],
        *,
        merge: bool,
    ) -> dict[str, Any]:
        ref = common_pb2.ConnectionRef(
            environment_id=environment_id, provider_config_key=provider_config_key, connection_id=connection_id
        )
        request = server_pb2.SetConnectionMetadataRequest(
            connection=ref, metadata_json=json_bytes(metadata), merge=merge
        )
        reply = await invoke("server", self._stub.SetConnectionMetadata(request, timeout=10))
        result: dict[str, Any] = json_value(reply.metadata_json, {})
        return result

    async def get_integration(
        self, environment_id: int, unique_key: str, *, include_credentials: bool = False
    ) -> IntegrationInfo:
        request = server_pb2.GetIntegrationRequest(
            environment_id=environment_id, unique_key=unique_key, include_credentials=include_credentials
        )
        pb = (await invoke("server", self._stub.GetIntegration(request, timeout=10))).integration
        return IntegrationInfo(
            id=pb.id,
            environment_id=pb.environment_id,
            unique_key=pb.unique_key,
            provider=pb.provider,
            display_name=pb.display_name,
            credentials=json_value(pb.credentials_json),
            custom=json_value(pb.custom_json),
            forward_webhooks=pb.forward_webhooks,
        )

    async def get_function_config(
        self, environment_id: int, provider_config_key: str, name: str, type_: str | None = None
    ) -> FunctionConfig:
        """A deployed function by integration and name (`type_` when the name is ambiguous); NotFound otherwise."""
        request = server_pb2.GetFunctionConfigRequest(
            environment_id=environment_id, provider_config_key=provider_config_key, name=name, type=type_ or ""
        )
        reply = await invoke("server", self._stub.GetFunctionConfig(request, timeout=10))
        return _function(reply.function)

    async def get_sync_run_context(self, sync_id: str) -> SyncRunContext:
        """The sync, its function and its connection; NotFound (`unknown_sync`) once any of them is gone."""
        request = server_pb2.GetSyncRunContextRequest(sync_id=sync_id)
        reply = await invoke("server", self._stub.GetSyncRunContext(request, timeout=10))
        pb = reply.sync
        sync = SyncInfo(
            id=pb.id,
            name=pb.name,
            variant=pb.variant,
            nango_connection_id=pb.nango_connection_id,
            frequency=pb.frequency,
            last_sync_date=pb.last_sync_date.ToDatetime(tzinfo=UTC) if pb.HasField("last_sync_date") else None,
        )
        return SyncRunContext(sync, _function(reply.function), _connection(reply.connection), reply.environment_name)

    async def record_sync_run(self, sync_id: str, sync_job_id: int, *, success: bool, started_at: datetime) -> None:
        """A sync run ended; on success its start becomes the sync's last_sync_date."""
        request = server_pb2.RecordSyncRunRequest(sync_id=sync_id, sync_job_id=str(sync_job_id), success=success)
        request.started_at.FromDatetime(started_at)
        await invoke("server", self._stub.RecordSyncRun(request, timeout=10))

    async def trigger_action(
        self, environment_id: int, provider_config_key: str, connection_id: str, action_name: str, input: Any = None
    ) -> Any:
        """Run an action for a connection and wait for its output (up to the action's 15 minutes, plus
        its 30 s to start); its failure is raised as the NangoError the public API would answer."""
        ref = common_pb2.ConnectionRef(
            environment_id=environment_id, provider_config_key=provider_config_key, connection_id=connection_id
        )
        request = server_pb2.TriggerActionRequest(connection=ref, action_name=action_name, input_json=json_bytes(input))
        reply = await invoke("server", self._stub.TriggerAction(request, timeout=17 * 60))
        return json_value(reply.output_json)

    async def get_webhook_settings(self, environment_id: int, nango_connection_id: int = 0) -> WebhookSettings:
        """The environment's webhook settings and signing key; with a connection, its URL override applied
        (NotFound when the environment or the connection does not exist)."""
        request = server_pb2.GetWebhookSettingsRequest(
            environment_id=environment_id, nango_connection_id=nango_connection_id
        )
        pb = (await invoke("server", self._stub.GetWebhookSettings(request, timeout=10))).settings
        return WebhookSettings(
            environment_name=pb.environment_name,
            primary_url=pb.primary_url,
            secondary_url=pb.secondary_url,
            on_auth_creation=pb.on_auth_creation,
            on_auth_refresh_error=pb.on_auth_refresh_error,
            on_sync_error=pb.on_sync_error,
            on_sync_completion_always=pb.on_sync_completion_always,
            on_async_action_completion=pb.on_async_action_completion,
            signing_key=pb.signing_key,
        )
