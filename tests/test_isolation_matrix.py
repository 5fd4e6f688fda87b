"""The isolation matrix: every credential kind of tenant A against every route and object of tenant B.

Nothing is read (401/403/404, no byte of B's data in any answer, the same answer as for a session that does not
exist), nothing is written (every row of every table unchanged, nothing published on any topic) and nothing is
joined (an error reply, never a broadcast of B's). Runs on SQLite (also with the session-token secret shared
with SUPABASE_JWT_SECRET, the production default) and on the real Postgres, in-process and over a real uvicorn
server for the WebSocket. The positive controls show that the same credentials do work on A's own objects and
that the checks do catch a read or a write, so the matrix can fail.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bridge.app import create_app
from bridge.services import Services
from shared.broadcast.local import LocalHub, Subscription
from shared.settings import Settings
from tests.helpers import chunk_body
from tests.isolation.phoenix import Frame, PhoenixSocket
from tests.isolation.world import (
    CREDENTIAL_KINDS,
    USER_JWT_SECRET,
    Dumper,
    Tenantry,
    bearer,
    in_process,
    seed_tenant,
    serve,
    silence_chunk,
    speech_chunks,
)

STORES = ["sqlite", "sqlite-shared-secret", "postgres"]
REFUSED = {401, 403, 404}


# ---------------------------------------------------------------------------------------------- the tally
@dataclass
class Tally:
    cases: dict[str, int] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)

    def count(self, group: str, n: int = 1) -> None:
        self.cases[group] = self.cases.get(group, 0) + n

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def line(self) -> str:
        parts = ", ".join(f"{group}: {n}" for group, n in sorted(self.cases.items()))
        return f"isolation matrix: {self.total} cases, {len(self.leaks)} cross-tenant reads or writes ({parts})"


TALLY = Tally()


class _Report:
    """Prints the tally at the end of the run, with or without `-s`."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if TALLY.total:
            terminalreporter.write_line(TALLY.line())


@pytest.fixture(scope="session", autouse=True)
def _matrix_report(pytestconfig: pytest.Config) -> None:
    """Registers the end-of-run report once."""
    if not pytestconfig.pluginmanager.has_plugin("isolation-matrix-report"):
        pytestconfig.pluginmanager.register(_Report(), "isolation-matrix-report")


# ---------------------------------------------------------------------------------------------- worlds
@pytest.fixture(params=STORES)
def world_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> tuple[Settings, str | None]:
    """Settings of one bridge with Supabase user tokens accepted, per store; and the Postgres DSN, if any."""
    common: dict[str, Any] = {"supabase_jwt_secret": USER_JWT_SECRET, "gap_timeout_s": 3600.0}
    if request.param == "sqlite":
        return make_settings(**common), None
    if request.param == "sqlite-shared-secret":  # production default: session tokens signed with the JWT secret
        return make_settings(session_token_secret=None, **common), None
    dsn: str = request.getfixturevalue("pg_dsn")
    return make_settings(store="postgres", database_url=dsn, **common), dsn


@dataclass
class World:
    label: str
    http: httpx.AsyncClient
    services: Services
    dumper: Dumper
    a: Tenantry
    b: Tenantry
    subs: dict[str, Subscription]

    def published(self) -> list[tuple[str, str, Any]]:
        """Everything published on any seeded topic since the last call."""
        got = []
        for topic, sub in self.subs.items():
            while sub._items:
                event, payload = sub._items.popleft()
                got.append((topic, event, payload))
        return got


