"""A real OAuth 1.0a provider for tests (RFC 5849): oauthlib's server endpoints over in-memory stores, served
by aiohttp on 127.0.0.1 — request token, an authorize page that approves at once and redirects back with the
verifier (`/oauth/deny` answers as Twitter does when the user cancels: `?denied=<token>`), access token, and a
protected `/me`. Signatures (HMAC-SHA1, PLAINTEXT, RSA-SHA1), nonces and token bindings are checked by oauthlib.

    async with OAuth1Provider.serving() as provider:
        consumer = provider.consumer()
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.oauth1 import (  # type: ignore[import-untyped]
    SIGNATURE_RSA,
    SIGNATURE_TYPE_AUTH_HEADER,
    AccessTokenEndpoint,
    AuthorizationEndpoint,
    Client,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)

from tests.conftest import free_port


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()


# what an unknown consumer's RSA signature is checked against (oauthlib checks dummies to keep timing even)
_DUMMY_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Consumer:
    key: str
    secret: str
    rsa_public: str | None = None


@dataclass
class Stores:
    consumers: dict[str, Consumer] = field(default_factory=dict)
    request_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonces: set[tuple[str, str, str]] = field(default_factory=set)
    # what the request token endpoint and the authorize page were sent, to check request_params and scopes
    request_params: list[dict[str, str]] = field(default_factory=list)
    authorize_queries: list[dict[str, str]] = field(default_factory=list)
    issued_access_tokens: int = 0


class Validator(RequestValidator):  # type: ignore[misc]
    """A strict validator: known consumers, single-use nonces, request tokens bound to their consumer."""

    enforce_ssl = False
    # our nonces are 32 hex characters (as node-oauth's); oauthlib's default caps them at 30
    nonce_length = (20, 64)
    dummy_client = "dummyclientdummyclient00"
    dummy_request_token = "dummyrequesttokendummyreq0"
    dummy_access_token = "dummyaccesstokendummyacce0"

    def __init__(self, stores: Stores) -> None:
        super().__init__()
        self.stores = stores

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key in self.stores.consumers

    def get_client_secret(self, client_key: str, request: Any) -> str:
        consumer = self.stores.consumers.get(client_key)
        return consumer.secret if consumer else "dummy"

    def get_rsa_key(self, client_key: str, request: Any) -> str:
        consumer = self.stores.consumers.get(client_key)
        return (consumer.rsa_public if consumer else None) or public_pem(_DUMMY_KEY)

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        seen = (client_key, timestamp, nonce)
        if seen in self.stores.nonces:
            return False
        self.stores.nonces.add(seen)
        return True

    def validate_requested_realms(self, client_key: str, realms: list[str], request: Any) -> bool:
        return True

    def get_default_realms(self, client_key: str, request: Any) -> list[str]:
        return []

    def validate_redirect_uri(self, client_key: str, redirect_uri: str, request: Any) -> bool:
        return urlsplit(redirect_uri).scheme in ("http", "https")

    def save_request_token(self, token: dict[str, str], request: Any) -> None:
        self.stores.request_tokens[token["oauth_token"]] = {
            "client": request.client_key,
            "secret": token["oauth_token_secret"],
            "callback": request.redirect_uri,
            "verifier": None,
        }

    def verify_request_token(self, token: str, request: Any) -> bool:
        return token in self.stores.request_tokens

    def get_realms(self, token: str, request: Any) -> list[str]:
        return []

    def verify_realms(self, token: str, realms: list[str], request: Any) -> bool:
        return True

    def save_verifier(self, token: str, verifier: dict[str, str], request: Any) -> None:
        self.stores.request_tokens[token]["verifier"] = verifier["oauth_verifier"]

    def get_redirect_uri(self, token: str, request: Any) -> str:
        return str(self.stores.request_tokens[token]["callback"])

    def validate_request_token(self, client_key: str, token: str, request: Any) -> bool:
        found = self.stores.request_tokens.get(token)
        return found is not None and found["client"] == client_key

    def validate_verifier(self, client_key: str, token: str, verifier: str, request: Any) -> bool:
        found = self.stores.request_tokens.get(token)
        return (
            found is not None and found["verifier"] is not None and secrets.compare_digest(found["verifier"], verifier)
        )

    def get_request_token_secret(self, client_key: str, token: str, request: Any) -> str:
        found = self.stores.request_tokens.get(token)
        return str(found["secret"]) if found else "dummy"

    def validate_realms(self, client_key: str, token: str, request: Any, uri: Any = None, realms: Any = None) -> bool:
        return True

    def invalidate_request_token(self, client_key: str, request_token: str, request: Any) -> None:
        self.stores.request_tokens.pop(request_token, None)

    def save_access_token(self, token: dict[str, str], request: Any) -> None:
        self.stores.access_tokens[token["oauth_token"]] = {
            "client": request.client_key,
            "secret": token["oauth_token_secret"],
        }
        self.stores.issued_access_tokens += 1

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        found = self.stores.access_tokens.get(token)
        return found is not None and found["client"] == client_key

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        found = self.stores.access_tokens.get(token)
        return str(found["secret"]) if found else "dummy"


@dataclass
class OAuth1Provider:
    url: str
    stores: Stores

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls) -> AsyncIterator[OAuth1Provider]:
        stores = Stores()
        runner = web.AppRunner(_oauth1_app(stores))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield cls(f"http://127.0.0.1:{port}", stores)
        finally:
            await runner.cleanup()

    def consumer(self, *, rsa_key: rsa.RSAPrivateKey | None = None) -> Consumer:
        """A new consumer; with `rsa_key`, its secret (what the integration stores) is the PEM private key."""
        key = secrets.token_hex(12)
        if rsa_key is None:
            consumer = Consumer(key, secrets.token_urlsafe(24))
        else:
            consumer = Consumer(key, private_pem(rsa_key), public_pem(rsa_key))
        self.stores.consumers[key] = consumer
        return consumer

    async def me(
        self, http: aiohttp.ClientSession, consumer: Consumer, token: str, token_secret: str, method: str
    ) -> int:
        """The protected resource called with the stored token credentials, signed by oauthlib's client."""
        client = Client(
            consumer.key,
            client_secret=None if method == SIGNATURE_RSA else consumer.secret,
            rsa_key=consumer.secret if method == SIGNATURE_RSA else None,
            resource_owner_key=token,
            resource_owner_secret=token_secret,
            signature_method=method,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
        )
        uri, headers, _ = client.sign(self.url + "/me")
        async with http.get(uri, headers=headers) as response:
            return response.status


