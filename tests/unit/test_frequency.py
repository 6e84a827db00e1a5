from __future__ import annotations

from datetime import timedelta

import pytest

from nango.sdk.frequency import InvalidFrequency, parse_frequency


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("every hour", timedelta(hours=1)),
        ("every half day", timedelta(hours=12)),
        ("every half hour", timedelta(minutes=30)),
        ("every quarter hour", timedelta(minutes=15)),
        ("every day", timedelta(days=1)),
        ("every week", timedelta(days=7)),
        ("every month", timedelta(days=30)),
        ("every 5 minutes", timedelta(minutes=5)),
        ("every 5minutes", timedelta(minutes=5)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("every 30 seconds", timedelta(seconds=30)),
        ("Every 12 Hours", timedelta(hours=12)),
        ("every 1.5 hours", timedelta(minutes=90)),
    ],
)
def test_frequencies(text: str, interval: timedelta) -> None:
    assert parse_frequency(text) == interval


@pytest.mark.parametrize("text", ["", "often", "every 10 years", "every 29 seconds", "every 32 days", "5 fortnights"])
def test_invalid_frequencies(text: str) -> None:
    with pytest.raises(InvalidFrequency):
        parse_frequency(text)
