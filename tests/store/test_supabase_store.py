"""The Supabase store at the HTTP boundary (respx): the requests PostgREST receives and how its answers and
failures (201, 204, 409 23505, 401 PGRST301/PGRST303, 404 PGRST202, 5xx, network) come out of the store.

The whole conformance suite also runs on this store against a PostgREST stand-in backed by the real Postgres
(`supabase-rest` in tests/store/conftest.py); these tests pin the wire details and the error mapping.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import respx

from shared.errors import StoreConflict, StoreUnavailable
from shared.models import InsertOutcome, NewChunk, NewEntry, Session, SessionStatus, SpeakerStream, Tenant
from shared.store.base import StreamLeaseLost
from shared.store.supabase import PAGE, SupabaseStore

URL = "https://project-ref.supabase.co"
REST = f"{URL}/rest/v1"
KEY = "service-role-key"
T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)

SESSION_ROW = {
    "id": "s1",
    "tenant_id": "t1",
    "candidate_id": None,
    "position_id": None,
    "status": "ended",
    "speakers": ["candidate"],
    "language": "en",
    "metadata": {"room": "blue"},
    "created_at": "2026-11-26T12:00:00+00:00",
    "last_activity_at": "2026-11-26T12:05:00.25+00:00",
    "ended_at": "2026-11-26T12:05:00.25+00:00",
    "machine_id": None,
}


def entry_row(first: int) -> dict[str, object]:
    return {
        "id": f"e{first}",
        "tenant_id": "t1",
        "session_id": "s1",
        "speaker": "candidate",
        "first_sequence": first,
        "last_sequence": first,
        "text": f"word {first}",
        "start_ms": first * 10,
        "end_ms": first * 10 + 5,
        "language": "en",
        "confidence": 0.875,
        "engine": "openai",
        "created_at": "2026-11-26T12:00:01.5+00:00",
    }


@pytest.fixture
async def rest() -> AsyncIterator[tuple[respx.MockRouter, SupabaseStore]]:
    """A started store whose own httpx client is intercepted by respx (nothing reaches the network)."""
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        store = SupabaseStore(URL, KEY)
        await store.start()
        try:
            yield router, store
        finally:
            await store.close()


def chunk() -> NewChunk:
    return NewChunk(
        session_id="s1",
        speaker="candidate",
        sequence_number=3,
        data=b"\x1aE\xdf\xa3",
        digest="d",
        mime_type="audio/webm",
        starts_stream=True,
        received_at=T0,
    )


async def test_insert_chunk_calls_the_sql_function_with_service_key(
    rest: tuple[respx.MockRouter, SupabaseStore],
) -> None:
    """A chunk goes to POST /rpc/insert_audio_chunk with the service key, bytes as bytea hex, and the function's answer is the outcome."""
    router, store = rest
    route = router.post("/rpc/insert_audio_chunk").respond(200, json="duplicate")
    assert await store.insert_chunk(chunk()) is InsertOutcome.DUPLICATE
    request = route.calls.last.request
    assert request.headers["apikey"] == KEY and request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "p_session_id": "s1",
        "p_speaker": "candidate",
        "p_sequence_number": 3,
        "p_mime_type": "audio/webm",
        "p_bytes": "\\x1a45dfa3",
        "p_digest": "d",
        "p_starts_stream": True,
        "p_received_at": "2026-11-26T12:00:00+00:00",
    }


