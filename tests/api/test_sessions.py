"""Sessions, tokens, transcripts and the transcript bridge over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from shared.broadcast.local import LocalHub
from shared.models import utcnow
from tests.helpers import bearer, new_session, new_tenant, row_counts, services


async def test_create_session_returns_token_and_realtime(app_client: Callable[..., Any]) -> None:
    """POST /sessions answers 201 with the session, a session token and where to subscribe."""
    async with app_client() as client:
        tenant_id, key = await new_tenant(client)
        response = await client.post(
            "/sessions",
            json={
                "candidate_id": "cand-1",
                "position_id": "pos-9",
                "speakers": ["interviewer", "candidate"],
                "metadata": {"round": 2},
            },
            headers=bearer(key),
        )
        assert response.status_code == 201
        body = response.json()
        session = body["session"]
        assert session["tenant_id"] == tenant_id
        assert session["status"] == "active"
        assert session["speakers"] == ["interviewer", "candidate"]
        assert session["metadata"] == {"round": 2}
        assert body["realtime"]["topic"] == f"session:{session['id']}"
        assert body["realtime"]["apikey"] == body["token"]
        assert body["realtime"]["url"].startswith("http")
        fetched = await client.get(f"/sessions/{session['id']}", headers=bearer(body["token"]))
        assert fetched.status_code == 200
        assert fetched.json()["id"] == session["id"]
        assert fetched.json()["next_sequence"] == {}


async def test_list_sessions_pages_with_cursor(app_client: Callable[..., Any]) -> None:
    """GET /sessions lists the tenant's sessions newest first and pages with next_cursor."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        _, other_key = await new_tenant(client, "other")
        made = [(await new_session(client, key, candidate_id=f"c{i}"))[0] for i in range(3)]
        await new_session(client, other_key)
        first = (await client.get("/sessions?limit=2", headers=bearer(key))).json()
        assert len(first["sessions"]) == 2
        assert first["next_cursor"]
        second = (await client.get(f"/sessions?limit=2&cursor={first['next_cursor']}", headers=bearer(key))).json()
        assert second["next_cursor"] is None
        listed = [s["id"] for s in first["sessions"] + second["sessions"]]
        assert sorted(listed) == sorted(made)
        only = (await client.get("/sessions?candidate_id=c1", headers=bearer(key))).json()
        assert [s["candidate_id"] for s in only["sessions"]] == ["c1"]


async def test_session_token_is_scoped_to_its_session(app_client: Callable[..., Any]) -> None:
    """A session token reads its own session and gets 403 on another session of the same tenant."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        first_id, first_token = await new_session(client, key)
        second_id, _ = await new_session(client, key)
        assert (await client.get(f"/sessions/{first_id}", headers=bearer(first_token))).status_code == 200
        response = await client.get(f"/sessions/{second_id}", headers=bearer(first_token))
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
        listing = await client.get("/sessions", headers=bearer(first_token))
        assert listing.status_code == 403


async def test_viewer_token_reads_but_never_writes(app_client: Callable[..., Any]) -> None:
    """A viewer token reads the transcript but cannot post chunks, entries or end the session."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        minted = await client.post(f"/sessions/{session_id}/viewer-token", headers=bearer(token))
        assert minted.status_code == 201
        viewer = minted.json()["token"]
        assert (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(viewer))).status_code == 200
        before = row_counts(client)
        entry = {"session_id": session_id, "speaker": "x", "sequence_number": 0, "text": "hi"}
        for response in (
            await client.post("/functions/v1/transcript-bridge", json=entry, headers=bearer(viewer)),
            await client.post(f"/sessions/{session_id}/end", headers=bearer(viewer)),
            await client.post(f"/sessions/{session_id}/viewer-token", headers=bearer(viewer)),
        ):
            assert response.status_code == 403
        assert row_counts(client) == before


