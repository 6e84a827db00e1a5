"""Loading the provider catalog: the packaged providers.yaml, aliases, and an operator's overrides.

Layers, later wins: the packaged file, then the operator's file (`NANGO_PROVIDERS_FILE`), then a
remote file (`PROVIDERS_URL`). A later layer's entry **replaces** an earlier entry of the same name
entirely; it is not merged field by field, so an override states the whole entry (or uses `alias:`).

`alias: <target>` makes an entry inherit every field of its target (resolved after the layers are
merged, so an operator's alias may point at a packaged provider). Mappings are merged recursively,
so an alias that sets only `proxy.base_url` keeps the target's proxy headers, retry and paginate;
lists and scalars set by the alias replace the target's. An unknown target or a cycle is an error.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

from nango.providers.errors import InvalidProvidersFile, UnknownProvider
from nango.providers.models import Provider

PACKAGED_SOURCE = "packaged providers.yaml"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A quantified group holding a quantifier or an alternation, e.g. `(a+)+`, can backtrack exponentially.
_NESTED_QUANTIFIER = re.compile(r"\([^)]*[+*?}|][^)]*\)\s*[+*{]")
_MAX_PATTERN = 200
_MAX_LISTED_PROBLEMS = 10


class _UniqueKeyLoader(_SafeLoader):
    """A safe loader that refuses a key repeated in one mapping (PyYAML silently keeps the last)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _problem(provider: str | None, source: str, path: str, message: str) -> dict[str, str]:
    return {"provider": provider or "", "source": source, "path": path, "message": message}


def _fail(problems: list[dict[str, str]]) -> InvalidProvidersFile:
    lines = []
    for p in problems[:_MAX_LISTED_PROBLEMS]:
        where = f"provider {p['provider']!r} ({p['source']})" if p["provider"] else p["source"]
        lines.append(f"{where}: {p['path']}: {p['message']}" if p["path"] else f"{where}: {p['message']}")
    if len(problems) > _MAX_LISTED_PROBLEMS:
        lines.append(f"and {len(problems) - _MAX_LISTED_PROBLEMS} more")
    return InvalidProvidersFile("invalid providers: " + "; ".join(lines), errors=list(problems))


