"""process_audio as a plain service function: typed request in, typed result out, no web framework."""

from __future__ import annotations

from typing import Any

from functions.process_audio.live import ChunkResult, LivePath
from functions.process_audio.models import ProcessAudioRequest, decode_audio_field
from functions.validation import check_declared_speaker
from shared.models import Session


async def process_audio(
    request: ProcessAudioRequest, session: Session, live: LivePath, *, closing: bool = False
) -> ChunkResult:
    """Store one chunk of `session` (already authorised and checked open for writes by the caller, `closing`
    when it is one of the late ones after `end`) and return what it produced."""
    check_declared_speaker(session.speakers, request.speaker)
    data = decode_audio_field(request.audio_chunk)
    return await live.accept(
        session,
        request.speaker,
        request.sequence_number,
        data,
        request.mime_type,
        wait_ms=request.wait_ms,
        closing=closing,
    )


def result_json(result: ChunkResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "sequence_number": result.sequence_number,
        "entries": [entry.to_json() for entry in result.entries],
        "partial": result.partial,
    }
