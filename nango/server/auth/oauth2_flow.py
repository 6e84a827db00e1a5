"""The popup flows of the OAuth family (reference §4.1, §4.2), without their transport.

`OAuthFlows.start` checks a `FlowContext`, records the flow in `oauth_sessions` and returns where the popup goes
next; `OAuthFlows.complete` takes the callback's query, uses the flow's state once, obtains the credentials and
stores the connection. OAUTH2 (authorization code with PKCE) is here; OAUTH1 is `oauth1_flow`, APP and CUSTOM
(GitHub App installs) are `app_flow`. Failures are `NangoError`s whose code is the websocket `error_type` the
browser SDK sees (see `popup`); their messages never carry a secret.
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
from urllib.parse import urlsplit, urlunsplit

from nango.crypto import Keyring
from nango.errors import NangoError
from nango.oplog import OperationsLog
from nango.providers import Provider
from nango.providers.interpolate import interpolate, interpolate_url, missing_connection_config, template_values
from nango.server import sealing
from nango.server.auth import credentials as creds
from nango.server.auth.app_flow import AppInstallFlow
from nango.server.auth.direct import DirectAuth
from nango.server.auth.errors import InvalidAuthMode, InvalidConnectionConfig
from nango.server.auth.flows import Finished, FlowContext, FlowFinisher
from nango.server.auth.oauth1 import OAuth1Client
from nango.server.auth.oauth1_flow import OAuth1Flow
from nango.server.auth.oauth2 import ClientCredentials, OAuth2Client, TokenRequestFailed
from nango.server.auth.popup import (
    MAX_SHOWN,
    Exchanged,
    InvalidCallback,
    InvalidProviderConfig,
    InvalidState,
    InvalidTokenResponse,
    MissingStateCookie,
    TokenExchangeFailed,
    UnknownGrantType,
    callback_metadata,
    encode,
    provider_error,
    unexpected,
)
from nango.server.environments import EnvironmentService
from nango.server.errors import UnknownProviderConfig
from nango.server.integrations import Integration, IntegrationService
from nango.server.store.oauth_sessions import NewOAuthSession, OAuthSessionRow, OAuthSessionStore
from nango.server.store.sessions import SessionStore

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
SUPPORTED_MODES = frozenset({"OAUTH2", "OAUTH1", "APP", "CUSTOM"})
# as Nango: an app install may end in another browser (an organization owner's), so APP skips the cookie check
_STATE_COOKIE_MODES = frozenset({"OAUTH2", "OAUTH1", "CUSTOM"})


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
    """`finished` is None when nothing was stored yet (`is_pending`: an app install awaiting approval)."""

    target: FlowTarget
    finished: Finished | None
    is_pending: bool = False


@dataclass(frozen=True)
class Failed:
    """`target` is None when the callback's state names no flow (unknown, used or malformed)."""

    target: FlowTarget | None
    error: NangoError


