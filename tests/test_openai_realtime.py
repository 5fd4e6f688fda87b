"""The `openai-realtime` engine at its boundary: the bridge against a local server speaking OpenAI's Realtime
transcription events (tests/openai_realtime_fake.py), which transcribes with the bundled model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bridge.stream_client import pcm_frames, socket_url, stream_frames
from shared.settings import Settings
from shared.stt.base import Transcriber
from shared.stt.openai_realtime import RealtimeTranscriber
from shared.stt.wer import word_errors
from tests.helpers import chunk_body, load_pcm, wav_chunks
from tests.openai_realtime_fake import FakeRealtime
from tests.test_stream_socket import PCM, SPEECH, SPEECH_TEXT, Running, bridge

KEY = "sk-test"


@pytest.fixture
async def upstream(local_transcriber: Transcriber) -> AsyncIterator[FakeRealtime]:
    """A Realtime server on loopback whose items are transcribed by the bundled tiny.en model."""
    loop = asyncio.get_running_loop()

    def transcribe(pcm: npt.NDArray[np.float32]) -> str:
        future = asyncio.run_coroutine_threadsafe(local_transcriber.transcribe(pcm, language="en"), loop)
        return future.result(timeout=60).text

    async with FakeRealtime(transcribe, api_key=KEY) as fake:
        yield fake


@asynccontextmanager
async def realtime_bridge(
    make_settings: Callable[..., Settings], fake: FakeRealtime, **overrides: Any
) -> AsyncIterator[Running]:
    values: dict[str, Any] = {
        "stt_engine": "openai-realtime",
        "openai_api_key": KEY,
        "openai_base_url": fake.base_url,
        "openai_model": "gpt-4o-transcribe",
        "engine_retry_s": 0.3,
        "partials": "on",
        **overrides,
    }
    async with bridge(make_settings(**values)) as running:
        yield running


async def stream_speech(running: Running) -> tuple[str, str, Any]:
    """The speech fixture streamed as 250 ms PCM frames; the session ended; its stored transcript."""
    session_id, token = await running.session(await running.tenant_key())
    url = socket_url(running.base, session_id, "candidate", token, PCM)
    run = await stream_frames(url, pcm_frames(SPEECH, 250), frame_s=0.25, pace=None)
    text = await running.end_and_read(token, session_id)
    return session_id, text, run


async def bare_model_errors(local_transcriber: Transcriber) -> int:
    """The bundled model on the whole file at once: the figure the bridge must not fall behind."""
    bare = await local_transcriber.transcribe(load_pcm(SPEECH), language="en")
    errors, _ = word_errors(SPEECH_TEXT, bare.text)
    return errors


async def assert_all_processed(running: Running, session_id: str) -> None:
    pending = await running.services.store.list_chunks(session_id, "candidate", pending_only=True)
    assert pending == []


async def https_speech(running: Running, seconds: float = 2.0) -> tuple[str, str]:
    """The speech fixture as process-audio chunks of `seconds`; the session ended; its stored transcript."""
    session_id, token = await running.session(await running.tenant_key())
    headers = {"Authorization": f"Bearer {token}"}
    for sequence, chunk in enumerate(wav_chunks(load_pcm(SPEECH), seconds)):
        body = chunk_body(session_id, "candidate", sequence, chunk, "audio/wav")
        assert (await running.http.post("/functions/v1/process-audio", json=body, headers=headers)).status_code == 200
    return session_id, await running.end_and_read(token, session_id)


@pytest.mark.parametrize("ingest", ["socket", "https", "one-chunk"])
async def test_speech_is_transcribed_by_openai_realtime(
    make_settings: Callable[..., Settings], upstream: FakeRealtime, local_transcriber: Transcriber, ingest: str
) -> None:
    """Speech streamed through the socket, or sent as process-audio chunks, goes up one Realtime transcription
    session per speaker (the transcription intent, the model from OPENAI_MODEL, 24 kHz PCM, server VAD); deltas
    come back as partials, completed items as entries at their place in the stream, and the transcript is as good
    as the bare model's. Sent as one chunk, both sentences start in it: they share one entry, none is lost."""
    async with realtime_bridge(make_settings, upstream) as running:
        health = (await running.http.get("/health")).json()
        if ingest == "socket":
            session_id, text, run = await stream_speech(running)
            assert run.partials > 0 and run.entries
        else:
            session_id, text = await https_speech(running, 2.0 if ingest == "https" else 60.0)
        await assert_all_processed(running, session_id)
        entries = await running.services.store.list_entries(session_id)
    errors, words = word_errors(SPEECH_TEXT, text)
    bare = await bare_model_errors(local_transcriber)
    print(f"openai-realtime over {ingest}: {errors}/{words} word errors; the bare model {bare}/{words}")
    assert health["engine"] == "openai-realtime"
    assert errors <= bare + 1
    assert len(entries) >= (1 if ingest == "one-chunk" else 2)  # two sentences, cut by the server's VAD
    assert all(e.engine == "openai-realtime" for e in entries)
    assert [e.first_sequence for e in entries] == sorted(e.first_sequence for e in entries)
    assert all(e.first_sequence <= e.last_sequence and e.start_ms < e.end_ms for e in entries)
    first = upstream.connections[0]
    assert first.query.get("intent") == "transcription"
    assert first.authorization == f"Bearer {KEY}"
    audio_in = first.session["audio"]["input"]
    assert first.session["type"] == "transcription"
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["transcription"]["model"] == "gpt-4o-transcribe"
    assert audio_in["turn_detection"]["type"] == "server_vad"


