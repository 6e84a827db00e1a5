"""`Model`, the base of every record, input and output type a function declares."""

from __future__ import annotations

import types
from typing import Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, create_model

from nango.sdk.errors import DefinitionError

_ID_TYPES = frozenset({str, int})
_partials: dict[type[BaseModel], type[BaseModel]] = {}


class Model(BaseModel):
    """A pydantic model. Models a sync saves need a required `id` (`str` or `int`): a record is keyed
    by it. Action inputs and outputs need none."""


def _id_types(annotation: Any) -> set[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return set(get_args(annotation))
    return {annotation}


def check_record_model(model: Any) -> type[Model]:
    """`model` if it can be saved as records; DefinitionError saying what is wrong otherwise."""
    if not isinstance(model, type) or not issubclass(model, Model):
        raise DefinitionError(f"{model!r} is not a nango.sdk.Model subclass")
    field = model.model_fields.get("id")
    if field is None:
        raise DefinitionError(f"model {model.__name__} has no `id` field: records are keyed by it")
    if not field.is_required():
        raise DefinitionError(f"model {model.__name__}: `id` must be required (no default)")
    if not _id_types(field.annotation) <= _ID_TYPES:
        raise DefinitionError(f"model {model.__name__}: `id` must be str or int (got {field.annotation!r})")
    return model


def check_io_model(model: Any, what: str) -> type[BaseModel] | None:
    """An action's input or output type: a pydantic model or None."""
    if model is None:
        return None
    if not isinstance(model, type) or not issubclass(model, BaseModel):
        raise DefinitionError(f"{what} must be a nango.sdk.Model (pydantic) class, got {model!r}")
    return model


def partial_model(model: type[BaseModel]) -> type[BaseModel]:
    """The model with every field but `id` optional, for `batch_update`'s partial records."""
    known = _partials.get(model)
    if known is not None:
        return known
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        fields[name] = (info.annotation, ...) if name == "id" else (Optional[info.annotation], None)  # noqa: UP045 - annotation is a runtime value
    partial: type[BaseModel] = create_model(f"Partial{model.__name__}", __config__=model.model_config, **fields)
    _partials[model] = partial
    return partial


__all__ = ["Model", "check_io_model", "check_record_model", "partial_model"]
