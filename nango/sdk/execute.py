"""Running one declared function with a `nango` object: the part the runner's workers and `nango
dryrun` share (input validation, the call, output validation, legacy track-deletes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from nango.sdk.definitions import FunctionDefinition
from nango.sdk.errors import SdkError
from nango.sdk.runtime import Nango

RunType = Literal["sync", "action", "webhook", "on-event"]
_KINDS: dict[str, str] = {"sync": "sync", "webhook": "sync", "action": "action", "on-event": "on-event"}


class FunctionNotFound(SdkError):
    pass


class InvalidInput(SdkError):
    """The action's input does not match its declared model (HTTP 400, `invalid_action_input`)."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


class InvalidOutput(SdkError):
    """The action returned something that is not its declared output, or not JSON."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors


def find_function(definitions: Sequence[FunctionDefinition], name: str, run_type: RunType) -> FunctionDefinition:
    kind = _KINDS[run_type]
    for definition in definitions:
        if definition.name == name and definition.kind == kind:
            return definition
    raise FunctionNotFound(f"the code defines no {kind} named {name!r}")


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def parse_input(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        raise InvalidInput("the input is not valid JSON") from None


def encode_output(definition: FunctionDefinition, result: Any) -> bytes:
    """An action's return value as JSON, checked against its declared output model."""
    schema = definition.output
    if schema is not None and not isinstance(result, schema):
        try:
            result = schema.model_validate(result.model_dump() if isinstance(result, BaseModel) else result)
        except ValidationError as exc:
            raise InvalidOutput(f"the output does not match {schema.__name__}", _errors(exc)) from None
    value = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidOutput(f"the output is not JSON: {exc}") from None


async def execute(definition: FunctionDefinition, nango: Nango, run_type: RunType, input_json: bytes = b"") -> bytes:
    """Run the function and return its output as JSON (`null` for syncs and events)."""
    if run_type == "action":
        value: Any = parse_input(input_json)
        if definition.input is not None:
            try:
                value = definition.input.model_validate(value)
            except ValidationError as exc:
                raise InvalidInput(f"the input does not match {definition.input.__name__}", _errors(exc)) from None
        result = await (definition.handler(nango, value) if definition.takes_input else definition.handler(nango))
        await nango.settle_records()
        return encode_output(definition, result)
    if run_type == "webhook":
        if definition.webhook_handler is None:
            raise FunctionNotFound(f"the sync {definition.name!r} has no webhook handler")
        await definition.webhook_handler(nango, parse_input(input_json))
        await nango.settle_records()
        return b"null"
    if run_type == "sync" and nango.is_reconcile:
        await nango.open_reconcile_pass()
        await definition.handler(nango)
        await nango.close_reconcile_pass()
        return b"null"
    await definition.handler(nango)
    # a batch that failed after batch_save returned fails the run
    await nango.settle_records()
    if run_type == "sync" and (definition.track_deletes or nango.context.track_deletes):
        for model in definition.models:
            await nango.delete_outdated_records(model)
    return b"null"


__all__ = [
    "FunctionNotFound",
    "InvalidInput",
    "InvalidOutput",
    "RunType",
    "encode_output",
    "execute",
    "find_function",
    "parse_input",
]
