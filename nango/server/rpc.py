from __future__ import annotations

import grpc

from nango.server.environments import EnvironmentService
from nangopb.server.v1 import server_pb2, server_pb2_grpc


class ServerServicer(server_pb2_grpc.ServerServiceServicer):
    """Turns protobuf into control-plane calls. Connection, integration, function and webhook RPCs
    arrive with their issues; until then they answer UNIMPLEMENTED (code `not_implemented`)."""

    def __init__(self, environments: EnvironmentService) -> None:
        self.environments = environments

    async def ListEnvironments(
        self, request: server_pb2.ListEnvironmentsRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.ListEnvironmentsResponse:
        found = await self.environments.list_with_keys()
        return server_pb2.ListEnvironmentsResponse(
            environments=[
                server_pb2.Environment(
                    id=e.environment.id,
                    name=e.environment.name,
                    uuid=e.environment.uuid,
                    secret_key=e.secret_key,
                )
                for e in found
            ]
        )

    async def GetEnvironmentVariables(
        self, request: server_pb2.GetEnvironmentVariablesRequest, context: grpc.aio.ServicerContext
    ) -> server_pb2.GetEnvironmentVariablesResponse:
        variables = await self.environments.variables(request.environment_id)
        return server_pb2.GetEnvironmentVariablesResponse(
            variables=[server_pb2.EnvironmentVariable(name=n, value=v) for n, v in variables]
        )
