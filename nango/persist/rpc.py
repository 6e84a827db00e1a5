from __future__ import annotations

from nangopb.persist.v1 import persist_pb2_grpc


class PersistServicer(persist_pb2_grpc.PersistServiceServicer):
    """Turns protobuf into domain calls. Record, checkpoint and lock RPCs arrive with the
    functions issue; until then they answer UNIMPLEMENTED (code `not_implemented`)."""
