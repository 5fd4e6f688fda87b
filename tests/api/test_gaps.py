"""Missing chunks: later ones wait a bounded time, then the gap is skipped; a latecomer still counts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from shared.stt.base import Transcriber
from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, wav_chunks

SPEECH = FIXTURES / "live" / "two_sentences.flac"


async def transcript(client: Any, token: str, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def test_gap_holds_later_chunks_then_is_skipped(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """Chunks after a missing one wait; after the gap timeout they are transcribed without it, and the missing
    chunk, when it finally arrives, becomes an entry of its own."""
    chunks = wav_chunks(load_pcm(SPEECH))  # 6 chunks; the second sentence lives in chunks 3-4
    async with app_client(
        transcriber=local_transcriber, stt_engine="local", partials="off", gap_timeout_s=0.5
    ) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq in (0, 1, 2, 4, 5):  # chunk 3 is lost on the way
            response = await post_chunk(client, token, session_id, "candidate", seq, chunks[seq], wait_ms=5000)
            assert response.json()["status"] == "accepted"
        held = [e["first_sequence"] for e in await transcript(client, token, session_id)]
        assert held == [0], "chunks 4 and 5 wait behind the gap"
        entries: list[dict[str, Any]] = []
        for _ in range(50):
            await asyncio.sleep(0.1)
            entries = await transcript(client, token, session_id)
            if len(entries) > 1:
                break
        assert [e["first_sequence"] for e in entries] == [0, 4]
        late = await post_chunk(client, token, session_id, "candidate", 3, chunks[3], wait_ms=5000)
        assert late.status_code == 200
        assert [e["first_sequence"] for e in late.json()["entries"]] == [3]
        assert [e["last_sequence"] for e in late.json()["entries"]] == [3]
        session = await client.get(f"/sessions/{session_id}", headers=bearer(token))
        assert session.json()["next_sequence"] == {"candidate": 6}
        spoken = await transcript(client, token, session_id)
    assert [e["first_sequence"] for e in spoken] == [0, 3, 4], "the latecomer sits where it was spoken"
    first, late, after = spoken
    assert first["end_ms"] <= late["start_ms"] < late["end_ms"] <= after["end_ms"]
    # chunk 3 covers 6-8 s of the speaker's stream; the first entry starts 0.63 s in (speech at 0.93 s, 0.3 s lead)
    assert 6000 - 630 <= late["start_ms"] - first["start_ms"] < 8000 - 630
