"""The OAuth 1.0a popup flow (reference §4.1 "other modes", RFC 5849 §2), without its transport.

`authorize` obtains a request token whose `oauth_callback` is our callback URL with `?state=<session id>` (OAuth
1.0a has no state parameter; the provider keeps the callback's query, as Nango relies on too), and returns the
provider's authorize URL plus the request token and its secret, which `OAuthFlows` seals into the session row.
`exchange` checks the callback's `oauth_token` is that request token and trades the verifier for the token
credentials: `{type:'OAUTH1', oauth_token, oauth_token_secret, raw}`.

Consumer credentials are the integration's; the per-connection `oauth_client_*_override` is not applied, because
the proxy signs OAUTH1 calls with the integration's consumer.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from nango.providers import Provider
from nango.providers.interpolate import interpolate, interpolate_url, missing_connection_config, template_values
from nango.server.auth.errors import InvalidConnectionConfig
from nango.server.auth.flows import FlowContext
from nango.server.auth.injection import OAuth1SigningError
from nango.server.auth.oauth1 import Consumer, OAuth1Client, TokenPair
from nango.server.auth.oauth2 import TokenRequestFailed
from nango.server.auth.popup import (
    MAX_SHOWN,
    Exchanged,
    InvalidCallback,
    InvalidProviderConfig,
    OAuthFlowError,
    RequestTokenFailed,
    TokenExchangeFailed,
    callback_metadata,
    with_query,
)
from nango.server.integrations import Integration


def consumer_of(integration: Integration) -> Consumer:
    if not integration.client_id or not integration.client_secret:
        raise InvalidProviderConfig(
            f'The integration "{integration.unique_key}" is missing its OAuth consumer key or consumer secret'
        )
    return Consumer(integration.client_id, integration.client_secret)


def authorize_url(
    provider: Provider,
    *,
    request_token: str,
    scopes: list[str],
    connection_config: Mapping[str, Any],
    authorization_params: Mapping[str, str | None],
) -> str:
    """`authorization_url?oauth_token=...`, the scopes (Trello's `scope=read,write`) and the authorization params."""
    if not provider.authorization_url:
        raise InvalidProviderConfig("The provider has no authorization_url")
    values = template_values(connection_config=connection_config)
    base = interpolate_url(provider.authorization_url, values, skip_encode=provider.authorization_url_skip_encode or ())
    extra: dict[str, str | None] = {k: interpolate(v, values) for k, v in (provider.authorization_params or {}).items()}
    extra.update(authorization_params)
    params = [("oauth_token", request_token)]
    if scopes:
        params.append(("scope", (provider.scope_separator or " ").join(scopes)))
    params += [(k, v) for k, v in extra.items() if v is not None]
    return with_query(base, params)


def _refused(what: type[OAuthFlowError], step: str, exc: TokenRequestFailed) -> OAuthFlowError:
    return what(f"The provider refused the {step}: {exc.error_type}: {exc.description}"[:MAX_SHOWN])


class OAuth1Flow:
    def __init__(self, client: OAuth1Client, callback_url: str) -> None:
        self.client = client
        self.callback_url = callback_url

    async def authorize(self, ctx: FlowContext, state: str) -> tuple[str, dict[str, str]]:
        """The authorize URL and the request token to keep (sealed) until the callback."""
        provider, integration = ctx.provider, ctx.integration
        consumer = consumer_of(integration)
        templates = (provider.request_url, provider.authorization_url, _token_url_template(provider))
        missing = list(
            dict.fromkeys(key for t in templates for key in missing_connection_config(t or "", ctx.connection_config))
        )
        if missing:
            raise InvalidConnectionConfig.missing(missing, "request token, authorization or token URL")
        try:
            request_token = await self.client.request_token(
                provider,
                consumer,
                callback=with_query(self.callback_url, [("state", state)]),
                connection_config=ctx.connection_config,
            )
        except TokenRequestFailed as exc:
            raise _refused(RequestTokenFailed, "request token", exc) from None
        except OAuth1SigningError as exc:
            raise InvalidProviderConfig(str(exc)) from None
        url = authorize_url(
            provider,
            request_token=request_token.token,
            scopes=ctx.scopes,
            connection_config=ctx.connection_config,
            authorization_params=ctx.authorization_params,
        )
        return url, {"request_token": request_token.token, "request_token_secret": request_token.secret}

    async def exchange(
        self,
        provider: Provider,
        integration: Integration,
        stored: Mapping[str, Any],
        query: Mapping[str, str],
        connection_config: Mapping[str, Any],
    ) -> Exchanged:
        if query.get("denied"):
            # Twitter's answer when the user cancels: `?denied=<request token>`
            raise OAuthFlowError("The user denied the authorization", code="access_denied")
        token, verifier = query.get("oauth_token"), query.get("oauth_verifier")
        if not token or not verifier:
            raise InvalidCallback("The provider's callback carries no oauth_token and oauth_verifier")
        request_token = TokenPair(str(stored["request_token"]), str(stored["request_token_secret"]), {})
        if not hmac.compare_digest(token.encode(), request_token.token.encode()):
            raise InvalidCallback("The callback's oauth_token is not the request token of this authorization")
        try:
            pair = await self.client.access_token(
                provider,
                consumer_of(integration),
                request_token=request_token,
                verifier=verifier,
                connection_config=connection_config,
            )
        except TokenRequestFailed as exc:
            raise _refused(TokenExchangeFailed, "verifier", exc) from None
        except OAuth1SigningError as exc:
            raise InvalidProviderConfig(str(exc)) from None
        credentials = {"type": "OAUTH1", "oauth_token": pair.token, "oauth_token_secret": pair.secret, "raw": pair.raw}
        return Exchanged(credentials, callback_metadata(provider, pair.raw, query))


def _token_url_template(provider: Provider) -> str | None:
    template = provider.token_url
    if isinstance(template, dict):
        return template.get("OAUTH1") or template.get("OAUTH2")
    return template