def parse_providers_yaml(text: str, source: str) -> dict[str, dict[str, Any]]:
    """The entries of one providers file, checked only for shape (a map of slug to map)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _fail([_problem(None, source, "", f"not valid YAML: {exc}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _fail([_problem(None, source, "", "expected a map of provider name to provider entry")])
    problems = []
    for name, entry in data.items():
        if not isinstance(name, str) or not _SLUG.match(name):
            problems.append(_problem(str(name), source, "", "a provider name is letters, digits, '.', '_' or '-'"))
        elif not isinstance(entry, dict):
            problems.append(_problem(name, source, "", "the entry must be a map of fields"))
    if problems:
        raise _fail(problems)
    return data


@functools.cache
def _packaged_entries() -> dict[str, dict[str, Any]]:
    text = resources.files("nango.providers").joinpath("providers.yaml").read_text(encoding="utf-8")
    return parse_providers_yaml(text, PACKAGED_SOURCE)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_aliases(
    entries: dict[str, dict[str, Any]], sources: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    resolved: dict[str, dict[str, Any]] = {}
    problems: list[dict[str, str]] = []

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any] | None:
        if name in resolved:
            return resolved[name]
        entry = entries[name]
        target = entry.get("alias")
        if target is None:
            resolved[name] = entry
            return entry
        if not isinstance(target, str) or target not in entries:
            problems.append(_problem(name, sources[name], "alias", f"unknown provider {target!r}"))
            return None
        if target in chain or target == name:
            cycle = " -> ".join((*chain, name, target))
            problems.append(_problem(name, sources[name], "alias", f"alias cycle {cycle}"))
            return None
        base = resolve(target, (*chain, name))
        if base is None:
            return None
        resolved[name] = _deep_merge(base, entry)
        return resolved[name]

    for name in entries:
        resolve(name, ())
    return resolved, problems


def _describe(name: str, source: str, exc: ValidationError) -> list[dict[str, str]]:
    return [_problem(name, source, ".".join(str(part) for part in err["loc"]), str(err["msg"])) for err in exc.errors()]


def load_catalog(
    extra_file: Path | None = None,
    extra_yaml: str | None = None,
    *,
    extra_yaml_source: str = "remote providers file",
) -> ProviderCatalog:
    """The packaged catalog, with `extra_file` and then `extra_yaml` laid over it, validated.

    Raises InvalidProvidersFile naming every bad provider and field path; nothing is half-loaded.
    """
    layers: list[tuple[str, dict[str, dict[str, Any]]]] = [(PACKAGED_SOURCE, _packaged_entries())]
    if extra_file is not None:
        try:
            text = extra_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail([_problem(None, str(extra_file), "", f"cannot read: {exc}")]) from None
        layers.append((str(extra_file), parse_providers_yaml(text, str(extra_file))))
    if extra_yaml is not None:
        layers.append((extra_yaml_source, parse_providers_yaml(extra_yaml, extra_yaml_source)))

    entries: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for name, entry in layer.items():
            entries[name] = copy.deepcopy(entry)
            sources[name] = source

    resolved, problems = _resolve_aliases(entries, sources)
    providers: dict[str, Provider] = {}
    for name, entry in resolved.items():
        try:
            providers[name] = Provider.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_describe(name, sources[name], exc))
    if problems:
        raise _fail(problems)
    return ProviderCatalog(providers)


def _search_regex(pattern: str) -> re.Pattern[str]:
    # Nango's search is a case-insensitive regex; what cannot be (or should not be) compiled is literal text.
    pattern = pattern[:_MAX_PATTERN]
    if not _NESTED_QUANTIFIER.search(pattern):
        try:
            return re.compile(pattern, re.IGNORECASE)
        except re.error:
            pass
    return re.compile(re.escape(pattern), re.IGNORECASE)


class ProviderCatalog:
    """An immutable, validated set of providers keyed by slug."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(sorted(providers.items()))
        self._raw: dict[str, dict[str, Any]] | None = None

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def names(self) -> list[str]:
        return list(self._providers)

    def __len__(self) -> int:
        return len(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def __iter__(self) -> Iterator[str]:
        return iter(self._providers)

    def search(self, pattern: str) -> list[str]:
        """Names whose slug or display name match `pattern` (case-insensitive regex), sorted."""
        regex = _search_regex(pattern)
        return [
            name
            for name, provider in self._providers.items()
            if regex.search(name) or regex.search(provider.display_name)
        ]

    def _raw_entries(self) -> dict[str, dict[str, Any]]:
        if self._raw is None:
            self._raw = {
                name: provider.model_dump(mode="json", exclude_none=True) for name, provider in self._providers.items()
            }
        return self._raw

    def as_raw_dict(self) -> dict[str, dict[str, Any]]:
        """The providers map as JSON-able dicts (GET /providers.json), aliases applied; a fresh copy."""
        return copy.deepcopy(self._raw_entries())

    def public_entry(self, name: str, *, logo_base_url: str) -> dict[str, Any]:
        """One entry as GET /providers returns it: the fields plus `name` and `logo_url`.

        `logo_base_url` is where the logos are served, e.g. `<server url>/images/template-logos`.
        """
        if name not in self._providers:
            raise UnknownProvider(f"Provider {name!r} does not exist")
        entry = copy.deepcopy(self._raw_entries()[name])
        entry["name"] = name
        entry["logo_url"] = f"{logo_base_url.rstrip('/')}/{name}.svg"
        return entry


class CatalogRef:
    """The current catalog; a reload swaps the whole object, so a reader that takes `.current`
    once sees one complete catalog even while a reload happens."""

    def __init__(self, catalog: ProviderCatalog) -> None:
        self._current = catalog

    @property
    def current(self) -> ProviderCatalog:
        return self._current

    def swap(self, catalog: ProviderCatalog) -> None:
        self._current = catalog


__all__ = [
    "PACKAGED_SOURCE",
    "CatalogRef",
    "ProviderCatalog",
    "load_catalog",
    "parse_providers_yaml",
]
