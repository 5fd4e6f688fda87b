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
