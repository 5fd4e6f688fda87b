"""Schemathesis against the bridge's own OpenAPI schema: every route, every credential kind, a bounded budget.

Each operation gets generated requests (schemathesis' positive and, where the schema has something to break,
negative data) sent with one credential drawn from every kind there is: none, a garbage bearer, a header of
another scheme, tenant A's key, A's Supabase user JWT, the session token of the session the request names (and
one of A's other sessions), a viewer token, the service key, and tenant B's key, session token, viewer token
and user JWT. Half the requests name a session of A made for that request (path, body `session_id`, or the
broadcast topic), so they reach past the 404; the rest keep what schemathesis generated. Every answer must be
no 5xx, conform to the schema (status, content type, body; negative data refused with a 4xx), and every 4xx
must be `{"error": code, "detail": text}`. With B's credentials nothing of A may answer 2xx, and no answer
may carry a string only A's data holds. Each operation's run has a fixed seed: the same inputs every time.
"""

from __future__ import annotations

import base64
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.counts import tally
from tests.fuzz.support import add_tenant, fuzz_settings, running
from tests.helpers import FIXTURES
from tests.isolation.world import SERVICE_KEY, user_jwt

EXAMPLES_PER_OPERATION = 150
BASE_URL = "http://testserver.local"

# Every operation the schema must describe; a route added without being fuzzed fails test_every_route_is_fuzzed.
OPERATIONS = (
    "GET /sessions",
    "POST /sessions",
    "GET /sessions/{session_id}",
    "DELETE /sessions/{session_id}",
    "GET /sessions/{session_id}/transcript",
    "POST /sessions/{session_id}/viewer-token",
    "POST /sessions/{session_id}/end",
    "POST /process-audio",
    "POST /functions/v1/process-audio",
    "POST /transcript-bridge",
    "POST /functions/v1/transcript-bridge",
    "POST /session-reaper",
    "POST /functions/v1/session-reaper",
    "GET /usage",
    "GET /health",
    "POST /realtime/v1/api/broadcast",
    "POST /realtime/v1/api/broadcast/{topic}/events/{event}",
)
OTHER_TENANT = ("b_key", "b_session", "b_viewer", "b_user")
# Drawn per request; A's working credentials appear more often so that requests get past authentication.
CREDENTIALS = (
    "a_key",
    "a_session",
    "a_key",
    "a_session",
    "service",
    "none",
    "garbage",
    "other_scheme",
    "a_viewer",
    "a_user",
    "a_sibling",
    "service",
    *OTHER_TENANT,
    *OTHER_TENANT,
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]
ERROR_CODE = re.compile(r"[a-z][a-z_]*")


def _audio(name: str) -> bytes:
    return (FIXTURES / "audio" / name).read_bytes()


# Real chunks a request may carry instead of generated base64 (None keeps what schemathesis generated).
AUDIO = (
    None,
    None,
    (_audio("phrase_16k_s16.wav")[:16_044], "audio/wav"),
    (_audio("silence_2s.wav"), None),
    (_audio("webm_chunk_000.webm"), "audio/webm;codecs=opus"),
    (_audio("webm_chunk_001.webm"), "audio/webm"),
    (_audio("phrase.ogg"), "audio/ogg"),
    (_audio("fmp4_header.mp4"), "audio/mp4"),
    (b"", "audio/webm"),
)

openapi = tally(
    "openapi",
    requests="requests",
    server_errors="server errors",
    schema_violations="schema violations",
    shape_violations="error-shape violations",
    cross_tenant_attempts="cross-tenant attempts",
    cross_tenant="cross-tenant reads/writes",
)


@dataclass
class Party:
    """A tenant and every credential that speaks for it, with one session of its own."""

    tenant_id: str
    api_key: str
    session_id: str = ""
    token: str = ""
    viewer: str = ""
    user_token: str = ""


@dataclass
class World:
    client: TestClient[Litestar]
    schema: schemathesis.BaseSchema
    a: Party
    b: Party
    secrets: set[str] = field(default_factory=set)  # strings that only tenant A's data holds
    successes: dict[str, int] = field(default_factory=dict)  # 2xx answers per operation

    def setup_call(self, method: str, path: str, credential: str, json: Any = None) -> dict[str, Any]:
        response = self.client.request(method, path, json=json, headers={"Authorization": f"Bearer {credential}"})
        assert response.is_success, f"setup {method} {path}: {response.status_code} {response.text}"
        body: dict[str, Any] = response.json()
        return body

    def open_session(self, party: Party, marker: str) -> tuple[str, str]:
        created = self.setup_call("POST", "/sessions", party.api_key, {"candidate_id": marker, "metadata": {marker: 1}})
        return created["session"]["id"], created["token"]

    def fresh_victim(self) -> tuple[str, str]:
        """A new session of tenant A (id, session token), its identifying strings added to A's secrets."""
        marker = f"a-secret-{uuid.uuid4().hex[:12]}"
        session_id, token = self.open_session(self.a, marker)
        self.secrets |= {marker, session_id, token}
        return session_id, token

    def viewer_for(self, session_id: str, token: str) -> str:
        viewer: str = self.setup_call("POST", f"/sessions/{session_id}/viewer-token", token)["token"]
        if session_id != self.b.session_id:
            self.secrets.add(viewer)
        return viewer


