"""URL and headers of a proxy call: base URL rules, query templates, precedence, what is logged."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from oauthlib.oauth1.rfc5849 import signature as oauth1
from yarl import URL

from nango.errors import InvalidQueryParams
from nango.providers import Provider
from nango.proxycore import ConnectionView, InvalidBaseUrl, ProxySpec, UnsupportedAuth, UnsupportedProvider
from nango.proxycore.auth import oauth1_authorization
from nango.proxycore.target import MASK, build


def view(auth_mode: str, credentials: dict[str, Any], proxy: dict[str, Any] | None, **extra: Any) -> ConnectionView:
    fields: dict[str, Any] = {
        "display_name": "T",
        "categories": ["x"],
        "docs": "https://example.com",
        "auth_mode": auth_mode,
    }
    if auth_mode == "OAUTH2":
        fields |= {"authorization_url": "https://a.example/authorize", "token_url": "https://a.example/token"}
    if proxy is not None:
        fields["proxy"] = proxy
    return ConnectionView(
        provider_name="t",
        provider=Provider.model_validate(fields),
        credentials=credentials,
        connection_config=extra.pop("connection_config", {}),
        metadata=extra.pop("metadata", {}),
        **extra,
    )


def spec(endpoint: str, **fields: Any) -> ProxySpec:
    return ProxySpec(method=fields.pop("method", "GET"), endpoint=endpoint, **fields)


API = {"type": "API_KEY", "apiKey": "secret-key-123"}


def test_base_url_endpoint_and_query() -> None:
    target = build(spec("/v1/users?page=2"), view("API_KEY", API, {"base_url": "https://api.example.com/"}))
    assert str(target.url) == "https://api.example.com/v1/users?page=2"


def test_an_endpoint_carrying_the_base_url_is_not_doubled() -> None:
    connection = view("API_KEY", API, {"base_url": "https://api.example.com"})
    target = build(spec("/https://api.example.com/v1/me"), connection)
    assert str(target.url) == "https://api.example.com/v1/me"


def test_templates_fallback_and_metadata() -> None:
    proxy = {
        "base_url": "https://${connectionConfig.subdomain}.zendesk.com || https://fallback.example.com/${metadata.region}"
    }
    assert str(build(spec("/x"), view("API_KEY", API, proxy, connection_config={"subdomain": "acme"})).url) == (
        "https://acme.zendesk.com/x"
    )
    assert str(build(spec("/x"), view("API_KEY", API, proxy, metadata={"region": "eu"})).url) == (
        "https://fallback.example.com/eu/x"
    )
    with pytest.raises(InvalidBaseUrl, match="instance_url"):
        build(spec("/x"), view("API_KEY", API, {"base_url": "${connectionConfig.instance_url}"}))
    with pytest.raises(UnsupportedProvider):
        build(spec("/x"), view("API_KEY", API, None))
    override = build(spec("/x", base_url_override="https://other.example.com"), view("API_KEY", API, None))
    assert str(override.url) == "https://other.example.com/x"


def test_provider_query_is_appended_masked_in_logs_and_never_overridden() -> None:
    connection = view("API_KEY", API, {"base_url": "https://api.example.com", "query": {"key": "${apiKey}", "v": "2"}})
    target = build(spec("/items?q=a%20b"), connection)
    assert str(target.url) == "https://api.example.com/items?q=a%20b&key=secret-key-123&v=2"
    assert target.log_url == f"https://api.example.com/items?q=a%20b&key={MASK}&v={MASK}"
    with pytest.raises(InvalidQueryParams):
        build(spec("/items?key=mine"), connection)


def test_secrets_in_the_base_url_are_masked_in_logs() -> None:
    connection = view("API_KEY", API, {"base_url": "https://bot.example.com/bot${apiKey}"})
    target = build(spec("/getMe"), connection)
    assert str(target.url) == "https://bot.example.com/botsecret-key-123/getMe"
    assert "secret-key-123" not in target.log_url


def test_in_function_params() -> None:
    connection = view("API_KEY", API, {"base_url": "https://api.example.com"})
    assert (
        str(build(spec("/a?x=1", params={"x": "2", "y": "3"}), connection).url) == "https://api.example.com/a?x=2&y=3"
    )
    assert str(build(spec("/a", params="?z=1"), connection).url) == "https://api.example.com/a?z=1"
    with pytest.raises(InvalidQueryParams, match="endpoint and in params"):
        build(spec("/a?x=1", params="z=1"), connection)


def test_header_precedence_auth_then_provider_then_caller() -> None:
    proxy = {
        "base_url": "https://api.example.com",
        "headers": {"User-Agent": "provider-agent", "X-Api-Version": "3", "X-Path": "${method} ${path}"},
    }
    connection = view("OAUTH2", {"type": "OAUTH2", "access_token": "at"}, proxy)
    caller = (("X-Api-Version", "4"), ("user-agent", "caller-agent"), ("X-Extra", "1"))
    target = build(spec("/v1/me", headers=caller), connection)
    assert target.headers["authorization"] == "Bearer at"
    assert target.headers["x-api-version"] == "4"
    assert target.headers["user-agent"] == "provider-agent"
    assert target.headers["x-path"] == "GET /v1/me"
    assert target.injected == {"authorization", "user-agent", "x-path"}
    # a caller may set Authorization itself (as in Nango)
    target = build(spec("/v1/me", headers=(("Authorization", "Bearer mine"),)), connection)
    assert target.headers["authorization"] == "Bearer mine"


@pytest.mark.parametrize(
    ("credentials", "headers", "expected"),
    [
        ({"type": "BASIC", "username": "u", "password": None}, {}, "Basic dTo="),
        ({"type": "OAUTH2_CC", "token": "cc"}, {}, "Bearer cc"),
        ({"type": "JWT", "token": "jwt"}, {}, "Bearer jwt"),
        ({"type": "SIGNATURE", "token": "wsse"}, {}, "Bearer wsse"),
        ({"type": "APP", "access_token": "ghs"}, {}, "Bearer ghs"),
        ({"type": "TWO_STEP", "token": "two"}, {}, "Bearer two"),
        ({"type": "TWO_STEP", "token": "two"}, {"x-token": "${accessToken}"}, None),
        ({"type": "API_KEY", "apiKey": "k"}, {}, None),
        ({"type": "BILL", "session_id": "s"}, {}, None),
        ({"type": "NONE"}, {}, None),
    ],
)
def test_authorization_by_auth_mode(credentials: dict[str, Any], headers: dict[str, str], expected: str | None) -> None:
    connection = view("API_KEY", credentials, {"base_url": "https://api.example.com", "headers": headers})
    assert build(spec("/x"), connection).headers.get("authorization") == expected


def test_unsupported_auth_mode_is_refused() -> None:
    with pytest.raises(UnsupportedAuth):
        build(spec("/x"), view("API_KEY", {"type": "AWS_SIGV4"}, {"base_url": "https://api.example.com"}))


@pytest.mark.parametrize("method", ["HMAC-SHA1", "HMAC-SHA256", "PLAINTEXT"])
def test_oauth1_signatures_verify_with_oauthlib(method: str) -> None:
    url = URL("https://api.example.com:8443/1/statuses/update.json?include_entities=true&q=caf%C3%A9")
    header = oauth1_authorization(
        "POST",
        url,
        consumer_key="ck",
        consumer_secret="cs&x",
        token="tk",
        token_secret="ts",
        signature_method=method,
        form=[("status", "Hello Ladies + Gentlemen")],
        realm="R",
    )
    sent = dict(oauth1.collect_parameters(headers={"Authorization": header}, exclude_oauth_signature=False))
    params = oauth1.collect_parameters(
        uri_query=url.raw_query_string, headers={"Authorization": header}, body=[("status", "Hello Ladies + Gentlemen")]
    )
    base = oauth1.signature_base_string("POST", oauth1.base_string_uri(str(url)), oauth1.normalize_parameters(params))
    keys = SimpleNamespace(client_secret="cs&x", resource_owner_secret="ts")
    expected = {
        "HMAC-SHA1": oauth1.sign_hmac_sha1_with_client,
        "HMAC-SHA256": oauth1.sign_hmac_sha256_with_client,
        "PLAINTEXT": oauth1.sign_plaintext_with_client,
    }[method](base, keys)
    assert sent["oauth_signature"] == expected
    assert header.startswith('OAuth realm="R", oauth_consumer_key="ck"')


def test_oauth1_rsa_sha1_signature_verifies_with_the_public_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    url = URL("https://api.example.com/1/me?x=1")
    header = oauth1_authorization(
        "GET",
        url,
        consumer_key="ck",
        consumer_secret=pem.decode(),
        token="tk",
        token_secret="",
        signature_method="RSA-SHA1",
    )
    sent = dict(oauth1.collect_parameters(headers={"Authorization": header}, exclude_oauth_signature=False))
    params = oauth1.collect_parameters(uri_query=url.raw_query_string, headers={"Authorization": header})
    base = oauth1.signature_base_string("GET", oauth1.base_string_uri(str(url)), oauth1.normalize_parameters(params))
    signature = base64.b64decode(sent["oauth_signature"])
    key.public_key().verify(signature, base.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - RFC 5849
