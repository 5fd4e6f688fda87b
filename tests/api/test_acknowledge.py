"""process-audio acknowledges at the cost of a store write; the transcription runs after the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, services, wav_chunks

SPEECH = FIXTURES / "live" / "two_sentences.flac"


async def transcript(client: Any, token: str, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def test_a_chunk_is_answered_while_its_transcription_is_still_running(app_client: Callable[..., Any]) -> None:
    """The answer comes once the chunk is stored, while the engine is still busy with it; the entry follows."""
    whole = wav_chunks(load_pcm(SPEECH), 0)[0]
    async with app_client(simulate_latency_ms=1500) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        answer = await post_chunk(client, token, session_id, "candidate", 0, whole)
        assert answer.status_code == 200
        assert answer.json() == {"status": "accepted", "sequence_number": 0, "entries": [], "partial": None}
        assert services(client).live.runs.busy == 1, "the engine is still working on the acknowledged chunk"
        stored = await client.get(f"/sessions/{session_id}", headers=bearer(token))
        assert stored.json()["next_sequence"] == {"candidate": 1}
        entries: list[dict[str, Any]] = []
        for _ in range(100):
            entries = await transcript(client, token, session_id)
            if entries:
                break
            await asyncio.sleep(0.1)
        assert [e["first_sequence"] for e in entries] == [0]


async def test_wait_ms_returns_the_entries_its_chunk_makes(app_client: Callable[..., Any]) -> None:
    """With `wait_ms`, the answer waits for the run that takes the chunk and carries the entries it made."""
    whole = wav_chunks(load_pcm(SPEECH), 0)[0]
    async with app_client(simulate_latency_ms=50) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        answer = await post_chunk(client, token, session_id, "candidate", 0, whole, wait_ms=5000)
        assert answer.status_code == 200
        body = answer.json()
        assert body["status"] == "accepted"
        assert [e["first_sequence"] for e in body["entries"]] == [0]
        assert body["entries"] == await transcript(client, token, session_id)


async def test_a_burst_of_chunks_is_processed_in_a_few_runs_and_ends_complete(app_client: Callable[..., Any]) -> None:
    """Chunks posted faster than they are processed are coalesced into a few runs; `end` still returns everything."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client(simulate_latency_ms=200) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        answers = await asyncio.gather(
            *(post_chunk(client, token, session_id, "candidate", seq, chunk) for seq, chunk in enumerate(chunks))
        )
        assert [a.json()["status"] for a in answers] == ["accepted"] * len(chunks)
        runs_asked = services(client).live.runs.runs
        ended = await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        assert ended.status_code == 200
        entries = await transcript(client, token, session_id)
        left = await services(client).store.list_chunks(session_id, "candidate", pending_only=True)
    assert runs_asked < len(chunks)
    assert entries, "the speech is in the transcript once `end` has returned"
    assert left == [], "every acknowledged chunk was processed"
