"""The decorators that declare functions (`sync`, `action`, `on_event`) and the registry they fill.

Declaring is importing: every check (names, frequency, models with an `id`) runs when the module is
imported, so `nango dryrun`, deploy-time inspection and the runner all refuse the same mistakes.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, ParamSpec, TypeVar

from pydantic import BaseModel

from nango.sdk.errors import DefinitionError
from nango.sdk.frequency import InvalidFrequency, parse_frequency
from nango.sdk.models import Model, check_io_model, check_record_model

FunctionKind = Literal["sync", "action", "on-event"]
EVENTS = ("post-connection-creation", "pre-connection-deletion", "validate-connection")
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
DEFAULT_VERSION = "0.0.1"

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[..., Coroutine[Any, Any, Any]]


@dataclass
class FunctionDefinition:
    """One declared function, as the runner runs it and deploy describes it."""

    kind: FunctionKind
    name: str
    description: str
    version: str
    handler: Handler
    module: str
    attribute: str
    frequency: str = ""
    models: tuple[type[Model], ...] = ()
    track_deletes: bool = False
    auto_start: bool = True
    webhook_subscriptions: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    reconcile_deletes: str = ""
    input: type[BaseModel] | None = None
    output: type[BaseModel] | None = None
    event: str = ""
    # actions: whether the handler takes `input` after `nango`
    takes_input: bool = False
    webhook_handler: Handler | None = field(default=None, repr=False)

    def model(self, model: str | type[BaseModel]) -> type[Model]:
        """A model this sync declared, by class or name."""
        name = model if isinstance(model, str) else model.__name__
        for declared in self.models:
            if declared.__name__ == name:
                return declared
        known = ", ".join(m.__name__ for m in self.models) or "none"
        raise DefinitionError(f"{self.name} does not declare a model {name!r} (declared: {known})")

    def spec(self) -> dict[str, Any]:
        """What deploy records of this function (the FunctionSpec of the runner's contract), JSON-able."""
        return {
            "name": self.name,
            "type": self.kind,
            "description": self.description,
            "version": self.version,
            "module": self.module,
            "attribute": self.attribute,
            "frequency": self.frequency,
            "auto_start": self.auto_start and self.kind == "sync",
            "track_deletes": self.track_deletes,
            "models": [m.__name__ for m in self.models],
            "models_json_schema": {m.__name__: m.model_json_schema() for m in self.models},
            "input_json_schema": self.input.model_json_schema() if self.input else None,
            "output_json_schema": self.output.model_json_schema() if self.output else None,
            "webhook_subscriptions": list(self.webhook_subscriptions),
            "event": self.event,
            "scopes": list(self.scopes),
            "reconcile_deletes": self.reconcile_deletes,
        }


_registry: list[FunctionDefinition] = []


def registered() -> list[FunctionDefinition]:
    """Every function declared since the registry was last cleared, in declaration order."""
    return list(_registry)


def clear_registry() -> None:
    _registry.clear()


class NangoFunction(Generic[P, R]):
    """A declared function: still callable as the plain coroutine function it decorates."""

    def __init__(self, definition: FunctionDefinition, handler: Callable[P, Coroutine[Any, Any, R]]) -> None:
        self.definition = definition
        self._handler = handler
        functools.update_wrapper(self, handler)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return self._handler(*args, **kwargs)

    def on_webhook(self, handler: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
        """Declare the handler of this sync's webhooks: `async def handler(nango, payload)`."""
        if self.definition.kind != "sync":
            raise DefinitionError(f"{self.definition.name}: only syncs receive webhooks")
        _check_coroutine(handler, f"{self.definition.name}'s webhook handler")
        self.definition.webhook_handler = handler
        return handler


def _check_coroutine(handler: Any, what: str) -> None:
    if not inspect.iscoroutinefunction(handler):
        raise DefinitionError(f"{what} must be an `async def` function")


def _check_text(value: Any, what: str, *, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise DefinitionError(f"{what} must be a non-empty string")
    return value


def _check_strings(values: Sequence[str] | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise DefinitionError(f"{what} must be a list of non-empty strings")
    return tuple(values)


def _check_frequency(value: str, what: str) -> str:
    try:
        parse_frequency(_check_text(value, what))
    except InvalidFrequency as exc:
        raise DefinitionError(f"{what}: {exc}") from None
    return value


def _declare(
    kind: FunctionKind, handler: Any, name: str | None, description: str, version: str, **details: Any
) -> FunctionDefinition:
    python_name = getattr(handler, "__name__", "")
    function_name = name if name is not None else python_name
    if not isinstance(function_name, str) or not NAME_PATTERN.fullmatch(function_name):
        raise DefinitionError(f"invalid function name {function_name!r}: use letters, digits, '_' and '-' only")
    _check_coroutine(handler, f"{kind} {function_name}")
    definition = FunctionDefinition(
        kind=kind,
        name=function_name,
        description=_check_text(description, f"{function_name}: description"),
        version=_check_text(version, f"{function_name}: version"),
        handler=handler,
        module=handler.__module__,
        attribute=python_name,
        **details,
    )
    _registry.append(definition)
    return definition


def sync(
    description: str,
    frequency: str,
    models: Sequence[type[Model]],
    track_deletes: bool = False,
    auto_start: bool = True,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
    webhook_subscriptions: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
    reconcile_deletes: str | None = None,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], NangoFunction[P, R]]:
    """Declare a sync: `async def fetch(nango)` run every `frequency`, saving records of `models`."""
    label = name or "sync"
    checked_frequency = _check_frequency(frequency, f"{label}: frequency")
    if isinstance(models, type) or not models:
        raise DefinitionError(f"{label}: models must be a non-empty list of Model classes")
    checked_models = tuple(check_record_model(m) for m in models)
    names = [m.__name__ for m in checked_models]
    if len(set(names)) != len(names):
        raise DefinitionError(f"{label}: two models share a name ({', '.join(sorted(names))})")
    reconcile = _check_frequency(reconcile_deletes, f"{label}: reconcile_deletes") if reconcile_deletes else ""

    def declare(handler: Callable[P, Coroutine[Any, Any, R]]) -> NangoFunction[P, R]:
        definition = _declare(
            "sync",
            handler,
            name,
            description,
            version,
            frequency=checked_frequency,
            models=checked_models,
            track_deletes=bool(track_deletes),
            auto_start=bool(auto_start),
            webhook_subscriptions=_check_strings(webhook_subscriptions, f"{label}: webhook_subscriptions"),
            scopes=_check_strings(scopes, f"{label}: scopes"),
            reconcile_deletes=reconcile,
        )
        return NangoFunction(definition, handler)

    return declare


def action(
    description: str,
    input: type[BaseModel] | None = None,
    output: type[BaseModel] | None = None,
    name: str | None = None,
    version: str = DEFAULT_VERSION,
    scopes: Sequence[str] | None = None,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], NangoFunction[P, R]]:
    """Declare an action: `async def run(nango, input)` returning its output (or raising ActionError)."""
    label = name or "action"
    checked_input = check_io_model(input, f"{label}: input")
    checked_output = check_io_model(output, f"{label}: output")

    def declare(handler: Callable[P, Coroutine[Any, Any, R]]) -> NangoFunction[P, R]:
        try:
            takes_input = len(inspect.signature(handler).parameters) >= 2
        except (TypeError, ValueError):
            takes_input = True
        if checked_input is not None and not takes_input:
            raise DefinitionError(f"{label}: declares an input, so the function must take (nango, input)")
        definition = _declare(
            "action",
            handler,
            name,
            description,
            version,
            input=checked_input,
            output=checked_output,
            scopes=_check_strings(scopes, f"{label}: scopes"),
            takes_input=takes_input,
        )
        return NangoFunction(definition, handler)

    return declare


def on_event(
    event: str, description: str, name: str | None = None, version: str = DEFAULT_VERSION
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], NangoFunction[P, R]]:
    """Declare a function run when a connection is created, is about to be deleted, or is validated."""
    if event not in EVENTS:
        raise DefinitionError(f"unknown event {event!r}: expected one of {', '.join(EVENTS)}")

    def declare(handler: Callable[P, Coroutine[Any, Any, R]]) -> NangoFunction[P, R]:
        return NangoFunction(_declare("on-event", handler, name, description, version, event=event), handler)

    return declare


__all__ = [
    "DEFAULT_VERSION",
    "EVENTS",
    "NAME_PATTERN",
    "FunctionDefinition",
    "FunctionKind",
    "NangoFunction",
    "action",
    "clear_registry",
    "on_event",
    "registered",
    "sync",
]
