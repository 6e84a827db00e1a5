"""The typed client other services (and `nango up`) use to reach the server's internal API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
