"""The live path: persist a chunk, then assemble each speaker's audio into utterances and transcribe them.

Per speaker, chunks are absorbed strictly in sequence order, one at a time, and the segmenter decides after
each one; so the transcript does not depend on arrival order. The assembly state lives in the store (speaker
streams, pending chunks); this process keeps only caches (decoded PCM, speech probabilities) and the in-process
lock that serialises work on one speaker. A lease in the store fences other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from functions.process_audio.buffer import SpeakerBuffer
from functions.process_audio.segmenter import SAMPLES_PER_MS, SegmenterConfig, decide
from functions.process_audio.utterance import transcribe_utterance
from functions.transcript_bridge.service import deliver_entry
from shared.access import in_closing_grace
from shared.audio.decode import decode_chunk
from shared.audio.formats import ChunkFormat, inspect_chunk, stream_header
from shared.audio.levels import block_gains, for_engine
from shared.audio.vad import SpeechDetector, shared_detector
from shared.broadcast.base import Broadcaster
from shared.errors import EngineUnavailable, InvalidAudio, SequenceConflict, StoreConflict
from shared.models import (
    EntryWrite,
    InsertOutcome,
    NewChunk,
    NewEntry,
    Session,
    SessionStatus,
    SpeakerStream,
    StoredChunk,
    TranscriptEntry,
    utcnow,
)
from shared.store.base import Store, StreamLeaseLost
from shared.stt.base import Pcm, Transcriber, Transcription
from shared.stt.filters import clean_transcription

log = logging.getLogger("bridge.live")

CONTINUABLE = {"webm", "ogg", "mp4"}
LEASE_SECONDS = 15.0  # a crashed worker's streams are taken over after this; renewed before engine calls
MAX_RETRIES = 5
MAX_CACHED_SPEAKERS = 2_000  # past this, caches idle for IDLE_CACHE_SECONDS are dropped
IDLE_CACHE_SECONDS = 600.0
TYPICAL_CHUNK_MS = 2000  # what a skipped (missing) chunk counts for on the clock: a browser's usual timeslice
LATE_LOOKBACK_CHUNKS = 256  # a late chunk's place is measured over at most this many chunks, then estimated


@dataclass(frozen=True, slots=True)
class LiveConfig:
    gap_timeout_s: float = 10.0
    end_grace_s: float = 10.0
    response_wait_s: float = 5.0
    partials: bool = False
    partial_interval_s: float = 2.0
    prompt_context_chars: int = 200
    retry_base_s: float = 5.0
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)


@dataclass(frozen=True, slots=True)
class ChunkResult:
    status: str  # accepted | duplicate | skipped | queued
    sequence_number: int
    entries: list[TranscriptEntry]
    partial: str | None


@dataclass
class _Header:
    sequence: int
    kind: str
    data: bytes | None


@dataclass
class _SpeakerState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    buffer: SpeakerBuffer | None = None
    header: _Header | None = None
    decoded: dict[int, Pcm] = field(default_factory=dict)
    partial_text: str | None = None
    context: str | None = None  # the speaker's recent final text, the engine's prompt
    partial_task: asyncio.Task[None] | None = None
    last_partial_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    retries: int = 0  # engine failures in a row, for the retry backoff
    last_used: float = 0.0


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A pump or partial nobody awaits (timers, retries) still reports what went wrong; the audio stays pending."""
    if not task.cancelled() and task.exception() is not None:
        log.error("processing pending audio failed; it stays pending", exc_info=task.exception())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LivePath:
    """process_audio's engine room: one instance per process, shared by the HTTP route, the CLI and tests."""

    def __init__(
        self,
        store: Store,
        transcriber: Transcriber,
        broadcaster: Broadcaster,
        *,
        config: LiveConfig = LiveConfig(),
        detector: SpeechDetector | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.transcriber = transcriber
        self.broadcaster = broadcaster
        self.config = config
        self.detector = detector or shared_detector()
        self.clock = clock
        self.owner = f"worker-{uuid.uuid4()}"
        self._speakers: dict[tuple[str, str], _SpeakerState] = {}
        self._tasks: set[asyncio.Task[tuple[list[TranscriptEntry], bool]]] = set()
        self.engine_calls = 0

    # ------------------------------------------------------------------ arrival
    async def accept(
        self, session: Session, speaker: str, sequence: int, data: bytes, mime_type: str | None
    ) -> ChunkResult:
        """Validate, persist, acknowledge; then wait a bounded time for the transcription it triggers."""
        now = self.clock()
        final = in_closing_grace(session, now, self.config.end_grace_s)
        state = self._state(session.id, speaker)
        pcm: Pcm | None = None
        fmt: ChunkFormat | None = None
        if data:
            fmt = inspect_chunk(data, mime_type)
            header = await self._header_for(session.id, speaker, sequence, fmt, state)
            if fmt.starts_stream or header is not None:
                pcm = await self._decode(data, fmt, header)
        chunk = NewChunk(
            session_id=session.id,
            speaker=speaker,
            sequence_number=sequence,
            data=data,
            digest=_digest(data),
            mime_type=mime_type,
            starts_stream=bool(fmt and fmt.starts_stream),
            received_at=now,
        )
        outcome = await self.store.insert_chunk(chunk)
        if outcome is InsertOutcome.DUPLICATE:
            return ChunkResult("duplicate", sequence, [], state.partial_text)
        if outcome is InsertOutcome.CONFLICT:
            raise SequenceConflict(
                f"sequence_number {sequence} of speaker {speaker!r} is already stored with other audio; "
                "send each chunk with a new sequence number"
            )
        if fmt is not None and fmt.starts_stream and fmt.kind in CONTINUABLE:
            state.header = _Header(sequence, fmt.kind or "webm", stream_header(data, fmt))
        if pcm is not None:
            state.decoded[sequence] = pcm
        if not data:
            status = "skipped"
        elif not self.transcriber.ready:
            return ChunkResult("queued", sequence, [], None)
        else:
            status = "accepted"
        task = self._spawn_pump(session, speaker, final=final)
        try:
            entries, failed = await asyncio.wait_for(asyncio.shield(task), self.config.response_wait_s)
        except TimeoutError:
            return ChunkResult(status, sequence, [], state.partial_text)
        if failed and status == "accepted":
            status = "queued"
        return ChunkResult(status, sequence, entries, None if entries else state.partial_text)

    async def _header_for(
        self, session_id: str, speaker: str, sequence: int, fmt: ChunkFormat, state: _SpeakerState
    ) -> bytes | None:
        """The stream header a continuation chunk decodes with; None while it may still arrive.

        Raises InvalidAudio when it never can: every earlier chunk is in and none began a WebM/Ogg/MP4 stream.
        """
        if fmt.starts_stream:
            return None
        header = state.header
        if header is not None and header.sequence < sequence:
            return header.data
        earlier = [c for c in await self.store.list_chunks(session_id, speaker) if c.sequence_number < sequence]
        starts = [c.sequence_number for c in earlier if c.starts_stream]
        if starts:
            state.header = await self._load_header(session_id, speaker, starts[-1])
            return state.header.data if state.header else None
        if len(earlier) >= sequence:
            raise InvalidAudio(
                "this chunk has no container header and no earlier chunk of this speaker began a WebM, Ogg or "
                "MP4 stream; send the recorder's first chunk (with its header) first, or send WAV"
            )
        return None

    async def _find_header(self, session_id: str, speaker: str, before: int, hint: int | None = None) -> _Header | None:
        """The latest chunk before `before` that began a stream, as a header; `hint` (the stream's
        `header_sequence`) saves scanning the speaker's chunks."""
        if hint is not None and hint < before:
            return await self._load_header(session_id, speaker, hint)
        chunks = await self.store.list_chunks(session_id, speaker)
        starts = [c.sequence_number for c in chunks if c.starts_stream and c.sequence_number < before]
        return await self._load_header(session_id, speaker, starts[-1]) if starts else None

    async def _load_header(self, session_id: str, speaker: str, sequence: int) -> _Header | None:
        """The header held by chunk `sequence`; InvalidAudio when its stream cannot have continuations."""
        stored = await self.store.get_chunk(session_id, speaker, sequence)
        if stored is None or stored.data is None:
            return None
        fmt = inspect_chunk(stored.data, stored.mime_type)
        if fmt.kind not in CONTINUABLE:
            raise InvalidAudio(
                f"this chunk has no container header, and this speaker's stream is {fmt.kind}, whose chunks "
                "must each be a whole file"
            )
        return _Header(stored.sequence_number, fmt.kind or "webm", stream_header(stored.data, fmt))

    async def _decode(self, data: bytes, fmt: ChunkFormat, header: bytes | None) -> Pcm:
        if fmt.kind == "wav":
            return decode_chunk(data, fmt, header)
        return await asyncio.to_thread(decode_chunk, data, fmt, header)

    # ------------------------------------------------------------------ pumping
    def _state(self, session_id: str, speaker: str) -> _SpeakerState:
        key = (session_id, speaker)
        state = self._speakers.get(key)
        if state is None:
            if len(self._speakers) >= MAX_CACHED_SPEAKERS:
                self._evict_idle()
            state = self._speakers[key] = _SpeakerState()
        state.last_used = time.monotonic()
        return state

    def _evict_idle(self) -> None:
        """Forget caches of speakers idle for a while; they are rebuilt from the store if they speak again."""
        cutoff = time.monotonic() - IDLE_CACHE_SECONDS
        for key, state in list(self._speakers.items()):
            if state.last_used < cutoff and not state.lock.locked() and state.timer is None:
                del self._speakers[key]

    @property
    def cached_speakers(self) -> int:
        """How many speaker streams this process holds caches for (memory stays bounded by ended sessions)."""
        return len(self._speakers)

    def forget_session(self, session_id: str) -> None:
        """Drop a finished session's caches (after its final flush)."""
        for key in [k for k in self._speakers if k[0] == session_id]:
            state = self._speakers[key]
            if state.lock.locked():
                continue
            if state.timer is not None:
                state.timer.cancel()
            del self._speakers[key]

    def _spawn_pump(
        self, session: Session, speaker: str, *, final: bool
    ) -> asyncio.Task[tuple[list[TranscriptEntry], bool]]:
        task = asyncio.create_task(self.pump(session, speaker, final=final))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def pump(self, session: Session, speaker: str, *, final: bool = False) -> tuple[list[TranscriptEntry], bool]:
        """Absorb every chunk that can be absorbed now; returns the entries made and whether the engine failed."""
        state = self._state(session.id, speaker)
        async with state.lock:
            try:
                stream = await self._claim(session.id, speaker)
            except StoreConflict:  # the session was deleted meanwhile: nothing left to do
                self.forget_session(session.id)
                return [], False
            if stream is None:
                return [], False
            try:
                return await self._pump_locked(session, speaker, stream, state, final)
            except BaseException:
                state.buffer = None  # a half-absorbed buffer must not be reused
                raise
            finally:
                await self.store.release_stream(session.id, speaker, self.owner)

    async def _renew(self, stream: SpeakerStream) -> None:
        """Extend the lease before a slow engine call; a stream taken meanwhile stops this pump (fenced anyway)."""
        current = await self.store.claim_stream(
            stream.session_id, stream.speaker, self.owner, LEASE_SECONDS, self.clock()
        )
        if current is None or current.version != stream.version:
            raise StreamLeaseLost(f"stream {stream.session_id}/{stream.speaker} was taken over")

    async def _claim(self, session_id: str, speaker: str) -> SpeakerStream | None:
        deadline = time.monotonic() + LEASE_SECONDS
        while True:
            stream = await self.store.claim_stream(session_id, speaker, self.owner, LEASE_SECONDS, self.clock())
            if stream is not None or time.monotonic() > deadline:
                return stream
            await asyncio.sleep(0.05)

    async def _pump_locked(
        self, session: Session, speaker: str, stream: SpeakerStream, state: _SpeakerState, final: bool
    ) -> tuple[list[TranscriptEntry], bool]:
        entries: list[TranscriptEntry] = []
        buffer = await self._buffer(session, stream, state)
        try:
            while True:
                pending = await self.store.list_chunks(session.id, speaker, pending_only=True)
                for late in [c for c in pending if c.sequence_number < stream.buffer_sequence]:
                    entry = await self._late_chunk(session, stream, state, late.sequence_number)
                    if entry is not None:
                        entries.append(entry)
                waiting = [c for c in pending if c.sequence_number >= stream.next_sequence]  # in sequence order
                if waiting and waiting[0].sequence_number == stream.next_sequence:
                    for chunk in waiting:  # everything contiguous from this listing, one chunk at a time
                        if chunk.sequence_number != stream.next_sequence:
                            break
                        entries.extend(await self._absorb(session, stream, state, buffer, chunk))
                    continue
                if waiting:
                    gap_over = stream.gap_since is not None and (
                        (self.clock() - stream.gap_since).total_seconds() >= self.config.gap_timeout_s
                    )
                    if final or gap_over:
                        entries.extend(await self._skip_gap(session, stream, buffer, waiting[0].sequence_number))
                        continue
                    if stream.gap_since is None:
                        stream.gap_since = self.clock()
                        await self._save(stream, buffer)
                    self._schedule_gap_check(session, speaker, state, stream.gap_since)
                    break
                if final and buffer.total:
                    entries.extend(await self._cut(session, stream, buffer, final=True))
                break
        except EngineUnavailable as exc:
            state.buffer = None  # it holds chunks the store does not count as absorbed: rebuild it next time
            log.warning("engine unavailable for %s/%s: %s; audio stays pending", session.id, speaker, exc.detail)
            self._schedule_retry(session, speaker, final, exc.retry_after)
            return entries, True
        except StreamLeaseLost:
            log.info("stream %s/%s moved to another worker", session.id, speaker)
            state.buffer = None
            return entries, False
        except StoreConflict as exc:  # the session was deleted under us
            log.info("stream %s/%s no longer stored: %s", session.id, speaker, exc.detail)
            state.buffer = None
            return entries, False
        state.retries = 0
        if entries:
            state.partial_text = None
        elif self.config.partials and not final:
            self._maybe_partial(session, speaker, stream, state, buffer)
        return entries, False

    async def _buffer(self, session: Session, stream: SpeakerStream, state: _SpeakerState) -> SpeakerBuffer:
        """The cached buffer if it matches the stored stream, else one rebuilt from the pending chunks."""
        if state.buffer is not None and state.buffer.version == stream.version:
            return state.buffer
        buffer = SpeakerBuffer(self.detector)
        chunks = await self.store.list_chunks(
            session.id, stream.speaker, from_sequence=stream.buffer_sequence, pending_only=True
        )
        for chunk in chunks:
            if chunk.sequence_number >= stream.next_sequence:
                break
            pcm = await self._chunk_pcm(session.id, stream, state, chunk.sequence_number)
            gains = block_gains(pcm)  # judged on the whole chunk, as when it was first absorbed
            offset = stream.buffer_offset if chunk.sequence_number == stream.buffer_sequence else 0
            await asyncio.to_thread(buffer.append, chunk.sequence_number, pcm[offset:], gains=gains, offset=offset)
        buffer.version = stream.version
        state.buffer = buffer
        return buffer

    async def _chunk_pcm(self, session_id: str, stream: SpeakerStream, state: _SpeakerState, sequence: int) -> Pcm:
        cached = state.decoded.get(sequence)
        if cached is not None:
            return cached
        stored = await self.store.get_chunk(session_id, stream.speaker, sequence)
        if stored is None or not stored.data:
            return np.zeros(0, dtype=np.float32)
        fmt = inspect_chunk(stored.data, stored.mime_type)
        header: bytes | None = None
        if not fmt.starts_stream:
            found = state.header if state.header and state.header.sequence < sequence else None
            found = found or await self._find_header(session_id, stream.speaker, sequence, stream.header_sequence)
            if found is None:
                raise InvalidAudio("continuation chunk without a stream header")
            header = found.data
            fmt = ChunkFormat(kind=found.kind, starts_stream=False, self_contained=False)  # type: ignore[arg-type]
        pcm = await self._decode(stored.data, fmt, header)
        state.decoded[sequence] = pcm
        return pcm

    async def _absorb(
        self,
        session: Session,
        stream: SpeakerStream,
        state: _SpeakerState,
        buffer: SpeakerBuffer,
        chunk: StoredChunk,
    ) -> list[TranscriptEntry]:
        """Take the next chunk into the open utterance and let the segmenter decide.

        Never a final decision, even while flushing: a backlog absorbed at `end` is cut at its pauses like live
        audio, and only what is left after the last chunk is flushed as one utterance (by the caller).
        """
        sequence = chunk.sequence_number
        try:
            pcm = await self._chunk_pcm(session.id, stream, state, sequence)
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
        if len(pcm):
            gains = block_gains(pcm)
            if gains.size == 0:  # digital silence: no model run, nothing to wait for
                buffer.append(sequence, pcm, gains=gains)
            else:  # the speech model runs off the event loop
                await asyncio.to_thread(buffer.append, sequence, pcm, gains=gains)
        else:
            done.append(sequence)
            state.decoded.pop(sequence, None)
            if buffer.total == 0:
                stream.buffer_sequence = sequence + 1
        return await self._cut(session, stream, buffer, final=False, extra_done=done)

    async def _cut(
        self,
        session: Session,
        stream: SpeakerStream,
        buffer: SpeakerBuffer,
        *,
        final: bool,
        extra_done: list[int] | None = None,
    ) -> list[TranscriptEntry]:
        """Apply the segmenter's decision: drop silence, transcribe a finished utterance, save the stream."""
        done = list(extra_done or [])
        decision = decide(
            buffer.total, buffer.regions(), buffer.chunk_starts, final=final, config=self.config.segmenter
        )
        new_entry: NewEntry | None = None
        consume = decision.drop
        if decision.cut is not None and decision.speech_end is not None and decision.speech_end > decision.drop:
            audio = buffer.pcm[decision.drop : decision.speech_end]
            await self._renew(stream)
            prompt = await self._context(session, stream.speaker)
            regions = [(s - decision.drop, e - decision.drop) for s, e in buffer.regions()]
            transcription = await self._transcribe_final(audio, regions, session.language, prompt)
            if transcription.text:
                self._remember(session.id, stream.speaker, transcription.text)
                new_entry = self._entry(
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
        if decision.cut is not None:
            consume = decision.cut
        if consume:
            await self._consume(stream, buffer, consume, done)
        write = await self._save(stream, buffer, done=done, entry=new_entry)
        if write is not None:
            await deliver_entry(write, self.broadcaster)
            return [write.entry]
        return []

    async def _consume(self, stream: SpeakerStream, buffer: SpeakerBuffer, samples: int, done: list[int]) -> None:
        old_first = stream.buffer_sequence
        gone, first, offset = await asyncio.to_thread(buffer.consume, samples)
        done.extend(gone)
        stream.buffer_start_ms += samples // SAMPLES_PER_MS
        if first is None:
            stream.buffer_sequence, stream.buffer_offset = stream.next_sequence, 0
        elif first == old_first:
            stream.buffer_offset += offset
        else:
            stream.buffer_sequence, stream.buffer_offset = first, offset

    async def _save(
        self,
        stream: SpeakerStream,
        buffer: SpeakerBuffer,
        *,
        done: list[int] | None = None,
        entry: NewEntry | None = None,
    ) -> EntryWrite | None:
        write = await self.store.save_stream(stream, self.owner, done_sequences=done or (), entry=entry)
        buffer.version = stream.version
        state = self._speakers.get((stream.session_id, stream.speaker))
        if state is not None:
            for seq in done or ():
                state.decoded.pop(seq, None)
        return write

    async def _skip_gap(
        self, session: Session, stream: SpeakerStream, buffer: SpeakerBuffer, next_present: int
    ) -> list[TranscriptEntry]:
        """A missing chunk waited long enough (or the session ended): finish what is open, jump past the gap."""
        log.warning(
            "session %s speaker %s: chunks %d..%d missing; skipped",
            session.id,
            stream.speaker,
            stream.next_sequence,
            next_present - 1,
        )
        made = await self._cut(session, stream, buffer, final=True) if buffer.total else []
        missing = next_present - stream.next_sequence
        stream.buffer_start_ms += missing * TYPICAL_CHUNK_MS
        stream.next_sequence = stream.buffer_sequence = next_present
        stream.buffer_offset = 0
        stream.gap_since = None
        await self._save(stream, buffer)
        return made

    async def _late_chunk(
        self, session: Session, stream: SpeakerStream, state: _SpeakerState, sequence: int
    ) -> TranscriptEntry | None:
        """A chunk that arrived after its gap was skipped: transcribed on its own, as an entry of its own, at
        its place in the speaker's stream (so exports stay in spoken order), not at its arrival."""
        try:
            pcm = await self._chunk_pcm(session.id, stream, state, sequence)
        except InvalidAudio:
            pcm = np.zeros(0, dtype=np.float32)
        entry: NewEntry | None = None
        if len(pcm):
            single = SpeakerBuffer(self.detector)
            await asyncio.to_thread(single.append, sequence, pcm)
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
        write = await self.store.save_stream(stream, self.owner, done_sequences=[sequence], entry=entry)
        if state.buffer is not None:
            state.buffer.version = stream.version
        state.decoded.pop(sequence, None)
        if write is None:
            return None
        await deliver_entry(write, self.broadcaster)
        return write.entry

    async def _chunk_start_ms(
        self, session: Session, stream: SpeakerStream, state: _SpeakerState, sequence: int
    ) -> int:
        """Where chunk `sequence` (before the open utterance) starts on the session clock: back from the open
        utterance's start by the length of every chunk in between. A chunk never stored counts as the
        `typical_ms` the gap skip counted it as; so does any chunk beyond `LATE_LOOKBACK_CHUNKS`."""
        position = stream.buffer_start_ms - stream.buffer_offset // SAMPLES_PER_MS
        stored = {c.sequence_number for c in await self.store.list_chunks(session.id, stream.speaker)}
        for earlier in range(stream.buffer_sequence - 1, sequence - 1, -1):
            length_ms = TYPICAL_CHUNK_MS
            if earlier in stored and stream.buffer_sequence - earlier <= LATE_LOOKBACK_CHUNKS:
                try:
                    length_ms = len(await self._chunk_pcm(session.id, stream, state, earlier)) // SAMPLES_PER_MS
                except InvalidAudio:
                    length_ms = 0
                if earlier != sequence:
                    state.decoded.pop(earlier, None)
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

    async def _transcribe_draft(self, pcm: Pcm, language: str | None) -> Transcription:
        """A partial: the open utterance at a common level, decoded quickly (it will be replaced by the final)."""
        self.engine_calls += 1
        return clean_transcription(await self.transcriber.transcribe(for_engine(pcm), language=language, draft=True))

    async def _context(self, session: Session, speaker: str) -> str | None:
        """The tail of what this speaker said before: Whisper keeps names and style across utterances."""
        if not self.config.prompt_context_chars:
            return None
        state = self._state(session.id, speaker)
        if state.context is None:
            entries = await self.store.list_entries(session.id)
            state.context = " ".join(e.text for e in entries if e.speaker == speaker)
        return state.context[-self.config.prompt_context_chars :] or None

    def _remember(self, session_id: str, speaker: str, text: str) -> None:
        state = self._state(session_id, speaker)
        if state.context is not None:
            state.context = f"{state.context} {text}".strip()[-2000:]

    # ------------------------------------------------------------------ timers and partials
    def _schedule_gap_check(self, session: Session, speaker: str, state: _SpeakerState, since: datetime) -> None:
        if state.timer is not None:
            return
        wait = max(0.05, self.config.gap_timeout_s - (self.clock() - since).total_seconds() + 0.05)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            state.timer = None
            self._spawn_pump(session, speaker, final=False)

        state.timer = loop.call_later(wait, fire)

    def _schedule_retry(self, session: Session, speaker: str, final: bool, retry_after: int | None) -> None:
        """Retry a failed engine call with growing delays; after a few, the next chunk or a restart retries."""
        state = self._state(session.id, speaker)
        if state.retries >= MAX_RETRIES:
            log.warning("giving up retrying %s/%s for now; the audio stays pending", session.id, speaker)
            return
        delay = max(float(retry_after or 0), self.config.retry_base_s * 2**state.retries)
        state.retries += 1
        asyncio.get_running_loop().call_later(delay, lambda: self._spawn_pump(session, speaker, final=final))

    def _maybe_partial(
        self, session: Session, speaker: str, stream: SpeakerStream, state: _SpeakerState, buffer: SpeakerBuffer
    ) -> None:
        """At most one partial in flight per speaker, a few seconds apart, only while speech is pending."""
        if state.partial_task is not None and not state.partial_task.done():
            return
        if time.monotonic() - state.last_partial_at < self.config.partial_interval_s:
            return
        regions = buffer.regions()
        if not regions:
            return
        start = max(0, regions[0][0] - self.config.segmenter.lead_pad_ms * SAMPLES_PER_MS)
        audio = buffer.pcm[start:].copy()
        through = stream.next_sequence - 1
        state.last_partial_at = time.monotonic()

        async def run() -> None:
            try:
                result = await self._transcribe_draft(audio, session.language)
            except EngineUnavailable:
                return
            if not result.text:
                return
            state.partial_text = result.text
            await self.broadcaster.publish(
                f"session:{session.id}",
                "transcript_partial",
                {"session_id": session.id, "speaker": speaker, "text": result.text, "through_sequence": through},
            )

        state.partial_task = asyncio.create_task(run())
        state.partial_task.add_done_callback(_log_failure)

    # ------------------------------------------------------------------ session level
    async def flush_session(self, session: Session) -> list[TranscriptEntry]:
        """Finalise every speaker's pending audio (session end)."""
        entries: list[TranscriptEntry] = []
        speakers = await self.store.next_sequences(session.id)
        for speaker in sorted(speakers):
            made, _ = await self.pump(session, speaker, final=True)
            entries.extend(made)
        if session.status is not SessionStatus.ACTIVE:
            self.forget_session(session.id)
        return entries

    async def resume_pending(self, load_session: Callable[[str], Awaitable[Session | None]]) -> int:
        """After a restart or once the engine is ready: process every pending chunk, in order."""
        count = 0
        for session_id, speaker in await self.store.sessions_with_pending_audio():
            session = await load_session(session_id)
            if session is None:
                continue
            final = session.status is not SessionStatus.ACTIVE
            await self.pump(session, speaker, final=final)
            count += 1
        return count

    async def close(self) -> None:
        for state in self._speakers.values():
            if state.timer is not None:
                state.timer.cancel()
            if state.partial_task is not None:
                state.partial_task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
