"""The local hub's two faces, as Litestar routes: the Supabase-Realtime WebSocket and the REST broadcast API.

    app = Litestar(route_handlers=[..., *realtime_handlers(hub, authorizer)])

Paths: `GET /realtime/v1/websocket` (Phoenix channels, vsn 1.0.0 and 2.0.0),
`POST /realtime/v1/api/broadcast` (batch) and `POST /realtime/v1/api/broadcast/{topic}/events/{event}` (single).
REST answers: 202 empty body on success; 401 `unauthorized` without a valid credential; 403 `forbidden` when any
message is refused (a reserved event, a topic the credential does not cover) and then nothing of the request is
delivered; 422 `invalid_broadcast` for a body of the wrong shape; 413 over `max_body_bytes`.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Annotated, Any, Final, cast

import msgspec
from litestar import Request, Response, Router, post, websocket
from litestar.connection import WebSocket
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from bridge.openapi import answers, inline_refs, takes
from shared.broadcast.local import ENCODING_BINARY, LocalHub, Message
from shared.errors import BridgeError, Unauthorized

from .auth import TopicAuthorizer
from .phoenix import parse_vsn
from .redact import redact_scope
from .socket import Connection

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT_S: Final = 60.0
DEFAULT_MAX_CHANNELS: Final = 100
DEFAULT_MAX_QUEUE: Final = 1024
DEFAULT_MAX_BODY_BYTES: Final = 3_000_000  # Supabase's broadcast payload limit on paid plans

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class InvalidBroadcast(BridgeError):
    status_code = 422
    code = "invalid_broadcast"


class _Item(msgspec.Struct):
    topic: Name
    event: Name
    payload: dict[str, Any]
    private: bool = False


class _Batch(msgspec.Struct):
    messages: list[_Item]


_ERRORS = (401, 403, 408, 413, 422)
_ACCEPTED = "delivered to the topic's subscribers (an empty body)"


def _error_response(request: Request[Any, Any, Any], exc: BridgeError) -> Response[dict[str, str]]:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return Response({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _credentials(request: Request[Any, Any, Any]) -> tuple[str, str]:
    """(key checked like a socket's apikey, token checked per message): Supabase takes both from these headers."""
    apikey = request.headers.get("apikey") or None
    bearer = None
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        bearer = value.strip()
    key = apikey or bearer
    if key is None:
        raise Unauthorized("send the key as the `apikey` header or `Authorization: Bearer <token>`")
    return key, bearer or key


def realtime_handlers(
    hub: LocalHub,
    authorizer: TopicAuthorizer,
    *,
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    max_channels: int = DEFAULT_MAX_CHANNELS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> list[ControllerRouterHandler]:
    """The realtime routes, bound to one hub and one authorizer; add them to the app's `route_handlers`."""

    @websocket("/websocket")
    async def realtime_socket(socket: WebSocket[Any, Any, Any]) -> None:
        query = socket.query_params
        apikey = query.get("apikey") or socket.headers.get("x-api-key") or None
        vsn = parse_vsn(query.get("vsn"))
        redact_scope(
            cast("MutableMapping[str, Any]", socket.scope)
        )  # before accept/deny: uvicorn logs the path with its query string
        if vsn is None:
            await socket.close(code=1008, reason="unsupported vsn")
            return
        try:
            await authorizer.check_socket(apikey)
        except BridgeError as exc:
            logger.info("realtime socket refused: %s", exc.code)
            await socket.close(code=1008, reason=exc.code)  # before accept: the handshake gets a 403
            return
        await socket.accept()
        conn = Connection(
            socket,
            hub,
            authorizer,
            vsn=vsn,
            apikey=apikey,
            idle_timeout_s=idle_timeout_s,
            max_channels=max_channels,
            max_queue=max_queue,
        )
        await conn.run()

    async def _check(messages: list[tuple[str, str]], request: Request[Any, Any, Any]) -> None:
        key, token = _credentials(request)
        await authorizer.check_socket(key)
        for topic, event in messages:
            await authorizer.check_send(token, topic, event)

    @post(
        "/api/broadcast",
        status_code=202,
        operation_class=takes(body=inline_refs(msgspec.json.schema(_Batch))),
        responses=answers(202, None, _ACCEPTED, errors=_ERRORS),
    )
    async def broadcast_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        _credentials(request)  # 401 before looking at the body
        body = await request.body()
        try:
            batch = msgspec.json.decode(body, type=_Batch)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidBroadcast(f'expected {{"messages": [{{"topic", "event", "payload": {{}}}}]}}: {exc}') from exc
        await _check([(item.topic, item.event) for item in batch.messages], request)
        for item in batch.messages:
            hub.broadcast(item.topic, item.event, item.payload)
        return Response(b"", status_code=202)

    @post(
        "/api/broadcast/{topic:str}/events/{event:str}",
        status_code=202,
        operation_class=takes(
            body={"type": "object", "description": "the payload (or application/octet-stream bytes)"}
        ),
        responses=answers(202, None, _ACCEPTED, errors=(400, *_ERRORS)),
    )
    async def broadcast_one(
        request: Request[Any, Any, Any], topic: FromPath[str], event: FromPath[str]
    ) -> Response[bytes]:
        _credentials(request)
        body = await request.body()
        message: Message
        if request.headers.get("content-type", "").startswith("application/octet-stream"):
            message = Message(topic, event, data=body, binary=True, encoding=ENCODING_BINARY)
        else:
            try:
                payload = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise InvalidBroadcast(f"the body must be a JSON object: {exc}") from exc
            if not isinstance(payload, dict):
                raise InvalidBroadcast("the body must be a JSON object")
            message = Message(topic, event, payload)
        if not topic or not event or len(topic.encode()) > 255 or len(event.encode()) > 255:
            raise InvalidBroadcast("topic and event must be 1 to 255 bytes")
        await _check([(topic, event)], request)
        hub.deliver(message)
        return Response(b"", status_code=202)

    router = Router(
        path="/realtime/v1",
        route_handlers=[realtime_socket, broadcast_batch, broadcast_one],
        exception_handlers={BridgeError: _error_response},
        request_max_body_size=max_body_bytes,
    )
    return [router]
