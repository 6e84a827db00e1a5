"""The official `@nangohq/frontend` SDK's non-popup flows against `nango up`.

`auth(pck, {credentials})` and `create(pck)` only use `fetch` (no `window`), so node runs them as a
browser would. The providers used declare no `proxy.verification`, so no call leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.compat.conftest import Sdk
from tests.support.platform import Up

pytestmark = pytest.mark.compat

HERE = Path(__file__).parent
WAIT = 30.0

# Runs `new Nango({host, connectSessionToken})[method](...args)` for each call read from stdin.
FRONTEND = """
import Nango from '@nangohq/frontend';
let input = '';
for await (const chunk of process.stdin) input += chunk;
const { host, token, calls } = JSON.parse(input);
const nango = new Nango({ host, connectSessionToken: token });
const results = [];
for (const [method, args] of calls) {
    try {
        results.push({ ok: true, result: await nango[method](...args) });
    } catch (error) {
        results.push({ ok: false, type: error.type ?? null, message: String(error.message) });
    }
}
process.stdout.write(JSON.stringify(results));
"""


async def frontend(up: Up, token: str, *calls: tuple[str, list[Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None, "node is needed for the compat tests"
    process = await asyncio.create_subprocess_exec(
        node,
        "--input-type=module",
        "-e",
        FRONTEND,
        cwd=HERE,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    request = json.dumps({"host": up.api, "token": token, "calls": [list(c) for c in calls]}).encode()
    out, err = await asyncio.wait_for(process.communicate(request), WAIT)
    assert process.returncode == 0, err.decode()
    return list(json.loads(out))


async def integration(sdk: Sdk, provider: str, credentials: dict[str, str] | None = None) -> str:
    unique_key = f"{provider}-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"provider": provider, "unique_key": unique_key}
    if credentials:
        body["credentials"] = credentials
    await sdk("createIntegration", body)
    return unique_key


async def session(sdk: Sdk, *allowed: str) -> str:
    created = await sdk("createConnectSession", {"end_user": {"id": "fe-user"}, "allowed_integrations": list(allowed)})
    return str(created["data"]["token"])


async def test_api_key_basic_and_unauthenticated(sdk: Sdk, platform: Up) -> None:
    api_key, basic, none = (
        await integration(sdk, "resend"),
        await integration(sdk, "amplitude"),
        await integration(sdk, "hacker-news"),
    )
    token = await session(sdk, api_key, basic, none)
    results = await frontend(
        platform,
        token,
        ("auth", [api_key, {"credentials": {"apiKey": "re_123"}}]),
        ("auth", [basic, {"credentials": {"username": "key-as-user", "password": ""}}]),
        ("create", [none]),
    )
    assert all(r["ok"] for r in results), results
    stored = [
        await sdk("getConnection", pck, r["result"]["connectionId"])
        for pck, r in zip((api_key, basic, none), results, strict=True)
    ]
    assert [r["result"]["providerConfigKey"] for r in results] == [api_key, basic, none]
    assert stored[0]["credentials"] == {"type": "API_KEY", "apiKey": "re_123"}
    assert stored[1]["credentials"] == {"type": "BASIC", "username": "key-as-user", "password": ""}
    assert stored[2]["credentials"] == {"type": "NONE"}
    assert stored[0]["end_user"]["id"] == "fe-user"


async def test_tba_with_account_params(sdk: Sdk, platform: Up) -> None:
    pck = await integration(sdk, "netsuite-tba", {"type": "TBA", "client_id": "ck", "client_secret": "cs"})
    token = await session(sdk, pck)
    credentials = {"token_id": "tid", "token_secret": "tsecret", "oauth_client_id_override": "ck2"}
    [result] = await frontend(
        platform, token, ("auth", [pck, {"params": {"accountId": "1234567"}, "credentials": credentials}])
    )
    assert result["ok"], result
    stored = await sdk("getConnection", pck, result["result"]["connectionId"])
    assert stored["credentials"] == {
        "type": "TBA",
        "token_id": "tid",
        "token_secret": "tsecret",
        "config_override": {"client_id": "ck2"},
    }
    assert stored["connection_config"] == {"accountId": "1234567"}


async def test_jwt_is_signed_with_the_submitted_key(sdk: Sdk, platform: Up) -> None:
    pck = await integration(sdk, "app-store-connect")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    issuer = str(uuid.uuid4())
    credentials = {"type": "JWT", "issuerId": issuer, "privateKeyId": "KEY123", "privateKey": pem}
    [result] = await frontend(platform, await session(sdk, pck), ("auth", [pck, {"credentials": credentials}]))
    assert result["ok"], result
    stored = (await sdk("getConnection", pck, result["result"]["connectionId"]))["credentials"]
    assert {k: stored[k] for k in credentials} == credentials
    assert jwt.get_unverified_header(stored["token"])["kid"] == "KEY123"
    claims = jwt.decode(stored["token"], key.public_key(), algorithms=["ES256"], audience="appstoreconnect-v1")
    assert claims["iss"] == issuer
    assert claims["exp"] - claims["iat"] == 900


async def test_errors_reach_the_sdk_as_auth_errors(sdk: Sdk, platform: Up) -> None:
    basic, hidden = await integration(sdk, "amplitude"), await integration(sdk, "resend")
    token = await session(sdk, basic)
    results = await frontend(
        platform,
        token,
        ("auth", [basic, {"credentials": {"apiKey": "re_123"}}]),
        ("auth", [hidden, {"credentials": {"apiKey": "re_123"}}]),
        ("auth", [basic, {"credentials": {"password": "only"}}]),
    )
    assert [(r["ok"], r["type"]) for r in results] == [
        (False, "invalid_auth_mode"),
        (False, "integration_not_allowed"),
        (False, "invalid_body"),
    ]
    assert (await sdk("listConnections", {"integrationId": f"{basic},{hidden}"}))["connections"] == []
