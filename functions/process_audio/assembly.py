"""Utterance assembly: a speaker's chunks, in sequence order, become final entries cut at real pauses.

Each chunk is absorbed into the open utterance (the speaker's buffer) and the segmenter decides after each one:
drop silence, wait, or finalise the utterance (transcribe it, store it as an entry, broadcast it). Gaps and
chunks that arrive after their gap was skipped are handled here too. The speaker's state comes in as an
argument; where assembly stands is saved to the store with every decision, fenced by the stream's lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from functions.process_audio.audio_thread import off_loop
from functions.process_audio.buffer import SpeakerBuffer
from functions.process_audio.config import LiveConfig
from functions.process_audio.segmenter import SAMPLES_PER_MS, Decision, SegmenterConfig, decide
from functions.process_audio.speaker_audio import SpeakerAudio
from functions.process_audio.speaker_state import SpeakerState, Speculation
from functions.process_audio.utterance import transcribe_utterance
from functions.transcript_bridge.service import deliver_entry
from shared.audio.levels import block_gains, for_engine
from shared.audio.vad import SpeechDetector
from shared.broadcast.base import Broadcaster
from shared.errors import InvalidAudio
from shared.models import EntryWrite, NewEntry, Session, SpeakerStream, StoredChunk, TranscriptEntry, UsageCount
from shared.store.base import Store, StreamLeaseLost
from shared.stt.base import Pcm, Transcriber, Transcription
from shared.stt.filters import clean_transcription

log = logging.getLogger("bridge.live")

LEASE_SECONDS = 15.0  # a crashed worker's streams are taken over after this; renewed before engine calls
TYPICAL_CHUNK_MS = 2000  # what a skipped (missing) chunk counts for on the clock: a browser's usual timeslice
SPECULATE_AFTER_MS = 100  # a streamed speaker's pause this long starts the decode of the utterance
SPECULATION_SLACK_MS = 100  # how far the speech detector may still move the utterance's end
LATE_LOOKBACK_CHUNKS = 256  # a late chunk's place is measured over at most this many chunks, then estimated


def _covers(
    speculation: Speculation, audio: Pcm, speech_ends_at: int, prompt: str | None, language: str | None
) -> bool:
    """A speculation stands for the final decode of `audio` (whose speech ends at sample `speech_ends_at`) when it
    had the same samples through all of that speech, the same length give or take a little silence, and the same
    prompt and language: what it decoded differs from `audio` only in part of the silence after the speech."""
    common = min(len(speculation.heard), len(audio))
    return (
        (speculation.prompt, speculation.language) == (prompt, language)
        and speech_ends_at <= len(speculation.heard)
        and abs(speculation.length - len(audio)) <= SPECULATION_SLACK_MS * SAMPLES_PER_MS
        and bool(np.array_equal(speculation.heard[:common], audio[:common]))
    )


def log_task_failure(task: asyncio.Task[Any]) -> None:
    """A background task nobody awaits (a partial, a closing connection) still reports what went wrong."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a background task failed", exc_info=task.exception())


def _retrieve(task: asyncio.Task[tuple[Transcription, int]]) -> None:
    """A speculation nobody used still has its failure read (it is retried by the final, if one comes)."""
    if not task.cancelled():
        task.exception()


