"""Credentials obtained without a browser popup: the non-popup auth routes and connection imports.

One place turns each way of obtaining credentials into the stored shape (reference §4.6) and its
failures into the public codes: the provider refusing or being unreachable is
`connection_test_failed`; submitted credentials that cannot be used locally (a key that does not
sign) are `invalid_credentials`; a missing field the provider's templates need is `invalid_body`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from nango.errors import InvalidBody
from nango.providers import Provider
from nango.providers.interpolate import missing_connection_config
from nango.server.auth import credentials as creds
from nango.server.auth.errors import InvalidConnectionConfig
from nango.server.auth.github_app import GithubAppMinter
from nango.server.auth.github_custom import CustomAppMinter
from nango.server.auth.jwt_tokens import JwtMinter, JwtSigningError, sign
from nango.server.auth.oauth2 import ClientCredentials, OAuth2Client, TokenRequestFailed
from nango.server.auth.verification import CredentialVerifier
from nango.server.errors import ConnectionTestFailed, InvalidCredentials
from nango.server.integrations import Integration
from nango.server.refresh import TokenMinter


def _refused(what: str, exc: TokenRequestFailed) -> ConnectionTestFailed:
    return ConnectionTestFailed(
        f"The provider refused the {what}: {exc.error_type}: {exc.description}",
        payload={"status": exc.status, "error": exc.error_type, "description": exc.description},
    )


def _token_url_template(provider: Provider, auth_mode: str) -> str | None:
    template = provider.token_url
    if isinstance(template, dict):
        return template.get(auth_mode) or template.get("OAUTH2")
    return template


@dataclass(frozen=True)
class DirectAuth:
    oauth2: OAuth2Client
    verifier: CredentialVerifier
    github_app: GithubAppMinter
    jwt: JwtMinter

    @classmethod
    def over(cls, http: aiohttp.ClientSession) -> DirectAuth:
        return cls(OAuth2Client(http), CredentialVerifier(http), GithubAppMinter(http), JwtMinter())

    @property
    def minters(self) -> dict[str, TokenMinter]:
        """The Refresher's minters for the modes that regenerate their own tokens."""
        return {"APP": self.github_app, "CUSTOM": CustomAppMinter(self.github_app), "JWT": self.jwt}

    async def check(
        self,
        provider: Provider,
        integration: Integration,
        credentials: Mapping[str, Any],
        connection_config: Mapping[str, Any],
    ) -> None:
        """Test credentials with the provider's verification call, when it declares one."""
        await self.verifier.verify(provider, integration, credentials, connection_config)

    async def client_credentials(
        self,
        provider: Provider,
        client: ClientCredentials,
        *,
        scopes: list[str],
        connection_config: Mapping[str, Any],
    ) -> dict[str, Any]:
        """OAUTH2_CC credentials from the client-credentials grant."""
        templates = [_token_url_template(provider, "OAUTH2_CC") or "", *(provider.token_params or {}).values()]
        missing = [key for template in templates for key in missing_connection_config(template, connection_config)]
        if missing:
            raise InvalidConnectionConfig.missing(list(dict.fromkeys(missing)), "token URL")
        try:
            raw = await self.oauth2.client_credentials(
                provider, client, scopes=scopes, connection_config=connection_config
            )
            return creds.client_credentials(
                raw,
                client_id=client.client_id,
                client_secret=client.client_secret,
                expires_in_unit=provider.expires_in_unit,
            )
        except TokenRequestFailed as exc:
            raise _refused("client credentials", exc) from None
        except creds.TokenResponseError as exc:
            raise ConnectionTestFailed(f"The provider's token response is unusable: {exc}") from None

    async def app_installation(
        self, provider: Provider, integration: Integration, connection_config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """APP credentials: an installation token minted with the integration's app key."""
        try:
            return await self.github_app.install(provider, integration, connection_config)
        except TokenRequestFailed as exc:
            raise _refused("GitHub App installation", exc) from None

    def fresh_app_jwt(
        self, integration: Integration, credentials: Mapping[str, Any], connection_config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """APP credentials with a newly signed app JWT in `jwtToken` (`refresh_github_app_jwt_token=true`)."""
        try:
            return {**credentials, "jwtToken": self.github_app.app_jwt(integration, connection_config)}
        except TokenRequestFailed as exc:
            raise InvalidCredentials(f"The GitHub App JWT could not be signed: {exc.description}") from None

    def signed_jwt(self, provider: Provider, fields: Mapping[str, Any]) -> dict[str, Any]:
        """JWT credentials signed from the submitted fields."""
        try:
            return sign(provider, fields, now=creds.now())
        except JwtSigningError as exc:
            if exc.missing:
                errors = [{"code": "invalid_type", "message": "Required", "path": [name]} for name in exc.missing]
                raise InvalidBody(exc.description, errors=errors) from None
            raise InvalidCredentials(exc.description) from None
