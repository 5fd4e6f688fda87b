"""`/functions/v1/stream` (alias `/stream`): one WebSocket per speaker, frames in, acks, partials and entries out.

The wire (architecture brief, "Streaming ingest"): the credential in the `token` query parameter or a first text
message `{"type": "auth", "token"}`; the server says `{"type": "ready", "next_sequence"}`; each binary frame is
stored as the next chunk, then acknowledged `{"type": "ack", "sequence_number", "status", "throttled"}`;
`{"type": "partial", "text"}` and `{"type": "entry", "entry"}` for this speaker follow as they happen;
`{"type": "end"}` flushes the speaker and closes with 1000. An error is `{"type": "error", "error", "detail"}`
and a close with 4000 + its HTTP status (4400, 4401, 4403, 4404, 4409, 4413, 4429, 4503).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import MutableMapping
from typing import Any, cast

from litestar import WebSocket, websocket

from bridge.errors import retry_after_for
from bridge.limits import CHUNKS
from bridge.realtime.redact import redact_scope
from bridge.services import Services
from functions.process_audio.stream import SpeakerStreamIngest, stream_format
from functions.validation import check_declared_speaker, check_speaker
from shared.access import Action, in_closing_grace, session_for
from shared.broadcast.vocabulary import ENTRY_EVENT, PARTIAL_EVENT, session_topic
from shared.credentials import Principal
from shared.errors import BridgeError, InvalidRequest, NotFound, Unauthorized
from shared.models import Session, utcnow

log = logging.getLogger("bridge.stream")

AUTH_TIMEOUT_S = 10.0  # a socket must name its credential this soon
AnySocket = WebSocket[Any, Any, Any]


class Hangup(Exception):
    """The client went away."""


@websocket(["/functions/v1/stream", "/stream"])
async def stream_socket(socket: AnySocket) -> None:
    services: Services = socket.app.state.services
    query = dict(socket.query_params)
    redact_scope(cast("MutableMapping[str, Any]", socket.scope))  # the token never reaches an access log
    await socket.accept()
    try:
        ingest, principal = await _open(socket, services, query)
        await _serve(socket, services, ingest, principal)
    except Hangup:
        return
    except BridgeError as exc:
        await _refuse(socket, exc)


async def _open(socket: AnySocket, services: Services, query: dict[str, str]) -> tuple[SpeakerStreamIngest, Principal]:
    """Credential, session, speaker and format, in the contract's order; the stream positioned at next_sequence."""
    token = query.get("token") or await _auth_message(socket)
    principal = await services.auth.principal(token)
    session = await session_for(principal, query.get("session_id") or "", services.sessions, Action.WRITE)
    try:
        speaker = check_speaker(query.get("speaker") or "")
    except ValueError as exc:
        raise InvalidRequest(f"speaker: {exc}") from exc
    check_declared_speaker(session.speakers, speaker)
    fmt = stream_format(query.get("mime_type"))
    closing = in_closing_grace(session, utcnow(), services.settings.end_grace_s)  # SessionClosed past the grace
    next_sequence = (await services.store.next_sequences(session.id)).get(speaker, 0)
    ingest = SpeakerStreamIngest(services.live, session, speaker, fmt, next_sequence, closing=closing)
    await socket.send_json({"type": "ready", "next_sequence": next_sequence})
    return ingest, principal


async def _auth_message(socket: AnySocket) -> str:
    try:
        message = await asyncio.wait_for(_receive(socket), AUTH_TIMEOUT_S)
    except TimeoutError as exc:
        raise Unauthorized('send the credential: the `token` query parameter or {"type": "auth", "token"}') from exc
    if message.get("text") is None:
        raise Unauthorized('send {"type": "auth", "token"} before any audio, or the `token` query parameter')
    body = _json(message.get("text"))
    token = body.get("token") if body.get("type") == "auth" else None
    if not isinstance(token, str) or not token:
        raise Unauthorized('the first message must be {"type": "auth", "token": "<session token>"}')
    return token


async def _serve(socket: AnySocket, services: Services, ingest: SpeakerStreamIngest, principal: Principal) -> None:
    with services.tap.listen(session_topic(ingest.session.id)) as events:
        pusher = asyncio.create_task(_push(socket, events, ingest.speaker))
        try:
            while True:
                message = await _receive(socket)
                if message.get("bytes") is not None:
                    services.limits.check("chunks", principal, CHUNKS)  # a frame counts as a chunk: 4429 past it
                    await _still_open(services, ingest)
                    result, throttled = await ingest.take(message["bytes"])
                    ack = {"type": "ack", "sequence_number": result.sequence_number, "status": result.status}
                    await socket.send_json({**ack, "throttled": throttled})
                    continue
                body = _json(message.get("text"))
                if body.get("type") == "end":
                    await _flush(services, ingest.session, ingest.speaker)
                    await asyncio.sleep(0.05)  # the flush's entries reach the pusher
                    await _drain(events, socket, ingest.speaker)
                    await socket.close(code=1000, reason="ended")
                    return
                raise InvalidRequest('text messages are {"type": "end"}; audio goes in binary frames')
        finally:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pusher


async def _still_open(services: Services, ingest: SpeakerStreamIngest) -> None:
    """The session as it is now (cached for a second): a frame after its end is a late write within the grace,
    then 4409 `session_closed`, as for process-audio."""
    session = await services.sessions.get_session(ingest.session.id, ingest.session.tenant_id)
    if session is None:
        raise NotFound("the session was deleted")
    ingest.session = session
    ingest.closing = in_closing_grace(session, utcnow(), services.settings.end_grace_s)


async def _flush(services: Services, session: Session, speaker: str) -> None:
    """Everything this speaker sent, as final entries (the speaker stopped; the session goes on)."""
    await services.live.transcriber.wait_ready()
    await services.live.pump(session, speaker, final=True)


async def _push(socket: AnySocket, events: asyncio.Queue[tuple[str, dict[str, Any]]], speaker: str) -> None:
    while True:
        event, payload = await events.get()
        await _forward(socket, event, payload, speaker)


async def _drain(events: asyncio.Queue[tuple[str, dict[str, Any]]], socket: AnySocket, speaker: str) -> None:
    while not events.empty():
        event, payload = events.get_nowait()
        await _forward(socket, event, payload, speaker)


async def _forward(socket: AnySocket, event: str, payload: dict[str, Any], speaker: str) -> None:
    if payload.get("speaker") != speaker:
        return
    if event == PARTIAL_EVENT:
        await socket.send_json({"type": "partial", "text": payload.get("text", "")})
    elif event == ENTRY_EVENT:
        await socket.send_json({"type": "entry", "entry": payload})


async def _receive(socket: AnySocket) -> dict[str, Any]:
    message = cast("dict[str, Any]", await socket.receive())
    if message["type"] == "websocket.disconnect":
        raise Hangup
    return message


def _json(text: str | None) -> dict[str, Any]:
    try:
        body = json.loads(text or "")
    except ValueError as exc:
        raise InvalidRequest("a text message must be JSON") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("a text message must be a JSON object")
    return body


async def _refuse(socket: AnySocket, exc: BridgeError) -> None:
    """The error as a message, then the close code 4000 + its HTTP status."""
    with contextlib.suppress(Exception):
        retry = retry_after_for(exc)
        message = {"type": "error", "error": exc.code, "detail": exc.detail}
        await socket.send_json(message if retry is None else {**message, "retry_after": retry})
        await socket.close(code=4000 + exc.status_code, reason=exc.code[:120])
