"""The prebuilt encoders write exactly what json.dumps writes with the same options."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from nango.jsontext import json_encoder

VALUES = [
    {"a": [1, "é", None, True, 1.5], "b": {"c": "\u0000 \u2028"}, "when": datetime(2026, 1, 1, tzinfo=UTC)},
    [],
    "text",
    {"nested": [{"x": [[]]}], "n": -0.0, "big": 10**30},
]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize(("ensure_ascii", "separators"), [(True, (",", ":")), (False, (", ", ": "))])
def test_same_text_as_json_dumps(value: object, ensure_ascii: bool, separators: tuple[str, str]) -> None:
    encode = json_encoder(ensure_ascii=ensure_ascii, separators=separators)
    assert encode(value) == json.dumps(value, default=str, ensure_ascii=ensure_ascii, separators=separators)