def _party(client: TestClient[Litestar], name: str) -> Party:
    tenant_id, api_key = add_tenant(client, name)
    return Party(tenant_id=tenant_id, api_key=api_key, user_token=user_jwt(tenant_id))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Tenant A (whose data the fuzz must never leak to B) and tenant B, each with a session and every token."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz-openapi") / "data"
    with running(fuzz_settings(data_dir)) as client:
        raw = client.get("/schema/openapi.json").json()
        world = World(client, schemathesis.openapi.from_dict(raw), _party(client, "a"), _party(client, "b"))
        for party, name in ((world.a, "a"), (world.b, "b")):
            party.session_id, party.token = world.open_session(party, f"{name}-secret-{uuid.uuid4().hex[:12]}")
            party.viewer = world.viewer_for(party.session_id, party.token)
        entry = f"a-secret-entry-{uuid.uuid4().hex[:12]}"
        world.setup_call(
            "POST",
            "/functions/v1/transcript-bridge",
            world.a.token,
            {"session_id": world.a.session_id, "speaker": "interviewer", "sequence_number": 0, "text": entry},
        )
        world.secrets |= {world.a.tenant_id, world.a.api_key, world.a.session_id, world.a.token, entry}
        world.secrets |= {world.a.viewer, world.a.user_token}
        yield world


def _addresses_a_session(operation: Operation) -> bool:
    path = operation.path
    return (
        "{session_id}" in path
        or "{topic}" in path
        or "process-audio" in path
        or "transcript-bridge" in path
        or path.endswith("/api/broadcast")
    )


def _aim_at(case: Case, session_id: str) -> bool:
    """Point the request at `session_id` (its path parameter, its body's `session_id`, or its broadcast topics);
    False when it has no place to name a session (a negative body that is not an object, no messages)."""
    aimed = False
    path = case.path_parameters or {}
    if "session_id" in path:
        path["session_id"] = session_id
        aimed = True
    if "topic" in path:
        path["topic"] = f"session:{session_id}"
        aimed = True
    body = case.body
    if isinstance(body, dict):
        if "process-audio" in case.operation.path or "transcript-bridge" in case.operation.path:
            body["session_id"] = session_id
            aimed = True
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    message["topic"] = f"session:{session_id}"
                    aimed = True
    return aimed


def _credential(world: World, who: str, garbage: str, target: tuple[str, str] | None) -> str | None:
    """The Authorization header for credential kind `who` (None: no header). Session and viewer tokens are the
    ones of the session the request names, when it names one of A's."""
    session_id, token = target or (world.a.session_id, world.a.token)
    headers = {
        "none": None,
        "garbage": f"Bearer {garbage}",
        "other_scheme": f"Basic {base64.b64encode(b'user:pass').decode()}",
        "service": f"Bearer {SERVICE_KEY}",
        "a_key": f"Bearer {world.a.api_key}",
        "a_user": f"Bearer {world.a.user_token}",
        "a_session": f"Bearer {token}",
        "a_sibling": f"Bearer {world.a.token}",
        "b_key": f"Bearer {world.b.api_key}",
        "b_session": f"Bearer {world.b.token}",
        "b_viewer": f"Bearer {world.b.viewer}",
        "b_user": f"Bearer {world.b.user_token}",
    }
    if who == "a_viewer":
        viewer = world.viewer_for(session_id, token) if target else world.a.viewer
        return f"Bearer {viewer}"
    return headers[who]


def _send(client: TestClient[Litestar], case: Case) -> tuple[httpx.Response, dict[str, Any], bytes]:
    """The request exactly as schemathesis' requests transport would send it, through the in-process client."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    unknown = set(kwargs) - {"method", "url", "headers", "params", "json", "data", "cookies"}
    assert not unknown, f"transport arguments this driver does not send: {unknown}"
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
    ).prepare()
    raw = prepared.body
    body = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else b""
    assert raw is None or isinstance(raw, str | bytes), f"a streamed body: {type(raw)}"
    assert prepared.method is not None and prepared.url is not None
    headers = {
        name: value if isinstance(value, str) else value.decode("latin-1") for name, value in prepared.headers.items()
    }
    response = client.request(prepared.method, prepared.url, headers=headers, content=body)
    return response, kwargs, prepared.url.encode() + b" " + body + str(headers).encode()


def _error_shape_problem(response: httpx.Response) -> str | None:
    """Why a 4xx answer is not `{"error": code, "detail": text}`, or None."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error", "detail"}:
        return f"not {{error, detail}}: {body!r}"[:300]
    if not isinstance(body["error"], str) or not ERROR_CODE.fullmatch(body["error"]):
        return f"error is not a code: {body['error']!r}"
    if not isinstance(body["detail"], str) or not body["detail"].strip():
        return f"detail is not a text: {body['detail']!r}"
    return None


