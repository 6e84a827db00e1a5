"""App config: counts successful token-endpoint grants (see `stats`)."""

from __future__ import annotations

from django.apps import AppConfig


class AuthServerConfig(AppConfig):
    name = "authserver"
    label = "authserver"

    def ready(self) -> None:
        from authserver import stats
        from oauth2_provider.signals import app_authorized

        app_authorized.connect(stats.on_app_authorized, dispatch_uid="authserver-grant-stats")
