"""The OAuth 2.0 authorization-code flow with PKCE (reference §4.1, §4.2), without its transport.

`OAuthFlows.start` checks a `FlowContext`, records the flow in `oauth_sessions` and returns the
provider's authorize URL; `OAuthFlows.complete` takes the callback's query, uses the flow's state
once, exchanges the code and stores the connection. Failures are `NangoError`s whose code is the
websocket `error_type` the browser SDK sees; their messages never carry a secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from nango.crypto import Keyring
from nango.errors import NangoError, RpcStatus
from nango.oplog import OperationsLog
from nango.providers import Provider
from nango.providers.interpolate import interpolate, interpolate_url, missing_connection_config, template_values
from nango.server import sealing
from nango.server.auth import credentials as creds
from nango.server.auth.errors import InvalidAuthMode, InvalidConnectionConfig
from nango.server.auth.flows import Finished, FlowContext, FlowFinisher
from nango.server.auth.oauth2 import ClientCredentials, OAuth2Client, TokenRequestFailed
from nango.server.environments import EnvironmentService
from nango.server.errors import UnknownProviderConfig
from nango.server.integrations import Integration, IntegrationService
from nango.server.store.oauth_sessions import NewOAuthSession, OAuthSessionRow, OAuthSessionStore
from nango.server.store.sessions import SessionStore

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# encodeURIComponent's unreserved set: the authorize URL is built as Nango (simple-oauth2) builds it
_URL_SAFE = "-_.!~*'()"
# a provider's `error` code is shown as the error type only when it looks like one (`access_denied`)
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PROVIDER_ERROR_FIELDS = ("error_description", "error_reason", "error_message", "error_uri", "status_code")
# `error_uri` or `status_code` alone do not make a callback a refusal
_PROVIDER_ERROR_SIGNALS = ("error_description", "error_reason", "error_message")
_MAX_SHOWN = 500
SUPPORTED_MODES = frozenset({"OAUTH2"})


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


class TokenExchangeFailed(OAuthFlowError):
    code = "token_exchange_failed"
    default_message = "The provider refused to exchange the authorization code"


class InvalidTokenResponse(OAuthFlowError):
    code = "invalid_token_response"
    default_message = "The provider's token response has no access token"


class UnexpectedFlowError(OAuthFlowError):
    code = "unknown_error"


@dataclass(frozen=True)
class Authorization:
    state: str
    url: str


@dataclass(frozen=True)
class FlowTarget:
    """Who waits for a flow's outcome: the browser SDK's websocket, for this connection."""

    provider_config_key: str
    connection_id: str
    ws_client_id: str | None


@dataclass(frozen=True)
class Succeeded:
    target: FlowTarget
    finished: Finished


@dataclass(frozen=True)
class Failed:
    """`target` is None when the callback's state names no flow (unknown, used or malformed)."""

    target: FlowTarget | None
    error: NangoError


Completion = Succeeded | Failed


def unexpected(exc: BaseException) -> UnexpectedFlowError:
    """An error nobody planned for: its details go to the log under an id the end user can quote."""
    incident = str(uuid.uuid4())
    log.error("unexpected error in an OAuth flow", exc_info=exc, extra={"incident": incident})
    return UnexpectedFlowError(f'An unexpected error occurred. Please contact support with this id: "{incident}"')


def valid_ws_client_id(value: str | None) -> str | None:
    """The websocket client id as the server hands them out (a UUID); anything else is ignored."""
    return value if value and _UUID.match(value) else None


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _token_url_template(provider: Provider) -> str | None:
    template = provider.token_url
    if isinstance(template, dict):
        return template.get("OAUTH2")
    return template


def _encode(value: str) -> str:
    return quote(value, safe=_URL_SAFE)


def authorization_url(
    provider: Provider,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    connection_config: Mapping[str, Any],
    authorization_params: Mapping[str, str | None],
    user_scope: list[str],
    verifier: str,
) -> str:
    """The provider's authorize URL with Nango's parameters and post-processing rules (§4.1 step 6)."""
    if not provider.authorization_url:
        raise InvalidProviderConfig("The provider has no authorization_url")
    skip_encode = provider.authorization_url_skip_encode or ()
    values = template_values(connection_config=connection_config)
    base = interpolate_url(provider.authorization_url, values, skip_encode=skip_encode)
    scope = (provider.scope_separator or " ").join(scopes)
    raw_scope = "scopes" in skip_encode

    extra: dict[str, str | None] = {k: interpolate(v, values) for k, v in (provider.authorization_params or {}).items()}
    if not provider.disable_pkce:
        extra["code_challenge"] = code_challenge(verifier)
        extra["code_challenge_method"] = "S256"
    if user_scope:
        extra["user_scope"] = ",".join(user_scope)
    extra.update(authorization_params)
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        *([] if raw_scope else [("scope", scope)]),
        ("state", state),
        *((k, v) for k, v in extra.items() if v is not None),
    ]
    if provider.authorization_url_skip_empty:
        params = [(k, v) for k, v in params if v != ""]
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in params)
    if raw_scope and (scope or not provider.authorization_url_skip_empty):
        query += f"&scope={scope}"

    parts = urlsplit(base)
    query = f"{parts.query}&{query}" if parts.query else query
    if provider.authorization_url_fragment:
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + (
            f"#{provider.authorization_url_fragment}?{query}"
        )
    else:
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    for old, new in (provider.authorization_url_replacements or {}).items():
        url = url.replace(old, new)
    return url


