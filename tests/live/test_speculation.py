"""A streamed speaker's engine time goes where the latency is: the utterance is decoded while its closing pause is
still running (that decode becomes the final only when the pause really ended it), and drafts are rationed."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.process_audio.live import LiveConfig, LivePath
from shared.credentials import hash_api_key, new_api_key
from shared.models import Session, Tenant, TranscriptEntry, utcnow
from shared.store.sqlite import SQLiteStore
from shared.stt.base import Pcm, ReadyAtOnce, Transcriber, Transcription
from shared.stt.simulate import SimulatedTranscriber
from shared.stt.wavio import wav_bytes
from shared.stt.wer import word_errors
from tests.helpers import FIXTURES, load_pcm

PHRASE = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
PHRASE_TEXT = (FIXTURES / "audio" / "phrase.txt").read_text(encoding="utf-8").strip()
FRAME = 1_600  # 100 ms frames, as the streaming socket takes them


def room_noise(ms: int) -> Pcm:
    """A quiet room between words (about -70 dBFS), not digital silence."""
    return (np.random.default_rng(ms).standard_normal(ms * 16) * 10 ** (-70 / 20)).astype(np.float32)


@dataclass
class Calls:
    """Each engine call with the frame the bridge had taken last when it began."""

    frame: int = -1
    finals: list[int] = field(default_factory=list)  # the frame at the start of each non-draft call


class Recorded(ReadyAtOnce):
    """The bundled model, with every call noted against the frames taken so far."""

    def __init__(self, inner: Transcriber, calls: Calls) -> None:
        self.inner, self.calls = inner, calls
        self.name, self.partials_by_default = inner.name, inner.partials_by_default

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Transcription:
        if not draft:
            self.calls.finals.append(self.calls.frame)
        return await self.inner.transcribe(pcm, language=language, prompt=prompt, draft=draft)

    async def close(self) -> None:
        return None


class Quiet:
    async def start(self) -> None:
        return None

    async def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    backend = SQLiteStore(tmp_path / "bridge.sqlite3")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def stream(live: LivePath, store: SQLiteStore, calls: Calls, audio: Pcm) -> list[tuple[int, TranscriptEntry]]:
    """`audio` streamed as 100 ms frames, each taken to the end of its run: (frame, entry) for every entry made."""
    tenant = Tenant(id=str(uuid.uuid4()), name="t", created_at=utcnow())
    await store.create_tenant(tenant, hash_api_key(new_api_key()))
    session = Session.new(tenant.id, language="en")
    await store.create_session(session)
    made: list[tuple[int, TranscriptEntry]] = []
    for frame, start in enumerate(range(0, len(audio), FRAME)):
        calls.frame = frame
        data = wav_bytes(audio[start : start + FRAME])
        result = await live.accept(session, "a", frame, data, "audio/wav", wait_ms=5_000, streaming=True)
        made.extend((frame, entry) for entry in result.entries)
    await live.close()
    return made


def pause_ends_at(speech_ms: int, pause_ms: int) -> int:
    """The frame by which `pause_ms` of quiet after `speech_ms` of audio has been taken."""
    return (speech_ms + pause_ms) // 100


async def test_the_final_is_decoded_during_the_pause_that_ends_it(
    store: SQLiteStore, local_transcriber: Transcriber
) -> None:
    """Speech, then a pause: the final's decode began before the 0.5 s pause was complete, no decode began once
    it was, and the line is what the model hears in the phrase."""
    calls = Calls()
    live = LivePath(store, Recorded(local_transcriber, calls), Quiet(), config=LiveConfig(partials=False))
    audio = np.concatenate([PHRASE, room_noise(1_500)])
    made = await stream(live, store, calls, audio)
    assert len(made) == 1
    frame, entry = made[0]
    errors, _ = word_errors(PHRASE_TEXT, entry.text)
    assert errors <= 1
    assert live.assembly.speculations_used == 1
    assert calls.finals and max(calls.finals) < frame  # the final was ready when the pause ended it
    assert frame <= pause_ends_at(len(PHRASE) // 16, 900)


async def test_a_decode_begun_in_a_pause_that_speech_resumed_after_is_not_the_final(
    store: SQLiteStore, local_transcriber: Transcriber
) -> None:
    """Speech, a 300 ms pause, more speech, then a real pause: the line holds both parts, because the decode begun
    during the short pause did not stand for the utterance."""
    calls = Calls()
    live = LivePath(store, Recorded(local_transcriber, calls), Quiet(), config=LiveConfig(partials=False))
    audio = np.concatenate([PHRASE, room_noise(300), PHRASE, room_noise(1_500)])
    made = await stream(live, store, calls, audio)
    text = " ".join(entry.text for _, entry in made)
    errors, _ = word_errors(f"{PHRASE_TEXT} {PHRASE_TEXT}", text)
    assert errors <= 2
    assert live.assembly.speculations_used == len(made)
    assert len(calls.finals) > len(made)  # the short pause's decode was made, and not used


async def test_a_streamed_speaker_gets_a_draft_at_most_every_half_second(store: SQLiteStore) -> None:
    """Frames of 100 ms coming in while someone speaks, to an engine that answers at once: partial drafts begin
    at least 0.5 s apart (small frames would otherwise keep the engine busy with drafts), and there are some."""
    starts: list[float] = []

    class Drafts(Recorded):
        async def transcribe(
            self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
        ) -> Transcription:
            if draft:
                starts.append(time.monotonic())
            return await super().transcribe(pcm, language=language, prompt=prompt, draft=draft)

    live = LivePath(store, Drafts(SimulatedTranscriber(), Calls()), Quiet(), config=LiveConfig(partials=True))
    tenant = Tenant(id=str(uuid.uuid4()), name="t", created_at=utcnow())
    await store.create_tenant(tenant, hash_api_key(new_api_key()))
    session = Session.new(tenant.id, language="en")
    await store.create_session(session)
    speech = np.concatenate([PHRASE, PHRASE])
    for frame, start in enumerate(range(0, len(speech), FRAME)):
        await live.accept(session, "a", frame, wav_bytes(speech[start : start + FRAME]), "audio/wav", streaming=True)
        await asyncio.sleep(0.05)
    await live.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(starts) >= 2
    assert min(gaps) >= 0.5
