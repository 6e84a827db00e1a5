"""The resource endpoint `/api/me` and the test-control API under `/test/`."""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from authserver import stats
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from oauth2_provider.models import AccessToken, Application, RefreshToken
from oauth2_provider.oauth2_backends import get_oauthlib_core

GRANT_TYPES = {
    "authorization-code": Application.GRANT_AUTHORIZATION_CODE,
    "authorization_code": Application.GRANT_AUTHORIZATION_CODE,
    "client-credentials": Application.GRANT_CLIENT_CREDENTIALS,
    "client_credentials": Application.GRANT_CLIENT_CREDENTIALS,
}
CLIENT_TYPES = {Application.CLIENT_CONFIDENTIAL, Application.CLIENT_PUBLIC}

View = Callable[[HttpRequest], HttpResponse]


def _error(status: int, error: str, description: str = "") -> JsonResponse:
    return JsonResponse({"error": error, "error_description": description}, status=status)


@require_GET
def me(request: HttpRequest) -> HttpResponse:
    """Who the bearer token belongs to. 401 (RFC 6750) when the token is missing, unknown, expired or revoked."""
    valid, oauth_request = get_oauthlib_core().verify_request(request, scopes=[])
    if not valid or oauth_request is None:
        response = _error(401, "invalid_token", "the access token is missing, invalid, expired or revoked")
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    token = oauth_request.access_token
    return JsonResponse(
        {
            "username": token.user.username if token.user is not None else None,
            "client_id": token.application.client_id if token.application is not None else None,
            "scope": token.scope,
        }
    )


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


def admin_only(view: View) -> View:
    """Guards a control endpoint with the shared admin token (header `X-Test-Admin-Token`)."""

    @csrf_exempt
    def guarded(request: HttpRequest) -> HttpResponse:
        presented = request.headers.get("X-Test-Admin-Token", "")
        if not hmac.compare_digest(presented.encode(), settings.ADMIN_TOKEN.encode()):
            return _error(401, "unauthorized", "missing or wrong X-Test-Admin-Token")
        return view(request)

    guarded.__name__ = view.__name__
    return guarded


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _application(body_or_query: Any) -> Application | None:
    client_id = body_or_query.get("client_id")
    if not client_id:
        return None
    return Application.objects.filter(client_id=client_id).first()


@admin_only
@require_POST
def create_app(request: HttpRequest) -> HttpResponse:
    """Registers a client. The secret is hashed in the database like any DOT secret; the plain one is returned."""
    try:
        body = _json_body(request)
    except ValueError as exc:
        return _error(400, "invalid_request", str(exc))
    grant_type = GRANT_TYPES.get(str(body.get("grant_type", "authorization-code")))
    if grant_type is None:
        return _error(400, "invalid_request", f"grant_type must be one of {sorted(GRANT_TYPES)}")
    client_type = str(body.get("client_type", Application.CLIENT_CONFIDENTIAL))
    if client_type not in CLIENT_TYPES:
        return _error(400, "invalid_request", f"client_type must be one of {sorted(CLIENT_TYPES)}")
    redirect_uris = body.get("redirect_uris", [])
    if isinstance(redirect_uris, str):
        redirect_uris = redirect_uris.split()
    if grant_type == Application.GRANT_AUTHORIZATION_CODE and not redirect_uris:
        return _error(400, "invalid_request", "an authorization-code app needs redirect_uris")
    client_id = str(body.get("client_id") or secrets.token_urlsafe(24))
    client_secret = str(body.get("client_secret") or secrets.token_urlsafe(36))
    if Application.objects.filter(client_id=client_id).exists():
        return _error(409, "conflict", f"client_id {client_id!r} exists")
    owner = None
    if body.get("owner"):
        owner = get_user_model().objects.filter(username=body["owner"]).first()
    app = Application(
        name=str(body.get("name", "test app")),
        client_id=client_id,
        client_secret=client_secret,
        hash_client_secret=True,
        client_type=client_type,
        authorization_grant_type=grant_type,
        redirect_uris=" ".join(redirect_uris),
        skip_authorization=bool(body.get("skip_authorization", False)),
        algorithm=Application.NO_ALGORITHM,
        user=owner,
    )
    try:
        app.full_clean(exclude=["user"])
    except ValidationError as exc:
        return _error(400, "invalid_request", "; ".join(exc.messages))
    app.save()
    return JsonResponse(
        {
            "client_id": client_id,
            "client_secret": client_secret,
            "name": app.name,
            "grant_type": grant_type,
            "client_type": client_type,
            "redirect_uris": redirect_uris,
            "skip_authorization": app.skip_authorization,
        },
        status=201,
    )


@admin_only
@require_POST
def create_user(request: HttpRequest) -> HttpResponse:
    """Creates the user, or resets its password when it exists."""
    try:
        body = _json_body(request)
    except ValueError as exc:
        return _error(400, "invalid_request", str(exc))
    username, password = body.get("username"), body.get("password")
    if not username or not password:
        return _error(400, "invalid_request", "username and password are required")
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username)
    user.set_password(password)
    user.save()
    return JsonResponse({"username": user.username, "created": created}, status=201 if created else 200)


@admin_only
@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    """Revokes every refresh token and deletes every access token of the client."""
    try:
        app = _application(_json_body(request))
    except ValueError as exc:
        return _error(400, "invalid_request", str(exc))
    if app is None:
        return _error(404, "not_found", "unknown client_id")
    access_tokens = AccessToken.objects.filter(application=app)
    access_count = access_tokens.count()
    refresh_tokens = list(RefreshToken.objects.filter(application=app, revoked__isnull=True))
    for refresh_token in refresh_tokens:
        refresh_token.revoke()  # also deletes its access token
    access_tokens.delete()
    return JsonResponse({"refresh_tokens_revoked": len(refresh_tokens), "access_tokens_revoked": access_count})


@admin_only
@require_POST
def expire(request: HttpRequest) -> HttpResponse:
    """Moves the expiry of every access token of the client into the past (refresh tokens stay valid)."""
    try:
        app = _application(_json_body(request))
    except ValueError as exc:
        return _error(400, "invalid_request", str(exc))
    if app is None:
        return _error(404, "not_found", "unknown client_id")
    expired = AccessToken.objects.filter(application=app).update(expires=timezone.now() - timedelta(hours=1))
    return JsonResponse({"access_tokens_expired": expired})


@admin_only
@require_GET
def grant_stats(request: HttpRequest) -> HttpResponse:
    client_id = request.GET.get("client_id")
    if not client_id:
        return _error(400, "invalid_request", "client_id is required")
    return JsonResponse(stats.snapshot(client_id))
