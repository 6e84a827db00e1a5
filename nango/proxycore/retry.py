"""When a failed proxy call is tried again, and how long to wait first (reference §3.4).

Retryable: a network error; a status on the provider's `proxy.retry.error_code` list (`403`, `5xx`,
`500-502`), or 5xx, 429 and 401 when it has none; a status the caller listed in `Retry-On`; the
provider's `remaining` header reading 0. The wait is the longest of what the answer says (the
provider's `at` / `after` headers, its `in_body` rule, and the standard Retry-After header), else
exponential back-off; every wait is capped at 10 minutes.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nango.providers import Retry, RetryInBody

BACKOFF_BASE = 3.0
MAX_WAIT = 600.0
# epoch values above this are milliseconds (Nango's rule: as milliseconds they land after 1971)
_EPOCH_MS_FROM = 31_536_000_000
_MISSING = object()


def backoff(retry_number: int) -> float:
    """The wait before retry `retry_number` (1, 2, …) when the answer says nothing: 3 s, 6 s, 12 s…"""
    return min(BACKOFF_BASE * 2.0 ** max(retry_number - 1, 0), MAX_WAIT)


def _matches(status: int, rule: str) -> bool:
    if rule.isdigit():
        return status == int(rule)
    if rule.endswith("xx"):
        return status // 100 == int(rule[0])
    low, _, high = rule.partition("-")
    return low.isdigit() and high.isdigit() and int(low) <= status <= int(high)


def retry_reason(status: int, headers: Mapping[str, str], rules: Retry | None, retry_on: frozenset[int]) -> str | None:
    """Why an error answer is worth retrying, or None."""
    if status < 400:
        return None
    if rules is not None and rules.error_code is not None:
        for rule in rules.error_code:
            if _matches(status, rule):
                return f"provider_error_code_{rule}"
    elif status >= 500 or status in (429, 401):
        return f"status_code_{status}"
    if status in retry_on:
        return f"retry_on_{status}"
    if rules is not None and rules.remaining and headers.get(rules.remaining) == "0":
        return "provider_remaining"
    return None


def _wait_at(value: str, now: float) -> float | None:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            parsed = email.utils.parsedate_tz(text)
            if parsed is None:
                return None
            moment = float(email.utils.mktime_tz(parsed))
    else:
        moment = number / 1000 if number > _EPOCH_MS_FROM else number
    wait = math.ceil(moment - now)
    return float(wait) if wait > 0 else None


def _wait_after(value: str, now: float) -> float | None:
    try:
        seconds = float(value.strip())
    except ValueError:
        # Retry-After may also be an HTTP date
        return _wait_at(value, now)
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def _dig(data: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(data, dict):
            data = data.get(part, _MISSING)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
        if data is _MISSING:
            return None
    return data


def _regex(value: str) -> re.Pattern[str]:
    # providers.yaml may write the pattern JavaScript-style, as /pattern/flags
    match = re.fullmatch(r"/(.*)/([a-z]*)", value, re.DOTALL)
    if match:
        return re.compile(match.group(1), re.IGNORECASE if "i" in match.group(2) else 0)
    return re.compile(value)


def _wait_in_body(rule: RetryInBody, body: bytes, now: float) -> float | None:
    try:
        message = _dig(json.loads(body), rule.path)
    except ValueError:
        return None
    if not isinstance(message, str):
        return None
    match = _regex(rule.value).search(message)
    if not match or not match.groups() or not match.group(1):
        return None
    value = match.group(1).strip()
    return _wait_at(value, now) if rule.strategy == "at" else _wait_after(value, now)


def needs_body(rules: Retry | None) -> bool:
    return rules is not None and rules.in_body is not None


def announced_wait(
    headers: Mapping[str, str], body: bytes | None, rules: Retry | None, *, now: float | None = None
) -> float | None:
    """The longest wait the answer announces (seconds, capped), or None when it announces none."""
    moment = time.time() if now is None else now
    waits: list[float] = []
    retry_after = headers.get("Retry-After")
    if retry_after:
        waits.append(_wait_after(retry_after, moment) or 0.0)
    if rules is not None:
        for name in rules.at or ():
            if headers.get(name):
                waits.append(_wait_at(headers[name], moment) or 0.0)
        for name in rules.after or ():
            if headers.get(name):
                waits.append(_wait_after(headers[name], moment) or 0.0)
        if rules.in_body is not None and body:
            waits.append(_wait_in_body(rules.in_body, body, moment) or 0.0)
    positive = [w for w in waits if w > 0]
    return min(max(positive), MAX_WAIT) if positive else None


__all__ = ["BACKOFF_BASE", "MAX_WAIT", "announced_wait", "backoff", "needs_body", "retry_reason"]
