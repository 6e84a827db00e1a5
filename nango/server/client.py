"""The typed client other services (and `nango up`) use to reach the server's internal API."""

from __future__ import annotations

from dataclasses import dataclass

from nango.grpckit import invoke, open_channel
from nangopb.server.v1 import server_pb2, server_pb2_grpc


@dataclass(frozen=True)
class EnvironmentKeys:
    id: int
    name: str
    uuid: str
    secret_key: str


class ServerClient:
    def __init__(self, target: str, token: str) -> None:
        self._channel = open_channel(target, token)
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
