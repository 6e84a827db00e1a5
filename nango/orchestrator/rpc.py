from __future__ import annotations

from nangopb.orchestrator.v1 import orchestrator_pb2_grpc


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Turns protobuf into domain calls. The task and schedule RPCs arrive with the functions
    issue; until then they answer UNIMPLEMENTED (code `not_implemented`)."""