def _leaks(world: World, response: httpx.Response, sent: bytes) -> set[str]:
    """Strings only A's data holds that are in the answer but were not in the request."""
    text = response.content.decode("utf-8", "replace")
    sent_text = sent.decode("utf-8", "replace")
    return {secret for secret in world.secrets if secret in text and secret not in sent_text}


def fuzz_operation(world: World, label: str) -> None:
    operation = world.schema.find_operation_by_label(label)
    assert operation is not None, f"the schema has no {label}"
    has_inputs = operation.body or any(p.location.name.lower() == "query" for p in operation.iter_parameters())
    cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    if has_inputs:
        cases = st.one_of(cases, operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    aimable = _addresses_a_session(operation)
    world.successes.setdefault(label, 0)

    @seed(zlib.crc32(label.encode()))  # repeatable, and different for an operation and its alias
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: schemathesis names the failing request itself
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=cases,
        aim=st.sampled_from((True, True, False)),
        tidy=st.booleans(),
        who=st.sampled_from(CREDENTIALS),
        garbage=st.text(st.characters(codec="ascii", min_codepoint=33, max_codepoint=126), min_size=1, max_size=80),
        audio=st.sampled_from(AUDIO),
    )
    def run(
        case: Case,
        aim: bool,
        tidy: bool,
        who: str,
        garbage: str,
        audio: tuple[bytes, str | None] | None,
    ) -> None:
        target = world.fresh_victim() if aim and aimable else None
        if target is not None and not _aim_at(case, target[0]):
            target = None
        body = case.body
        tidy = tidy and isinstance(body, dict) and "speaker" in body
        if tidy and isinstance(body, dict):  # a speaker a browser would send: more chunks and entries get through
            body["speaker"] = "candidate"
        if audio is not None and isinstance(body, dict) and "audio_chunk" in body:
            body["audio_chunk"] = base64.b64encode(audio[0]).decode()
            body["mime_type"] = audio[1]
        authorization = _credential(world, who, garbage, target)
        case.headers.pop("Authorization", None)
        if authorization is not None:
            case.headers["Authorization"] = authorization

        response, kwargs, sent = _send(world.client, case)
        openapi.add("requests")
        if response.status_code >= 500:
            openapi.add("server_errors")
        if response.is_success:
            world.successes[label] += 1
        if 400 <= response.status_code < 500 and (problem := _error_shape_problem(response)):
            openapi.add("shape_violations")
            raise AssertionError(f"{label} answered {response.status_code} without the error shape: {problem}")
        if who in OTHER_TENANT:
            if target is not None:
                openapi.add("cross_tenant_attempts")
            leaked = _leaks(world, response, sent)
            if leaked or (target is not None and response.is_success):
                openapi.add("cross_tenant")
                raise AssertionError(
                    f"{label} with tenant B's {who} on tenant A's data answered {response.status_code}: "
                    f"{response.text[:300]} (A's strings in it: {sorted(leaked)})"
                )
        edited = target is not None or audio is not None or tidy
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                excluded_checks=[negative_data_rejection] if edited else None,
                transport_kwargs=kwargs,
            )
        except Exception:
            if response.status_code < 500:
                openapi.add("schema_violations")
            raise

    run()


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_never_fails_the_contract(world: World, label: str) -> None:
    """Generated requests with every credential kind get no 5xx, answers that conform to the schema, the error
    shape on every 4xx, and nothing of tenant A for tenant B."""
    fuzz_operation(world, label)
    assert world.successes[label] > 0, f"no generated request to {label} succeeded: the fuzz never got past the 4xx"


def test_every_route_is_fuzzed(world: World) -> None:
    """The schema the bridge serves lists exactly the operations this fuzzer covers (a new route joins the fuzz)."""
    results = list(world.schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), (
        "the served schema has an operation schemathesis cannot read"
    )
    served = {result.ok().label for result in results if isinstance(result, Ok)}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize("field", ["start_ms", "end_ms"])
@pytest.mark.parametrize("value", [2**31, 2**63])
def test_entry_times_past_the_stores_columns_are_refused(world: World, field: str, value: int) -> None:
    """An entry time past the stores' 32-bit integer columns is a 400 invalid_request, not a 500 from the store."""
    body = {
        "session_id": world.a.session_id,
        "speaker": "interviewer",
        "sequence_number": 7,
        "text": "hi",
        field: value,
    }
    for shape in (body, {**body, field: None, "text": None, "transcript_data": {"text": "hi", field: value}}):
        shape = {k: v for k, v in shape.items() if v is not None}
        answer = world.client.post(
            "/functions/v1/transcript-bridge", json=shape, headers={"Authorization": f"Bearer {world.a.token}"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
