"""Partial lines while an utterance is still open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from shared.broadcast.local import LocalHub
from shared.broadcast.vocabulary import session_topic
from shared.stt.base import Transcriber
from tests.helpers import FIXTURES, load_pcm, new_session, new_tenant, post_chunk, services, wav_chunks

SPEECH = FIXTURES / "live" / "two_sentences.flac"


async def next_event(subscription: Any, name: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for event, payload in subscription:
            if event == name:
                found: dict[str, Any] = payload
                return found
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(find(), 20.0)


async def watched_session(client: Any) -> tuple[str, str, Any]:
    """A new session, its token, and a subscription to its topic on the local hub."""
    _, key = await new_tenant(client)
    session_id, token = await new_session(client, key)
    hub = services(client).broadcaster
    assert isinstance(hub, LocalHub)
    return session_id, token, hub.subscribe(session_topic(session_id))


async def test_local_engine_broadcasts_partials_before_the_final(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """With the local engine, subscribers see a transcript_partial of an utterance before it is final."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client(transcriber=local_transcriber, stt_engine="local") as client:
        session_id, token, subscription = await watched_session(client)
        for seq in (0, 1):
            response = await post_chunk(client, token, session_id, "candidate", seq, chunks[seq])
            assert response.json()["entries"] == []
        partial = await next_event(subscription, "transcript_partial")
        assert partial["session_id"] == session_id
        assert partial["speaker"] == "candidate"
        assert "engineer" in partial["text"].lower()
        assert partial["through_sequence"] in (0, 1)
        subscription.close()


async def test_partials_are_off_when_asked(app_client: Callable[..., Any], local_transcriber: Transcriber) -> None:
    """PARTIALS=off spends no engine call on an open utterance."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq in (0, 1):
            await post_chunk(client, token, session_id, "candidate", seq, chunks[seq])
        await asyncio.sleep(0.5)
        assert services(client).live.engine_calls == 0


async def test_every_chunk_that_extends_an_open_utterance_gets_a_partial(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """Chunks sent at a browser's pace each bring a partial through them, however soon after the last one."""
    chunks = wav_chunks(load_pcm(SPEECH))
    async with app_client(transcriber=local_transcriber, stt_engine="local") as client:
        session_id, token, subscription = await watched_session(client)
        seen: list[int] = []
        for seq in (0, 1):
            response = await post_chunk(client, token, session_id, "candidate", seq, chunks[seq], wait_ms=5000)
            assert response.json()["entries"] == [], "the first sentence is still open"
            partial = await next_event(subscription, "transcript_partial")
            seen.append(partial["through_sequence"])
        subscription.close()
    assert seen == [0, 1]