@asynccontextmanager
async def open_world(
    label: str, settings: Settings, dsn: str | None, app_client: Callable[..., Any]
) -> AsyncIterator[World]:
    """Tenants A and B seeded on one in-process bridge (SQLite via `app_client`, Postgres via `create_app` in this loop)."""
    if settings.store == "sqlite":
        overrides = {"supabase_jwt_secret": settings.supabase_jwt_secret, "gap_timeout_s": settings.gap_timeout_s}
        if settings.session_token_secret is None:
            overrides["session_token_secret"] = None
        context = app_client(**overrides)
    else:
        context = in_process(create_app(settings, broadcaster=LocalHub()))
    async with context as client:
        services: Services = client.app.state.services
        dumper = Dumper(services, dsn)
        await dumper.open()
        try:
            a = await seed_tenant(client, services, "A")
            b = await seed_tenant(client, services, "B")
            assert services.hub is not None
            subs = {
                f"session:{sid}": services.hub.subscribe(f"session:{sid}")
                for sid in (a.session_id, a.ended_session_id, b.session_id, b.ended_session_id)
            }
            yield World(label, client, services, dumper, a, b, subs)
        finally:
            await dumper.close()


# ---------------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    route: str
    method: str
    path: str
    json: Any = None
    headers: dict[str, str] | None = None
    listing: bool = False  # a tenant-level read that answers 200 with the caller's own data

    def request_text(self) -> str:
        return f"{self.path} {self.json!r} {self.headers!r}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def session_cases(target: str, a: Tenantry) -> list[Case]:
    """Every route that names a session, aimed at `target` (B's session, or an unknown id for comparison)."""
    topic = f"session:{target}"
    return [
        Case("GET /sessions/{id}", "GET", f"/sessions/{target}"),
        Case("GET transcript", "GET", f"/sessions/{target}/transcript"),
        *(
            Case(f"GET transcript {f}", "GET", f"/sessions/{target}/transcript?format={f}")
            for f in ("json", "text", "vtt", "srt")
        ),
        Case("POST viewer-token", "POST", f"/sessions/{target}/viewer-token"),
        Case("POST end", "POST", f"/sessions/{target}/end"),
        Case("DELETE session", "DELETE", f"/sessions/{target}"),
        Case(
            "process-audio new seq",
            "POST",
            "/functions/v1/process-audio",
            chunk_body(target, "candidate", 50, speech_chunks()[2]),
        ),
        # a replay of B's stored chunk 0: `duplicate` would reveal that it exists
        Case(
            "process-audio replay",
            "POST",
            "/functions/v1/process-audio",
            chunk_body(target, "candidate", 0, speech_chunks()[0]),
        ),
        # the chunk B's "held" speaker waits for: would release B's pending audio into entries
        Case(
            "process-audio gap fill",
            "POST",
            "/functions/v1/process-audio",
            chunk_body(target, "held", 0, silence_chunk()),
        ),
        Case("process-audio alias", "POST", "/process-audio", chunk_body(target, "candidate", 51, speech_chunks()[1])),
        Case(
            "process-audio body tenant A",
            "POST",
            "/functions/v1/process-audio",
            {**chunk_body(target, "candidate", 52, speech_chunks()[1]), "tenant_id": a.tenant_id},
        ),
        # sequence 0 of B's interviewer is stored: `duplicate` would hand back B's entry
        Case(
            "transcript-bridge existing seq",
            "POST",
            "/functions/v1/transcript-bridge",
            {"session_id": target, "speaker": "interviewer", "sequence_number": 0, "text": "overwrite attempt"},
        ),
        Case(
            "transcript-bridge new seq",
            "POST",
            "/functions/v1/transcript-bridge",
            {"session_id": target, "speaker": "interviewer", "sequence_number": 77, "text": "injected"},
        ),
        Case(
            "transcript-bridge alias",
            "POST",
            "/transcript-bridge",
            {"session_id": target, "speaker": "candidate", "sequence_number": 78, "text": "injected"},
        ),
        Case(
            "transcript-bridge original shape",
            "POST",
            "/functions/v1/transcript-bridge",
            {
                "session_id": target,
                "tenant_id": a.tenant_id,
                "transcript_data": {"text": "injected", "confidence": 0.9},
                "speaker": "interviewer",
                "sequence_number": 79,
            },
        ),
        Case(
            "broadcast batch bearer",
            "POST",
            "/realtime/v1/api/broadcast",
            {"messages": [{"topic": topic, "event": "note", "payload": {"x": 1}, "private": False}]},
        ),
        Case(
            "broadcast batch reserved event",
            "POST",
            "/realtime/v1/api/broadcast",
            {"messages": [{"topic": topic, "event": "transcript_entry", "payload": {"text": "fake"}}]},
        ),
        Case(
            "broadcast batch mixed with own topic",
            "POST",
            "/realtime/v1/api/broadcast",
            {
                "messages": [
                    {"topic": f"session:{a.session_id}", "event": "note", "payload": {"x": 1}},
                    {"topic": topic, "event": "note", "payload": {"x": 2}},
                ]
            },
        ),
        Case("broadcast single", "POST", f"/realtime/v1/api/broadcast/{topic}/events/note", {"x": 3}),
        Case(
            "broadcast single encoded",
            "POST",
            f"/realtime/v1/api/broadcast/{quote(topic, safe='')}/events/note",
            {"x": 4},
        ),
        Case(
            "broadcast single reserved",
            "POST",
            f"/realtime/v1/api/broadcast/{topic}/events/session_status",
            {"status": "ended"},
        ),
    ]


