"""GitHub App installs through the popup (reference §4.1 "other modes", §4.6): APP, and CUSTOM (github-app-oauth).

`authorize` sends the browser to `${appPublicLink}/installations/new?state=<session id>`; the link is the
integration's `app_link`, or `params[appPublicLink]` when the integration has none. GitHub comes back to our
callback (the app's Setup URL, or its Callback URL when the app asks for user authorization during the install)
with `installation_id`, `setup_action` and the state, plus `code` for a CUSTOM app that asked the user.
`exchange` mints the installation token (DirectAuth.app_installation) and, for CUSTOM, trades the code for the
user's token; the connection config gains `installation_id` and `app_id` (`appPublicLink` came with the session).

`setup_action=request` (a member asked an organization owner to approve the install) has no installation and so
no token: nothing is stored and the browser is told `is_pending: true`. The end user connects again once the
owner approved; GitHub's own redirect after that approval carries no state and ends on the Referer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from nango.providers import Provider
from nango.providers.interpolate import interpolate_url, missing_connection_config, template_values
from nango.server.auth import credentials as creds
from nango.server.auth.direct import DirectAuth
from nango.server.auth.errors import InvalidConnectionConfig
from nango.server.auth.flows import FlowContext
from nango.server.auth.github_custom import custom_credentials
from nango.server.auth.oauth2 import ClientCredentials, OAuth2Client, TokenRequestFailed
from nango.server.auth.popup import (
    MAX_SHOWN,
    Exchanged,
    InvalidCallback,
    InvalidProviderConfig,
    InvalidTokenResponse,
    TokenExchangeFailed,
    with_query,
)
from nango.server.integrations import Integration

# GitHub installation ids are numbers; the id ends up in the token URL's path
_INSTALLATION_ID = re.compile(r"^[0-9]{1,20}$")


def app_id_of(integration: Integration) -> str | None:
    """CUSTOM integrations keep the app id in `custom`; APP ones in `client_id` (as Nango stores them)."""
    app_id = (integration.custom or {}).get("app_id") or integration.client_id
    return str(app_id) if app_id else None


def _require_app(integration: Integration, *, with_user_authorization: bool) -> None:
    custom = integration.custom or {}
    if with_user_authorization:
        # CUSTOM: client id and secret are the app's OAuth client; the app's own id and key are in `custom`
        complete = all(
            (custom.get("app_id"), custom.get("private_key"), integration.client_id, integration.client_secret)
        )
        needs = "GitHub App id, private key, and OAuth client id and secret"
    else:
        complete = bool(app_id_of(integration) and (custom.get("private_key") or integration.client_secret))
        needs = "GitHub App id and private key"
    if not complete:
        raise InvalidProviderConfig(f'The integration "{integration.unique_key}" is missing its {needs}')


class AppInstallFlow:
    def __init__(self, direct_auth: DirectAuth, oauth2: OAuth2Client) -> None:
        self.direct_auth = direct_auth
        self.oauth2 = oauth2

    def authorize(self, ctx: FlowContext, state: str) -> tuple[str, dict[str, Any]]:
        """The install URL, and the connection config to keep until the callback (with `appPublicLink`)."""
        provider, integration = ctx.provider, ctx.integration
        _require_app(integration, with_user_authorization=provider.auth_mode == "CUSTOM")
        if not provider.authorization_url:
            raise InvalidProviderConfig("The provider has no authorization_url")
        config = dict(ctx.connection_config)
        link = integration.app_link or config.get("appPublicLink")
        if link:
            config["appPublicLink"] = str(link).rstrip("/")
        missing = missing_connection_config(provider.authorization_url, config)
        if missing:
            raise InvalidConnectionConfig.missing(missing, "installation URL")
        url = interpolate_url(
            provider.authorization_url,
            template_values(connection_config=config),
            skip_encode=provider.authorization_url_skip_encode or (),
        )
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidConnectionConfig("The app's public link (appPublicLink) must be an http(s) URL")
        return with_query(url, [("state", state)]), config

    async def exchange(
        self,
        provider: Provider,
        integration: Integration,
        query: Mapping[str, str],
        *,
        auth_mode: str,
        connection_config: Mapping[str, Any],
        redirect_uri: str,
    ) -> Exchanged:
        installation_id = query.get("installation_id")
        if not installation_id and query.get("setup_action") == "request":
            return Exchanged(None, is_pending=True)
        if not installation_id:
            raise InvalidCallback("The callback carries no installation_id")
        if not _INSTALLATION_ID.match(installation_id):
            raise InvalidCallback("The callback's installation_id is not a GitHub installation id")
        extra = {"installation_id": installation_id, "app_id": app_id_of(integration)}
        config = {**connection_config, **extra}
        code = query.get("code")
        user = None
        if auth_mode == "CUSTOM" and code:
            # the code is single-use and short-lived: it is spent before the installation token is minted
            user = await self._user_token(provider, integration, code, config, redirect_uri)
        app = await self.direct_auth.app_installation(provider, integration, config)
        return Exchanged(custom_credentials(app, user) if auth_mode == "CUSTOM" else app, extra)

    async def _user_token(
        self,
        provider: Provider,
        integration: Integration,
        code: str,
        connection_config: Mapping[str, Any],
        redirect_uri: str,
    ) -> dict[str, Any]:
        client = ClientCredentials(str(integration.client_id), str(integration.client_secret))
        try:
            raw = await self.oauth2.exchange_code(
                provider,
                client,
                code=code,
                redirect_uri=redirect_uri,
                # GitHub's install page takes no code challenge, so there is no verifier to send
                code_verifier=None,
                connection_config=connection_config,
            )
        except TokenRequestFailed as exc:
            raise TokenExchangeFailed(
                f"The provider refused the authorization code: {exc.error_type}: {exc.description}"[:MAX_SHOWN]
            ) from None
        try:
            return creds.oauth2_credentials(raw, expires_in_unit=provider.expires_in_unit)
        except creds.TokenResponseError:
            raise InvalidTokenResponse() from None
