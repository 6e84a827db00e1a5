"""One error hierarchy for every transport.

A `NangoError` carries a stable string `code` (Nango's public codes where Nango has one), the HTTP
status the REST gateway answers with, and the gRPC status an internal call fails with. The gRPC
interceptor, every `client.py` and the aiohttp middleware translate it, so an error raised in one
service's domain code reaches a REST caller or another service unchanged.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar


class RpcStatus(Enum):
    """gRPC status codes by name; mapped to `grpc.StatusCode` by nango.grpckit."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    INTERNAL = "INTERNAL"


class NangoError(Exception):
    """Base of every error the platform raises on purpose.

    Subclasses set `code`, `http_status` and `rpc_status` as class attributes; an instance may
    override `code` (for the many one-off codes of the public API) and carry a JSON `payload`.
    """

    code: ClassVar[str] = "server_error"
    http_status: ClassVar[int] = 500
    rpc_status: ClassVar[RpcStatus] = RpcStatus.INTERNAL
    default_message: ClassVar[str] = "An internal error occurred"

    _by_code: ClassVar[dict[str, type[NangoError]]] = {}

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        payload: Any = None,
        errors: list[dict[str, Any]] | None = None,
        http_status: int | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.instance_code = code or type(self).code
        self.payload = payload
        self.errors = errors
        self.status = http_status or type(self).http_status

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            NangoError._by_code.setdefault(cls.code, cls)

    @classmethod
    def class_for(cls, code: str) -> type[NangoError]:
        """The error class registered for a code; the base class for codes it does not know."""
        return cls._by_code.get(code, NangoError)

    def to_envelope(self) -> dict[str, Any]:
        """Nango's REST error body: {"error": {"code", "message", "payload"?, "errors"?}}."""
        body: dict[str, Any] = {"code": self.instance_code, "message": self.message}
        if self.payload is not None:
            body["payload"] = self.payload
        if self.errors is not None:
            body["errors"] = self.errors
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.instance_code!r}, message={self.message!r})"


class InvalidRequest(NangoError):
    code = "invalid_request"
    http_status = 400
    rpc_status = RpcStatus.INVALID_ARGUMENT
    default_message = "The request is invalid"


class InvalidBody(InvalidRequest):
    code = "invalid_body"
    default_message = "The request body is invalid"


class InvalidQueryParams(InvalidRequest):
    code = "invalid_query_params"
    default_message = "The query parameters are invalid"


class InvalidHeaders(InvalidRequest):
    code = "invalid_headers"
    default_message = "The request headers are invalid"


class InvalidUriParams(InvalidRequest):
    code = "invalid_uri_params"
    default_message = "The URL parameters are invalid"


class InvalidJson(InvalidRequest):
    code = "invalid_json"
    default_message = "The request body is not valid JSON"


class InvalidContentType(NangoError):
    code = "invalid_content_type"
    http_status = 415
    rpc_status = RpcStatus.INVALID_ARGUMENT
    default_message = "The content type is not supported"


class RequestTooLarge(NangoError):
    code = "request_too_large"
    http_status = 413
    rpc_status = RpcStatus.RESOURCE_EXHAUSTED
    default_message = "The request body is too large"


class NotFound(NangoError):
    code = "not_found"
    http_status = 404
    rpc_status = RpcStatus.NOT_FOUND
    default_message = "Not found"


class MethodNotAllowed(NangoError):
    code = "method_not_allowed"
    http_status = 405
    rpc_status = RpcStatus.UNIMPLEMENTED
    default_message = "This method is not allowed on this route"


class AlreadyExists(NangoError):
    code = "already_exists"
    http_status = 409
    rpc_status = RpcStatus.ALREADY_EXISTS
    default_message = "The resource already exists"


class Conflict(NangoError):
    code = "conflict"
    http_status = 409
    rpc_status = RpcStatus.ABORTED
    default_message = "The resource was changed concurrently"


class Unauthenticated(NangoError):
    code = "unauthenticated"
    http_status = 401
    rpc_status = RpcStatus.UNAUTHENTICATED
    default_message = "Authentication failed"


class MissingAuthHeader(Unauthenticated):
    code = "missing_auth_header"
    default_message = "Authentication failed. The request is missing the Authorization header."


class MalformedAuthHeader(Unauthenticated):
    code = "malformed_auth_header"
    default_message = "Authentication failed. The Authorization header is malformed, expected 'Bearer <secret key>'."


class InvalidSecretKeyFormat(Unauthenticated):
    code = "invalid_secret_key_format"
    default_message = "Authentication failed. The secret key is not a valid UUID v4."


class UnknownAccount(Unauthenticated):
    code = "unknown_account"
    default_message = "Authentication failed. The provided secret key is not valid."


class InvalidInternalToken(Unauthenticated):
    code = "invalid_internal_token"
    default_message = "Missing or invalid internal service token"


class Forbidden(NangoError):
    code = "forbidden"
    http_status = 403
    rpc_status = RpcStatus.PERMISSION_DENIED
    default_message = "Forbidden"


class TooManyRequests(NangoError):
    code = "too_many_request"
    http_status = 429
    rpc_status = RpcStatus.RESOURCE_EXHAUSTED
    default_message = "Too many requests"


class FailedDependency(NangoError):
    code = "failed_dependency"
    http_status = 424
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "A dependency failed"


class ServiceUnavailable(NangoError):
    code = "service_unavailable"
    http_status = 503
    rpc_status = RpcStatus.UNAVAILABLE
    default_message = "A platform service is unavailable, try again"


class Timeout(NangoError):
    code = "timeout"
    http_status = 504
    rpc_status = RpcStatus.DEADLINE_EXCEEDED
    default_message = "The operation timed out"


class NotImplementedYet(NangoError):
    code = "not_implemented"
    http_status = 501
    rpc_status = RpcStatus.UNIMPLEMENTED
    default_message = "This operation is not implemented by this version"


class InternalError(NangoError):
    code = "server_error"
    http_status = 500
    rpc_status = RpcStatus.INTERNAL


__all__ = [
    "AlreadyExists",
    "Conflict",
    "FailedDependency",
    "Forbidden",
    "InternalError",
    "InvalidBody",
    "InvalidContentType",
    "InvalidHeaders",
    "InvalidInternalToken",
    "InvalidJson",
    "InvalidQueryParams",
    "InvalidRequest",
    "InvalidSecretKeyFormat",
    "InvalidUriParams",
    "MalformedAuthHeader",
    "MethodNotAllowed",
    "MissingAuthHeader",
    "NangoError",
    "NotFound",
    "NotImplementedYet",
    "RequestTooLarge",
    "RpcStatus",
    "ServiceUnavailable",
    "Timeout",
    "TooManyRequests",
    "Unauthenticated",
    "UnknownAccount",
]