def tenant_cases(a: Tenantry, b: Tenantry, b_cursor: str) -> list[Case]:
    """Tenant-level routes, and A's own session addressed with B's tenant id in the body."""
    return [
        Case("POST /sessions body tenant B", "POST", "/sessions", {"tenant_id": b.tenant_id, "candidate_id": "x"}),
        Case("GET /sessions", "GET", "/sessions", listing=True),
        Case("GET /sessions ended", "GET", "/sessions?status=ended&limit=200", listing=True),
        Case("GET /sessions B candidate", "GET", f"/sessions?candidate_id=cand-{b.name}", listing=True),
        Case("GET /sessions cursor at B", "GET", f"/sessions?cursor={b_cursor}", listing=True),
        Case(
            "process-audio own session body tenant B",
            "POST",
            "/functions/v1/process-audio",
            {**chunk_body(a.session_id, "candidate", 60, speech_chunks()[0]), "tenant_id": b.tenant_id},
        ),
        Case(
            "transcript-bridge own session body tenant B",
            "POST",
            "/functions/v1/transcript-bridge",
            {
                "session_id": a.session_id,
                "tenant_id": b.tenant_id,
                "transcript_data": {"text": "into B?"},
                "speaker": "interviewer",
                "sequence_number": 61,
            },
        ),
    ]


def _headers(case: Case, credential: str, variant: str) -> dict[str, str]:
    if variant == "apikey":  # the realtime REST API also takes the key as an `apikey` header alone
        return {"apikey": credential}
    return bearer(credential)


async def send(world: World, case: Case, credential: str, variant: str = "bearer") -> httpx.Response:
    headers = {**_headers(case, credential, variant), **(case.headers or {})}
    return await world.http.request(case.method, case.path, json=case.json, headers=headers)


