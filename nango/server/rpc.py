"""The server's internal gRPC API: protobuf in, control-plane calls, protobuf out.

Calls made with a task token (the code of one running function) may only reach the environment and
connection of that task: every method here checks it with `require_scope`.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from nango.errors import InvalidRequest, NotFound
from nango.grpckit import json_bytes, json_value, require_scope
from nango.server.actions import ActionService
from nango.server.connections import Connection, ConnectionService
from nango.server.environments import EnvironmentService
from nango.server.errors import UnknownConnection, UnknownEnvironment
from nango.server.functions import FunctionService
from nango.server.integrations import IntegrationService
from nango.server.store.connections import EndUserRow
from nango.server.store.functions import FunctionRow
from nango.server.webhooks.settings import WebhookSettingsService
from nangopb.common.v1 import common_pb2
from nangopb.server.v1 import server_pb2, server_pb2_grpc

SERVICE_NAME = "nangopb.server.v1.ServerService"
# what a running function may call with its task token
TASK_METHODS = frozenset(
    f"/{SERVICE_NAME}/{method}"
    for method in (
        "GetConnection",
        "SetConnectionMetadata",
        "GetIntegration",
        "GetEnvironmentVariables",
        "TriggerAction",
    )
)


def _timestamp(value: object) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)  # type: ignore[arg-type]
    return stamp


def _end_user(end_user: EndUserRow | None) -> dict[str, object] | None:
    if end_user is None:
        return None
    return {
        "id": end_user.end_user_id,
        "email": end_user.email,
        "display_name": end_user.display_name,
        "organization_id": end_user.organization_id,
    }


def connection_pb(connection: Connection) -> server_pb2.Connection:
    row = connection.row
    return server_pb2.Connection(
        id=row.id,
        environment_id=row.environment_id,
        connection_id=row.connection_id,
        provider_config_key=row.provider_config_key,
        provider=row.provider,
        auth_mode=row.auth_mode,
        credentials_json=json_bytes(connection.credentials),
        connection_config_json=json_bytes(row.connection_config),
        metadata_json=json_bytes(row.metadata),
        end_user_json=json_bytes(_end_user(row.end_user)),
        tags_json=json_bytes(row.tags),
        created_at=_timestamp(row.created_at),
        updated_at=_timestamp(row.updated_at),
    )


def _ref(ref: common_pb2.ConnectionRef) -> tuple[int, str, str]:
    if not ref.environment_id or not ref.provider_config_key or not ref.connection_id:
        raise InvalidRequest("connection must name environment_id, provider_config_key and connection_id")
    require_scope(ref.environment_id)
    return ref.environment_id, ref.provider_config_key, ref.connection_id


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    """RPCs of functions and webhooks arrive with their issues; until then they answer UNIMPLEMENTED."""

    def __init__(
        self,
        environments: EnvironmentService,
        integrations: IntegrationService,
        connections: ConnectionService,
        functions: FunctionService,
        actions: ActionService,
        *,
        webhook_settings: WebhookSettingsService,
    ) -> None:
        self.environments = environments
        self.webhook_settings = webhook_settings
        self.integrations = integrations
        self.connections = connections
        self.functions = functions
        self.actions = actions

    async def ListEnvironments(
        self, request: server_pb2.ListEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.ListEnvironmentsResponse:
        found = await self.environments.list_with_keys()
        return server_pb2.ListEnvironmentsResponse(
            environments=[
                server_pb2.Environment(
                    id=e.environment.id, name=e.environment.name, uuid=e.environment.uuid, secret_key=e.secret_key
                )
                for e in found
            ]
        )

    async def GetEnvironmentVariables(
        self, request: server_pb2.GetEnvironmentVariablesRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetEnvironmentVariablesResponse:
        require_scope(request.environment_id)
        variables = await self.environments.variables(request.environment_id)
        return server_pb2.GetEnvironmentVariablesResponse(
            variables=[server_pb2.EnvironmentVariable(name=n, value=v) for n, v in variables]
        )

    async def GetConnection(
        self, request: server_pb2.GetConnectionRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetConnectionResponse:
        environment_id, key, connection_id = _ref(request.connection)
        found = await self.connections.get(environment_id, key, connection_id)
        require_scope(environment_id, found.id)
        fresh = await self.connections.get_fresh(
            environment_id, key, connection_id, force_refresh=request.force_refresh
        )
        return server_pb2.GetConnectionResponse(connection=connection_pb(fresh))

    async def SetConnectionMetadata(
        self, request: server_pb2.SetConnectionMetadataRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.SetConnectionMetadataResponse:
        environment_id, key, connection_id = _ref(request.connection)
        try:
            metadata = json_value(request.metadata_json, {})
        except json.JSONDecodeError:
            raise InvalidRequest("metadata_json is not valid JSON") from None
        if not isinstance(metadata, dict):
            raise InvalidRequest("metadata must be a JSON object")
        found = await self.connections.get(environment_id, key, connection_id)
        require_scope(environment_id, found.id)
        await self.connections.set_metadata(environment_id, key, [connection_id], metadata, merge=request.merge)
        updated = await self.connections.get(environment_id, key, connection_id)
        return server_pb2.SetConnectionMetadataResponse(metadata_json=json_bytes(updated.row.metadata or {}))

    async def GetIntegration(
        self, request: server_pb2.GetIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetIntegrationResponse:
        require_scope(request.environment_id)
        integration = await self.integrations.get(request.environment_id, request.unique_key)
        credentials = None
        if request.include_credentials:
            credentials = {
                "client_id": integration.client_id,
                "client_secret": integration.client_secret,
                "scopes": integration.scopes,
            }
        return server_pb2.GetIntegrationResponse(
            integration=server_pb2.Integration(
                id=integration.id,
                environment_id=integration.environment_id,
                unique_key=integration.unique_key,
                provider=integration.provider,
                display_name=integration.display_name or "",
                credentials_json=json_bytes(credentials),
                custom_json=json_bytes(integration.custom),
                forward_webhooks=integration.forward_webhooks,
            )
        )

    async def GetFunctionConfig(
        self, request: server_pb2.GetFunctionConfigRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetFunctionConfigResponse:
        require_scope(request.environment_id)
        function = await self.functions.get(
            request.environment_id, request.provider_config_key, request.name, request.type or None
        )
        return server_pb2.GetFunctionConfigResponse(function=function_pb(function))

    async def GetSyncRunContext(
        self, request: server_pb2.GetSyncRunContextRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetSyncRunContextResponse:
        sync = await self.functions.store.sync(_uuid(request.sync_id, "sync_id"))
        if sync is None:
            raise NotFound(f"sync {request.sync_id} does not exist", code="unknown_sync")
        function = await self.functions.store.get(sync.function_id)
        row = await self.connections.store.get_by_id(sync.connection_row_id)
        if function is None or row is None:
            raise NotFound(f"sync {request.sync_id} has no function or connection any more", code="unknown_sync")
        environment = await self.environments.get(sync.environment_id)
        sync_pb = server_pb2.Sync(
            id=sync.id,
            name=sync.name,
            variant=sync.variant,
            nango_connection_id=sync.connection_row_id,
            frequency=sync.frequency or function.frequency or "",
            last_sync_date=_timestamp(sync.last_sync_date) if sync.last_sync_date else None,
        )
        # jobs needs who and what, not the credentials: the function's SDK fetches those itself
        connection = connection_pb(Connection(row, {}))
        return server_pb2.GetSyncRunContextResponse(
            sync=sync_pb, function=function_pb(function), connection=connection, environment_name=environment.name
        )

    async def RecordSyncRun(
        self, request: server_pb2.RecordSyncRunRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.RecordSyncRunResponse:
        sync_id = _uuid(request.sync_id, "sync_id")
        if request.success and request.HasField("started_at"):
            await self.functions.store.record_sync_run(sync_id, request.started_at.ToDatetime(tzinfo=UTC))
        return server_pb2.RecordSyncRunResponse()

    async def GetWebhookSettings(
        self, request: server_pb2.GetWebhookSettingsRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetWebhookSettingsResponse:
        """Internal only (jobs signs and addresses deliveries with it): not in TASK_METHODS, so a
        function's task token cannot read a signing key."""
        if request.environment_id <= 0:
            raise InvalidRequest("environment_id is required")
        try:
            if request.nango_connection_id:
                found = await self.webhook_settings.for_connection(request.environment_id, request.nango_connection_id)
            else:
                found = await self.webhook_settings.get(request.environment_id)
        except (UnknownEnvironment, UnknownConnection) as exc:
            # NotFound's own code, which every client process knows (NOT_FOUND either way)
            raise NotFound(exc.message) from None
        return server_pb2.GetWebhookSettingsResponse(
            settings=server_pb2.WebhookSettings(
                primary_url=found.primary_url or "",
                secondary_url=found.secondary_url or "",
                on_auth_creation=found.on_auth_creation,
                on_auth_refresh_error=found.on_auth_refresh_error,
                on_sync_error=found.on_sync_error,
                on_sync_completion_always=found.on_sync_completion_always,
                on_async_action_completion=found.on_async_action_completion,
                signing_key=found.signing_key,
                environment_name=found.environment_name,
            )
        )

    async def TriggerAction(
        self, request: server_pb2.TriggerActionRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.TriggerActionResponse:
        """A running function calls another action of its environment, and waits for its output."""
        environment_id, key, connection_id = _ref(request.connection)
        if not request.action_name:
            raise InvalidRequest("action_name is required")
        try:
            input = json_value(request.input_json)
        except json.JSONDecodeError:
            raise InvalidRequest("input_json is not valid JSON") from None
        # a caller that goes away cancels this handler, and with it the wait (never the action's task)
        output = await self.actions.run(environment_id, key, connection_id, request.action_name, input)
        return server_pb2.TriggerActionResponse(output_json=json_bytes(output))


def function_pb(function: FunctionRow) -> server_pb2.FunctionConfig:
    return server_pb2.FunctionConfig(
        id=function.id,
        environment_id=function.environment_id,
        provider_config_key=function.provider_config_key,
        name=function.name,
        type=function.type,
        version=function.version,
        bundle_key=function.bundle_key,
        bundle_sha256=function.bundle_sha256,
        models=function.models,
        track_deletes=function.track_deletes,
        auto_start=function.auto_start,
        frequency=function.frequency or "",
        webhook_subscriptions=function.webhook_subscriptions,
        input_json_schema=json_bytes(function.input_json_schema),
        models_json_schema=json_bytes(function.models_json_schema),
        enabled=function.enabled,
    )


def _uuid(value: str, field: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"{field} is not a UUID") from None
