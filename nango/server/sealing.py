"""Every sealed column of the control plane, and the associated data bound into its ciphertexts.

The associated data names the row (and field) a ciphertext belongs to, so a sealed value copied
into another row does not open. Domain code and key rotation build it from the same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def environment_secret_key(env_uuid: str) -> str:
    return f"environment:{env_uuid}:secret_key"


def environment_webhook_signing_key(environment_id: int) -> str:
    return f"environment:{environment_id}:webhook_signing_key"


def environment_variable(environment_id: int, name: str) -> str:
    return f"environment-variable:{environment_id}:{name}"


def integration_field(integration_uuid: str, field: str) -> str:
    return f"integration:{integration_uuid}:{field}"


def connection_credentials(connection_uuid: str) -> str:
    return f"connection:{connection_uuid}:credentials"


def connect_session_token(session_uuid: str) -> str:
    return f"connect-session:{session_uuid}"


def oauth_session_secrets(session_id: str) -> str:
    return f"oauth-session:{session_id}:secrets"


@dataclass(frozen=True)
class SealedColumn:
    table: str
    column: str
    # columns that identify a row, in keyset order
    key: tuple[str, ...]
    # extra columns the associated data needs
    reads: tuple[str, ...]
    aad: Callable[[Mapping[str, Any]], str]


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(
        "environments", "secret_key_sealed", ("id",), ("uuid",), lambda r: environment_secret_key(str(r["uuid"]))
    ),
    SealedColumn(
        "environment_webhook_settings",
        "signing_key_sealed",
        ("environment_id",),
        (),
        lambda r: environment_webhook_signing_key(r["environment_id"]),
    ),
    SealedColumn(
        "environment_variables",
        "value_sealed",
        ("environment_id", "name"),
        (),
        lambda r: environment_variable(r["environment_id"], r["name"]),
    ),
    *(
        SealedColumn(
            "integrations",
            f"{field}_sealed",
            ("id",),
            ("uuid",),
            lambda r, field=field: integration_field(str(r["uuid"]), field),  # type: ignore[misc]
        )
        for field in ("client_secret", "webhook_secret", "custom")
    ),
    SealedColumn(
        "connections", "credentials_sealed", ("id",), ("uuid",), lambda r: connection_credentials(str(r["uuid"]))
    ),
    SealedColumn(
        "connect_sessions", "token_sealed", ("id",), ("uuid",), lambda r: connect_session_token(str(r["uuid"]))
    ),
    SealedColumn("oauth_sessions", "secrets_sealed", ("id",), (), lambda r: oauth_session_secrets(str(r["id"]))),
)
