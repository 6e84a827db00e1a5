"""Errors of a proxy call raised before (or instead of) calling the upstream API."""

from __future__ import annotations

from nango.errors import InvalidRequest, NangoError, RpcStatus


class UnsupportedProvider(InvalidRequest):
    code = "unsupported_provider"
    default_message = "The provider has no proxy base URL; send a Base-Url-Override"


class UnsupportedAuth(NangoError):
    code = "unsupported_auth"
    http_status = 400
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The proxy cannot sign requests with this connection's auth mode"


class InvalidBaseUrl(InvalidRequest):
    code = "invalid_base_url"
    default_message = "The base URL is not an absolute http(s) URL"


class InvalidUpstreamHeaders(InvalidRequest):
    code = "invalid_headers"
    default_message = "A header to send upstream contains a line break (from the connection, its config or the caller)"


class BaseUrlOverrideDisabled(InvalidRequest):
    code = "base_url_override_disabled"
    default_message = "Base-Url-Override is disabled by server configuration (NANGO_PROXY_BASE_URL_OVERRIDE_ENABLED)"


class BaseUrlOverrideNotAllowed(InvalidRequest):
    code = "base_url_override_not_allowed"
    default_message = "This base URL override is not allowed by server configuration."


__all__ = [
    "BaseUrlOverrideDisabled",
    "BaseUrlOverrideNotAllowed",
    "InvalidBaseUrl",
    "InvalidUpstreamHeaders",
    "UnsupportedAuth",
    "UnsupportedProvider",
]
