"""The providers.yaml schema: one `Provider` per entry, in the field names of Nango's file.

An entry's top level and its structured parts (proxy, retry, paginate, verification, JWT settings)
forbid unknown keys, so a typo fails at load time instead of being silently ignored. Free maps
(authorization/token params, headers, query, body) and the form-field schemas stay open, as in Nango.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

AuthMode = Literal[
    "OAUTH1",
    "OAUTH2",
    "OAUTH2_CC",
    "BASIC",
    "API_KEY",
    "CUSTOM",
    "APP",
    "NONE",
    "TBA",
    "JWT",
    "BILL",
    "TWO_STEP",
    "SIGNATURE",
    "MCP_OAUTH2",
    "MCP_OAUTH2_GENERIC",
    "INSTALL_PLUGIN",
    "AWS_SIGV4",
]

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


def _scalar_text(value: Any) -> Any:
    # YAML reads `expires_in: 1800` as a number and `true` as a boolean; Nango's templates are strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _as_list(value: Any) -> Any:
    # Nango accepts one header name or a list of them; a list is easier to consume.
    return [value] if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_scalar_text)]
TextMap = dict[str, Text]
NameList = Annotated[list[Text], BeforeValidator(_as_list)]
UrlTemplate = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSchema(BaseModel):
    """One field of a connect form (Nango's SimplifiedJSONSchema); unknown UI hints pass through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = "string"
    title: str | None = None
    description: str | None = None
    example: str | None = None
    pattern: str | None = None
    format: Literal["hostname", "uri", "uuid", "email"] | None = None
    optional: bool | None = None
    order: int | None = None
    default_value: Text | None = None
    hidden: bool | None = None
    prefix: str | None = None
    suffix: str | None = None
    doc_section: str | None = None
    secret: bool | None = None
    automated: bool | None = None
    enum: list[str] | None = None


class RetryInBody(_Strict):
    path: str
    value: str
    strategy: Literal["at", "after"]


class Retry(_Strict):
    """Rate-limit hints for the proxy: when to retry and how long to wait."""

    at: NameList | None = None
    after: NameList | None = None
    remaining: str | None = None
    error_code: list[Annotated[Text, Field(pattern=r"^(\d{3}|\dxx|\d{3}-\d{3})$")]] | None = None
    in_body: RetryInBody | None = None


class Paginate(_Strict):
    """The provider's default pagination, merged with a caller's `paginate` (Nango §6.4)."""

    type: Literal["cursor", "link", "offset"]
    limit: int | None = Field(None, ge=1)
    limit_name_in_request: str | None = None
    response_path: str | None = None
    in_body: bool | None = None
    cursor_name_in_request: str | None = None
    cursor_path_in_response: str | None = None
    link_rel_in_response_header: str | None = None
    link_path_in_response_body: str | None = None
    offset_name_in_request: str | None = None
    offset_start_value: int | None = None
    offset_calculation_method: Literal["by-response-size", "per-page"] | None = None

    @model_validator(mode="after")
    def _complete(self) -> Paginate:
        if self.type == "cursor" and not (self.cursor_name_in_request and self.cursor_path_in_response):
            raise ValueError("cursor pagination needs cursor_name_in_request and cursor_path_in_response")
        if self.type == "link" and not (self.link_rel_in_response_header or self.link_path_in_response_body):
            raise ValueError("link pagination needs link_rel_in_response_header or link_path_in_response_body")
        if self.type == "offset" and not self.offset_name_in_request:
            raise ValueError("offset pagination needs offset_name_in_request")
        return self


class Verification(_Strict):
    """The cheap call that tests API_KEY and BASIC credentials before they are saved."""

    method: HttpMethod = "GET"
    endpoints: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    base_url_override: str | None = None
    headers: TextMap | None = None
    data: Any = None


class Proxy(_Strict):
    base_url: UrlTemplate | None = None
    headers: TextMap | None = None
    query: TextMap | None = None
    body: dict[str, Any] | None = None
    connection_config: dict[str, Any] | None = None
    decompress: bool | None = None
    forward_headers_on_redirect: bool | None = None
    retry: Retry | None = None
    paginate: Paginate | None = None
    verification: Verification | None = None


class Signature(_Strict):
    protocol: Literal["RSA", "HMAC", "EC", "WSSE"]
    hmac_secret_encoding: str | None = None


class TokenSettings(_Strict):
    """How a JWT or SIGNATURE token is built; header and payload values are templates."""

    signing_key: str | None = None
    expires_in_ms: int | None = Field(None, ge=1)
    header: dict[str, Text] | None = None
    payload: dict[str, Any] | None = None


_REQUIRED_BY_MODE: dict[str, tuple[str, ...]] = {
    "OAUTH2": ("authorization_url", "token_url"),
    "OAUTH1": ("request_url", "authorization_url", "token_url"),
    "OAUTH2_CC": ("token_url",),
    "APP": ("authorization_url", "token_url"),
    "CUSTOM": ("authorization_url", "token_url"),
    "JWT": ("signature", "token"),
}


class Provider(_Strict):
    """One providers.yaml entry, with its `alias:` already applied."""

    display_name: str = Field(min_length=1)
    categories: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    docs: str = Field(pattern=r"^https?://\S+$")
    auth_mode: AuthMode
    alias: str | None = None
    docs_connect: str | None = None
    setup_guide_url: str | None = None
    installation: Literal["outbound"] | None = None

    authorization_url: UrlTemplate | None = None
    authorization_params: TextMap | None = None
    authorization_url_skip_encode: list[str] | None = None
    authorization_url_skip_empty: bool | None = None
    authorization_url_fragment: str | None = None
    authorization_url_replacements: TextMap | None = None
    authorization_code_param_in_callback: str | None = None
    authorization_code_param_in_webhook: str | None = None
    scope_separator: str | None = None
    default_scopes: list[str] | None = None
    available_scopes: list[str | dict[str, Any]] | None = None

    token_url: UrlTemplate | dict[str, UrlTemplate] | None = None
    token_url_skip_encode: list[str] | None = None
    token_params: TextMap | None = None
    access_token_url: str | None = None
    body_format: Literal["form", "json", "query", "xml"] | None = None
    token_request_auth_method: Literal["basic", "custom", "private_key_jwt"] | None = None
    require_client_certificate: bool | None = None
    token_expiration_buffer: int | None = Field(None, ge=0)

    token_response_metadata: list[str] | None = None
    redirect_uri_metadata: list[str] | None = None
    webhook_response_metadata: list[str] | None = None

    webhook_routing_script: str | None = None
    webhook_user_defined_secret: bool | None = None
    webhook_allowed_query_params: list[str] | None = None
    post_connection_script: str | None = None
    pre_connection_deletion_script: str | None = None
    credentials_verification_script: str | None = None

    connection_configuration: list[str] | None = None
    connection_config: dict[str, FieldSchema] | None = None
    credentials: dict[str, FieldSchema] | None = None
    integration_config: dict[str, FieldSchema] | None = None
    assertion_option: dict[str, Any] | None = None

    proxy: Proxy | None = None

    # OAUTH2
    disable_pkce: bool | None = None
    refresh_params: TextMap | None = None
    refresh_url: str | None = None
    authorization_method: Literal["body", "header"] | None = None
    alternate_access_token_response_path: str | None = None
    expires_in_unit: Literal["milliseconds"] | None = None

    # OAUTH1
    request_url: str | None = None
    request_params: TextMap | None = None
    request_http_method: HttpMethod | None = None
    token_http_method: HttpMethod | None = None
    signature_method: Literal["HMAC-SHA1", "RSA-SHA1", "PLAINTEXT"] | None = None

    # JWT and SIGNATURE
    signature: Signature | None = None
    token: TokenSettings | None = None

    # TWO_STEP
    token_response: dict[str, Any] | None = None
    token_headers: TextMap | None = None
    token_request_method: HttpMethod | None = None
    refresh_token_params: TextMap | None = None
    refresh_token_headers: TextMap | None = None
    additional_steps: list[dict[str, Any]] | None = None
    assertion: dict[str, Any] | None = None
    token_expires_in_ms: int | None = Field(None, ge=1)
    proxy_header_authorization: str | None = None
    token_response_headers: list[str] | None = None

    # MCP_OAUTH2 and MCP_OAUTH2_GENERIC
    client_registration: Literal["dynamic", "static", "cimd"] | None = None
    registration_url: str | None = None
    registration_params: dict[str, Any] | None = None
    mcp_server_url: str | None = None

    @model_validator(mode="after")
    def _mode_fields(self) -> Provider:
        missing = [name for name in _REQUIRED_BY_MODE.get(self.auth_mode, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"auth_mode {self.auth_mode} needs {', '.join(missing)}")
        return self


__all__ = [
    "AuthMode",
    "FieldSchema",
    "Paginate",
    "Provider",
    "Proxy",
    "Retry",
    "RetryInBody",
    "Signature",
    "TokenSettings",
    "Verification",
]
