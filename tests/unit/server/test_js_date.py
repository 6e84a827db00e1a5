"""Dates on the public API read as JavaScript's `Date.toISOString()` prints them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nango.server.gateway.views import js_date


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        # another offset is converted to UTC first
        (datetime(2026, 1, 2, 1, 4, 5, 999999, tzinfo=timezone(timedelta(hours=-2))), "2026-01-02T03:04:05.999Z"),
        # years below 1000 keep four digits, as toISOString prints them
        (datetime(5, 6, 7, 8, 9, 10, 11000, tzinfo=UTC), "0005-06-07T08:09:10.011Z"),
        (None, None),
    ],
)
def test_js_date(value: datetime | None, expected: str | None) -> None:
    assert js_date(value) == expected
