"""A session created with `speakers` takes audio and entries from those speakers only, on every way in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bridge.stream_client import StreamRefused, socket_url, stream_frames
from shared.settings import Settings
from shared.stt.wavio import wav_bytes
from tests.api.test_bad_input import assert_refused
from tests.helpers import bearer, chunk_body, new_session, new_tenant, row_counts
from tests.test_stream_socket import PCM, bridge

QUIET_WAV = wav_bytes(np.zeros(16_000, dtype=np.float32))


def entry_body(session_id: str, speaker: str) -> dict[str, Any]:
    return {"session_id": session_id, "speaker": speaker, "sequence_number": 0, "text": "Hello there."}


async def test_a_chunk_or_entry_from_an_undeclared_speaker_is_refused_and_changes_nothing(
    app_client: Callable[..., Any],
) -> None:
    """With `speakers: [interviewer, candidate]`, a chunk or an entry from `observer` is 400 `invalid_request`
    naming the declared speakers, and nothing is stored; the same from `candidate` is taken."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key, speakers=["interviewer", "candidate"])
        before = row_counts(client)
        chunk = await client.post(
            "/functions/v1/process-audio", json=chunk_body(session_id, "observer", 0, QUIET_WAV), headers=bearer(token)
        )
        await assert_refused(client, chunk, 400, "invalid_request", before)
        assert "'interviewer', 'candidate'" in chunk.json()["detail"]
        entry = await client.post(
            "/functions/v1/transcript-bridge", json=entry_body(session_id, "observer"), headers=bearer(token)
        )
        await assert_refused(client, entry, 400, "invalid_request", before)
        declared_chunk = await client.post(
            "/functions/v1/process-audio", json=chunk_body(session_id, "candidate", 0, QUIET_WAV), headers=bearer(token)
        )
        declared_entry = await client.post(
            "/functions/v1/transcript-bridge", json=entry_body(session_id, "candidate"), headers=bearer(token)
        )
    assert declared_chunk.status_code == 200 and declared_entry.status_code == 200


async def test_a_session_without_declared_speakers_takes_any_speaker(app_client: Callable[..., Any]) -> None:
    """No `speakers` at creation: chunks from any speaker name are taken."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        answers = [
            await client.post(
                "/functions/v1/process-audio", json=chunk_body(session_id, name, 0, QUIET_WAV), headers=bearer(token)
            )
            for name in ("observer", "guest")
        ]
    assert [answer.status_code for answer in answers] == [200, 200]


async def test_a_stream_for_an_undeclared_speaker_is_refused_with_4400(make_settings: Callable[..., Settings]) -> None:
    """The streaming socket applies the same rule before `ready`: 4400 `invalid_request`, nothing stored."""
    async with bridge(make_settings()) as running:
        key = await running.tenant_key()
        session_id, token = await running.session(key, speakers=["candidate"])
        with pytest.raises(StreamRefused) as refused:
            await stream_frames(
                socket_url(running.base, session_id, "observer", token, PCM), [b"\0\0" * 4000], frame_s=0.25
            )
        session = await running.http.get(f"/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"})
    assert (refused.value.code, refused.value.error.get("error")) == (4400, "invalid_request")
    assert session.json()["next_sequence"] == {}
