"""When the proxy retries, and how long it waits (reference §3.4)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from nango.providers import Retry
from nango.proxycore.retry import MAX_WAIT, announced_wait, backoff, retry_reason

NOW = 1_800_000_000.0


def test_backoff_doubles_from_three_seconds_and_stops_at_ten_minutes() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [3.0, 6.0, 12.0, 24.0]
    assert backoff(30) == MAX_WAIT == 600.0


@pytest.mark.parametrize(
    ("status", "rules", "retry_on", "headers", "reason"),
    [
        (500, None, frozenset(), {}, "status_code_500"),
        (429, None, frozenset(), {}, "status_code_429"),
        (401, None, frozenset(), {}, "status_code_401"),
        (404, None, frozenset(), {}, None),
        (200, None, frozenset({200}), {}, None),
        (409, None, frozenset({409}), {}, "retry_on_409"),
        (403, Retry(error_code=["403", "5xx"]), frozenset(), {}, "provider_error_code_403"),
        (503, Retry(error_code=["403", "5xx"]), frozenset(), {}, "provider_error_code_5xx"),
        (501, Retry(error_code=["500-502"]), frozenset(), {}, "provider_error_code_500-502"),
        # a provider list replaces the defaults
        (429, Retry(error_code=["403"]), frozenset(), {}, None),
        (403, Retry(remaining="x-remaining"), frozenset(), {"X-Remaining": "0"}, "provider_remaining"),
        (403, Retry(remaining="x-remaining"), frozenset(), {"X-Remaining": "3"}, None),
    ],
)
def test_retryable_answers(
    status: int, rules: Retry | None, retry_on: frozenset[int], headers: dict[str, str], reason: str | None
) -> None:
    assert retry_reason(status, CIMultiDict(headers), rules, retry_on) == reason


def test_waits_announced_by_the_answer() -> None:
    def wait(headers: dict[str, str], rules: Retry | None = None, body: bytes | None = None) -> float | None:
        return announced_wait(CIMultiDict(headers), body, rules, now=NOW)

    assert wait({}) is None
    assert wait({"Retry-After": "2"}) == 2.0
    assert wait({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}) == 30.0
    at = Retry(at=["x-ratelimit-reset"])
    assert wait({"X-RateLimit-Reset": str(int(NOW) + 5)}, at) == 5.0
    assert wait({"X-RateLimit-Reset": str(int(NOW * 1000) + 7000)}, at) == 7.0
    iso = datetime.fromtimestamp(NOW + 8, UTC).isoformat().replace("+00:00", "Z")
    assert wait({"X-RateLimit-Reset": iso}, at) == 8.0
    assert wait({"X-RateLimit-Reset": str(int(NOW) - 5)}, at) is None
    after = Retry(after=["x-wait-a", "x-wait-b"])
    # the longest wait wins
    assert wait({"X-Wait-A": "2", "X-Wait-B": "9", "Retry-After": "4"}, after) == 9.0
    assert wait({"Retry-After": "86400"}) == MAX_WAIT
    assert wait({"Retry-After": "soon"}) is None


def test_in_body_rule_reads_the_wait_from_the_error() -> None:
    rule = Retry.model_validate(
        {"in_body": {"path": "error.message", "value": "/Retry after (\\d+)/", "strategy": "after"}}
    )
    body = b'{"error": {"message": "User-rate limit exceeded. Retry after 12"}}'
    assert announced_wait(CIMultiDict(), body, rule, now=NOW) == 12.0
    assert announced_wait(CIMultiDict(), b'{"error": {}}', rule, now=NOW) is None
    assert announced_wait(CIMultiDict(), b"not json", rule, now=NOW) is None
    at = Retry.model_validate({"in_body": {"path": "errors[0].reset", "value": "(\\d+)", "strategy": "at"}})
    assert announced_wait(CIMultiDict(), b'{"errors": [{"reset": "%d"}]}' % (NOW + 3), at, now=NOW) == 3.0