def _oauth1_app(stores: Stores) -> web.Application:
    validator = Validator(stores)
    request_endpoint = RequestTokenEndpoint(validator)
    authorization_endpoint = AuthorizationEndpoint(validator)
    access_endpoint = AccessTokenEndpoint(validator)
    resource_endpoint = ResourceEndpoint(validator)

    async def answer(request: web.Request) -> tuple[str, str, dict[str, str]]:
        body = await request.text()
        return str(request.url), body, dict(request.headers)

    async def request_token(request: web.Request) -> web.Response:
        uri, body, headers = await answer(request)
        stores.request_params.append({**dict(request.query), **dict(parse_qsl(body))})
        out_headers, out_body, status = request_endpoint.create_request_token_response(
            uri, request.method, body, headers
        )
        return web.Response(body=(out_body or "").encode(), status=status, headers=out_headers)

    async def authorize(request: web.Request) -> web.Response:
        uri, _, _ = await answer(request)
        stores.authorize_queries.append(dict(request.query))
        out_headers, _, status = authorization_endpoint.create_authorization_response(uri, realms=[], credentials={})
        return web.Response(status=status, headers=out_headers)

    async def deny(request: web.Request) -> web.Response:
        token = request.query.get("oauth_token", "")
        callback = stores.request_tokens[token]["callback"]
        return web.Response(status=302, headers={"Location": f"{callback}&{urlencode({'denied': token})}"})

    async def access_token(request: web.Request) -> web.Response:
        uri, body, headers = await answer(request)
        out_headers, out_body, status = access_endpoint.create_access_token_response(
            uri, request.method, body, headers, credentials={"screen_name": "ada"}
        )
        return web.Response(body=(out_body or "").encode(), status=status, headers=out_headers)

    async def me(request: web.Request) -> web.Response:
        uri, body, headers = await answer(request)
        valid, _ = resource_endpoint.validate_protected_resource_request(uri, request.method, body, headers, realms=[])
        return web.json_response({"screen_name": "ada"} if valid else {}, status=200 if valid else 401)

    app = web.Application()
    app.router.add_route("*", "/oauth/request_token", request_token)
    app.router.add_get("/oauth/authorize", authorize)
    app.router.add_get("/oauth/deny", deny)
    app.router.add_route("*", "/oauth/access_token", access_token)
    app.router.add_get("/me", me)
    return app
