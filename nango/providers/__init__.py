"""The provider catalog: providers.yaml (Nango's schema), its loader, remote reload and `${...}` templates.

Service-neutral: every service that needs a provider's URLs, auth mode or proxy settings reads them
through a `CatalogRef`, whose `.current` is always one complete, validated `ProviderCatalog`.
"""

from nango.providers.catalog import PACKAGED_SOURCE, CatalogRef, ProviderCatalog, load_catalog, parse_providers_yaml
from nango.providers.daemons import CatalogReloader
from nango.providers.errors import InvalidProvidersFile, UnknownProvider
from nango.providers.models import (
    AuthMode,
    FieldSchema,
    Paginate,
    Provider,
    Proxy,
    Retry,
    RetryInBody,
    Signature,
    TokenSettings,
    Verification,
)
from nango.providers.settings import ProvidersSettings

__all__ = [
    "PACKAGED_SOURCE",
    "AuthMode",
    "CatalogRef",
    "CatalogReloader",
    "FieldSchema",
    "InvalidProvidersFile",
    "Paginate",
    "Provider",
    "ProviderCatalog",
    "ProvidersSettings",
    "Proxy",
    "Retry",
    "RetryInBody",
    "Signature",
    "TokenSettings",
    "UnknownProvider",
    "Verification",
    "load_catalog",
    "parse_providers_yaml",
]
