from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from nango.providers.interpolate import (
    connection_config_keys,
    interpolate,
    interpolate_headers,
    interpolate_url,
    missing_connection_config,
    render,
    template_values,
)

NOW = datetime(2024, 2, 28, 23, 30, 5, 123456, tzinfo=UTC)

VALUES = template_values(
    connection_config={
        "subdomain": "acme",
        "team.id": "T1",
        "nested": {"x": "y"},
        "hostname": "acme.my.salesforce.com",
        "port": 8080,
        "flag": True,
        "query": "a/b c&d",
        "appPublicLink": "https://github.com/apps/acme",
    },
    credentials={"type": "API_KEY", "apiKey": "k3y", "username": "u", "password": "p@ss", "access_token": "tok"},
    metadata={"region": "eu"},
    client_id="cid",
    client_secret="csecret",
    endpoint="/v1/items",
    method="GET",
    host="api.example.com",
    path="/v1/items",
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


HMAC_OF_METHOD = hmac.new(b"csecret", b"GET", hashlib.sha1).hexdigest()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://${connectionConfig.subdomain}.zendesk.com", "https://acme.zendesk.com"),
        ("${credentials.apiKey}", "k3y"),
        ("Bearer ${apiKey}", "Bearer k3y"),
        ("${username}:${password}", "u:p@ss"),
        ("${accessToken}", "tok"),
        ("${metadata.region}", "eu"),
        ("${clientId}/${clientSecret}", "cid/csecret"),
        ("${method} ${host}${endpoint} ${path}", "GET api.example.com/v1/items /v1/items"),
        ("${ connectionConfig.subdomain }", "acme"),
        # a key holding dots, as token_response_metadata stores it, and a real nested path
        ("${connectionConfig.team.id}", "T1"),
        ("${connectionConfig.nested.x}", "y"),
        ("${connectionConfig.port}:${connectionConfig.flag}", "8080:true"),
    ],
)
def test_variables(template: str, expected: str) -> None:
    assert interpolate(template, VALUES) == expected


@pytest.mark.parametrize(
    "template",
    [
        "https://${connectionConfig.missing}.example.com",
        "${connectionConfig.nested}",
        "${credentials.nothing.here}",
        "${unknownVariable}",
        "price: ${",
        "open ${apiKey",
    ],
)
def test_unresolved_placeholders_are_left_as_written(template: str) -> None:
    assert interpolate(template, VALUES) == template