@pytest.mark.parametrize("fault", ["drop", "rate_limit_event", "failed_item"])
async def test_an_upstream_fault_mid_speech_is_resumed_from_the_store(
    make_settings: Callable[..., Settings], upstream: FakeRealtime, local_transcriber: Transcriber, fault: str
) -> None:
    """The connection dropped at 3 s, an `error` event for the rate limit, or an item whose transcription failed:
    the bridge opens a new connection and sends again the audio no entry covers yet, so the transcript has
    every word once and every chunk ends up processed."""
    if fault == "drop":
        upstream.drop_after(3_000)
    elif fault == "rate_limit_event":
        upstream.rate_limit_after(3_000)
    else:
        upstream.fail_next_item()
    async with realtime_bridge(make_settings, upstream) as running:
        session_id, text, _ = await stream_speech(running)
        await assert_all_processed(running, session_id)
        entries = await running.services.store.list_entries(session_id)
    errors, words = word_errors(SPEECH_TEXT, text)
    bare = await bare_model_errors(local_transcriber)
    print(f"{fault}: {len(upstream.connections)} connections, {errors}/{words} word errors (bare model {bare})")
    assert len(upstream.connections) >= 2
    assert upstream.connections[1].audio_ms > 0  # the second connection was sent audio again
    assert errors <= bare + 1  # nothing lost, nothing twice
    assert len({e.first_sequence for e in entries}) == len(entries)


@pytest.mark.parametrize("status", [429, 503])
async def test_a_refused_connection_keeps_the_audio_pending_until_the_server_takes_it(
    make_settings: Callable[..., Settings], upstream: FakeRealtime, local_transcriber: Transcriber, status: int
) -> None:
    """A handshake refused with 429 (Retry-After) or 503, twice: chunks are stored and answered, then transcribed
    once a connection is accepted."""
    upstream.refuse_next(status, retry_after=1, times=2)
    async with realtime_bridge(make_settings, upstream) as running:
        session_id, text, _ = await stream_speech(running)
        await assert_all_processed(running, session_id)
    errors, _ = word_errors(SPEECH_TEXT, text)
    assert upstream.refused == 2
    assert errors <= await bare_model_errors(local_transcriber) + 1


async def test_a_rejected_key_keeps_every_chunk_pending_and_answers_queued(
    make_settings: Callable[..., Settings], upstream: FakeRealtime
) -> None:
    """With a key the server rejects (401), chunks are still stored and acknowledged, later ones `queued`, and
    none is marked processed: nothing is lost while the key is wrong."""
    async with realtime_bridge(make_settings, upstream, openai_api_key="sk-wrong") as running:
        session_id, token = await running.session(await running.tenant_key())
        headers = {"Authorization": f"Bearer {token}"}
        statuses: list[str] = []
        for sequence, chunk in enumerate(wav_chunks(load_pcm(SPEECH), 2.0)):
            body = chunk_body(session_id, "candidate", sequence, chunk, "audio/wav")
            answer = await running.http.post("/functions/v1/process-audio", json=body, headers=headers)
            assert answer.status_code == 200
            statuses.append(answer.json()["status"])
            await asyncio.sleep(0.2)
        pending = await running.services.store.list_chunks(session_id, "candidate", pending_only=True)
        entries = await running.services.store.list_entries(session_id)
    assert upstream.refused >= 1 and upstream.connections == []
    assert statuses[0] == "accepted" and statuses[-1] == "queued"
    assert len(pending) == len(statuses) and entries == []


async def test_one_utterance_is_transcribed_over_its_own_connection_with_the_vad_off(
    upstream: FakeRealtime, local_transcriber: Transcriber
) -> None:
    """`transcribe()` (late chunks, the CLI) sends one utterance with turn detection off and commits it; audio
    shorter than 0.1 s is not sent at all."""
    engine = RealtimeTranscriber(KEY, model="gpt-4o-mini-transcribe", base_url=upstream.base_url)
    try:
        result = await engine.transcribe(load_pcm(SPEECH), language="en")
        empty = await engine.transcribe(np.zeros(800, dtype=np.float32))
    finally:
        await engine.close()
    errors, _ = word_errors(SPEECH_TEXT, result.text)
    assert errors <= await bare_model_errors(local_transcriber) + 1
    assert empty.text == ""
    assert len(upstream.connections) == 1
    assert upstream.connections[0].session["audio"]["input"]["turn_detection"] is None
