"""Errors a function author meets: the ones they raise (`ActionError`) and the ones the SDK raises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nango.sdk.runtime import ProxyResponse


class ActionError(Exception):
    """An expected failure of an action: the caller receives `payload` (HTTP 500,
    `action_script_runtime_error`), never a traceback."""

    def __init__(self, payload: Any = None) -> None:
        self.payload = payload
        super().__init__(payload if isinstance(payload, str) else "action failed")


class SdkError(Exception):
    """A call of the `nango` object that cannot be done as asked (the message says why)."""


class DefinitionError(SdkError):
    """A decorator or model declares something invalid; raised when the module is imported."""


class InvalidRecord(SdkError):
    """A record does not match its model; nothing of the batch was sent."""

    def __init__(self, model: str, index: int, errors: list[dict[str, Any]]) -> None:
        self.model = model
        self.index = index
        self.errors = errors
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ())) or "record"
        super().__init__(f"record {index} of model {model} is invalid: {where}: {first.get('msg', 'invalid')}")


class CheckpointConflict(SdkError):
    """Another run wrote the checkpoint since this one read it."""


class FeatureUnavailable(SdkError):
    """The platform this function runs on does not offer this call (yet)."""


class PaginationError(SdkError):
    """The pagination configuration or a page does not have the shape the strategy needs."""


class HTTPError(SdkError):
    """An upstream call through the proxy answered with a 4xx or 5xx status. Left uncaught, the run
    fails with `script_http_error` (HTTP 424) carrying the upstream's status, headers and body."""

    def __init__(self, response: ProxyResponse) -> None:
        self.response = response
        super().__init__(f"the upstream API answered {response.status_code} to {response.method} {response.endpoint}")


__all__ = [
    "ActionError",
    "CheckpointConflict",
    "DefinitionError",
    "FeatureUnavailable",
    "HTTPError",
    "InvalidRecord",
    "PaginationError",
    "SdkError",
]