def _provider_error(query: Mapping[str, str]) -> OAuthFlowError | None:
    """The provider's refusal as the callback reports it (`?error=access_denied&error_description=...`)."""
    error = query.get("error")
    if not error and not any(query.get(field) for field in _PROVIDER_ERROR_SIGNALS):
        return None
    details = {field: query[field] for field in _PROVIDER_ERROR_FIELDS if query.get(field)}
    code = error if error and _ERROR_CODE.match(error) else "provider_error"
    shown = [f"{field}: {value}" for field, value in details.items()]
    message = f"The provider answered {error or 'an error'}" + (f" ({'; '.join(shown)})" if shown else "")
    return OAuthFlowError(message[:_MAX_SHOWN], code=code)


def _connection_config_from(provider: Provider, raw: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """`token_response_metadata` paths (strings and booleans, keyed by the path) and `redirect_uri_metadata` params."""
    found: dict[str, Any] = {}
    for path in provider.token_response_metadata or ():
        value = creds.dig(raw, path)
        if isinstance(value, str | bool):
            found[path] = value
    for name in provider.redirect_uri_metadata or ():
        if query.get(name):
            found[name] = query[name]
    return found


class OAuthFlows:
    def __init__(
        self,
        store: OAuthSessionStore,
        sessions: SessionStore,
        keyring: Keyring,
        environments: EnvironmentService,
        integrations: IntegrationService,
        oauth2: OAuth2Client,
        finisher: FlowFinisher,
        oplog: OperationsLog,
        *,
        callback_url: str,
        state_cookie_enforced: bool,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.keyring = keyring
        self.environments = environments
        self.integrations = integrations
        self.oauth2 = oauth2
        self.finisher = finisher
        self.oplog = oplog
        self.callback_url = callback_url
        self.state_cookie_enforced = state_cookie_enforced

    async def start(self, ctx: FlowContext) -> Authorization:
        provider, integration = ctx.provider, ctx.integration
        if provider.auth_mode not in SUPPORTED_MODES:
            raise InvalidAuthMode(f"The provider {integration.provider} uses {provider.auth_mode}, not OAUTH2")
        grant_type = (provider.token_params or {}).get("grant_type")
        if grant_type not in (None, "authorization_code"):
            raise UnknownGrantType(f"The provider's token_params ask for the unsupported grant type {grant_type}")
        override = _client_override(ctx.credential_overrides)
        client = _client(integration, override)
        missing: list[str] = []
        for template in (provider.authorization_url, _token_url_template(provider)):
            for key in missing_connection_config(template or "", ctx.connection_config):
                if key not in missing:
                    missing.append(key)
        if missing:
            raise InvalidConnectionConfig.missing(missing, "authorization or token URL")

        state = str(uuid.uuid4())
        verifier = secrets.token_hex(32)
        sealed = self.keyring.seal(
            json.dumps({"code_verifier": verifier, "client_override": override}),
            aad=sealing.oauth_session_secrets(state),
        )
        session = ctx.session
        await self.store.insert(
            NewOAuthSession(
                id=state,
                environment_id=ctx.environment.id,
                integration_id=integration.id,
                provider=integration.provider,
                auth_mode=provider.auth_mode,
                connection_id=ctx.connection_id,
                connect_session_id=session.id if session else None,
                callback_url=self.callback_url,
                secrets_sealed=sealed,
                connection_config=ctx.connection_config,
                webhook_url_override=session.webhook_url_override if session else None,
                ws_client_id=valid_ws_client_id(ctx.ws_client_id),
            )
        )
        url = authorization_url(
            provider,
            client_id=client.client_id,
            redirect_uri=self.callback_url,
            scopes=ctx.scopes,
            state=state,
            connection_config=ctx.connection_config,
            authorization_params=ctx.authorization_params,
            user_scope=ctx.user_scope,
            verifier=verifier,
        )
        return Authorization(state, url)

    def record_failure(
        self,
        error: NangoError,
        *,
        environment_id: int,
        provider_config_key: str,
        provider: str | None,
        connection_id: str | None,
    ) -> None:
        """An auth operation, failed, so the attempt shows in the logs like a successful one would."""
        operation = self.oplog.start(
            "auth",
            "create_connection",
            environment_id=environment_id,
            provider_config_key=provider_config_key,
            provider=provider,
            connection_id=connection_id,
        )
        operation.error(error.message)
        operation.fail({"type": error.instance_code, "description": error.message})

    async def complete(self, query: Mapping[str, str], *, state_cookie_present: bool) -> Completion:
        """Finish the flow the callback's `state` names. Never raises: a failure is a `Failed`."""
        state = query.get("state") or ""
        try:
            row = await self.store.take(state) if _UUID.match(state) else None
        except Exception as exc:
            return Failed(None, unexpected(exc))
        if row is None:
            log.info("oauth callback with an unknown or used state")
            return Failed(None, InvalidState())
        target = FlowTarget(row.provider_config_key, row.connection_id, row.ws_client_id)
        finishing = False
        try:
            if not state_cookie_present:
                log.info(
                    "oauth state cookie missing at callback",
                    extra={"provider_config_key": row.provider_config_key, "enforced": self.state_cookie_enforced},
                )
                if self.state_cookie_enforced:
                    raise MissingStateCookie()
            refused = _provider_error(query)
            if refused is not None:
                raise refused
            ctx, credentials, extra_config = await self._exchange(row, query)
            finishing = True
            finished = await self.finisher.finish(ctx, credentials=credentials, connection_config=extra_config)
        except Exception as exc:
            error = exc if isinstance(exc, NangoError) else unexpected(exc)
            # the finisher records its own failed operation
            if not finishing:
                self.record_failure(
                    error,
                    environment_id=row.environment_id,
                    provider_config_key=row.provider_config_key,
                    provider=row.provider,
                    connection_id=row.connection_id,
                )
            log.info(
                "oauth callback failed",
                extra={"provider_config_key": row.provider_config_key, "error_type": error.instance_code},
            )
            return Failed(target, error)
        return Succeeded(target, finished)

    async def _exchange(
        self, row: OAuthSessionRow, query: Mapping[str, str]
    ) -> tuple[FlowContext, dict[str, Any], dict[str, Any]]:
        integration = await self.integrations.get_by_id(row.integration_id)
        provider = self.integrations.provider(row.provider)
        if integration is None or provider is None:
            raise UnknownProviderConfig("The integration or its provider no longer exists", http_status=400)
        code = query.get(provider.authorization_code_param_in_callback or "code")
        if not code:
            raise InvalidCallback()
        stored = json.loads(self.keyring.open(row.secrets_sealed, aad=sealing.oauth_session_secrets(row.id)))
        override: dict[str, str] = stored.get("client_override") or {}
        client = _client(integration, override)
        try:
            raw = await self.oauth2.exchange_code(
                provider,
                client,
                code=code,
                redirect_uri=row.callback_url,
                code_verifier=None if provider.disable_pkce else stored["code_verifier"],
                connection_config=row.connection_config,
            )
        except TokenRequestFailed as exc:
            raise TokenExchangeFailed(
                f"The provider refused the authorization code: {exc.error_type}: {exc.description}"[:_MAX_SHOWN]
            ) from None
        try:
            credentials = creds.oauth2_credentials(
                raw,
                expires_in_unit=provider.expires_in_unit,
                alternate_path=provider.alternate_access_token_response_path,
            )
        except creds.TokenResponseError:
            raise InvalidTokenResponse() from None
        if override:
            credentials["config_override"] = override
        ctx = FlowContext(
            environment=await self.environments.get(row.environment_id),
            integration=integration,
            provider=provider,
            connection_id=row.connection_id,
            session=await self.sessions.connect_session_by_id(row.connect_session_id)
            if row.connect_session_id
            else None,
            connection_config=row.connection_config,
            ws_client_id=row.ws_client_id,
        )
        return ctx, credentials, _connection_config_from(provider, raw, query)


def _client_override(overrides: Mapping[str, str]) -> dict[str, str]:
    """`credentials[oauth_client_*_override]` as the `config_override` that refresh reads (refresh.client_for)."""
    names = {"oauth_client_id_override": "client_id", "oauth_client_secret_override": "client_secret"}
    return {names[k]: v for k, v in overrides.items() if k in names and v}


def _client(integration: Integration, override: Mapping[str, str]) -> ClientCredentials:
    client_id = override.get("client_id") or integration.client_id
    client_secret = override.get("client_secret") or integration.client_secret
    if not client_id or not client_secret:
        raise InvalidProviderConfig(
            f'The integration "{integration.unique_key}" is missing its OAuth client id or client secret'
        )
    return ClientCredentials(client_id, client_secret)
