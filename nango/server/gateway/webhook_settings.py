"""The environment's outgoing-webhook settings (reference §7.2, §3.8; docs/webhooks.md):
`GET`/`PATCH /environment/webhook-settings` and `POST /environment/webhook-signing-key/rotate`.

A URL is saved only if it is an absolute http(s) URL the outbound policy allows (its host is not a
denied name or a private, loopback or metadata address); jobs checks it again, with DNS, each time it
sends. An empty string or null removes a URL.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool, StrictStr, field_validator, model_validator
from yarl import URL

from nango.errors import InvalidBody
from nango.outbound import OutboundDenied, OutboundPolicy
from nango.server.errors import WebhookUrlDenied
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import json_body, json_response
from nango.server.gateway.middleware import ENVIRONMENT
from nango.server.gateway.validation import parse_body, reject_unknown_query
from nango.server.inputs import Strict
from nango.server.webhooks.settings import MAX_URL_LENGTH

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

_URL_FIELDS = ("primary_url", "secondary_url")


def _http_url(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value != value.strip():
        raise ValueError("must not start or end with spaces")
    try:
        url = URL(value)
    except (ValueError, TypeError):
        raise ValueError("must be an absolute http(s) URL") from None
    if url.scheme not in ("http", "https") or not url.absolute or not url.raw_host:
        raise ValueError("must be an absolute http(s) URL, e.g. https://example.com/webhooks")
    return value


class SettingsPatch(Strict):
    primary_url: StrictStr | None = Field(None, max_length=MAX_URL_LENGTH)
    secondary_url: StrictStr | None = Field(None, max_length=MAX_URL_LENGTH)
    on_auth_creation: StrictBool | None = None
    on_auth_refresh_error: StrictBool | None = None
    on_sync_error: StrictBool | None = None
    on_sync_completion_always: StrictBool | None = None
    on_async_action_completion: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _signing_key_is_rotated(cls, data: Any) -> Any:
        if isinstance(data, dict) and "signing_key" in data:
            raise ValueError("signing_key cannot be set: rotate it with POST /environment/webhook-signing-key/rotate")
        return data

    @field_validator("primary_url", "secondary_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator(
        "on_auth_creation",
        "on_auth_refresh_error",
        "on_sync_error",
        "on_sync_completion_always",
        "on_async_action_completion",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be true or false")
        return value


@routes.get("/environment/webhook-settings")
async def get_webhook_settings(request: web.Request) -> web.Response:
    reject_unknown_query(request, set())
    settings = await request.app[GATEWAY].webhook_settings.get(request[ENVIRONMENT].id)
    return json_response(settings.public())


@routes.patch("/environment/webhook-settings")
async def patch_webhook_settings(request: web.Request) -> web.Response:
    """Change any of the URLs and toggles; answers the settings as they are now."""
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    body = await parse_body(request, SettingsPatch)
    changes = body.model_dump(include=body.model_fields_set)
    for name in _URL_FIELDS:
        check_webhook_url(gw.webhook_url_policy, name, changes.get(name))
    settings = await gw.webhook_settings.update(environment.id, changes)
    log.info("webhook settings changed", extra={"environment_id": environment.id, "fields": sorted(changes)})
    return json_response(settings.public())


def check_webhook_url(policy: OutboundPolicy, name: str, value: str | None) -> None:
    """A webhook destination (environment URL or a connection's override) must pass the outbound
    policy when it is saved; jobs checks it again, with DNS, each time it sends."""
    if not value:
        return
    try:
        policy.check_url(URL(value))
    except OutboundDenied as exc:
        raise WebhookUrlDenied(
            f"{name}: {exc.message}", payload={"field": name, "reason": exc.reason, **_host(exc)}
        ) from None


def _host(exc: OutboundDenied) -> dict[str, str]:
    return {"host": exc.host} if exc.host else {}


@routes.post("/environment/webhook-signing-key/rotate")
async def rotate_webhook_signing_key(request: web.Request) -> web.Response:
    """A new signing key, used for every webhook sent from now on (the old one stops signing)."""
    gw, environment = request.app[GATEWAY], request[ENVIRONMENT]
    reject_unknown_query(request, set())
    data = await json_body(request)
    if data not in (None, {}):
        raise InvalidBody("this route takes no body")
    key = await gw.webhook_settings.rotate_signing_key(environment.id)
    return json_response({"signing_key": key})


__all__ = ["SettingsPatch", "routes"]
