"""Secrets are masked in every part of an operation or message before it is stored."""

from __future__ import annotations

import pytest

from nango.oplog import Message, Operation, OperationUpdate, redact, redact_value
from nango.oplog.redact import MASK, is_sensitive_key, redact_url_query


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "Cookie",
        "SET-COOKIE",
        "X-Api-Key",
        "api-key",
        "access_token",
        "refreshToken",
        "client_secret",
        "Password",
        "apiKey",
        "private_key",
        "privateKey",
        "X-Hub-Signature-256",
        "code_verifier",
        "codeVerifier",
    ],
)
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_key(name)


@pytest.mark.parametrize("name", ["Content-Type", "accept", "user", "page", "connection_id", "method", "url"])
def test_ordinary_names(name: str) -> None:
    assert not is_sensitive_key(name)


def test_credential_headers_are_masked_and_others_kept() -> None:
    headers = {
        "Authorization": "Bearer ya29.a0AfH6SMBx",
        "Proxy-Authorization": "Basic dXNlcjpwYXNz",
        "Cookie": "session=abc",
        "set-cookie": "sid=xyz; HttpOnly",
        "X-Api-Key": "key-123",
        "api-key": "key-456",
        "Content-Type": "application/json",
    }
    assert redact_value(headers) == {
        "Authorization": MASK,
        "Proxy-Authorization": MASK,
        "Cookie": MASK,
        "set-cookie": MASK,
        "X-Api-Key": MASK,
        "api-key": MASK,
        "Content-Type": "application/json",
    }


def test_nested_dicts_and_lists() -> None:
    value = {
        "body": {
            "credentials": {"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600},
            "items": [{"client_secret": "cs-1", "name": "a"}, {"nested": {"Password": "pw-1"}}],
        },
        "user": "bob",
        "count": 3,
        "ok": True,
        "none": None,
    }
    assert redact_value(value) == {
        "body": {
            "credentials": {"access_token": MASK, "refresh_token": MASK, "expires_in": 3600},
            "items": [{"client_secret": MASK, "name": "a"}, {"nested": {"Password": MASK}}],
        },
        "user": "bob",
        "count": 3,
        "ok": True,
        "none": None,
    }


def test_a_whole_structure_under_a_sensitive_key_is_masked() -> None:
    assert redact_value({"tokens": {"access": "a", "refresh": "b"}}) == {"tokens": MASK}


def test_url_query_parameters() -> None:
    url = "https://api.example.com/v1/items?access_token=SECRET1&page=2&client_secret=SECRET2#frag"
    assert redact_url_query(url) == (
        f"https://api.example.com/v1/items?access_token={MASK}&page=2&client_secret={MASK}#frag"
    )
    assert (
        redact_url_query("https://x.test/cb?code_verifier=abc&state=s")
        == f"https://x.test/cb?code_verifier={MASK}&state=s"
    )
    assert redact_url_query("https://x.test/?api%5Fkey=k1") == f"https://x.test/?api%5Fkey={MASK}"
    assert redact_url_query("https://x.test/search?q=token") == "https://x.test/search?q=token"


def test_urls_inside_values_and_free_text() -> None:
    value = {
        "url": "https://api.example.com/me?apikey=SECRET3&fields=name",
        "message": 'GET https://api.example.com/me?signature=SECRET4 failed: "next"',
    }
    redacted = redact_value(value)
    assert "SECRET3" not in str(redacted)
    assert "SECRET4" not in str(redacted)
    assert redacted["url"] == f"https://api.example.com/me?apikey={MASK}&fields=name"
    assert redacted["message"].endswith('failed: "next"')


def test_free_text_through_redact_text() -> None:
    text = "calling upstream with Bearer xyzabcdefghijkl0123 and client_secret=shhh-very-secret"
    redacted = redact_value(text)
    assert "xyzabcdefghijkl0123" not in redacted
    assert "shhh-very-secret" not in redacted
    assert redacted.startswith("calling upstream with Bearer ")


def test_redact_message_covers_text_and_every_payload() -> None:
    message = Message(
        operation_id="7d3c1c52-2b7c-4b7e-9f6e-0e6a3b7b8a11",
        message="retrying with Bearer abcdefghijklmnop",
        type="http",
        request={"method": "GET", "url": "https://a.test/?token=T1", "headers": {"Authorization": "Bearer T2xxxxxx"}},
        response={"code": 200, "headers": {"Set-Cookie": "T3"}},
        retry={"attempt": 1, "max": 3, "waited_ms": 100},
        error={"message": "bad password=T4-value"},
        meta={"secret": "T5", "ok": "visible"},
    )
    redacted = redact(message)
    text = repr(redacted)
    for secret in ("abcdefghijklmnop", "T1", "T2xxxxxx", "T3", "T4-value", "T5"):
        assert secret not in text
    assert redacted.meta == {"secret": MASK, "ok": "visible"}
    assert redacted.retry == {"attempt": 1, "max": 3, "waited_ms": 100}
    assert redacted.id == message.id


def test_redact_operation_and_update() -> None:
    operation = Operation(
        type="auth",
        action="create_connection",
        request={"url": "https://a.test/oauth/token?client_secret=S1"},
        meta={"oauth": {"refresh_token": "S2"}},
    )
    assert "S1" not in repr(redact(operation))
    assert "S2" not in repr(redact(operation))
    update = OperationUpdate(operation.id, "failed", error={"message": "Bearer S3abcdefghij"}, response={"token": "S4"})
    redacted = redact(update)
    assert "S3abcdefghij" not in repr(redacted)
    assert redacted.response == {"token": MASK}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("BEARER abcdefghijklmnop", "abcdefghijklmnop"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("APIKEY=k-123456789", "k-123456789"),
        ("Signature: s3cr3tsig", "s3cr3tsig"),
        ("session nango_connect_session_0123456789abcdef", "0123456789abcdef"),
        ("dsn postgresql://nango:hunter22@db:5432/nango", "hunter22"),
        ("REDIS rediss://default:pw-123456@cache:6380", "pw-123456"),
        ("bearer abcdefghijklmnop, and a non-ASCII word: café", "abcdefghijklmnop"),
    ],
)
def test_free_text_secrets_are_masked_whatever_their_case(text: str, secret: str) -> None:
    assert secret not in redact_value(text)


def test_free_text_without_secrets_is_returned_unchanged() -> None:
    text = "GET https://api.example.com/v1/items?page=2 answered 200 in 12 ms"
    assert redact_value(text) == text
