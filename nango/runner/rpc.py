from __future__ import annotations

from nangopb.runner.v1 import runner_pb2_grpc


class RunnerServicer(runner_pb2_grpc.RunnerServiceServicer):
    """Turns protobuf into domain calls. The RPCs arrive with the functions issue; until then
    they answer UNIMPLEMENTED (code `not_implemented`)."""
