"""The proxy's header fast path accepts exactly what the validator accepts, with the same values."""

from __future__ import annotations

import pytest

from nango.errors import NangoError
from nango.server.gateway.proxy import Parsed, ProxyHeaders, _plain_headers
from nango.server.gateway.validation import parse_headers

IDS = {"provider-config-key": "github", "connection-id": "conn-1"}

CASES = [
    IDS,
    {"provider-config-key": "github"},
    {"connection-id": "conn-1"},
    {"provider-config-key": "", "connection-id": "conn-1"},
    {"provider-config-key": "git hub", "connection-id": "conn-1"},
    {"provider-config-key": "github", "connection-id": "x" * 256},
    {"provider-config-key": "g" * 256, "connection-id": "conn-1"},
    {**IDS, "retries": "3"},
    {**IDS, "retries": "21"},
    {**IDS, "retries": "-1"},
    {**IDS, "retries": "٣"},
    {**IDS, "nango-is-sync": "true", "nango-is-dry-run": "false"},
    {**IDS, "nango-is-sync": "yes"},
    {**IDS, "base-url-override": ""},
    {**IDS, "base-url-override": "https://api.example.com"},
    {**IDS, "nango-activity-log-id": ""},
    {**IDS, "decompress": "true"},
    {**IDS, "retry-on": "429,503"},
]


@pytest.mark.parametrize("known", CASES)
def test_the_fast_path_agrees_with_the_validator(known: dict[str, str]) -> None:
    fast = _plain_headers(dict(known))
    try:
        validated: Parsed | None = Parsed.of(parse_headers(known, ProxyHeaders))
    except NangoError:
        validated = None
    if fast is not None:
        assert validated is not None
        # an empty Nango-Activity-Log-Id names no operation either way (`activity_log_id`)
        assert fast == validated._replace(activity_log_id=validated.activity_log_id or None)
    if validated is None:
        assert fast is None


def test_the_plain_ids_take_the_fast_path() -> None:
    assert _plain_headers(dict(IDS)) == Parsed("github", "conn-1", 0, None, False, frozenset(), True, None)
