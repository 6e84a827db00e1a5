from __future__ import annotations

import asyncio

from nango.grpckit import ServiceBinding, serve_until
from nango.runner.rpc import RunnerServicer
from nango.runner.settings import RunnerSettings
from nangopb.runner.v1 import runner_pb2_grpc

SERVICE_NAME = "nangopb.runner.v1.RunnerService"


async def run(settings: RunnerSettings, stop: asyncio.Event) -> None:
    # RPCs not served yet answer UNIMPLEMENTED (the base servicer's methods); see rpc.py
    servicer = RunnerServicer()  # type: ignore[abstract]
    binding = ServiceBinding(SERVICE_NAME, servicer, runner_pb2_grpc.add_RunnerServiceServicer_to_server)
    await serve_until(
        stop,
        [binding],
        host=settings.bind_host,
        port=settings.port,
        token=settings.internal_token.get_secret_value(),
        grace=settings.shutdown_grace_seconds,
    )
