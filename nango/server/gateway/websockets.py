"""The websocket the browser SDK waits on during a popup flow (reference §4.3).

A socket gets a `ws_client_id` in its `connection_ack`, then exactly one outcome (success or error)
for that id, after which the server closes it. Outcomes travel through the key-value store's
pub/sub channel `publisher:<ws_client_id>`, so the replica serving the callback reaches a socket held
by another replica when NANGO_REDIS_URL is set. Without Redis the in-process store only reaches
sockets held by the same process: run a single server replica in that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from aiohttp import WSCloseCode, web

from nango.errors import NangoError, RpcStatus
from nango.kv import KVStore, Subscription
from nango.server.gateway.context import GATEWAY
from nango.server.gateway.http import Auth, auth

log = logging.getLogger(__name__)

# An abandoned popup must not hold a socket and a subscription for ever.
IDLE_LIMIT_SECONDS = 15 * 60
HEARTBEAT_SECONDS = 30.0
SOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])


class UpgradeRequired(NangoError):
    code = "upgrade_required"
    http_status = 426
    rpc_status = RpcStatus.FAILED_PRECONDITION
    default_message = "This path serves websockets only; connect with a websocket client"


def channel(ws_client_id: str) -> str:
    return f"publisher:{ws_client_id}"


def success_message(provider_config_key: str, connection_id: str, *, is_pending: bool = False) -> dict[str, Any]:
    return {
        "message_type": "success",
        "provider_config_key": provider_config_key,
        "connection_id": connection_id,
        "is_pending": is_pending,
    }


def error_message(provider_config_key: str, connection_id: str | None, error: NangoError) -> dict[str, Any]:
    return {
        "message_type": "error",
        "provider_config_key": provider_config_key,
        "connection_id": connection_id,
        "error_type": error.instance_code,
        "error_desc": error.message,
    }


async def notify(kv: KVStore, ws_client_id: str | None, message: dict[str, Any]) -> None:
    """Deliver an outcome to whichever replica holds the socket; a lost message only leaves the SDK waiting."""
    if not ws_client_id:
        return
    try:
        await kv.publish(channel(ws_client_id), json.dumps(message))
    except NangoError as exc:
        log.warning("websocket outcome not published", extra={"error": exc.message})


async def _first(subscription: Subscription) -> bytes | None:
    async for message in subscription:
        return message
    return None


async def _until_closed(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass


async def _outcome(ws: web.WebSocketResponse, subscription: Subscription) -> bytes | None:
    """The first message for this socket, or None when the browser leaves first."""
    waiting = asyncio.ensure_future(_first(subscription))
    reading = asyncio.ensure_future(_until_closed(ws))
    try:
        await asyncio.wait({waiting, reading}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, reading):
            task.cancel()
        await asyncio.gather(waiting, reading, return_exceptions=True)
    if waiting.cancelled():
        return None
    error = waiting.exception()
    if error is not None:
        log.warning("websocket subscription ended", extra={"error": str(error)})
        return None
    return waiting.result()


@auth(Auth.NONE)
async def websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS)
    if not ws.can_prepare(request).ok:
        raise UpgradeRequired()
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    ws_client_id = str(uuid.uuid4())
    try:
        async with asyncio.timeout(IDLE_LIMIT_SECONDS), request.app[GATEWAY].kv.subscribe(channel(ws_client_id)) as sub:
            # subscribed before the ack: an outcome can only be published once the client knows its id
            await ws.send_json({"message_type": "connection_ack", "ws_client_id": ws_client_id})
            message = await _outcome(ws, sub)
            if message is not None and not ws.closed:
                await ws.send_str(message.decode())
    except TimeoutError:
        log.info("websocket closed after its idle limit", extra={"seconds": IDLE_LIMIT_SECONDS})
    except NangoError as exc:
        log.warning("websocket subscription failed", extra={"error": exc.message})
    except ConnectionResetError:
        pass
    finally:
        sockets.discard(ws)
        await ws.close()
    return ws


async def _close_all(app: web.Application) -> None:
    sockets: set[web.WebSocketResponse] = app[SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def install(app: web.Application, path: str) -> None:
    """Serve the websocket at `path` (NANGO_SERVER_WEBSOCKETS_PATH) and close open sockets at shutdown."""
    app[SOCKETS] = set()
    app.router.add_get(path, websocket)
    app.on_shutdown.append(_close_all)
