"""Errors of the provider catalog."""

from __future__ import annotations

from nango.errors import NangoError, NotFound, RpcStatus


class InvalidProvidersFile(NangoError):
    """A providers file does not parse or validate; `errors` lists each problem with its provider and field."""

    code = "invalid_providers_file"
    http_status = 500
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The providers file is invalid"


class UnknownProvider(NotFound):
    code = "unknown_provider"
    default_message = "Unknown provider"


__all__ = ["InvalidProvidersFile", "UnknownProvider"]
