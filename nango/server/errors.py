"""The server's error types (Nango's public codes)."""

from __future__ import annotations

from nango.errors import Conflict, FailedDependency, InvalidBody, NangoError, NotFound, RpcStatus, Unauthenticated


class UnknownProviderConfig(NotFound):
    code = "unknown_provider_config"
    default_message = "Integration does not exist"


class UnknownConnection(NangoError):
    code = "unknown_connection"
    http_status = 400
    rpc_status = RpcStatus.NOT_FOUND
    default_message = "Connection does not exist"


class IntegrationExists(Conflict):
    code = "conflict"
    default_message = "An integration with this unique_key already exists"


class IncompatibleCredentials(InvalidBody):
    default_message = "incompatible credentials auth type and provider auth"


class ConnectionTestFailed(NangoError):
    code = "connection_test_failed"
    http_status = 400
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The credentials were refused by the provider"


class InvalidCredentials(NangoError):
    code = "invalid_credentials"
    http_status = 400
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The credentials are invalid"


class RefreshBackoff(FailedDependency):
    code = "connection_refresh_backoff"
    default_message = "The last credential refresh failed less than 30 seconds ago; try again later"


class RefreshExhausted(FailedDependency):
    code = "connection_refresh_exhausted"
    default_message = "Refreshing the credentials failed too many times; the end user must reconnect"


class MissingPublicKey(Unauthenticated):
    code = "missing_public_key"
    default_message = "Authentication failed. Missing connect_session_token (or public_key) in the query string."


class InvalidPublicKey(Unauthenticated):
    code = "invalid_public_key"
    default_message = "Authentication failed. The public key is not a valid UUID v4."


class DeprecatedAuthentication(Unauthenticated):
    code = "deprecated_authentication"
    default_message = "Public key authentication is deprecated; use a connect session token"


class UnknownEnvironment(NotFound):
    code = "unknown_environment"
    default_message = "Environment does not exist"


class WebhookUrlDenied(NangoError):
    """A webhook URL the outbound URL policy refuses (a private, loopback or metadata address, a denied host)."""

    code = "webhook_url_denied"
    http_status = 400
    rpc_status = RpcStatus.INVALID_ARGUMENT
    default_message = "The outbound URL policy does not allow this webhook URL"
