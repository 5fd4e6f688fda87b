"""The OpenAPI description of the HTTP contract: request bodies, query parameters, and every answer, errors included.

The handlers read their bodies and query strings themselves (msgspec and pydantic, for the per-chunk path's
speed), so Litestar cannot see those inputs: each route names them here through its `operation_class`
(`takes(...)`), and its answers through `responses=answers(...)`. The served schema (`/schema/openapi.json`) is
what `tests/fuzz/test_openapi.py` fuzzes and holds every response to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Operation
from pydantic import BaseModel

# ------------------------------------------------------------------------------------------- answers
_ERRORS = {
    400: "invalid_request (body, base64, query) or invalid_audio",
    401: "unauthorized: a missing or unknown credential",
    403: "forbidden (a credential of the wrong kind or of another session) or tenant_mismatch",
    404: "not_found: no such session for this tenant (another tenant's looks the same)",
    408: "request_timeout: the body did not arrive whole within BODY_TIMEOUT_S",
    409: "session_closed, sequence_conflict, or served_elsewhere (the session runs on a machine of its own)",
    413: "payload_too_large: the body is over MAX_BODY_BYTES",
    422: "invalid_broadcast: the body does not have the broadcast API's shape",
    429: "rate_limited or too many active sessions; see Retry-After",
    503: "the store or the engine is unavailable; see Retry-After",
}


class ErrorBody(TypedDict):
    """Every error: a stable machine-readable code and what went wrong and what to do."""

    error: str
    detail: str


class SessionBody(TypedDict):
    id: str
    tenant_id: str
    candidate_id: str | None
    position_id: str | None
    status: Literal["active", "ended", "abandoned"]
    speakers: list[str]
    language: str | None
    metadata: dict[str, Any]
    created_at: str
    last_activity_at: str
    ended_at: str | None
    machine_id: str | None


class SessionWithSequences(SessionBody):
    next_sequence: dict[str, int]
    failed_sequences: dict[str, list[int]]


class RealtimeInfo(TypedDict):
    url: str
    apikey: str
    topic: str


class CreatedSession(TypedDict):
    session: SessionBody
    token: str
    realtime: RealtimeInfo


class SessionPage(TypedDict):
    sessions: list[SessionBody]
    next_cursor: str | None


class EntryBody(TypedDict):
    id: str
    session_id: str
    tenant_id: str
    speaker: str
    first_sequence: int
    last_sequence: int
    text: str
    start_ms: int | None
    end_ms: int | None
    language: str | None
    confidence: float | None
    engine: str | None
    created_at: str


class TranscriptBody(TypedDict):
    session: SessionBody
    entries: list[EntryBody]
    failed_sequences: dict[str, list[int]]


class TokenBody(TypedDict):
    token: str


class ChunkAnswer(TypedDict):
    status: Literal["accepted", "duplicate", "skipped", "queued"]
    sequence_number: int
    entries: list[EntryBody]
    partial: str | None


class EntryAnswer(TypedDict):
    status: Literal["stored", "duplicate"]
    entry: EntryBody


class ReapSummary(TypedDict):
    abandoned: int
    ended: int
    retried: int
    failed: int
    deleted: int
    machines_destroyed: int
    webhooks_sent: int


class UsageDay(TypedDict):
    date: str
    audio_seconds: float
    engine_seconds: float
    engine_calls: int
    sessions: int
    entries: int


class UsageBody(TypedDict):
    days: list[UsageDay]


class HealthBody(TypedDict):
    status: Literal["ok"]
    ready: bool
    engine: str
    store: str
    broadcaster: str


def answers(status: int, body: Any, description: str, *, errors: Sequence[int]) -> dict[int, ResponseSpec]:
    """The success answer (`body` None: no content) and the error statuses a route can give, in our error shape."""
    specs = {status: ResponseSpec(body, generate_examples=False, description=description)}
    for code in errors:
        specs[code] = ResponseSpec(ErrorBody, generate_examples=False, description=_ERRORS[code])
    return specs


# ------------------------------------------------------------------------------------------- inputs
def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its `$defs` substituted where they are referenced (the schema moves into a bigger
    document, where `#/$defs/...` would point nowhere)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def takes(
    *,
    body: Mapping[str, Any] | None = None,
    body_required: bool = True,
    parameters: Sequence[Mapping[str, Any]] = (),
    other_content: Mapping[str, Mapping[str, Any]] | None = None,
) -> type[Operation]:
    """An Operation class that adds what the handler reads itself: a JSON request body, query parameters, and
    further media types of the success answer (`other_content`: media type -> schema)."""
    extra_parameters = [dict(p) for p in parameters]
    request_body = None
    if body is not None:
        request_body = {"required": body_required, "content": {"application/json": {"schema": dict(body)}}}
    more_content = {media: {"schema": dict(schema)} for media, schema in (other_content or {}).items()}

    class Documented(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            if extra_parameters:
                schema["parameters"] = [*schema.get("parameters", []), *extra_parameters]
            if request_body is not None:
                schema["requestBody"] = request_body
            if more_content:
                for code, response in schema.get("responses", {}).items():
                    if code.startswith("2"):
                        response.setdefault("content", {}).update(more_content)
            return schema

    return Documented


SPEAKER = {"type": "string", "minLength": 1, "maxLength": 64, "description": "no control or format characters"}


def model_body(model: type[BaseModel], **overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic request model's JSON schema, with `overrides` merged into named properties (rules its
    validators check that the generated schema cannot say)."""
    schema = inline_refs(model.model_json_schema())
    properties = schema["properties"]
    for name, extra in overrides.items():
        properties[name] = {**properties[name], **extra}
    return schema
