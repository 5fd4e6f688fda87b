"""Chunked transcription keeps whole-file quality on real speech (the acceptance bar: within 1.15x)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.offline import ensure_tenant, transcribe_file
from shared.stt.base import Transcriber
from shared.stt.wer import corpus_wer
from tests.helpers import FIXTURES, services

REAL_SPEECH = [
    FIXTURES / "live" / "two_sentences.flac",
    FIXTURES / "stt" / "i_tell_you.wav",
    FIXTURES / "stt" / "testing_routine.wav",
]


async def test_two_second_chunks_match_the_whole_file(
    app_client: Callable[..., Any], local_transcriber: Transcriber
) -> None:
    """`transcribe --chunk-seconds 2` scores within 1.15x of `--chunk-seconds 0` on real speech, with the same model."""
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        live = services(client)
        tenant = await ensure_tenant(live)
        scores = {}
        for chunk_seconds in (0.0, 2.0):
            pairs = []
            for path in REAL_SPEECH:
                reference = Path(path).with_suffix(".txt").read_text(encoding="utf-8").strip()
                result = await transcribe_file(live, tenant, path, chunk_seconds)
                assert result.error is None
                pairs.append((reference, result.text))
            scores[chunk_seconds] = corpus_wer(pairs)
    assert scores[0.0] < 0.1
    assert scores[2.0] <= max(scores[0.0] * 1.15, scores[0.0] + 0.01)
