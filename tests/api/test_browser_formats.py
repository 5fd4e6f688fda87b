"""What a browser's MediaRecorder really sends (recorded by Chromium) becomes a transcript."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.stt.base import Transcriber
from shared.stt.wer import wer
from tests.helpers import FIXTURES, bearer, new_session, new_tenant, post_chunk

AUDIO = FIXTURES / "audio"
PHRASE = (AUDIO / "phrase.txt").read_text().strip()
RECORDED = f"{PHRASE} {PHRASE}"  # the recording holds the phrase, a pause, the phrase again


def recorder_chunks(prefix: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted(AUDIO.glob(f"{prefix}_*"))]


@pytest.mark.parametrize(
    ("prefix", "mime", "order"),
    [
        pytest.param("webm_chunk", "audio/webm;codecs=opus", [0, 1, 2, 3, 4], id="webm-in-order"),
        pytest.param("webm_chunk", "audio/webm;codecs=opus", [2, 4, 0, 3, 1], id="webm-shuffled"),
        pytest.param("mp4_chunk", "audio/mp4", [0, 1, 2, 3, 4], id="mp4-in-order"),
        pytest.param("webm_chunk", None, [0, 1, 2, 3, 4], id="webm-no-mime"),
    ],
)
async def test_mediarecorder_chunks_become_a_transcript(
    app_client: Callable[..., Any], local_transcriber: Transcriber, prefix: str, mime: str | None, order: list[int]
) -> None:
    """Timeslice chunks (only the first has the container header) decode with that header, in any arrival order."""
    chunks = recorder_chunks(prefix)
    assert len(chunks) == 5
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq in order:
            response = await post_chunk(client, token, session_id, "candidate", seq, chunks[seq], mime=mime)
            assert response.status_code == 200, response.text
            assert response.json()["status"] in ("accepted", "skipped")
        await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        transcript = await client.get(f"/sessions/{session_id}/transcript?format=text", headers=bearer(token))
    said = " ".join(line.split(": ", 1)[1] for line in transcript.text.splitlines())
    assert wer(RECORDED, said) <= 0.2, said


async def test_reloaded_page_starts_a_new_stream(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """After a reload the recorder's new first chunk (a new container header) replaces the stored one: the page
    resumes at next_sequence and its continuation chunks decode with the new header, not the old one."""
    first, second = recorder_chunks("mp4_chunk"), recorder_chunks("webm_chunk")
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, chunk in enumerate(first):
            await post_chunk(client, token, session_id, "candidate", seq, chunk, mime="audio/mp4")
        resume = (await client.get(f"/sessions/{session_id}", headers=bearer(token))).json()["next_sequence"]
        assert resume == {"candidate": len(first)}
        for offset, chunk in enumerate(second):
            response = await post_chunk(
                client, token, session_id, "candidate", resume["candidate"] + offset, chunk, mime="audio/webm"
            )
            assert response.status_code == 200, response.text
        await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        entries = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))).json()["entries"]
    said = " ".join(e["text"] for e in entries).lower()
    # The first recording stops mid-phrase and the second starts at once, so Whisper may merge that seam; the
    # second recording's last continuation chunks are only readable with its own header.
    assert said.count("ready to start") >= 3, said
    assert max(e["last_sequence"] for e in entries) == len(first) + len(second) - 1


async def test_another_process_decodes_stored_continuations(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """WebM chunks stored by one process (its engine down) are decoded by the next one on the same data, which has
    no cached header and finds it through the stream state in the store."""
    chunks = recorder_chunks("webm_chunk")
    down = {"stt_engine": "openai", "openai_api_key": "sk-test", "openai_base_url": "http://127.0.0.1:9/v1"}
    async with app_client(**down) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, chunk in enumerate(chunks):
            response = await post_chunk(client, token, session_id, "candidate", seq, chunk, mime="audio/webm")
            assert response.json()["status"] in ("queued", "accepted")
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        transcript = await client.get(f"/sessions/{session_id}/transcript?format=text", headers=bearer(token))
    said = " ".join(line.split(": ", 1)[1] for line in transcript.text.splitlines())
    assert wer(RECORDED, said) <= 0.2, said