Completion = Succeeded | Failed


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
    query = "&".join(f"{encode(k)}={encode(v)}" for k, v in params)
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
        oauth1: OAuth1Client,
        direct_auth: DirectAuth,
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
        self.oauth1 = OAuth1Flow(oauth1, callback_url)
        self.apps = AppInstallFlow(direct_auth, oauth2)
        self.callback_url = callback_url
        self.state_cookie_enforced = state_cookie_enforced

    async def start(self, ctx: FlowContext) -> Authorization:
        mode = ctx.provider.auth_mode
        if mode not in SUPPORTED_MODES:
            raise InvalidAuthMode(
                f"The provider {ctx.integration.provider} uses {mode}, which the OAuth popup does not serve"
            )
        state = str(uuid.uuid4())
        connection_config = ctx.connection_config
        if mode == "OAUTH1":
            url, kept = await self.oauth1.authorize(ctx, state)
        elif mode in ("APP", "CUSTOM"):
            url, connection_config = self.apps.authorize(ctx, state)
            kept = {}
        else:
            url, kept = self._authorize_oauth2(ctx, state)
        session = ctx.session
        await self.store.insert(
            NewOAuthSession(
                id=state,
                environment_id=ctx.environment.id,
                integration_id=ctx.integration.id,
                provider=ctx.integration.provider,
                auth_mode=mode,
                connection_id=ctx.connection_id,
                connect_session_id=session.id if session else None,
                callback_url=self.callback_url,
                secrets_sealed=self.keyring.seal(json.dumps(kept), aad=sealing.oauth_session_secrets(state)),
                connection_config=connection_config,
                webhook_url_override=session.webhook_url_override if session else None,
                ws_client_id=valid_ws_client_id(ctx.ws_client_id),
            )
        )
        return Authorization(state, url)

    def _authorize_oauth2(self, ctx: FlowContext, state: str) -> tuple[str, dict[str, Any]]:
        """The authorize URL, and the PKCE verifier and client override to keep (sealed) until the callback."""
        provider = ctx.provider
        grant_type = (provider.token_params or {}).get("grant_type")
        if grant_type not in (None, "authorization_code"):
            raise UnknownGrantType(f"The provider's token_params ask for the unsupported grant type {grant_type}")
        override = _client_override(ctx.credential_overrides)
        client = _client(ctx.integration, override)
        missing: list[str] = []
        for template in (provider.authorization_url, _token_url_template(provider)):
            for key in missing_connection_config(template or "", ctx.connection_config):
                if key not in missing:
                    missing.append(key)
        if missing:
            raise InvalidConnectionConfig.missing(missing, "authorization or token URL")
        verifier = secrets.token_hex(32)
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
        return url, {"code_verifier": verifier, "client_override": override}

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

    def _record_pending(self, row: OAuthSessionRow) -> None:
        operation = self.oplog.start(
            "auth",
            "create_connection",
            environment_id=row.environment_id,
            provider_config_key=row.provider_config_key,
            provider=row.provider,
            connection_id=row.connection_id,
        )
        operation.info("the installation awaits an organization owner's approval: no connection stored yet")
        operation.succeed()

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
            if not state_cookie_present and row.auth_mode in _STATE_COOKIE_MODES:
                log.info(
                    "oauth state cookie missing at callback",
                    extra={"provider_config_key": row.provider_config_key, "enforced": self.state_cookie_enforced},
                )
                if self.state_cookie_enforced:
                    raise MissingStateCookie()
            refused = provider_error(query)
            if refused is not None:
                raise refused
            ctx, exchanged = await self._exchange(row, query)
            if exchanged.credentials is None:
                self._record_pending(row)
                return Succeeded(target, None, is_pending=exchanged.is_pending)
            finishing = True
            finished = await self.finisher.finish(
                ctx, credentials=exchanged.credentials, connection_config=exchanged.connection_config
            )
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
            await self._announce_failure(row, error)
            return Failed(target, error)
        return Succeeded(target, finished, is_pending=exchanged.is_pending)

    async def _announce_failure(self, row: OAuthSessionRow, error: NangoError) -> None:
        """The failed `creation` auth webhook of a callback (reference §4.2); never raises."""
        try:
            session = (
                await self.sessions.connect_session_by_id(row.connect_session_id) if row.connect_session_id else None
            )
        except Exception:
            log.exception("connect session of a failed flow unreadable", extra={"environment_id": row.environment_id})
            session = None
        await self.finisher.failed(
            error,
            environment_id=row.environment_id,
            provider_config_key=row.provider_config_key,
            provider=row.provider,
            connection_id=row.connection_id,
            auth_mode=row.auth_mode,
            session=session,
            webhook_url_override=row.webhook_url_override,
        )

    async def _exchange(self, row: OAuthSessionRow, query: Mapping[str, str]) -> tuple[FlowContext, Exchanged]:
        integration = await self.integrations.get_by_id(row.integration_id)
        provider = self.integrations.provider(row.provider)
        if integration is None or provider is None:
            raise UnknownProviderConfig("The integration or its provider no longer exists", http_status=400)
        kept: dict[str, Any] = json.loads(
            self.keyring.open(row.secrets_sealed, aad=sealing.oauth_session_secrets(row.id))
        )
        if row.auth_mode == "OAUTH1":
            exchanged = await self.oauth1.exchange(provider, integration, kept, query, row.connection_config)
        elif row.auth_mode in ("APP", "CUSTOM"):
            exchanged = await self.apps.exchange(
                provider,
                integration,
                query,
                auth_mode=row.auth_mode,
                connection_config=row.connection_config,
                redirect_uri=row.callback_url,
            )
        else:
            exchanged = await self._exchange_code(row, provider, integration, kept, query)
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
        return ctx, exchanged

    async def _exchange_code(
        self,
        row: OAuthSessionRow,
        provider: Provider,
        integration: Integration,
        kept: Mapping[str, Any],
        query: Mapping[str, str],
    ) -> Exchanged:
        code = query.get(provider.authorization_code_param_in_callback or "code")
        if not code:
            raise InvalidCallback()
        override: dict[str, str] = kept.get("client_override") or {}
        client = _client(integration, override)
        try:
            raw = await self.oauth2.exchange_code(
                provider,
                client,
                code=code,
                redirect_uri=row.callback_url,
                code_verifier=None if provider.disable_pkce else kept["code_verifier"],
                connection_config=row.connection_config,
            )
        except TokenRequestFailed as exc:
            raise TokenExchangeFailed(
                f"The provider refused the authorization code: {exc.error_type}: {exc.description}"[:MAX_SHOWN]
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
        return Exchanged(credentials, callback_metadata(provider, raw, query))


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
