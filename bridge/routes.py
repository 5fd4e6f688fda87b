"""HTTP routes: thin wrappers that authenticate, apply the contract's check order, and call service functions."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from datetime import date, datetime
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.formats import as_srt, as_text, as_vtt
from bridge.limits import CHUNKS, SESSIONS
from bridge.openapi import (
    SPEAKER,
    ChunkAnswer,
    CreatedSession,
    EntryAnswer,
    HealthBody,
    ReapSummary,
    SessionPage,
    SessionWithSequences,
    TokenBody,
    TranscriptBody,
    UsageBody,
    answers,
    model_body,
    query,
    takes,
)
from bridge.services import Services
from functions.process_audio.models import ProcessAudioRequest
from functions.process_audio.service import process_audio, result_json
from functions.transcript_bridge.models import TranscriptBridgeRequest
from functions.transcript_bridge.service import transcript_bridge
from functions.validation import check_speaker
from shared.access import Action, in_closing_grace, require_tenant, session_for
from shared.broadcast.vocabulary import session_topic
from shared.credentials import Principal, PrincipalKind
from shared.errors import InvalidRequest, RateLimited, TenantMismatch, Unauthorized
from shared.models import Session, SessionStatus, utcnow

AnyRequest = Request[Any, Any, Any]
_decode_json = msgspec.json.Decoder().decode
ModelT = TypeVar("ModelT", bound=BaseModel)


def services_of(request: AnyRequest) -> Services:
    services: Services = request.app.state.services
    return services


async def principal_of(request: AnyRequest) -> Principal:
    return await services_of(request).auth.from_header(request.headers.get("authorization"))


async def json_body(request: AnyRequest) -> dict[str, Any]:
    return parse_json_object(await request.body())


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object ({} when empty). msgspec parses an 85 KB chunk body in half json's time."""
    if not raw:
        return {}
    try:
        body = _decode_json(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def validated(model: type[ModelT], body: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise InvalidRequest(problems) from exc


def body_session_id(body: dict[str, Any]) -> str:
    value = body.get("session_id")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("session_id is required (a string)")
    return value


def check_body_tenant(body: dict[str, Any], principal: Principal) -> None:
    tenant_id = body.get("tenant_id")
    if tenant_id is not None and tenant_id != principal.tenant_id:
        raise TenantMismatch("tenant_id in the body is not the tenant of your credential; omit it or fix it")


# ---------------------------------------------------------------------------------------------- sessions
# The error statuses each kind of route can answer (shared.errors; 408 and 413 wherever a body is read).
SESSION_ERRORS = (400, 401, 403, 408, 413, 429, 503)
LIST_ERRORS = (400, 401, 403, 503)
READ_ERRORS = (400, 401, 403, 404, 503)
WRITE_ERRORS = (400, 401, 403, 404, 408, 409, 413, 429, 503)


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    candidate_id: str | None = Field(default=None, max_length=128)
    position_id: str | None = Field(default=None, max_length=128)
    speakers: list[str] = Field(default_factory=list, max_length=32)
    language: str | None = Field(default="en", max_length=16)
    metadata: dict[str, Any] = Field(default_factory=dict)


def realtime_info(request: AnyRequest, services: Services, session: Session, token: str) -> dict[str, str]:
    settings = services.settings
    if services.hub is None and settings.supabase_url:
        url, apikey = settings.supabase_url, settings.supabase_anon_key or ""
    else:
        url = settings.public_url or str(request.base_url).rstrip("/")
        apikey = token
    return {"url": url, "apikey": apikey, "topic": session_topic(session.id)}


ACTIVE_SESSIONS_RETRY_AFTER_S = 30


async def check_active_sessions(services: Services, tenant_id: str) -> None:
    """`MAX_ACTIVE_SESSIONS` bounds what one tenant can hold open at once (a runaway client, a leaked key)."""
    ceiling = services.settings.max_active_sessions
    if ceiling is None:
        return
    active = await services.store.list_sessions(tenant_id, status=SessionStatus.ACTIVE, limit=ceiling)
    if len(active) >= ceiling:
        raise RateLimited(
            f"this tenant already has {ceiling} active sessions (MAX_ACTIVE_SESSIONS); end one first",
            retry_after=ACTIVE_SESSIONS_RETRY_AFTER_S,
        )


@post(
    "/sessions",
    status_code=HTTP_201_CREATED,
    operation_class=takes(body=model_body(CreateSessionRequest), body_required=False),
    responses=answers(201, CreatedSession, "the session, its token and where to subscribe", errors=SESSION_ERRORS),
)
async def create_session(request: AnyRequest) -> dict[str, Any]:
    services = services_of(request)
    principal = await principal_of(request)
    tenant_id = require_tenant(principal)
    services.limits.check("sessions", principal, SESSIONS)
    body = await json_body(request)
    check_body_tenant(body, principal)
    spec = validated(CreateSessionRequest, body)
    try:
        speakers = tuple(check_speaker(s) for s in spec.speakers)
    except ValueError as exc:
        raise InvalidRequest(f"speakers: {exc}") from exc
    if len(json.dumps(spec.metadata)) > 16_384:
        raise InvalidRequest("metadata must be at most 16 KB of JSON")
    session = Session.new(
        tenant_id,
        candidate_id=spec.candidate_id,
        position_id=spec.position_id,
        speakers=speakers,
        language=spec.language,
        metadata=spec.metadata,
    )
    async with services.session_creation[tenant_id]:  # the count and the insert as one step, per process
        await check_active_sessions(services, tenant_id)
        if services.machines is not None:
            machine_id = await services.machines.start(session, request.headers.get("fly-region"))
            session = dataclasses.replace(session, machine_id=machine_id)
        await services.store.create_session(session)
    token = services.tokens.issue(tenant_id, session.id, "session", session.created_at)
    return {"session": session.to_json(), "token": token, "realtime": realtime_info(request, services, session, token)}


def _cursor(session: Session) -> str:
    raw = f"{session.created_at.isoformat()}|{session.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, session_id = raw.split("|", 1)
        return datetime.fromisoformat(created), session_id
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not one this bridge issued; use next_cursor from the previous page") from exc


@get(
    "/sessions",
    operation_class=takes(
        parameters=[
            query("status", {"type": "string", "enum": [s.value for s in SessionStatus]}, "only sessions in it"),
            query("candidate_id", {"type": "string"}, "only this candidate's sessions"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size, 50 by default"),
            query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        ]
    ),
    responses=answers(200, SessionPage, "a page of the tenant's sessions, newest first", errors=LIST_ERRORS),
)
async def list_sessions(request: AnyRequest) -> dict[str, Any]:
    services = services_of(request)
    tenant_id = require_tenant(await principal_of(request))
    params = request.query_params
    status = params.get("status")
    if status is not None and status not in {s.value for s in SessionStatus}:
        raise InvalidRequest("status must be active, ended or abandoned")
    try:
        limit = int(params.get("limit", "50"))
    except ValueError as exc:
        raise InvalidRequest("limit must be an integer from 1 to 200") from exc
    if not 1 <= limit <= 200:
        raise InvalidRequest("limit must be an integer from 1 to 200")
    cursor = params.get("cursor")
    sessions = await services.store.list_sessions(
        tenant_id,
        status=SessionStatus(status) if status else None,
        candidate_id=params.get("candidate_id"),
        limit=limit + 1,
        before=_parse_cursor(cursor) if cursor else None,
    )
    page, more = sessions[:limit], len(sessions) > limit
    return {"sessions": [s.to_json() for s in page], "next_cursor": _cursor(page[-1]) if more else None}


async def session_with_sequences(services: Services, session: Session) -> dict[str, Any]:
    body = session.to_json()
    body["next_sequence"] = await services.store.next_sequences(session.id)
    body["failed_sequences"] = await services.store.failed_sequences(session.id)
    return body


@get(
    "/sessions/{session_id:str}",
    responses=answers(200, SessionWithSequences, "the session, where each speaker resumes", errors=READ_ERRORS),
)
async def get_session(request: AnyRequest, session_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    session = await session_for(await principal_of(request), session_id, services.store, Action.READ)
    return await session_with_sequences(services, session)


@get(
    "/sessions/{session_id:str}/transcript",
    operation_class=takes(
        parameters=[query("format", {"type": "string", "enum": ["json", "text", "vtt", "srt"]}, "json by default")],
        other_content={
            "text/plain": {"type": "string"},
            "text/vtt": {"type": "string"},
            "application/x-subrip": {"type": "string"},
        },
    ),
    responses=answers(200, TranscriptBody, "the transcript in the format asked for", errors=READ_ERRORS),
)
async def get_transcript(request: AnyRequest, session_id: FromPath[str]) -> Response[Any]:
    services = services_of(request)
    session = await session_for(await principal_of(request), session_id, services.store, Action.READ)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "text", "vtt", "srt"):
        raise InvalidRequest("format must be json, text, vtt or srt")
    entries = await services.store.list_entries(session.id)
    if fmt == "json":
        failed = await services.store.failed_sequences(session.id)
        return Response(
            {"session": session.to_json(), "entries": [e.to_json() for e in entries], "failed_sequences": failed}
        )
    if fmt == "text":
        return Response(as_text(entries), media_type="text/plain; charset=utf-8")
    if fmt == "vtt":
        return Response(as_vtt(entries), media_type="text/vtt; charset=utf-8")
    return Response(as_srt(entries), media_type="application/x-subrip; charset=utf-8")


@post(
    "/sessions/{session_id:str}/viewer-token",
    status_code=HTTP_201_CREATED,
    responses=answers(201, TokenBody, "a read-only token for this session", errors=READ_ERRORS),
)
async def viewer_token(request: AnyRequest, session_id: FromPath[str]) -> dict[str, str]:
    services = services_of(request)
    session = await session_for(await principal_of(request), session_id, services.store, Action.ADMIN)
    return {"token": services.tokens.issue(session.tenant_id, session.id, "viewer", utcnow())}


@post(
    "/sessions/{session_id:str}/end",
    status_code=HTTP_200_OK,
    responses=answers(200, SessionWithSequences, "the ended session, its audio flushed", errors=WRITE_ERRORS),
)
async def end_session(request: AnyRequest, session_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    session = await session_for(await principal_of(request), session_id, services.store, Action.WRITE)
    services.serve_here(session, request.headers)
    ending = await services.end_session(session, SessionStatus.ENDED)
    return await session_with_sequences(services, ending.session)


@delete(
    "/sessions/{session_id:str}",
    status_code=HTTP_204_NO_CONTENT,
    responses=answers(204, None, "the session, its audio and its entries are erased", errors=READ_ERRORS),
)
async def delete_session(request: AnyRequest, session_id: FromPath[str]) -> None:
    services = services_of(request)
    principal = await principal_of(request)
    tenant_id = require_tenant(principal)
    session = await session_for(principal, session_id, services.store, Action.ADMIN)
    await services.store.delete_session(tenant_id, session.id)
    services.sessions.forget(session.id)


# ---------------------------------------------------------------------------------------------- functions
async def writable_session(request: AnyRequest) -> tuple[Services, Principal, dict[str, Any], Session]:
    """The checks every write function shares, in the contract's order: credential, session, tenant."""
    services = services_of(request)
    principal = await principal_of(request)
    body = await json_body(request)
    session = await session_for(principal, body_session_id(body), services.sessions, Action.WRITE)
    check_body_tenant(body, principal)
    services.serve_here(session, request.headers)
    return services, principal, body, session


# Either shape needs the entry's text: flat `text`, or `transcript_data.text` (the original shape).
TRANSCRIPT_BRIDGE_BODY = {
    **model_body(TranscriptBridgeRequest, speaker=SPEAKER),
    "anyOf": [
        {"required": ["text"], "properties": {"text": {"type": "string"}}},
        {"required": ["transcript_data"], "properties": {"transcript_data": {"type": "object"}}},
    ],
}


def closing(services: Services, session: Session) -> bool:
    """The one closed-session check of both write functions: False for an active session, True for a late write
    within END_GRACE_S after the end (taken, and flushed as final); SessionClosed (409) after that."""
    return in_closing_grace(session, utcnow(), services.settings.end_grace_s)


@post(
    ["/functions/v1/process-audio", "/process-audio"],
    status_code=HTTP_200_OK,
    operation_class=takes(
        body=model_body(
            ProcessAudioRequest, speaker=SPEAKER, audio_chunk={"format": "byte", "contentEncoding": "base64"}
        )
    ),
    responses=answers(200, ChunkAnswer, "the chunk is stored (or was already)", errors=WRITE_ERRORS),
)
async def process_audio_route(request: AnyRequest) -> dict[str, Any]:
    services, principal, body, session = await writable_session(request)
    services.limits.check("chunks", principal, CHUNKS)
    chunk = validated(ProcessAudioRequest, body)
    late = closing(services, session)
    return result_json(await process_audio(chunk, session, services.live, closing=late))


@post(
    ["/functions/v1/transcript-bridge", "/transcript-bridge"],
    status_code=HTTP_200_OK,
    operation_class=takes(body=TRANSCRIPT_BRIDGE_BODY),
    responses=answers(200, EntryAnswer, "the entry is stored (or was already)", errors=WRITE_ERRORS),
)
async def transcript_bridge_route(request: AnyRequest) -> dict[str, Any]:
    services, _, body, session = await writable_session(request)
    entry_request = validated(TranscriptBridgeRequest, body)
    closing(services, session)
    result = await transcript_bridge(entry_request, session, store=services.store, broadcaster=services.tap)
    return {"status": result.status, "entry": result.entry.to_json()}


@post(
    ["/functions/v1/session-reaper", "/session-reaper"],
    status_code=HTTP_200_OK,
    responses=answers(200, ReapSummary, "what one reaper pass did", errors=(401, 503)),
)
async def session_reaper_route(request: AnyRequest) -> dict[str, int]:
    """One reaper pass, for an outside scheduler (cron, a scheduled machine): the service key only."""
    services = services_of(request)
    principal = await principal_of(request)
    if principal.kind is not PrincipalKind.SERVICE:
        raise Unauthorized("the session reaper takes the service key (SERVICE_KEY)")
    return (await services.reap()).to_json()


MAX_USAGE_DAYS = 366


def _usage_day(value: str | None, name: str, default: date) -> date:
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD") from exc


@get(
    "/usage",
    operation_class=takes(
        parameters=[
            query("from", {"type": "string", "format": "date"}, "first UTC day, YYYY-MM-DD (default: to - 29 days)"),
            query("to", {"type": "string", "format": "date"}, "last UTC day, YYYY-MM-DD (default: today)"),
        ]
    ),
    responses=answers(200, UsageBody, "the tenant's usage per UTC day", errors=LIST_ERRORS),
)
async def usage(request: AnyRequest) -> dict[str, Any]:
    """A tenant's usage per UTC day, `from` and `to` inclusive (default: the last 30 days)."""
    services = services_of(request)
    tenant_id = require_tenant(await principal_of(request))
    last = _usage_day(request.query_params.get("to"), "to", utcnow().date())
    month_before = date.fromordinal(max(1, last.toordinal() - 29))  # `to` near 0001-01-01 must not overflow
    first = _usage_day(request.query_params.get("from"), "from", month_before)
    if first > last:
        raise InvalidRequest("from must not be after to")
    if (last - first).days >= MAX_USAGE_DAYS:
        raise InvalidRequest(f"ask for at most {MAX_USAGE_DAYS} days at a time")
    await services.live.usage.flush()  # what this process counted a moment ago is included
    return {"days": [day.to_json() for day in await services.store.usage(tenant_id, first, last)]}


@get("/health", responses=answers(200, HealthBody, "the bridge is up; `ready` once the engine is", errors=()))
async def health(request: AnyRequest) -> dict[str, Any]:
    services = services_of(request)
    return {
        "status": "ok",
        "ready": services.transcriber.ready,
        "engine": services.transcriber.name,
        "store": services.store.name,
        "broadcaster": services.broadcaster.name,
    }


ROUTES = [
    create_session,
    list_sessions,
    get_session,
    get_transcript,
    viewer_token,
    end_session,
    delete_session,
    process_audio_route,
    transcript_bridge_route,
    session_reaper_route,
    usage,
    health,
]