def test_render_lists_the_unresolved_placeholders() -> None:
    rendered = render("${a} ${apiKey} ${connectionConfig.b}", VALUES)
    assert rendered.text == "${a} k3y ${connectionConfig.b}"
    assert rendered.unresolved == ("${a}", "${connectionConfig.b}")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "https://${connectionConfig.hostname}/services/oauth2/token || https://login.salesforce.com/services/oauth2/token",
            "https://acme.my.salesforce.com/services/oauth2/token",
        ),
        (
            "https://${connectionConfig.nope}/services/oauth2/token || https://login.salesforce.com/services/oauth2/token",
            "https://login.salesforce.com/services/oauth2/token",
        ),
        ("${connectionConfig.a} || ${connectionConfig.b} || ${connectionConfig.subdomain}", "acme"),
        ("${connectionConfig.a}||${apiKey}", "k3y"),
        ("${connectionConfig.a} || ${connectionConfig.b}", "${connectionConfig.b}"),
    ],
)
def test_fallback_uses_the_first_alternative_that_changed(template: str, expected: str) -> None:
    assert interpolate(template, VALUES) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Basic ${base64(${apiKey}:)}", "Basic " + b64("k3y:")),
        ("${base64(${username}:${password})}", b64("u:p@ss")),
        ("${base64(a,b)}", b64("a,b")),
        ("${sha256Hex(abc)}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("${sha256Base64(abc)}", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="),
        # HMAC-SHA1 test vector: key first, data second
        (
            "${hmacSha1Hex(key, The quick brown fox jumps over the lazy dog)}",
            "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        ),
        ("${hmacSha1Hex(${clientSecret},${method})}", HMAC_OF_METHOD),
        ("${base64(sha256Hex(abc))}", b64("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
        ("${base64(${sha256Hex(abc)})}", b64("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
    ],
)
def test_helpers(template: str, expected: str) -> None:
    assert interpolate(template, VALUES) == expected


@pytest.mark.parametrize(
    "template",
    ["${base64(${connectionConfig.missing})}", "${hmacSha1Hex(only-one-argument)}", "${sha256Hex(${nope}x)}"],
)
def test_helper_with_an_unresolved_argument_is_left_as_written(template: str) -> None:
    assert interpolate(template, VALUES) == template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${now}", "2024-02-28T23:30:05.123Z"),
        ("${now:YYYY-MM-DD}", "2024-02-28"),
        ("${now:YYYY/MM/DD HH:mm:ss}", "2024/02/28 23:30:05"),
        ("${now+7:days:YYYY-MM-DD}", "2024-03-06"),
        ("${now-1:hours:HH}", "22"),
        ("${now+45:minutes:HH:mm}", "00:15"),
        ("${now+2:days}", "2024-03-01T23:30:05.123Z"),
        ("${now-1:day:DD}", "27"),
        ("since=${now-30:days:YYYY-MM-DD}&until=${now:YYYY-MM-DD}", "since=2024-01-29&until=2024-02-28"),
    ],
)
def test_now(template: str, expected: str) -> None:
    assert interpolate(template, VALUES, now=NOW) == expected


def test_now_converts_to_utc_and_reads_the_clock_by_default() -> None:
    paris = NOW.astimezone(timezone(timedelta(hours=1)))
    assert interpolate("${now:HH}", VALUES, now=paris) == "23"
    assert interpolate("${now:HH}", VALUES, now=NOW.replace(tzinfo=None)) == "23"
    before = datetime.now(UTC).strftime("%Y-%m-%d")
    rendered = interpolate("${now:YYYY-MM-DD}", VALUES)
    assert rendered in {before, datetime.now(UTC).strftime("%Y-%m-%d")}


def test_random_is_a_fresh_uuid4() -> None:
    first, second = interpolate("${random}", VALUES), interpolate("${random}", VALUES)
    uuid4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert uuid4.match(first)
    assert uuid4.match(second)
    assert first != second


@pytest.mark.parametrize(
    ("template", "skip", "expected"),
    [
        ("https://x.example/?q=${connectionConfig.query}", (), "https://x.example/?q=a%2Fb%20c%26d"),
        ("https://x.example/?q=${connectionConfig.query}", ("query",), "https://x.example/?q=a/b c&d"),
        ("https://x.example/?q=${connectionConfig.query}", ("connectionConfig.query",), "https://x.example/?q=a/b c&d"),
        ("${connectionConfig.appPublicLink}/installations/new", ("appPublicLink",),
         "https://github.com/apps/acme/installations/new"),
        ("https://${connectionConfig.subdomain}.zendesk.com/oauth/tokens", (), "https://acme.zendesk.com/oauth/tokens"),
        ("https://x.example/?u=${password}", (), "https://x.example/?u=p%40ss"),
        ("https://x.example/?m=${base64(a?)}", (), "https://x.example/?m=" + b64("a?").replace("=", "%3D")),
    ],
)  # fmt: skip
def test_url_mode_encodes_substituted_values(template: str, skip: tuple[str, ...], expected: str) -> None:
    assert interpolate_url(template, VALUES, skip_encode=skip) == expected


def test_header_mode_drops_headers_that_do_not_resolve() -> None:
    headers = {
        "authorization": "Bearer ${apiKey}",
        "x-app-key": "${connectionConfig.applicationKey}",
        "x-partial": "${apiKey}-${connectionConfig.nope}",
        "x-fixed": "v1",
        "x-date": "${now:YYYY-MM-DD}",
    }
    assert interpolate_headers(headers, VALUES, now=NOW) == {
        "authorization": "Bearer k3y",
        "x-fixed": "v1",
        "x-date": "2024-02-28",
    }


@pytest.mark.parametrize(
    ("template", "keys"),
    [
        ("https://${connectionConfig.subdomain}.zendesk.com/${connectionConfig.x}/${connectionConfig.subdomain}",
         ["subdomain", "x"]),
        ("https://${connectionConfig.hostname}/a || https://login.salesforce.com/a", ["hostname"]),
        ("Basic ${base64(${connectionConfig.user}:${apiKey})}", ["user"]),
        ("https://${connectionConfig.team.id}.example.com", ["team.id"]),
        ("https://api.example.com/${apiKey}", []),
    ],
)  # fmt: skip
def test_connection_config_keys(template: str, keys: list[str]) -> None:
    assert connection_config_keys(template) == keys


@pytest.mark.parametrize(
    ("template", "config", "missing"),
    [
        ("https://${connectionConfig.subdomain}.zendesk.com", {}, ["subdomain"]),
        ("https://${connectionConfig.subdomain}.zendesk.com", {"subdomain": "acme"}, []),
        ("https://${connectionConfig.hostname}/a || https://login.salesforce.com/a", {}, []),
        ("https://${connectionConfig.a}/x || https://${connectionConfig.b}/x", {}, ["a"]),
        ("https://${connectionConfig.a}/x || https://${connectionConfig.b}/x", {"b": "1"}, []),
        ("https://${connectionConfig.team.id}.x", {"team": {"id": "T"}}, []),
        ("https://${connectionConfig.s}.x", {"s": {"not": "text"}}, ["s"]),
    ],
)
def test_missing_connection_config(template: str, config: dict[str, Any], missing: list[str]) -> None:
    assert missing_connection_config(template, config) == missing


def test_template_values_access_token_sources() -> None:
    assert template_values(credentials={"token": "cc-token"})["accessToken"] == "cc-token"
    assert template_values(credentials={"access_token": "a"}, access_token="explicit")["accessToken"] == "explicit"
    assert "accessToken" not in template_values(credentials={"type": "BASIC", "username": "u"})


def test_credential_keys_never_shadow_the_named_variables() -> None:
    values = template_values(
        connection_config={"subdomain": "real"}, credentials={"connectionConfig": "spoofed", "apiKey": "k"}
    )
    assert interpolate("${connectionConfig.subdomain}/${apiKey}", values) == "real/k"
