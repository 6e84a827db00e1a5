"""Sync frequencies as Nango writes them (reference §2.6, §6.3): "every hour", "every 5 minutes",
"30m", "every half day", ... A frequency is between 30 seconds and 31 days."""

from __future__ import annotations

import re
from datetime import timedelta

MIN_FREQUENCY = timedelta(seconds=30)
MAX_FREQUENCY = timedelta(days=31)

_PHRASES = {
    "half day": timedelta(hours=12),
    "half hour": timedelta(minutes=30),
    "quarter hour": timedelta(minutes=15),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(days=7),
    "month": timedelta(days=30),
}
_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "secs": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
}
_AMOUNT = re.compile(r"^(\d+(?:\.\d+)?)?\s?([a-z]+)$")


class InvalidFrequency(ValueError):
    pass


def parse_frequency(text: str) -> timedelta:
    """The interval a frequency stands for, or InvalidFrequency saying what is expected."""
    phrase = text.strip().lower()
    phrase = phrase.removeprefix("every ").strip()
    if phrase in _PHRASES:
        interval = _PHRASES[phrase]
    else:
        match = _AMOUNT.match(phrase)
        if match is None or match.group(2) not in _UNITS:
            raise InvalidFrequency(
                f"invalid frequency {text!r}: expected e.g. 'every hour', 'every 5 minutes', '30m', '2h', '1d'"
            )
        amount = float(match.group(1) or 1)
        interval = timedelta(**{_UNITS[match.group(2)]: amount})
    if not MIN_FREQUENCY <= interval <= MAX_FREQUENCY:
        raise InvalidFrequency(f"invalid frequency {text!r}: must be between 30 seconds and 31 days")
    return interval
