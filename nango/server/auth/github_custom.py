"""CUSTOM (github-app-oauth) credentials (reference §4.6): a GitHub App installation token and, when the user
authorized the app during the install, the user's OAuth token.

Stored as `{type:'CUSTOM', app: <APP credentials>, user: <OAUTH2 credentials> | null, expires_at, raw}`, where
`expires_at` is the installation token's (so the refresher and the keep-alive know when to re-mint it) and `raw`
holds both token responses. Re-minting replaces `app` and keeps `user` as it is.
"""

from __future__ import annotations

from typing import Any

from nango.providers import Provider
from nango.server.auth import credentials as creds
from nango.server.auth.github_app import GithubAppMinter
from nango.server.integrations import Integration
from nango.server.refresh import Refreshed


def custom_credentials(app: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "CUSTOM",
        "app": app,
        "user": user,
        "expires_at": app["expires_at"],
        "raw": {"app": app.get("raw"), "user": user.get("raw") if user else None},
    }


class CustomAppMinter:
    """The refresher's minter for CUSTOM connections (a `TokenMinter`)."""

    def __init__(self, github_app: GithubAppMinter) -> None:
        self.github_app = github_app

    async def mint(
        self,
        provider: Provider,
        integration: Integration,
        credentials: dict[str, Any],
        connection_config: dict[str, Any],
    ) -> Refreshed:
        app = await self.github_app.install(provider, integration, connection_config)
        user = credentials.get("user")
        fresh = custom_credentials(app, user if isinstance(user, dict) else None)
        return Refreshed(fresh, creds.expires_at(fresh))
