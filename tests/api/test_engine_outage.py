"""An engine outage loses nothing: chunks are stored, answered `queued`, and transcribed when it recovers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import respx

from shared.stt.openai_engine import OpenAITranscriber
from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, wav_chunks
from tests.stt.test_openai import API, KEY, VERBOSE_JSON

FIRST_SENTENCE: dict[str, Any] = {
    **VERBOSE_JSON,
    "text": "Another engineer rushed toward the door.",
    "segments": [{**VERBOSE_JSON["segments"][0], "text": " Another engineer rushed toward the door."}],
}
SERVER_ERROR = {
    "error": {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


async def test_engine_outage_is_queued_then_recovered(app_client: Callable[..., Any]) -> None:
    """With the OpenAI API answering 500, a chunk is `queued`; once it answers again the entry appears unasked."""
    whole = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"), 0)[0]  # two sentences: two engine calls
    with respx.mock(base_url=API, assert_all_mocked=True) as api:
        route = api.post("/audio/transcriptions")
        route.side_effect = [
            httpx.Response(500, json=SERVER_ERROR),
            httpx.Response(200, json=FIRST_SENTENCE),
            httpx.Response(200, json=VERBOSE_JSON),
        ]
        engine = OpenAITranscriber(KEY, max_retries=0)
        async with app_client(transcriber=engine, stt_engine="openai", engine_retry_s=0.2) as client:
            _, key = await new_tenant(client)
            session_id, token = await new_session(client, key)
            response = await post_chunk(client, token, session_id, "candidate", 0, whole, wait_ms=5000)
            assert response.status_code == 200
            assert response.json()["status"] == "queued"
            entries: list[dict[str, Any]] = []
            for _ in range(50):
                await asyncio.sleep(0.1)
                transcript = await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
                entries = transcript.json()["entries"]
                if entries:
                    break
        await engine.close()
    assert [e["text"] for e in entries] == [
        "Another engineer rushed toward the door. I tell you it is not poison, she cried."
    ]
    assert route.call_count == 3
