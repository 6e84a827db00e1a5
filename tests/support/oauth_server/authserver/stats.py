"""Successful grants at the token endpoint, per client and grant type, kept in memory.

django-oauth-toolkit sends `app_authorized` only when the token endpoint answers 200 with an access token. The
count is taken when the request's transaction commits, so a grant that is rolled back is not counted. The server is
one process (many threads), so a dict under a lock is the whole store.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from django.db import transaction
from django.http import HttpRequest

GRANT_KEYS = {
    "authorization_code": "authorization_code_grants",
    "refresh_token": "refresh_grants",
    "client_credentials": "client_credentials_grants",
}

_lock = threading.Lock()
_counts: dict[str, Counter[str]] = {}


def on_app_authorized(sender: object, request: HttpRequest, token: Any, **kwargs: object) -> None:
    key = GRANT_KEYS.get(request.POST.get("grant_type", ""))
    if key is None or token.application is None:
        return
    client_id: str = token.application.client_id
    transaction.on_commit(lambda: record(client_id, key))


def record(client_id: str, key: str) -> None:
    with _lock:
        _counts.setdefault(client_id, Counter())[key] += 1


def snapshot(client_id: str) -> dict[str, int]:
    with _lock:
        counts = _counts.get(client_id, Counter())
        return {key: counts[key] for key in GRANT_KEYS.values()}