async def test_create_session_posts_row_and_accepts_201(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """Creating a session POSTs the row with `Prefer: return=minimal`; PostgREST's empty 201 is success."""
    router, store = rest
    route = router.post("/sessions").respond(201)
    session = Session(
        id="s1",
        tenant_id="t1",
        status=SessionStatus.ACTIVE,
        created_at=T0,
        last_activity_at=T0,
        speakers=("candidate",),
        metadata={"room": "blue"},
    )
    await store.create_session(session)
    request = route.calls.last.request
    assert "return=minimal" in request.headers["prefer"]
    body = json.loads(request.content)
    assert body["speakers"] == ["candidate"] and body["metadata"] == {"room": "blue"}
    assert body["created_at"] == "2026-11-26T12:00:00+00:00" and body["status"] == "active"


async def test_set_status_patches_only_active_and_reads_back(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """Ending a session PATCHes with id and status=active filters; when nothing matched it reads the session as stored."""
    router, store = rest
    patch = router.patch("/sessions").respond(200, json=[])
    get = router.get("/sessions").respond(200, json=[SESSION_ROW])
    session = await store.set_session_status("s1", SessionStatus.ABANDONED, T0)
    assert session is not None and session.status is SessionStatus.ENDED
    assert session.last_activity_at == datetime(2026, 11, 26, 12, 5, 0, 250000, tzinfo=UTC)
    params = patch.calls.last.request.url.params
    assert params["id"] == "eq.s1" and params["status"] == "eq.active"
    assert "return=representation" in patch.calls.last.request.headers["prefer"]
    assert get.calls.last.request.url.params["id"] == "eq.s1"


async def test_list_sessions_sends_cursor_as_or_filter(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """Paging sends the (created_at, id) cursor as a PostgREST `or` tree, newest first, with the limit."""
    router, store = rest
    route = router.get("/sessions").respond(200, json=[SESSION_ROW])
    listed = await store.list_sessions("t1", status=SessionStatus.ENDED, limit=2, before=(T0, "s9"))
    assert [s.id for s in listed] == ["s1"] and listed[0].metadata == {"room": "blue"}
    params = route.calls.last.request.url.params
    assert params["tenant_id"] == "eq.t1" and params["status"] == "eq.ended" and params["limit"] == "2"
    assert params["order"] == "created_at.desc,id.desc"
    assert params["or"] == (
        '(created_at.lt."2026-11-26T12:00:00+00:00",and(created_at.eq."2026-11-26T12:00:00+00:00",id.lt."s9"))'
    )


async def test_chunk_bytes_decoded_from_bytea_hex(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """A chunk's bytes come back from PostgREST's `\\x` hex rendering of bytea."""
    router, store = rest
    router.get("/audio_chunks").respond(
        200,
        json=[
            {
                "session_id": "s1",
                "speaker": "candidate",
                "sequence_number": 3,
                "mime_type": None,
                "starts_stream": False,
                "received_at": "2026-11-26T12:00:00+00:00",
                "state": "pending",
                "bytes": "\\x00ff10",
            }
        ],
    )
    stored = await store.get_chunk("s1", "candidate", 3)
    assert stored is not None and stored.data == b"\x00\xff\x10"


async def test_entries_are_paged_past_max_rows(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """A transcript longer than PostgREST's max-rows is fetched page by page, in display order."""
    router, store = rest
    pages = [[entry_row(i) for i in range(PAGE)], [entry_row(PAGE + i) for i in range(3)]]
    route = router.get("/transcript_entries").mock(side_effect=[httpx.Response(200, json=page) for page in pages])
    entries = await store.list_entries("s1")
    assert len(entries) == PAGE + 3 and entries[-1].first_sequence == PAGE + 2
    assert entries[0].created_at == datetime(2026, 11, 26, 12, 0, 1, 500000, tzinfo=UTC)
    second = route.calls[1].request.url.params
    assert second["offset"] == str(PAGE) and second["limit"] == str(PAGE)
    assert second["order"] == "start_ms.asc.nullslast,speaker.asc,first_sequence.asc"


async def test_save_stream_fenced_out_raises_lease_lost(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """`{"saved": false}` from save_speaker_stream is StreamLeaseLost and the local version stays put."""
    router, store = rest
    route = router.post("/rpc/save_speaker_stream").respond(200, json={"saved": False})
    stream = SpeakerStream(session_id="s1", speaker="candidate", next_sequence=4, version=7)
    entry = NewEntry(
        session_id="s1",
        tenant_id="t1",
        speaker="candidate",
        first_sequence=2,
        last_sequence=3,
        text="hi",
        start_ms=0,
        end_ms=10,
        language="en",
        confidence=None,
        engine="simulate",
    )
    with pytest.raises(StreamLeaseLost):
        await store.save_stream(stream, "w1", done_sequences=[2, 3], entry=entry)
    assert stream.version == 7
    body = json.loads(route.calls.last.request.content)
    assert body["p_version"] == 7 and body["p_done_sequences"] == [2, 3] and body["p_entry"]["text"] == "hi"


async def test_save_stream_returns_the_written_entry(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """A saved stream bumps the version and returns the entry the function stored (or found)."""
    router, store = rest
    router.post("/rpc/save_speaker_stream").respond(
        200, json={"saved": True, "written": {"created": False, "entry": entry_row(2)}}
    )
    stream = SpeakerStream(session_id="s1", speaker="candidate", version=1)
    written = await store.save_stream(stream, "w1")
    assert written is not None and not written.created and written.entry.text == "word 2"
    assert stream.version == 2


async def test_release_accepts_204_from_a_void_function(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """Releasing a stream calls the void SQL function, which PostgREST answers with 204 No Content."""
    router, store = rest
    route = router.post("/rpc/release_speaker_stream").respond(204)
    await store.release_stream("s1", "candidate", "w1")
    assert json.loads(route.calls.last.request.content) == {
        "p_session_id": "s1",
        "p_speaker": "candidate",
        "p_owner": "w1",
    }


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        pytest.param(
            401,
            {"code": "PGRST301", "details": None, "hint": None, "message": "JWSError JWSInvalidSignature"},
            "SUPABASE_SERVICE_ROLE_KEY",
            id="401-bad-key",
        ),
        pytest.param(
            401,
            {"code": "PGRST303", "details": None, "hint": None, "message": "JWT expired"},
            "SUPABASE_SERVICE_ROLE_KEY",
            id="401-expired-key",
        ),
        pytest.param(
            403,
            {"code": "42501", "details": None, "hint": None, "message": "permission denied for table tenants"},
            "SUPABASE_SERVICE_ROLE_KEY",
            id="403-anon-key",
        ),
        pytest.param(
            404,
            {
                "code": "PGRST205",
                "details": None,
                "hint": None,
                "message": "Could not find the table 'public.tenants' in the schema cache",
            },
            "apply supabase/migrations",
            id="404-no-schema",
        ),
        pytest.param(
            500,
            {"code": "XX000", "details": None, "hint": None, "message": "internal error"},
            "Supabase failed",
            id="500",
        ),
        pytest.param(503, None, "Supabase failed", id="503-not-json"),
        pytest.param(520, None, "Supabase failed", id="520-cloudflare"),
    ],
)
async def test_postgrest_errors_become_store_unavailable(
    rest: tuple[respx.MockRouter, SupabaseStore], status: int, body: dict[str, object] | None, detail: str
) -> None:
    """Every PostgREST failure surfaces as StoreUnavailable with a detail saying what to do, after one request (no retry sleeps)."""
    router, store = rest
    response = httpx.Response(status, json=body) if body else httpx.Response(status, text="<html>bad gateway</html>")
    insert = router.post("/tenants").mock(return_value=response)
    read = router.get("/tenants").mock(return_value=response)
    with pytest.raises(StoreUnavailable, match=detail):
        await store.create_tenant(Tenant(id="t1", name="acme", created_at=T0), "hash")
    with pytest.raises(StoreUnavailable, match=detail):
        await store.get_tenant("t1")
    assert insert.call_count == 1 and read.call_count == 1


async def test_unique_violation_is_a_conflict(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """PostgREST's 409 with code 23505 (a duplicate key) surfaces as StoreConflict, not as an outage."""
    router, store = rest
    body = {
        "code": "23505",
        "details": "Key (id)=(t1) already exists.",
        "hint": None,
        "message": 'duplicate key value violates unique constraint "tenants_pkey"',
    }
    router.post("/tenants").mock(return_value=httpx.Response(409, json=body))
    with pytest.raises(StoreConflict, match="conflicting with stored data"):
        await store.create_tenant(Tenant(id="t1", name="acme", created_at=T0), "hash")


async def test_missing_function_says_to_migrate(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """An rpc to a function the project lacks (PGRST202) says to apply the migrations."""
    router, store = rest
    router.post("/rpc/claim_speaker_stream").respond(
        404,
        json={
            "code": "PGRST202",
            "details": "Searched for the function public.claim_speaker_stream ...",
            "hint": None,
            "message": "Could not find the function public.claim_speaker_stream(p_lease_seconds, ...) in the schema cache",
        },
    )
    with pytest.raises(StoreUnavailable, match="apply supabase/migrations"):
        await store.claim_stream("s1", "candidate", "w1", 30, T0)


async def test_network_failure_is_store_unavailable(rest: tuple[respx.MockRouter, SupabaseStore]) -> None:
    """A connection failure to the project is StoreUnavailable with a retry hint."""
    router, store = rest
    router.get("/transcript_entries").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(StoreUnavailable, match="unreachable") as caught:
        await store.list_entries("s1")
    assert caught.value.retry_after == 2


async def test_migrate_applies_nothing_over_rest() -> None:
    """Over REST there is no DDL: migrate() applies nothing and needs no request."""
    with respx.mock(assert_all_called=False) as router:
        store = SupabaseStore(URL, KEY)
        await store.start()
        try:
            assert await store.migrate() == []
        finally:
            await store.close()
        assert router.calls.call_count == 0
