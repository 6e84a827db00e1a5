"""What the popup flows of every OAuth-family mode (OAUTH2, OAUTH1, APP, CUSTOM) share: their errors, the
provider's refusal read from a callback, the connection config a callback yields, and what an exchange produces.

Each error's code is the websocket `error_type` the browser SDK sees; messages never carry a secret.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from nango.errors import NangoError, RpcStatus
from nango.providers import Provider
from nango.server.auth import credentials as creds

log = logging.getLogger(__name__)

# encodeURIComponent's unreserved set: authorize URLs are built as Nango builds them
URL_SAFE = "-_.!~*'()"
# a provider's `error` code is shown as the error type only when it looks like one (`access_denied`)
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PROVIDER_ERROR_FIELDS = ("error_description", "error_reason", "error_message", "error_uri", "status_code")
# `error_uri` or `status_code` alone do not make a callback a refusal
_PROVIDER_ERROR_SIGNALS = ("error_description", "error_reason", "error_message")
MAX_SHOWN = 500


class OAuthFlowError(NangoError):
    """A flow that cannot go on; the code is the error type the browser is told."""

    code = "oauth_flow_error"
    http_status = 400
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "The authorization could not be completed"


class InvalidProviderConfig(OAuthFlowError):
    code = "invalid_provider_config"
    default_message = "The integration is missing its OAuth client id or client secret"


class UnknownGrantType(OAuthFlowError):
    code = "unknown_grant_type"
    default_message = "The provider's token_params ask for a grant type other than authorization_code"


class InvalidState(OAuthFlowError):
    code = "invalid_state"
    default_message = "The authorization is unknown, expired or was already used; start it again"


class MissingStateCookie(OAuthFlowError):
    code = "missing_state_cookie"
    default_message = "The authorization was started in another browser; start it again from this one"


class InvalidCallback(OAuthFlowError):
    code = "invalid_callback"
    default_message = "The provider's callback carries no authorization code"


class RequestTokenFailed(OAuthFlowError):
    code = "request_token_failed"
    default_message = "The provider refused to issue an OAuth 1.0a request token"


class TokenExchangeFailed(OAuthFlowError):
    code = "token_exchange_failed"
    default_message = "The provider refused to exchange the authorization code"


class InvalidTokenResponse(OAuthFlowError):
    code = "invalid_token_response"
    default_message = "The provider's token response has no access token"


class UnexpectedFlowError(OAuthFlowError):
    code = "unknown_error"


@dataclass(frozen=True)
class Exchanged:
    """What a callback produced. `credentials` is None when there is nothing to store yet (an installation
    awaiting an organization owner's approval), which the browser is told as `is_pending`."""

    credentials: dict[str, Any] | None
    connection_config: dict[str, Any] = field(default_factory=dict)
    is_pending: bool = False


def unexpected(exc: BaseException) -> UnexpectedFlowError:
    """An error nobody planned for: its details go to the log under an id the end user can quote."""
    incident = str(uuid.uuid4())
    log.error("unexpected error in an OAuth flow", exc_info=exc, extra={"incident": incident})
    return UnexpectedFlowError(f'An unexpected error occurred. Please contact support with this id: "{incident}"')


def encode(value: str) -> str:
    return quote(value, safe=URL_SAFE)


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    """`url` with `params` appended to whatever query it already has."""
    if not params:
        return url
    query = "&".join(f"{encode(k)}={encode(v)}" for k, v in params)
    return f"{url}{'&' if '?' in url else '?'}{query}"


def provider_error(query: Mapping[str, str]) -> OAuthFlowError | None:
    """The provider's refusal as the callback reports it (`?error=access_denied&error_description=...`)."""
    error = query.get("error")
    if not error and not any(query.get(name) for name in _PROVIDER_ERROR_SIGNALS):
        return None
    details = {name: query[name] for name in _PROVIDER_ERROR_FIELDS if query.get(name)}
    code = error if error and _ERROR_CODE.match(error) else "provider_error"
    shown = [f"{name}: {value}" for name, value in details.items()]
    message = f"The provider answered {error or 'an error'}" + (f" ({'; '.join(shown)})" if shown else "")
    return OAuthFlowError(message[:MAX_SHOWN], code=code)


def callback_metadata(provider: Provider, raw: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """`token_response_metadata` paths (strings and booleans, keyed by the path) and `redirect_uri_metadata` params."""
    found: dict[str, Any] = {}
    for path in provider.token_response_metadata or ():
        value = creds.dig(dict(raw), path)
        if isinstance(value, str | bool):
            found[path] = value
    for name in provider.redirect_uri_metadata or ():
        if query.get(name):
            found[name] = query[name]
    return found
