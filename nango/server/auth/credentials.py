"""Credential shapes (reference §4.6): parsing token responses, expiry, and the public view.

Stored credentials are plain JSON objects whose `type` is the auth mode; dates are ISO-8601
strings. They are sealed as a whole before they reach the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# A token without expiry information is treated as valid this long for modes that regenerate.
DEFAULT_CC_LIFETIME = timedelta(minutes=55)


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime(value: Any) -> datetime | None:
    """An ISO string, epoch seconds or epoch milliseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        number = float(value)
        # anything past the year 33658 in seconds is milliseconds
        return datetime.fromtimestamp(number / 1000 if number > 1e12 else number, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def dig(data: Any, path: str) -> Any:
    """`a.b.c` lookup in nested dicts; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def expiry_from_response(raw: dict[str, Any], *, expires_in_unit: str | None = None) -> datetime | None:
    if raw.get("expires_at") not in (None, ""):
        return parse_datetime(raw["expires_at"])
    expires_in = raw.get("expires_in")
    if expires_in in (None, ""):
        return None
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return None
    if expires_in_unit == "milliseconds":
        seconds /= 1000
    return now() + timedelta(seconds=seconds)


class TokenResponseError(ValueError):
    """The provider's token response had no usable token."""


def oauth2_credentials(
    raw: dict[str, Any],
    *,
    expires_in_unit: str | None = None,
    alternate_path: str | None = None,
    previous_refresh_token: str | None = None,
) -> dict[str, Any]:
    """OAUTH2 credentials from a token response; keeps the old refresh token when none is returned."""
    source = raw
    if not raw.get("access_token") and alternate_path:
        alternate = dig(raw, alternate_path)
        if isinstance(alternate, dict) and alternate.get("access_token"):
            source = alternate
    access_token = source.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenResponseError("the token response has no access_token")
    credentials: dict[str, Any] = {"type": "OAUTH2", "access_token": access_token, "raw": raw}
    refresh_token = source.get("refresh_token") or previous_refresh_token
    if refresh_token:
        credentials["refresh_token"] = refresh_token
    expires_at = expiry_from_response(source, expires_in_unit=expires_in_unit)
    if expires_at is not None:
        credentials["expires_at"] = iso(expires_at)
    return credentials


def client_credentials(
    raw: dict[str, Any], *, client_id: str, client_secret: str, expires_in_unit: str | None = None
) -> dict[str, Any]:
    token = raw.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenResponseError("the token response has no access_token")
    expires_at = expiry_from_response(raw, expires_in_unit=expires_in_unit) or now() + DEFAULT_CC_LIFETIME
    return {
        "type": "OAUTH2_CC",
        "token": token,
        "expires_at": iso(expires_at),
        "client_id": client_id,
        "client_secret": client_secret,
        "raw": raw,
    }


def expires_at(credentials: dict[str, Any]) -> datetime | None:
    return parse_datetime(credentials.get("expires_at"))


def public_view(credentials: dict[str, Any], *, include_refresh_token: bool) -> dict[str, Any]:
    """What `GET /connections/{id}` shows: everything, minus the refresh token unless asked for."""
    view = dict(credentials)
    if not include_refresh_token:
        view.pop("refresh_token", None)
    return view