class Assembly:
    """Turns absorbed chunks into entries for whichever speaker's run calls it; holds no per-speaker state."""

    def __init__(
        self,
        store: Store,
        transcriber: Transcriber,
        broadcaster: Broadcaster,
        detector: SpeechDetector,
        audio: SpeakerAudio,
        config: LiveConfig,
        owner: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.transcriber = transcriber
        self.broadcaster = broadcaster
        self.detector = detector
        self.audio = audio
        self.config = config
        self.owner = owner
        self.clock = clock
        self.engine_calls = 0
        self.speculations_used = 0  # finals whose decode began during the pause (streamed speakers)

    async def buffer(self, session: Session, stream: SpeakerStream, state: SpeakerState) -> SpeakerBuffer:
        """The cached open utterance if it matches the stored stream, else one rebuilt from the pending chunks."""
        if state.buffer is not None and state.buffer.version == stream.version:
            return state.buffer
        buffer = SpeakerBuffer(self.detector)
        chunks = await self.store.list_chunks(
            session.id, stream.speaker, from_sequence=stream.buffer_sequence, pending_only=True
        )
        for chunk in chunks:
            if chunk.sequence_number >= stream.next_sequence:
                break
            pcm = await self.audio.pcm(session.id, stream.speaker, chunk.sequence_number, state, stream.header_sequence)
            gains = block_gains(pcm)  # judged on the whole chunk, as when it was first absorbed
            offset = stream.buffer_offset if chunk.sequence_number == stream.buffer_sequence else 0
            await off_loop(buffer.append, chunk.sequence_number, pcm[offset:], gains=gains, offset=offset)
        buffer.version = stream.version
        state.buffer = buffer
        return buffer

    def has_news(self, state: SpeakerState) -> bool:
        """A streaming engine has something for a run without a new chunk (see `RealtimeAssembly`)."""
        return False

    async def resume(self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer) -> None:
        """Before a run takes chunks: nothing to do unless the engine streams (see `RealtimeAssembly`)."""

    async def heard(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer, pcm: Pcm
    ) -> None:
        """A chunk's audio joined the open utterance: nothing to do unless the engine streams."""

    async def absorb(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer, chunk: StoredChunk
    ) -> list[TranscriptEntry]:
        """Take the next chunk into the open utterance and let the segmenter decide.

        Never a final decision, even while flushing: a backlog absorbed at `end` is cut at its pauses like live
        audio, and only what is left after the last chunk is flushed as one utterance (by the caller).
        """
        sequence = chunk.sequence_number
        try:
            pcm = await self.audio.pcm(session.id, stream.speaker, sequence, state, stream.header_sequence)
        except InvalidAudio as exc:
            log.warning("chunk %s/%s/%d cannot be decoded (%s); skipped", session.id, stream.speaker, sequence, exc)
            pcm = np.zeros(0, dtype=np.float32)
        if stream.next_sequence == 0 or (buffer.total == 0 and stream.buffer_start_ms == 0):
            # The speaker's first audio: place it on the session's clock by when it arrived.
            arrived_ms = int((chunk.received_at - session.created_at).total_seconds() * 1000)
            stream.buffer_start_ms = max(0, arrived_ms - len(pcm) // SAMPLES_PER_MS)
        if chunk.starts_stream:
            stream.header_sequence = sequence
        stream.next_sequence = sequence + 1
        stream.gap_since = None
        if buffer.total == 0:
            stream.buffer_sequence, stream.buffer_offset = sequence, 0
        done: list[int] = []
        if len(pcm):  # levels and the speech model, off the event loop
            await off_loop(buffer.append, sequence, pcm)
            await self.heard(session, stream, state, buffer, pcm)
        else:
            done.append(sequence)
            if buffer.total == 0:
                stream.buffer_sequence = sequence + 1
        audio_ms = len(pcm) // SAMPLES_PER_MS  # counted with the progress past this chunk, in its transaction
        return await self.cut(session, stream, state, buffer, final=False, extra_done=done, audio_ms=audio_ms)

    async def cut(
        self,
        session: Session,
        stream: SpeakerStream,
        state: SpeakerState,
        buffer: SpeakerBuffer,
        *,
        final: bool,
        extra_done: list[int] | None = None,
        audio_ms: int = 0,
    ) -> list[TranscriptEntry]:
        """Apply the segmenter's decision: drop silence, finalise a finished utterance, save the stream (with
        the usage of this step: `audio_ms` taken in, the engine time of the utterance)."""
        done = list(extra_done or [])
        config = self.config.stream_segmenter if state.streaming else self.config.segmenter
        decision = decide(buffer.total, buffer.regions(), buffer.chunk_starts, final=final, config=config)
        entry, engine_ms, engine_calls = await self.finalise_utterance(session, stream, state, buffer, decision)
        consume = decision.cut if decision.cut is not None else decision.drop
        if consume:
            await self._consume(stream, buffer, consume, done)
        usage = None
        if audio_ms or engine_calls:
            usage = UsageCount(session.tenant_id, self.clock().date(), audio_ms, engine_ms, engine_calls)
        write = await self.save(stream, state, buffer, done=done, entry=entry, usage=usage)
        if decision.cut is None and state.streaming and self.config.speculate:
            await self._speculate(session, stream, state, buffer, config)
        if write is not None:
            await deliver_entry(write, self.broadcaster)
            return [write.entry]
        return []

    async def _speculate(
        self,
        session: Session,
        stream: SpeakerStream,
        state: SpeakerState,
        buffer: SpeakerBuffer,
        config: SegmenterConfig,
    ) -> None:
        """A streamed speaker has just paused, not yet long enough to end the utterance: decode it now, so that if
        the pause does end it, the final is ready instead of just starting (the decode is most of its delay)."""
        regions = buffer.regions()
        trailing = buffer.total - regions[-1][1] if regions else 0
        if not regions or not SPECULATE_AFTER_MS * SAMPLES_PER_MS <= trailing < config.min_pause_ms * SAMPLES_PER_MS:
            return
        drop = max(0, regions[0][0] - config.lead_pad_ms * SAMPLES_PER_MS)
        length = regions[-1][1] + config.tail_pad_ms * SAMPLES_PER_MS - drop  # the final's, if the pause holds
        heard = buffer.pcm[drop : drop + length]
        prompt = await self._context(session, stream.speaker, state)
        if state.speculation is not None:
            if _covers(state.speculation, heard, regions[-1][1] - drop, prompt, session.language):
                return
            state.speculation.task.cancel()
        heard = heard.copy()
        # The tail not yet recorded is taken as silence: the final will only use this if it was.
        audio = np.concatenate([heard, np.zeros(length - len(heard), dtype=np.float32)])
        shifted = [(s - drop, e - drop) for s, e in regions]
        task = asyncio.create_task(
            transcribe_utterance(
                self.transcriber, audio, shifted, language=session.language, prompt=prompt, config=self.config.segmenter
            )
        )
        task.add_done_callback(_retrieve)
        state.speculation = Speculation(heard, length, prompt, session.language, task)

    async def _speculated(
        self, state: SpeakerState, audio: Pcm, speech_ends_at: int, prompt: str | None, language: str | None
    ) -> tuple[Transcription, int] | None:
        """The decode started during the pause, if it was of this utterance."""
        speculation, state.speculation = state.speculation, None
        if speculation is None:
            return None
        if not _covers(speculation, audio, speech_ends_at, prompt, language):
            speculation.task.cancel()
            return None
        self.speculations_used += 1
        return await speculation.task

    async def finalise_utterance(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer, decision: Decision
    ) -> tuple[NewEntry | None, int, int]:
        """A finished utterance's speech, transcribed with the speaker's recent text as the prompt: the entry to
        store (None when the segmenter cut nothing or the engine heard no words), the audio ms sent to the
        engine and its calls."""
        if decision.cut is None or decision.speech_end is None or decision.speech_end <= decision.drop:
            return None, 0, 0
        audio = buffer.pcm[decision.drop : decision.speech_end]
        await self.keep_lease(stream)
        prompt = await self._context(session, stream.speaker, state)
        regions = [(s - decision.drop, e - decision.drop) for s, e in buffer.regions()]
        calls_before = self.engine_calls
        speech_ends_at = max((min(e, len(audio)) for s, e in regions if s < len(audio)), default=len(audio))
        speculated = await self._speculated(state, audio, speech_ends_at, prompt, session.language)
        if speculated is not None:
            transcription, made = speculated
            self.engine_calls += made
        else:
            transcription = await self._transcribe_final(audio, regions, session.language, prompt)
        engine_ms, calls = len(audio) // SAMPLES_PER_MS, self.engine_calls - calls_before
        if not transcription.text:
            return None, engine_ms, calls
        self._remember(state, transcription.text)
        entry = self._entry(
            session,
            stream.speaker,
            (
                buffer.sequence_at(decision.drop),
                buffer.sequence_at(max(decision.drop, decision.speech_end - 1)),
            ),
            transcription,
            start_ms=stream.buffer_start_ms + decision.drop // SAMPLES_PER_MS,
            end_ms=stream.buffer_start_ms + decision.speech_end // SAMPLES_PER_MS,
        )
        return entry, engine_ms, calls

    async def keep_lease(self, stream: SpeakerStream) -> None:
        """Extend the lease before a slow engine call; a stream taken meanwhile stops this run (fenced anyway)."""
        current = await self.store.claim_stream(
            stream.session_id, stream.speaker, self.owner, LEASE_SECONDS, self.clock()
        )
        if current is None or current.version != stream.version:
            raise StreamLeaseLost(f"stream {stream.session_id}/{stream.speaker} was taken over")

    async def _consume(self, stream: SpeakerStream, buffer: SpeakerBuffer, samples: int, done: list[int]) -> None:
        old_first = stream.buffer_sequence
        gone, first, offset = await off_loop(buffer.consume, samples)
        done.extend(gone)
        stream.buffer_start_ms += samples // SAMPLES_PER_MS
        if first is None:
            stream.buffer_sequence, stream.buffer_offset = stream.next_sequence, 0
        elif first == old_first:
            stream.buffer_offset += offset
        else:
            stream.buffer_sequence, stream.buffer_offset = first, offset

    async def save(
        self,
        stream: SpeakerStream,
        state: SpeakerState,
        buffer: SpeakerBuffer | None,
        *,
        done: list[int] | None = None,
        entry: NewEntry | None = None,
        usage: UsageCount | None = None,
    ) -> EntryWrite | None:
        """Where assembly stands, the chunks now done, the new entry and the usage, in one fenced store write."""
        write = await self.store.save_stream(stream, self.owner, done_sequences=done or (), entry=entry, usage=usage)
        if buffer is not None:
            buffer.version = stream.version
        self.audio.forget(state, done or ())
        return write

    async def skip_gap(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer, next_present: int
    ) -> list[TranscriptEntry]:
        """A missing chunk waited long enough (or the session ended): finish what is open, jump past the gap."""
        log.warning(
            "session %s speaker %s: chunks %d..%d missing; skipped",
            session.id,
            stream.speaker,
            stream.next_sequence,
            next_present - 1,
        )
        made = await self.cut(session, stream, state, buffer, final=True) if buffer.total else []
        missing = next_present - stream.next_sequence
        stream.buffer_start_ms += missing * TYPICAL_CHUNK_MS
        stream.next_sequence = stream.buffer_sequence = next_present
        stream.buffer_offset = 0
        stream.gap_since = None
        await self.save(stream, state, buffer)
        return made

    async def late_chunk(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, sequence: int
    ) -> TranscriptEntry | None:
        """A chunk that arrived after its gap was skipped: transcribed on its own, as an entry of its own, at
        its place in the speaker's stream (so exports stay in spoken order), not at its arrival."""
        try:
            pcm = await self.audio.pcm(session.id, stream.speaker, sequence, state, stream.header_sequence)
        except InvalidAudio:
            pcm = np.zeros(0, dtype=np.float32)
        entry: NewEntry | None = None
        if len(pcm):
            single = SpeakerBuffer(self.detector)
            await off_loop(single.append, sequence, pcm)
            regions = single.regions()
            if regions:
                lead = self.config.segmenter.lead_pad_ms * SAMPLES_PER_MS
                tail = self.config.segmenter.tail_pad_ms * SAMPLES_PER_MS
                lo, hi = max(0, regions[0][0] - lead), min(len(pcm), regions[-1][1] + tail)
                shifted = [(s - lo, e - lo) for s, e in regions]
                transcription = await self._transcribe_final(pcm[lo:hi], shifted, session.language)
                if transcription.text:
                    origin = await self._chunk_start_ms(session, stream, state, sequence)
                    start_ms, end_ms = origin + lo // SAMPLES_PER_MS, origin + hi // SAMPLES_PER_MS
                    entry = self._entry(session, stream.speaker, (sequence, sequence), transcription, start_ms, end_ms)
        write = await self.save(stream, state, state.buffer, done=[sequence], entry=entry)
        if write is None:
            return None
        await deliver_entry(write, self.broadcaster)
        return write.entry

    async def _chunk_start_ms(self, session: Session, stream: SpeakerStream, state: SpeakerState, sequence: int) -> int:
        """Where chunk `sequence` (before the open utterance) starts on the session clock: back from the open
        utterance's start by the length of every chunk in between. A chunk never stored counts as the
        `TYPICAL_CHUNK_MS` the gap skip counted it as; so does any chunk beyond `LATE_LOOKBACK_CHUNKS`."""
        position = stream.buffer_start_ms - stream.buffer_offset // SAMPLES_PER_MS
        stored = {c.sequence_number for c in await self.store.list_chunks(session.id, stream.speaker)}
        for earlier in range(stream.buffer_sequence - 1, sequence - 1, -1):
            length_ms = TYPICAL_CHUNK_MS
            if earlier in stored and stream.buffer_sequence - earlier <= LATE_LOOKBACK_CHUNKS:
                try:
                    pcm = await self.audio.pcm(session.id, stream.speaker, earlier, state, stream.header_sequence)
                    length_ms = len(pcm) // SAMPLES_PER_MS
                except InvalidAudio:
                    length_ms = 0
                if earlier != sequence:
                    self.audio.forget(state, [earlier])
            position -= length_ms
        return max(0, position)

    def _entry(
        self,
        session: Session,
        speaker: str,
        sequences: tuple[int, int],
        transcription: Transcription,
        start_ms: int,
        end_ms: int,
    ) -> NewEntry:
        return NewEntry(
            session_id=session.id,
            tenant_id=session.tenant_id,
            speaker=speaker,
            first_sequence=sequences[0],
            last_sequence=sequences[1],
            text=transcription.text,
            start_ms=start_ms,
            end_ms=end_ms,
            language=transcription.language or session.language,
            confidence=transcription.confidence,
            engine=self.transcriber.name,
        )

    async def _transcribe_final(
        self, pcm: Pcm, regions: list[tuple[int, int]], language: str | None, prompt: str | None = None
    ) -> Transcription:
        transcription, calls = await transcribe_utterance(
            self.transcriber, pcm, regions, language=language, prompt=prompt, config=self.config.segmenter
        )
        self.engine_calls += calls
        return transcription

    async def transcribe_draft(self, pcm: Pcm, language: str | None) -> Transcription:
        """A partial: the open utterance at a common level, decoded quickly (it will be replaced by the final)."""
        self.engine_calls += 1
        heard = await off_loop(for_engine, pcm)
        return clean_transcription(await self.transcriber.transcribe(heard, language=language, draft=True))

    async def _context(self, session: Session, speaker: str, state: SpeakerState) -> str | None:
        """The tail of what this speaker said before: Whisper keeps names and style across utterances."""
        if not self.config.prompt_context_chars:
            return None
        if state.context is None:
            entries = await self.store.list_entries(session.id)
            state.context = " ".join(e.text for e in entries if e.speaker == speaker)
        return state.context[-self.config.prompt_context_chars :] or None

    @staticmethod
    def _remember(state: SpeakerState, text: str) -> None:
        if state.context is not None:
            state.context = f"{state.context} {text}".strip()[-2000:]
