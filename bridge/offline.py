"""`interview-bridge transcribe`: push files through the very same live path, in-process, as a browser would.

Each file becomes standalone 16 kHz WAV chunks (`chunk_seconds` long; 0 sends the whole file as one chunk),
posted through process_audio in order for one speaker of a throwaway session, which is then ended (flush).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functions.process_audio.models import ProcessAudioRequest
from functions.process_audio.service import process_audio
from shared.audio.decode import decode_chunk
from shared.audio.formats import inspect_chunk
from shared.credentials import hash_api_key, new_api_key
from shared.errors import BridgeError
from shared.models import Session, SessionStatus, Tenant, TranscriptEntry, utcnow
from shared.stt.base import SAMPLE_RATE, Pcm
from shared.stt.wavio import wav_bytes

if TYPE_CHECKING:
    from bridge.services import Services

SPEAKER = "speaker"


def split_chunks(pcm: Pcm, chunk_seconds: float) -> list[Pcm]:
    if chunk_seconds <= 0:
        return [pcm]
    step = int(chunk_seconds * SAMPLE_RATE)
    return [pcm[i : i + step] for i in range(0, len(pcm), step)] or [pcm]


@dataclass
class FileResult:
    file: str
    text: str = ""
    entries: list[TranscriptEntry] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "text": self.text, "entries": [e.to_json() for e in self.entries]}


async def ensure_tenant(services: Services) -> Tenant:
    tenant = Tenant(id=str(uuid.uuid4()), name="transcribe-cli", created_at=utcnow())
    await services.store.create_tenant(tenant, hash_api_key(new_api_key()))
    return tenant


async def transcribe_file(services: Services, tenant: Tenant, path: Path, chunk_seconds: float) -> FileResult:
    result = FileResult(file=str(path))
    try:
        data = await asyncio.to_thread(path.read_bytes)
        pcm = await asyncio.to_thread(lambda: decode_chunk(data, inspect_chunk(data, None)))
    except (OSError, BridgeError) as exc:
        result.error = getattr(exc, "detail", None) or str(exc)
        return result
    session = Session.new(tenant.id, speakers=(SPEAKER,), metadata={"file": path.name})
    await services.store.create_session(session)
    for sequence, piece in enumerate(split_chunks(pcm, chunk_seconds)):
        request = ProcessAudioRequest(
            session_id=session.id,
            audio_chunk=base64.b64encode(wav_bytes(piece)).decode("ascii"),
            speaker=SPEAKER,
            sequence_number=sequence,
            mime_type="audio/wav",
        )
        await process_audio(request, session, services.live)
    await services.transcriber.wait_ready()
    await services.closer.end(session, SessionStatus.ENDED, utcnow())
    result.entries = await services.store.list_entries(session.id)
    result.text = " ".join(e.text for e in result.entries).strip()
    return result
