"""Settings of the test authorization server. Everything variable comes from the environment.

- `OAUTH_AS_DATA_DIR` (required): directory holding the SQLite database.
- `OAUTH_AS_ADMIN_TOKEN` (required): shared secret of the `/test/` control API (header `X-Test-Admin-Token`).
- `OAUTH_AS_ACCESS_TOKEN_TTL`: access-token lifetime in seconds (default 3600).
- `OAUTH_AS_SECRET_KEY`: Django secret key (default: random per process).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ["OAUTH_AS_DATA_DIR"])
ADMIN_TOKEN = os.environ["OAUTH_AS_ADMIN_TOKEN"]

SECRET_KEY = os.environ.get("OAUTH_AS_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
    "authserver.apps.AuthServerConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "authserver.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Our plain templates (login, consent) win over the ones shipped with django-oauth-toolkit.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    },
]

# SQLite serves many threads (waitress). Every request is one transaction that takes the write lock at BEGIN
# (IMMEDIATE), so concurrent token requests are serialized instead of failing with "database is locked" — and a
# refresh token can never be redeemed twice by two racing requests.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "oauth-as.sqlite3",
        "ATOMIC_REQUESTS": True,
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Hashing stays on for user passwords and client secrets (as in production DOT), but with a fast hasher: the default
# PBKDF2 costs ~0.3 s of CPU per check, which would make every token request slow under concurrency.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/accounts/profile/"

# Other loopback servers in a test (the platform, callback servers) share the host "127.0.0.1", and cookies ignore
# ports: use names nobody else uses.
SESSION_COOKIE_NAME = "oauth_as_session"
CSRF_COOKIE_NAME = "oauth_as_csrftoken"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

OAUTH2_PROVIDER = {
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("OAUTH_AS_ACCESS_TOKEN_TTL", "3600")),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "SCOPES": {"read": "Read your data", "write": "Change your data"},
    "DEFAULT_SCOPES": ["read"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "oauth2_provider": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