async def test_expired_session_token_is_401(app_client: Callable[..., Any]) -> None:
    """A session token past its TTL is refused with 401."""
    async with app_client(session_token_ttl=60) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        with freeze_time(utcnow() + timedelta(minutes=5)):
            response = await client.get(f"/sessions/{session_id}", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


async def test_a_token_that_worked_is_refused_once_it_expires(app_client: Callable[..., Any]) -> None:
    """A token already accepted (and remembered as verified) is still refused with 401 after its TTL."""
    async with app_client(session_token_ttl=60) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        assert (await client.get(f"/sessions/{session_id}", headers=bearer(token))).status_code == 200
        with freeze_time(utcnow() + timedelta(minutes=5)):
            response = await client.get(f"/sessions/{session_id}", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


async def test_service_key_serves_operator_routes_only(app_client: Callable[..., Any]) -> None:
    """The service key cannot create or read sessions."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, _ = await new_session(client, key)
        service = bearer("service-key-for-tests-0123456789abcdef")
        assert (await client.post("/sessions", json={}, headers=service)).status_code == 403
        assert (await client.get(f"/sessions/{session_id}", headers=service)).status_code == 403


async def test_transcript_bridge_stores_once_and_broadcasts(app_client: Callable[..., Any]) -> None:
    """An entry posted to the bridge is stored once, broadcast once, and a replay answers duplicate."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        hub = services(client).broadcaster
        assert isinstance(hub, LocalHub)
        subscription = hub.subscribe(f"session:{session_id}")
        entry = {
            "session_id": session_id,
            "speaker": "interviewer",
            "sequence_number": 3,
            "text": "Hello there.",
            "start_ms": 1200,
            "end_ms": 2000,
        }
        first = await client.post("/functions/v1/transcript-bridge", json=entry, headers=bearer(token))
        assert first.status_code == 200
        assert first.json()["status"] == "stored"
        stored = first.json()["entry"]
        assert stored["text"] == "Hello there."
        assert stored["first_sequence"] == 3
        again = await client.post("/transcript-bridge", json=entry, headers=bearer(token))
        assert again.json() == {"status": "duplicate", "entry": stored}
        event, payload = await subscription.__anext__()
        assert event == "transcript_entry"
        assert payload == stored
        subscription.close()


async def test_transcript_bridge_accepts_the_original_shape(app_client: Callable[..., Any]) -> None:
    """The original `{tenant_id, transcript_data}` body is stored; a foreign tenant_id is 403 tenant_mismatch."""
    async with app_client() as client:
        tenant_id, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        body = {
            "session_id": session_id,
            "tenant_id": tenant_id,
            "transcript_data": {"text": "From the old client.", "confidence": 0.8},
            "speaker": "candidate",
            "sequence_number": 0,
        }
        response = await client.post("/functions/v1/transcript-bridge", json=body, headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["entry"]["text"] == "From the old client."
        assert response.json()["entry"]["confidence"] == 0.8
        before = row_counts(client)
        response = await client.post(
            "/functions/v1/transcript-bridge",
            json={**body, "tenant_id": "another", "sequence_number": 1},
            headers=bearer(token),
        )
        assert response.status_code == 403
        assert response.json()["error"] == "tenant_mismatch"
        assert row_counts(client) == before


async def test_transcript_formats(app_client: Callable[..., Any]) -> None:
    """The transcript renders as JSON, text lines, WebVTT voice cues and SRT cues."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, (speaker, text, start) in enumerate([("interviewer", "Hi.", 0), ("candidate", "Hello <all>.", 1500)]):
            body = {
                "session_id": session_id,
                "speaker": speaker,
                "sequence_number": seq,
                "text": text,
                "start_ms": start,
                "end_ms": start + 900,
            }
            await client.post("/transcript-bridge", json=body, headers=bearer(token))
        text = await client.get(f"/sessions/{session_id}/transcript?format=text", headers=bearer(token))
        assert text.text == "interviewer: Hi.\ncandidate: Hello <all>.\n"
        vtt = await client.get(f"/sessions/{session_id}/transcript?format=vtt", headers=bearer(token))
        assert vtt.text.startswith("WEBVTT\n")
        assert "00:00:01.500 --> 00:00:02.400\n<v candidate>Hello &lt;all&gt;." in vtt.text
        srt = await client.get(f"/sessions/{session_id}/transcript?format=srt", headers=bearer(token))
        assert "2\n00:00:01,500 --> 00:00:02,400\ncandidate: Hello <all>.\n" in srt.text
        bad = await client.get(f"/sessions/{session_id}/transcript?format=pdf", headers=bearer(token))
        assert bad.status_code == 400


async def test_end_is_idempotent_and_announced(app_client: Callable[..., Any]) -> None:
    """Ending twice answers the ended session both times, and subscribers get one session_status."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        hub = services(client).broadcaster
        assert isinstance(hub, LocalHub)
        subscription = hub.subscribe(f"session:{session_id}")
        first = await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        second = await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        assert first.json()["status"] == second.json()["status"] == "ended"
        assert first.json()["ended_at"] == second.json()["ended_at"]
        event, payload = await subscription.__anext__()
        assert (event, payload) == ("session_status", {"session_id": session_id, "status": "ended"})
        subscription.close()


async def test_delete_erases_the_session(app_client: Callable[..., Any]) -> None:
    """DELETE removes the session with its entries; afterwards it is 404."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        await client.post(
            "/transcript-bridge",
            json={"session_id": session_id, "speaker": "a", "sequence_number": 0, "text": "x"},
            headers=bearer(token),
        )
        assert (await client.delete(f"/sessions/{session_id}", headers=bearer(token))).status_code == 403
        assert (await client.delete(f"/sessions/{session_id}", headers=bearer(key))).status_code == 204
        assert (await client.get(f"/sessions/{session_id}", headers=bearer(key))).status_code == 404
        assert row_counts(client)["transcript_entries"] == 0


async def test_cors_allows_only_listed_origins(app_client: Callable[..., Any]) -> None:
    """A listed origin gets CORS headers on a preflight; any other origin does not."""
    async with app_client(cors_origins=["https://app.example"]) as client:
        headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        allowed = await client.options("/functions/v1/process-audio", headers=headers)
        assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
        denied = await client.options(
            "/functions/v1/process-audio", headers={**headers, "Origin": "https://evil.example"}
        )
        assert denied.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_deleting_a_session_while_audio_is_pending_is_clean(
    app_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A session deleted while its speaker still has audio held behind a gap leaves nothing behind and no error."""
    from tests.helpers import FIXTURES, load_pcm, post_chunk, wav_chunks

    chunks = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))
    async with app_client(gap_timeout_s=0.2) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        await post_chunk(client, token, session_id, "candidate", 1, chunks[1])  # waits for chunk 0
        assert (await client.delete(f"/sessions/{session_id}", headers=bearer(key))).status_code == 204
        await asyncio.sleep(0.5)  # the gap timer fires on a session that is gone
        counts = row_counts(client)
        assert counts["sessions"] == counts["audio_chunks"] == counts["transcript_entries"] == 0
        assert counts["speaker_streams"] == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
