"""Request pieces shared by several routes: identifiers, tags, end users (reference §2.6)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nango.server.store.connections import EndUserValues

PROVIDER_CONFIG_KEY = r"^[a-zA-Z0-9~:.@ _-]+$"
CONNECTION_ID = r"^[a-zA-Z0-9,.;:=+~\[\]|@${}\"'\\/_ -]+$"
_TAG_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-./]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Strict(BaseModel):
    """Base of request models: unknown fields are errors, as in Nango's schemas."""

    model_config = ConfigDict(extra="forbid")


ProviderConfigKey = Annotated[str, Field(min_length=1, max_length=255, pattern=PROVIDER_CONFIG_KEY)]
ConnectionId = Annotated[str, Field(min_length=1, max_length=255, pattern=CONNECTION_ID)]


def _tags(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 10:
        raise ValueError("at most 10 tags")
    out: dict[str, str] = {}
    for key, tag in value.items():
        if not _TAG_KEY.match(key) or len(key) > 64:
            raise ValueError(f"invalid tag key {key!r}: letters, digits, _ - . / and at most 64 characters")
        if not 1 <= len(tag) <= 255:
            raise ValueError(f"tag {key!r} must have 1 to 255 characters")
        lowered = key.lower()
        if lowered in out:
            raise ValueError(f"duplicate tag key {lowered!r}")
        out[lowered] = tag
    if "end_user_email" in out and not _EMAIL.match(out["end_user_email"]):
        raise ValueError("end_user_email must be an email address")
    return out


Tags = Annotated[dict[str, str], AfterValidator(_tags)]


def _email(value: str | None) -> str | None:
    if value is not None and not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value


class EndUserInput(Strict):
    id: str = Field(min_length=1, max_length=255)
    email: Annotated[str | None, AfterValidator(_email)] = None
    display_name: str | None = Field(None, max_length=255)
    tags: Tags | None = None


class OrganizationInput(Strict):
    id: str = Field(min_length=1, max_length=255)
    display_name: str | None = Field(None, max_length=255)


def end_user_values(
    end_user: EndUserInput | None, organization: OrganizationInput | None = None
) -> EndUserValues | None:
    if end_user is None:
        return None
    return EndUserValues(
        end_user_id=end_user.id,
        email=end_user.email,
        display_name=end_user.display_name,
        organization_id=organization.id if organization else None,
        organization_display_name=organization.display_name if organization else None,
        tags=end_user.tags,
    )


def end_user_tags(end_user: EndUserInput | None, organization: OrganizationInput | None = None) -> dict[str, Any]:
    """The recommended connection tags that describe who connected (copied onto the connection)."""
    tags: dict[str, Any] = {}
    if end_user is not None:
        tags["end_user_id"] = end_user.id
        if end_user.email:
            tags["end_user_email"] = end_user.email
        if end_user.display_name:
            tags["end_user_display_name"] = end_user.display_name
    if organization is not None:
        tags["organization_id"] = organization.id
    return tags
