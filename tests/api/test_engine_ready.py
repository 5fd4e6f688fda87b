"""Before the local model is loaded, chunks are stored and `queued`; once it is ready they are processed unasked."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from shared.stt.base import Transcriber
from tests.conftest import KeepOpen
from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, services, wav_chunks


class StillLoading(KeepOpen):
    """The session's real local engine, reported as not loaded until the test says the load finished."""

    def __init__(self, inner: Transcriber) -> None:
        super().__init__(inner)
        self.loaded = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.loaded.is_set()

    async def start(self) -> None:
        return None

    async def wait_ready(self) -> None:
        await self.loaded.wait()


async def test_chunks_wait_for_the_model_then_are_transcribed(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """/health says not ready and chunks answer `queued`; when the model is ready, pending chunks become entries in
    order without waiting for the session to end."""
    engine = StillLoading(local_transcriber)
    chunks = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))
    async with app_client(transcriber=engine, stt_engine="local", partials="off") as client:
        assert (await client.get("/health")).json()["ready"] is False
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, chunk in enumerate(chunks):
            response = await post_chunk(client, token, session_id, "candidate", seq, chunk)
            assert response.json()["status"] == "queued"
        engine.loaded.set()
        entries: list[dict[str, Any]] = []
        for _ in range(100):
            await asyncio.sleep(0.1)
            entries = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))).json()["entries"]
            if len(entries) == 2:
                break
        assert (await client.get("/health")).json()["ready"] is True
        session = (await client.get(f"/sessions/{session_id}", headers=bearer(token))).json()
    assert session["status"] == "active"
    assert [e["first_sequence"] for e in entries] == [0, 3]
    assert "engineer" in entries[0]["text"].lower()


async def test_a_queued_backlog_flushed_at_end_is_still_cut_at_its_pauses(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """Chunks queued before the model was ready and flushed by the session's end become one entry per sentence,
    not one per chunk: flushing absorbs the backlog like live audio and only finishes what is left."""
    engine = StillLoading(local_transcriber)
    chunks = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))
    async with app_client(transcriber=engine, stt_engine="local", partials="off") as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, chunk in enumerate(chunks):
            await post_chunk(client, token, session_id, "candidate", seq, chunk)
        live = services(client)
        session = await live.store.get_session(session_id, None)
        assert session is not None
        engine.loaded.set()
        await live.live.flush_session(session)  # takes the speaker's lock before the background resume can
        entries = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))).json()["entries"]
    assert [e["first_sequence"] for e in entries] == [0, 3]
