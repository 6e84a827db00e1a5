from __future__ import annotations

from nangopb.jobs.v1 import jobs_pb2_grpc


class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    """Turns protobuf into domain calls. The RPCs arrive with the functions issue; until then
    they answer UNIMPLEMENTED (code `not_implemented`)."""
