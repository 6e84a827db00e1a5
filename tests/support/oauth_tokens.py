"""Tokens from the test authorization server without a browser: sign in with the login form, authorize
an app that skips consent, exchange the code with PKCE. For tests about what happens after a user
connected (refresh, rotation, revocation), where the popup itself is not the subject."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.support.oauth_server.harness import OAuthApp, OAuthServer, pkce_pair

_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


async def user_tokens(server: OAuthServer, app: OAuthApp, username: str, password: str) -> dict[str, Any]:
    """The token response (access_token, refresh_token, expires_in, ...) for `username` on `app`."""
    verifier, challenge = pkce_pair()
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(server.login_url) as page:
            csrf = _CSRF.search(await page.text())
        assert csrf is not None, "no CSRF token on the login page"
        form = {"csrfmiddlewaretoken": csrf.group(1), "username": username, "password": password, "next": "/"}
        async with http.post(
            server.login_url, data=form, headers={"Referer": server.login_url}, allow_redirects=False
        ) as r:
            assert r.status == 302, f"login refused ({r.status})"
        url = server.authorization_request_url(app, state="s", code_challenge=challenge)
        async with http.get(url, allow_redirects=False) as r:
            location = r.headers.get("Location", "")
        code = parse_qs(urlsplit(location).query).get("code", [""])[0]
        assert code, f"no code in the redirect (is skip_authorization on?): {location[:200]}"
        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": app.redirect_uri,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "code_verifier": verifier,
        }
        async with http.post(server.token_url, data=exchange) as r:
            assert r.status == 200, await r.text()
            tokens: dict[str, Any] = await r.json()
    return tokens
