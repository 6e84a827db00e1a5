"""The function author's SDK: models, decorators and the `nango` object functions receive.

from nango.sdk import sync, action, on_event, Model, ActionError
"""

from nango.sdk.definitions import EVENTS, FunctionDefinition, NangoFunction, action, on_event, sync
from nango.sdk.errors import (
    ActionError,
    CheckpointConflict,
    DefinitionError,
    FeatureUnavailable,
    HTTPError,
    InvalidRecord,
    PaginationError,
    SdkError,
)
from nango.sdk.models import Model
from nango.sdk.runtime import Nango, ProxyResponse

__all__ = [
    "EVENTS",
    "ActionError",
    "CheckpointConflict",
    "DefinitionError",
    "FeatureUnavailable",
    "FunctionDefinition",
    "HTTPError",
    "InvalidRecord",
    "Model",
    "Nango",
    "NangoFunction",
    "PaginationError",
    "ProxyResponse",
    "SdkError",
    "action",
    "on_event",
    "sync",
]
