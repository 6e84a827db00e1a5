"""Errors of the non-popup auth flows that the server's shared error types do not cover."""

from __future__ import annotations

from collections.abc import Sequence

from nango.errors import NangoError, RpcStatus


class InvalidAuthMode(NangoError):
    code = "invalid_auth_mode"
    http_status = 400
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "This route does not serve the auth mode of the integration's provider"


class InvalidConnectionConfig(NangoError):
    """A provider URL needs connection config the client did not send (`params[k]`)."""

    code = "invalid_connection_config"
    http_status = 400
    rpc_status = RpcStatus.INVALID_ARGUMENT
    default_message = "The connection config misses values the provider needs"

    @classmethod
    def missing(cls, keys: Sequence[str], where: str) -> InvalidConnectionConfig:
        listed = ", ".join(keys)
        return cls(
            f"The provider's {where} needs connection config {listed} (send it as params[<key>])",
            payload={"missing": list(keys)},
        )
