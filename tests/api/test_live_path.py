"""The live path over HTTP: chunks in, ordered transcript entries out, on embedded defaults."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.stt.base import Transcriber
from shared.stt.wer import wer
from tests.helpers import (
    FIXTURES,
    bearer,
    load_pcm,
    new_session,
    new_tenant,
    post_chunk,
    row_counts,
    services,
    wav_chunks,
)

SPEECH = FIXTURES / "live" / "two_sentences.flac"
REFERENCE = (FIXTURES / "live" / "two_sentences.txt").read_text().strip()


async def send_all(
    client: Any, token: str, session_id: str, chunks: list[bytes], order: list[int]
) -> list[dict[str, Any]]:
    answers = []
    for seq in order:
        response = await post_chunk(client, token, session_id, "candidate", seq, chunks[seq])
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


async def end_and_read(client: Any, token: str, session_id: str) -> list[dict[str, Any]]:
    ended = await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "ended"
    transcript = await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
    assert transcript.status_code == 200
    entries: list[dict[str, Any]] = transcript.json()["entries"]
    return entries


async def test_health_reports_embedded_defaults(app_client: Callable[..., Any]) -> None:
    """GET /health answers ok and names the engine, store and broadcaster without secrets."""
    async with app_client() as client:
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "ready": True,
            "engine": "simulate",
            "store": "sqlite",
            "broadcaster": "local",
        }


async def test_speech_becomes_ordered_entries(app_client: Callable[..., Any], local_transcriber: Transcriber) -> None:
    """Real speech sent as 2 s WAV chunks comes back as final entries whose text matches what was said."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client(transcriber=local_transcriber, stt_engine="local") as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key, speakers=["candidate"])
        answers = await send_all(client, token, session_id, chunks, list(range(len(chunks))))
        assert {a["status"] for a in answers} == {"accepted"}
        live_entries: list[dict[str, Any]] = []
        for _ in range(100):
            live_entries = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))).json()[
                "entries"
            ]
            if live_entries:
                break
            await asyncio.sleep(0.1)
        assert live_entries, "the pause between the sentences should close the first utterance while live"
        entries = await end_and_read(client, token, session_id)
    text = " ".join(e["text"] for e in entries)
    assert wer(REFERENCE, text) < 0.15
    starts = [e["start_ms"] for e in entries]
    assert starts == sorted(starts)
    assert entries[0]["first_sequence"] == 0
    assert all(e["engine"] == "local" and e["speaker"] == "candidate" for e in entries)


async def test_out_of_order_chunks_give_the_same_transcript(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """Chunks that arrive shuffled give exactly the transcript of the same chunks sent in order."""
    chunks = wav_chunks(load_pcm(SPEECH))
    order = list(range(len(chunks)))
    shuffled = order[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != order
    results = []
    for sending in (order, shuffled):
        async with app_client(transcriber=local_transcriber, stt_engine="local") as client:
            _, key = await new_tenant(client)
            session_id, token = await new_session(client, key)
            await send_all(client, token, session_id, chunks, sending)
            entries = await end_and_read(client, token, session_id)
            results.append([(e["first_sequence"], e["last_sequence"], e["text"]) for e in entries])
    assert results[0] == results[1]
    assert results[0]


async def test_replayed_chunk_is_duplicate_and_adds_nothing(app_client: Callable[..., Any]) -> None:
    """Sending a chunk again answers `duplicate` and leaves every table as it was."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        first = await post_chunk(client, token, session_id, "candidate", 0, chunks[0], wait_ms=5000)
        assert first.json()["status"] == "accepted"
        before = row_counts(client)
        again = await post_chunk(client, token, session_id, "candidate", 0, chunks[0])
        assert again.status_code == 200
        assert again.json() == {"status": "duplicate", "sequence_number": 0, "entries": [], "partial": None}
        assert row_counts(client) == before


async def test_silence_and_noise_cost_no_engine_call(app_client: Callable[..., Any]) -> None:
    """Digital silence, low-level noise and a loud tone sweep produce no entry and no transcription call, live or at end."""
    rng = np.random.default_rng(3)
    seconds = 2 * 16000
    white = (rng.standard_normal(seconds) * 10 ** (-32 / 20)).astype(np.float32)
    brown = np.cumsum(rng.standard_normal(seconds)).astype(np.float32)
    brown = (brown - brown.mean()) / (np.sqrt(np.mean((brown - brown.mean()) ** 2)) + 1e-9) * 10 ** (-35 / 20)
    hum = (0.03 * np.sin(2 * np.pi * 50 * np.arange(seconds) / 16000)).astype(np.float32)
    pink = load_pcm(FIXTURES / "audio" / "pink_noise_2s.wav")
    silence = np.zeros(seconds, dtype=np.float32)
    t = np.arange(2 * seconds) / 16000  # a loud 200-4000 Hz tone sweep over two chunks: past the gate, not speech
    sweep = (0.25 * np.sin(2 * np.pi * (200 * t + 3800 * t**2 / 8))).astype(np.float32)
    from bridge.offline import wav_bytes

    pieces = (silence, white, brown.astype(np.float32), hum, pink, sweep[:seconds], sweep[seconds:], silence)
    chunks = [wav_bytes(p) for p in pieces]
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        answers = await send_all(client, token, session_id, chunks, list(range(len(chunks))))
        assert all(a["entries"] == [] for a in answers)
        entries = await end_and_read(client, token, session_id)
        assert entries == []
        assert services(client).live.engine_calls == 0


async def test_empty_chunk_is_skipped_and_counts_as_received(app_client: Callable[..., Any]) -> None:
    """An empty audio_chunk answers `skipped`, and the speaker's next_sequence moves past it."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        response = await post_chunk(client, token, session_id, "candidate", 0, b"", mime="audio/webm")
        assert response.status_code == 200
        assert response.json()["status"] == "skipped"
        session = await client.get(f"/sessions/{session_id}", headers=bearer(token))
        assert session.json()["next_sequence"] == {"candidate": 1}


async def test_chunk_accepted_before_a_crash_is_transcribed_after_restart(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """A chunk stored while the engine was down is transcribed by the next process on the same data dir."""
    pcm = load_pcm(SPEECH)
    whole = wav_chunks(pcm, 0)[0]
    async with app_client(
        stt_engine="openai", openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1"
    ) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        response = await post_chunk(client, token, session_id, "candidate", 0, whole, wait_ms=5000)
        assert response.status_code == 200
        assert response.json()["status"] == "queued"
        assert row_counts(client)["transcript_entries"] == 0
    async with app_client(transcriber=local_transcriber, stt_engine="local") as client:
        entries = []
        for _ in range(100):  # the restarted bridge resumes pending audio on its own, before any `end`
            response = await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
            entries = response.json()["entries"]
            if entries:
                break
            await asyncio.sleep(0.2)
    assert wer(REFERENCE, " ".join(e["text"] for e in entries)) < 0.15


async def test_ended_sessions_leave_no_cache_behind(app_client: Callable[..., Any]) -> None:
    """Ending a session frees the per-speaker caches the live path kept for it."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for speaker in ("interviewer", "candidate"):
            await post_chunk(client, token, session_id, speaker, 0, chunks[0])
        assert services(client).live.cached_speakers == 2
        await end_and_read(client, token, session_id)
        assert services(client).live.cached_speakers == 0
