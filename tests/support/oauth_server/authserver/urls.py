"""URLs: DOT under /o/, Django's login under /accounts/, /api/me, and the test-control API under /test/."""

from __future__ import annotations

from authserver import views
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/me", views.me, name="me"),
    path("test/health", views.health, name="test-health"),
    path("test/apps", views.create_app, name="test-apps"),
    path("test/users", views.create_user, name="test-users"),
    path("test/revoke", views.revoke, name="test-revoke"),
    path("test/expire", views.expire, name="test-expire"),
    path("test/stats", views.grant_stats, name="test-stats"),
]