def _error(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def read_leaks(response: httpx.Response, secrets: set[str], case: Case) -> list[str]:
    """B's strings in the answer that the request itself did not carry."""
    said = case.request_text()
    text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return sorted(s for s in secrets if s not in said and s in text)


async def check_refused(
    world: World, case: Case, kind: str, credential: str, secrets: set[str], *, variant: str = "bearer"
) -> tuple[list[str], httpx.Response]:
    """Send one cross-tenant request; the problems found (empty when nothing was read, written or published)."""
    before = await world.dumper.dump()
    world.published()
    response = await send(world, case, credential, variant)
    after = await world.dumper.dump()
    problems = []
    label = f"[{world.label}] {kind}/{variant} {case.route} {case.method} {case.path}"
    if case.listing and kind in ("tenant_key", "user_jwt"):
        if response.status_code != 200:
            problems.append(f"{label}: listing answered {response.status_code} {response.text[:200]}")
    elif response.status_code not in REFUSED:
        problems.append(f"{label}: answered {response.status_code} {response.text[:300]}")
    if leaked := read_leaks(response, secrets, case):
        problems.append(f"{label}: B's data in the answer: {leaked}")
    if before != after:
        changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
        problems.append(f"{label}: rows changed in {changed}")
    if published := world.published():
        problems.append(f"{label}: published {published}")
    return problems, response


def _random_target(case: Case, target: str, unknown: str) -> Case:
    """The same request aimed at a session that does not exist."""
    import json

    body = None if case.json is None else json.loads(json.dumps(case.json).replace(target, unknown))
    return Case(case.route, case.method, case.path.replace(target, unknown), body, case.headers, case.listing)


# ---------------------------------------------------------------------------------------------- the matrix
async def run_http_matrix(world: World) -> list[str]:
    a, b = world.a, world.b
    problems: list[str] = []
    listing = await world.http.get("/sessions?limit=1", headers=bearer(b.api_key))
    b_cursor = (
        base64.urlsafe_b64encode(f"{listing.json()['sessions'][0]['created_at']}|{b.session_id}".encode())
        .decode()
        .rstrip("=")
    )
    b_transcript_before = (
        await world.http.get(f"/sessions/{b.session_id}/transcript", headers=bearer(b.api_key))
    ).json()
    for kind in CREDENTIAL_KINDS:
        credential = a.credential(kind)
        for target in (b.session_id, b.ended_session_id):
            unknown = str(uuid.uuid4())
            for case in session_cases(target, a):
                variants = ["bearer", "apikey"] if case.path.startswith("/realtime/") else ["bearer"]
                for variant in variants:
                    found, response = await check_refused(world, case, kind, credential, b.secrets, variant=variant)
                    # existence is not revealed: B's session answers exactly like one that does not exist
                    control, control_response = await check_refused(
                        world, _random_target(case, target, unknown), kind, credential, b.secrets, variant=variant
                    )
                    found += control
                    if (response.status_code, _error(response)) != (
                        control_response.status_code,
                        _error(control_response),
                    ):
                        found.append(
                            f"[{world.label}] {kind}/{variant} {case.route}: B's session answers "
                            f"{response.status_code} {_error(response)}, an unknown one "
                            f"{control_response.status_code} {_error(control_response)}"
                        )
                    tenant_level = kind in ("tenant_key", "user_jwt")
                    if tenant_level and not case.path.startswith("/realtime/") and response.status_code != 404:
                        found.append(f"[{world.label}] {kind} {case.route}: {response.status_code}, want 404")
                    problems += found
                    TALLY.count(f"http {world.label}")
        for case in tenant_cases(a, b, b_cursor):
            found, response = await check_refused(world, case, kind, credential, b.secrets)
            if case.listing and response.status_code == 200:
                listed = {s["id"] for s in response.json()["sessions"]}
                if listed - {a.session_id, a.ended_session_id}:
                    found.append(f"[{world.label}] {kind} {case.route}: lists {listed}")
            mismatch_expected = "tenant B" in case.route and (
                kind in ("tenant_key", "user_jwt") or (kind == "session_token" and "own session" in case.route)
            )
            if mismatch_expected and _error(response) != "tenant_mismatch":
                found.append(f"[{world.label}] {kind} {case.route}: {response.status_code} {_error(response)}")
            problems += found
            TALLY.count(f"http {world.label}")
    b_transcript_after = (
        await world.http.get(f"/sessions/{b.session_id}/transcript", headers=bearer(b.api_key))
    ).json()
    if b_transcript_after != b_transcript_before:
        problems.append(f"[{world.label}] B's transcript changed")
    return problems


async def test_isolation_matrix_http(
    world_settings: tuple[Settings, str | None], app_client: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    """No credential of tenant A reads, writes, publishes to or learns of any session, transcript or entry of tenant B over HTTP."""
    settings, dsn = world_settings
    label = request.node.callspec.id
    async with open_world(label, settings, dsn, app_client) as world:
        problems = await run_http_matrix(world)
    TALLY.leaks.extend(problems)
    assert problems == [], "\n".join(problems)


# ---------------------------------------------------------------------------------------------- positive controls
async def test_credentials_work_on_their_own_tenant(
    world_settings: tuple[Settings, str | None], app_client: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    """Each of A's credentials does read, write and publish on A's own objects, and the checks flag B reading B."""
    settings, dsn = world_settings
    async with open_world(request.node.callspec.id, settings, dsn, app_client) as world:
        a, b, http = world.a, world.b, world.http
        topic = f"session:{a.session_id}"
        a_text = next(s for s in a.secrets if s.startswith("secret-A-") and s.endswith("question"))
        for kind in ("tenant_key", "session_token", "viewer_token", "user_jwt"):
            headers = bearer(a.credential(kind))
            got = await http.get(f"/sessions/{a.session_id}", headers=headers)
            assert got.status_code == 200, (kind, got.text)
            for fmt in ("json", "text", "vtt", "srt"):
                transcript = await http.get(f"/sessions/{a.session_id}/transcript?format={fmt}", headers=headers)
                assert transcript.status_code == 200, (kind, fmt, transcript.text)
                assert a_text in transcript.text, (kind, fmt)
        for kind in ("tenant_key", "user_jwt"):
            listed = await http.get("/sessions", headers=bearer(a.credential(kind)))
            assert {s["id"] for s in listed.json()["sessions"]} >= {a.session_id, a.ended_session_id}, kind
            assert {s["tenant_id"] for s in listed.json()["sessions"]} == {a.tenant_id}, kind
            created = await http.post("/sessions", json={"candidate_id": "new"}, headers=bearer(a.credential(kind)))
            assert created.status_code == 201, (kind, created.text)
        for seq, kind in enumerate(("tenant_key", "session_token", "user_jwt"), start=10):
            before = await world.dumper.dump()
            chunk = chunk_body(a.session_id, "candidate", seq, speech_chunks()[seq % 3])
            done = await http.post("/functions/v1/process-audio", json=chunk, headers=bearer(a.credential(kind)))
            assert done.status_code == 200, (kind, done.text)
            assert done.json()["status"] == "accepted"
            assert await world.dumper.dump() != before, "the row dump must see a write"
            entry = {"session_id": a.session_id, "speaker": "interviewer", "sequence_number": seq, "text": f"ok {kind}"}
            stored = await http.post("/transcript-bridge", json=entry, headers=bearer(a.credential(kind)))
            assert stored.status_code == 200, (kind, stored.text)
            assert ("session:" + a.session_id, "transcript_entry") in [(t, e) for t, e, _ in world.published()]
            for headers in (bearer(a.credential(kind)), {"apikey": a.credential(kind)}):
                batch = {"messages": [{"topic": topic, "event": "note", "payload": {"kind": kind}}]}
                sent = await http.post("/realtime/v1/api/broadcast", json=batch, headers=headers)
                assert sent.status_code == 202, (kind, sent.text)
                assert world.published() == [(topic, "note", {"kind": kind})]
            one = await http.post(
                f"/realtime/v1/api/broadcast/{topic}/events/note", json={"k": 1}, headers=bearer(a.credential(kind))
            )
            assert one.status_code == 202, (kind, one.text)
            assert world.published() == [(topic, "note", {"k": 1})]
        for kind in ("tenant_key", "session_token"):
            viewer = await http.post(f"/sessions/{a.session_id}/viewer-token", headers=bearer(a.credential(kind)))
            assert viewer.status_code == 201, (kind, viewer.text)
        assert (await http.get("/health", headers=bearer(a.credential("service_key")))).status_code == 200
        ended = await http.post(f"/sessions/{a.session_id}/end", headers=bearer(a.session_token))
        assert ended.status_code == 200
        assert ended.json()["status"] == "ended"
        gone = await http.delete(f"/sessions/{a.session_id}", headers=bearer(a.api_key))
        assert gone.status_code == 204
        assert (await http.get(f"/sessions/{a.session_id}", headers=bearer(a.api_key))).status_code == 404

        # the checks can fail: B reading B's own transcript is flagged as a read of B's data, and a write is seen
        case = Case("GET transcript", "GET", f"/sessions/{b.session_id}/transcript")
        problems, _ = await check_refused(world, case, "tenant_key", b.api_key, b.secrets)
        assert any("B's data in the answer" in p for p in problems), problems
        write = Case(
            "transcript-bridge", "POST", "/transcript-bridge",
            {"session_id": b.session_id, "speaker": "interviewer", "sequence_number": 90, "text": "own write"},
        )  # fmt: skip
        problems, _ = await check_refused(world, write, "session_token", b.session_token, b.secrets)
        assert any("rows changed" in p for p in problems), problems
        assert any("published" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------- realtime joins
@pytest.fixture(params=["sqlite", "postgres"])
def served_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> tuple[Settings, str | None]:
    """Settings of a bridge served by uvicorn, per store."""
    common: dict[str, Any] = {"supabase_jwt_secret": USER_JWT_SECRET, "gap_timeout_s": 3600.0}
    if request.param == "sqlite":
        return make_settings(**common), None
    dsn: str = request.getfixturevalue("pg_dsn")
    return make_settings(store="postgres", database_url=dsn, **common), dsn


def _join_error(frame: Frame) -> bool:
    return frame.event == "phx_reply" and isinstance(frame.payload, dict) and frame.payload.get("status") == "error"


async def test_isolation_matrix_realtime(
    served_settings: tuple[Settings, str | None], request: pytest.FixtureRequest
) -> None:
    """No credential of tenant A joins, pushes to or hears B's session topics over the WebSocket; A's own joins work."""
    settings, dsn = served_settings
    label = f"realtime {request.node.callspec.id}"
    app = create_app(settings, broadcaster=LocalHub())
    problems: list[str] = []
    async with serve(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        services: Services = app.state.services
        dumper = Dumper(services, dsn)
        await dumper.open()
        sockets: list[tuple[str, PhoenixSocket, bool]] = []
        try:
            a = await seed_tenant(http, services, "A")
            b = await seed_tenant(http, services, "B")
            ws_url = f"ws://127.0.0.1:{port}/realtime/v1/websocket"
            listener = await PhoenixSocket.open(ws_url, b.session_token)
            assert (await listener.join(f"session:{b.session_id}", b.session_token)).payload["status"] == "ok"
            ended_listener = await PhoenixSocket.open(ws_url, b.api_key, "2.0.0")
            assert (await ended_listener.join(f"session:{b.ended_session_id}")).payload["status"] == "ok"
            before = await dumper.dump()
            for kind in CREDENTIAL_KINDS:
                credential = a.credential(kind)
                for vsn in ("1.0.0", "2.0.0"):
                    for mode in ("apikey", "access_token"):
                        # apikey: the socket's key is the credential; access_token: a valid socket, the join's token
                        socket_key = credential if mode == "apikey" else a.api_key
                        token = None if mode == "apikey" else credential
                        where = f"[{label}] {kind} vsn {vsn} {mode}"
                        sock = await PhoenixSocket.open(ws_url, socket_key, vsn)
                        for target in (b.session_id, b.ended_session_id, str(uuid.uuid4())):
                            reply = await sock.join(f"session:{target}", token)
                            if not _join_error(reply):
                                problems.append(f"{where}: join of session:{target} answered {reply.raw}")
                            pushed = await sock.push(f"session:{target}", "note", {"from": "A"})
                            if not _join_error(pushed):
                                problems.append(f"{where}: push to session:{target} answered {pushed.raw}")
                            TALLY.count(label, 2)
                        own = await sock.join(f"session:{a.session_id}", token)
                        joined = own.payload.get("status") == "ok"
                        if joined != (kind != "service_key"):
                            problems.append(f"{where}: own join answered {own.raw}")
                        if joined:  # joined to A's topic, push to B's: not delivered anywhere
                            pushed = await sock.push(f"session:{b.session_id}", "note", {"from": "A"})
                            if not _join_error(pushed):
                                problems.append(f"{where}: push to B from a joined socket answered {pushed.raw}")
                            TALLY.count(label)
                        sockets.append((where, sock, joined))
                for headers in (bearer(credential), {"apikey": credential}):
                    for body_topic in (b.session_id, b.ended_session_id):
                        sent = await http.post(
                            "/realtime/v1/api/broadcast",
                            json={"messages": [{"topic": f"session:{body_topic}", "event": "note", "payload": {}}]},
                            headers=headers,
                        )
                        if sent.status_code not in REFUSED:
                            problems.append(f"[{label}] {kind} REST broadcast to B: {sent.status_code}")
                        TALLY.count(label)
            if await dumper.dump() != before:
                problems.append(f"[{label}] joins or pushes changed rows")

            # B's news reaches B's listeners only; A's news reaches A's joined sockets (they are alive)
            b_text = f"secret-{b.name}-late news"
            a_text = "A's own late news"
            for session_id, token, text in (
                (b.session_id, b.session_token, b_text),
                (a.session_id, a.session_token, a_text),
            ):
                entry = {"session_id": session_id, "speaker": "interviewer", "sequence_number": 40, "text": text}
                assert (await http.post("/transcript-bridge", json=entry, headers=bearer(token))).status_code == 200
            ended = await http.post(f"/sessions/{b.session_id}/end", headers=bearer(b.session_token))
            assert ended.status_code == 200
            heard = await listener.drain(1.0)
            events = [(f.event, f.payload.get("event")) for f in heard]
            assert ("broadcast", "transcript_entry") in events, heard
            assert ("broadcast", "session_status") in events, heard
            assert all(f.topic == f"realtime:session:{b.session_id}" for f in heard), heard
            assert not [f for f in listener.frames if '"from": "A"' in f.raw or '"from":"A"' in f.raw]
            assert not [f for f in await ended_listener.drain(0.2) if f.event == "broadcast"]
            secrets = b.secrets | {b_text}
            drained = await asyncio.gather(*(sock.drain(1.0) for _, sock, _ in sockets))
            for (where, sock, joined), frames in zip(sockets, drained, strict=True):
                for seen in sock.frames:
                    if leaked := sorted(
                        s for s in secrets if s in seen.raw and s not in {b.session_id, b.ended_session_id}
                    ):
                        problems.append(f"{where}: heard B's data {leaked} in {seen.raw[:200]}")
                    if seen.event == "broadcast" and (b.session_id in seen.topic or b.ended_session_id in seen.topic):
                        problems.append(f"{where}: heard a broadcast of B's topic {seen.raw[:200]}")
                own_entries = [f for f in frames if f.event == "broadcast" and a_text in f.raw]
                if joined and len(own_entries) != 1:
                    problems.append(f"{where}: the positive control heard {len(own_entries)} of A's entries")
                TALLY.count(label)
        finally:
            for _, sock, _ in sockets:
                await sock.close()
            await dumper.close()
    TALLY.leaks.extend(problems)
    assert problems == [], "\n".join(problems)


def test_isolation_matrix_summary() -> None:
    """Whatever ran of the matrix before this test found zero cross-tenant reads or writes (the count prints at the end)."""
    assert TALLY.leaks == [], TALLY.line()
