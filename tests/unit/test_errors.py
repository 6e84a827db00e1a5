from __future__ import annotations

from nango.errors import InvalidJson, MissingAuthHeader, NangoError, NotFound, RpcStatus


def test_envelope_has_code_and_message() -> None:
    assert MissingAuthHeader().to_envelope() == {
        "error": {
            "code": "missing_auth_header",
            "message": "Authentication failed. The request is missing the Authorization header.",
        }
    }


def test_envelope_carries_payload_and_validation_errors() -> None:
    error = InvalidJson(payload={"at": 3}, errors=[{"code": "custom", "message": "x", "path": ["a", 0]}])
    body = error.to_envelope()["error"]
    assert body["payload"] == {"at": 3}
    assert body["errors"][0]["path"] == ["a", 0]


def test_instance_code_overrides_class_code_but_keeps_statuses() -> None:
    error = NotFound("Integration does not exist", code="unknown_provider_config")
    assert error.instance_code == "unknown_provider_config"
    assert error.status == 404
    assert type(error).rpc_status is RpcStatus.NOT_FOUND


def test_codes_resolve_to_their_class() -> None:
    assert NangoError.class_for("missing_auth_header") is MissingAuthHeader
    assert NangoError.class_for("never_heard_of_it") is NangoError
