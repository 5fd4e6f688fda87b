"""The live path's front: a chunk arrives, is stored and acknowledged; each speaker's runs absorb what is pending.

Per speaker, chunks are absorbed strictly in sequence order, one at a time (`assembly`), so the transcript does
not depend on arrival order. Runs are asked for by arrivals, gap timers and retries, and scheduled per speaker
on a bounded pool (`scheduler`); a run claims the speaker's stream in the store (a lease fences other
processes), absorbs every chunk it can, and waits at gaps. This process keeps only caches (`speaker_state`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from functions.process_audio.arrivals import ArrivalCache
from functions.process_audio.assembly import LEASE_SECONDS, Assembly, log_task_failure
from functions.process_audio.buffer import SpeakerBuffer
from functions.process_audio.config import LiveConfig
from functions.process_audio.realtime_assembly import RealtimeAssembly
from functions.process_audio.scheduler import RunScheduler
from functions.process_audio.segmenter import SAMPLES_PER_MS
from functions.process_audio.speaker_audio import SpeakerAudio
from functions.process_audio.speaker_state import SpeakerState
from functions.process_audio.usage import UsageMeter
from shared.audio.formats import ChunkFormat, inspect_chunk
from shared.audio.vad import SpeechDetector, shared_detector
from shared.broadcast.base import Broadcaster
from shared.broadcast.vocabulary import PARTIAL_EVENT, session_topic
from shared.errors import EngineUnavailable, SequenceConflict, StoreConflict, StoreUnavailable
from shared.models import InsertOutcome, NewChunk, Session, SessionStatus, SpeakerStream, TranscriptEntry, utcnow
from shared.store.base import Store, StreamLeaseLost
from shared.stt.base import StreamingTranscriber, Transcriber, TranscriptStream

__all__ = ["ChunkResult", "LiveConfig", "LivePath"]

log = logging.getLogger("bridge.live")

MAX_RETRIES = 5
MAX_CACHED_SPEAKERS = 2_000  # past this, caches idle for IDLE_CACHE_SECONDS are dropped
IDLE_CACHE_SECONDS = 600.0
STREAM_PARTIAL_INTERVAL_S = 0.5  # a streamed speaker's drafts, at most this often
DEFAULT_CONFIG = LiveConfig()

RunResult = tuple[list[TranscriptEntry], bool]  # the entries made, and whether the engine failed


@dataclass(frozen=True, slots=True)
class ChunkResult:
    status: str  # accepted | duplicate | skipped | queued
    sequence_number: int
    entries: list[TranscriptEntry]
    partial: str | None


def _close_later(upstream: TranscriptStream) -> None:
    """A forgotten speaker's engine connection, closed without waiting (its audio is all settled or stored)."""
    asyncio.get_running_loop().create_task(upstream.close()).add_done_callback(log_task_failure)


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
        config: LiveConfig = DEFAULT_CONFIG,
        detector: SpeechDetector | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.transcriber = transcriber
        self.broadcaster = broadcaster
        self.config = config
        self.clock = clock
        self.owner = f"worker-{uuid.uuid4()}"
        self.arrivals = ArrivalCache()
        self.audio = SpeakerAudio(store, self.arrivals)
        self.detector = detector or shared_detector()
        self.usage = UsageMeter(store)  # partials' engine use; what a run stores is counted with it
        if isinstance(transcriber, StreamingTranscriber):
            realtime = RealtimeAssembly(
                store, transcriber, broadcaster, self.detector, self.audio, config, self.owner, clock
            )
            realtime.request_run = lambda session, speaker: self.runs.request(session, speaker)
            self.assembly: Assembly = realtime
        else:
            self.assembly = Assembly(
                store, transcriber, broadcaster, self.detector, self.audio, config, self.owner, clock
            )
        self.runs: RunScheduler[RunResult] = RunScheduler(self.pump, config.workers)
        self.engine_failing = False  # the last engine call failed: new chunks are answered `queued`
        self._speakers: dict[tuple[str, str], SpeakerState] = {}
        self._retries: set[asyncio.TimerHandle] = set()  # failed runs to try again (cancelled by `close`)
        self._closed = False

    @property
    def engine_calls(self) -> int:
        """Engine calls made by this process (finals and partials), for benchmarks and tests."""
        return self.assembly.engine_calls

    # ------------------------------------------------------------------ arrival
    async def accept(
        self,
        session: Session,
        speaker: str,
        sequence: int,
        data: bytes,
        mime_type: str | None,
        *,
        wait_ms: int = 0,
        closing: bool = False,
        streaming: bool = False,
    ) -> ChunkResult:
        """Validate, persist, acknowledge: the chunk is processed off the request. With `wait_ms`, wait up to that
        long for the entries of the run that takes it (a client that wants its text in the answer). `closing`: a
        late chunk of an ended session (the caller checked the grace window), processed as the last ones."""
        now = self.clock()
        final = closing
        state = self._state(session.id, speaker)
        state.streaming = streaming
        fmt: ChunkFormat | None = None
        if data:
            fmt = inspect_chunk(data, mime_type)
            await self.audio.check_arrival(session.id, speaker, sequence, fmt, state)
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
        if fmt is not None:
            self.audio.arrived(
                session.id, speaker, sequence, data, mime_type, fmt, state, keep_bytes=self.transcriber.ready
            )
        if not data:
            status = "skipped"
        elif not self.transcriber.ready:
            return ChunkResult("queued", sequence, [], None)
        else:
            status = "queued" if self.engine_failing else "accepted"
        run = self.runs.request(session, speaker, final=final)
        if wait_ms <= 0:
            return ChunkResult(status, sequence, [], state.partial_text)
        try:
            entries, failed = await asyncio.wait_for(asyncio.shield(run), wait_ms / 1000)
        except TimeoutError:
            return ChunkResult(status, sequence, [], state.partial_text)
        except Exception:  # logged by the scheduler; the chunk is stored and stays pending
            return ChunkResult(status, sequence, [], state.partial_text)
        if failed and status == "accepted":
            status = "queued"
        return ChunkResult(status, sequence, entries, None if entries else state.partial_text)

    # ------------------------------------------------------------------ speaker caches
    def _state(self, session_id: str, speaker: str) -> SpeakerState:
        key = (session_id, speaker)
        state = self._speakers.get(key)
        if state is None:
            if len(self._speakers) >= MAX_CACHED_SPEAKERS:
                self._evict_idle()
            state = self._speakers[key] = SpeakerState()
        state.last_used = time.monotonic()
        return state

    def _evict_idle(self) -> None:
        """Forget caches of speakers idle for a while; they are rebuilt from the store if they speak again."""
        cutoff = time.monotonic() - IDLE_CACHE_SECONDS
        for key, state in list(self._speakers.items()):
            if state.last_used < cutoff and not state.lock.locked() and state.timer is None:
                del self._speakers[key]
                self.arrivals.forget(*key)

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
            if state.upstream is not None:
                _close_later(state.upstream)
            del self._speakers[key]
            self.arrivals.forget(*key)

    # ------------------------------------------------------------------ runs
    async def pump(self, session: Session, speaker: str, final: bool = False) -> RunResult:
        """One run: absorb every chunk of the speaker that can be absorbed now; returns the entries made and
        whether the engine failed. A store outage fails the run (its audio stays pending) and retries it later,
        as an engine outage does: the speaker's stored chunks must not wait for another chunk, `end` or the reaper."""
        try:
            return await self._pump(session, speaker, final)
        except StoreUnavailable as exc:
            log.warning("store unavailable for %s/%s: %s; audio stays pending", session.id, speaker, exc.detail)
            self._schedule_retry(session, speaker, final, exc.retry_after)
            raise

    async def _pump(self, session: Session, speaker: str, final: bool) -> RunResult:
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
                return await self._run(session, speaker, stream, state, final)
            except BaseException:
                state.buffer = None  # a half-absorbed buffer must not be reused
                raise
            finally:
                await self.store.release_stream(session.id, speaker, self.owner)

    async def _claim(self, session_id: str, speaker: str) -> SpeakerStream | None:
        deadline = time.monotonic() + LEASE_SECONDS
        while True:
            stream = await self.store.claim_stream(session_id, speaker, self.owner, LEASE_SECONDS, self.clock())
            if stream is not None or time.monotonic() > deadline:
                return stream
            await asyncio.sleep(0.05)

    async def _run(
        self, session: Session, speaker: str, stream: SpeakerStream, state: SpeakerState, final: bool
    ) -> RunResult:
        entries: list[TranscriptEntry] = []
        calls_before = self.engine_calls
        assembly = self.assembly
        buffer = await assembly.buffer(session, stream, state)
        try:
            await assembly.resume(session, stream, state, buffer)
            while True:
                pending = await self.store.list_chunks(session.id, speaker, pending_only=True)
                for late in [c for c in pending if c.sequence_number < stream.buffer_sequence]:
                    entry = await assembly.late_chunk(session, stream, state, late.sequence_number)
                    if entry is not None:
                        entries.append(entry)
                waiting = [c for c in pending if c.sequence_number >= stream.next_sequence]  # in sequence order
                if waiting and waiting[0].sequence_number == stream.next_sequence:
                    for chunk in waiting:  # everything contiguous from this listing, one chunk at a time
                        if chunk.sequence_number != stream.next_sequence:
                            break
                        entries.extend(await assembly.absorb(session, stream, state, buffer, chunk))
                    continue
                if waiting:
                    gap_over = stream.gap_since is not None and (
                        (self.clock() - stream.gap_since).total_seconds() >= self.config.gap_timeout_s
                    )
                    if final or gap_over:
                        entries.extend(
                            await assembly.skip_gap(session, stream, state, buffer, waiting[0].sequence_number)
                        )
                        continue
                    if stream.gap_since is None:
                        stream.gap_since = self.clock()
                        await assembly.save(stream, state, buffer)
                    self._schedule_gap_check(session, speaker, state, stream.gap_since)
                    break
                if final and buffer.total:
                    entries.extend(await assembly.cut(session, stream, state, buffer, final=True))
                elif assembly.has_news(state):
                    entries.extend(await assembly.cut(session, stream, state, buffer, final=final))
                break
        except EngineUnavailable as exc:
            self.engine_failing = True
            state.buffer = None  # it holds chunks the store does not count as absorbed: rebuild it next time
            log.warning("engine unavailable for %s/%s: %s", session.id, speaker, exc.detail)
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
        if self.engine_calls != calls_before:
            self.engine_failing = False
        if entries:
            state.partial_text = None
        if self.config.partials and not final and not isinstance(assembly, RealtimeAssembly):  # deltas are its own
            self._maybe_partial(session, speaker, stream, state, buffer)
        return entries, False

    # ------------------------------------------------------------------ timers and partials
    def _schedule_gap_check(self, session: Session, speaker: str, state: SpeakerState, since: datetime) -> None:
        if state.timer is not None:
            return
        wait = max(0.05, self.config.gap_timeout_s - (self.clock() - since).total_seconds() + 0.05)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            state.timer = None
            self.runs.request(session, speaker)

        state.timer = loop.call_later(wait, fire)

    def _schedule_retry(self, session: Session, speaker: str, final: bool, retry_after: int | None) -> None:
        """Retry a failed run (engine or store) with growing delays; after a few, the next chunk, `end` or the
        reaper retries."""
        if self._closed:
            return
        state = self._state(session.id, speaker)
        if state.retries >= MAX_RETRIES:
            log.warning("giving up retrying %s/%s for now; the audio stays pending", session.id, speaker)
            return
        delay = max(float(retry_after or 0), self.config.retry_base_s * 2**state.retries)
        state.retries += 1

        def fire() -> None:
            self._retries.discard(handle)
            self.runs.request(session, speaker, final=final)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._retries.add(handle)

    def _maybe_partial(
        self, session: Session, speaker: str, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer
    ) -> None:
        """A partial after every chunk that extends an open utterance: at most one per chunk and one in flight
        per speaker; chunks that come in meanwhile get one partial, through the newest, once it is done. A
        streamed speaker's small frames would keep the engine busy with drafts: one every 0.5 s at most within
        an utterance."""
        through = stream.next_sequence - 1
        if through <= state.partial_through:
            return
        if state.speculation is not None and not state.speculation.task.done():
            return  # the speaker paused and the final is being decoded: a draft now would only slow it down
        same_utterance = state.partial_from == stream.buffer_sequence
        if state.streaming and same_utterance and time.monotonic() - state.partial_started < STREAM_PARTIAL_INTERVAL_S:
            return  # a new utterance's first draft is not held back: it is the one a reader waits for
        if state.partial_task is not None and not state.partial_task.done():
            state.partial_again = True
            return
        regions = buffer.regions()
        if not regions:
            return
        start = max(0, regions[0][0] - self.config.segmenter.lead_pad_ms * SAMPLES_PER_MS)
        audio = buffer.pcm[start:].copy()
        state.partial_through = through
        state.partial_again = False
        state.partial_started, state.partial_from = time.monotonic(), stream.buffer_sequence

        async def run() -> None:
            try:
                result = await self.assembly.transcribe_draft(audio, session.language)
            except EngineUnavailable:
                return
            self.usage.count(
                session.tenant_id, self.clock().date(), engine_ms=len(audio) // SAMPLES_PER_MS, engine_calls=1
            )
            if result.text:
                state.partial_text = result.text
                await self.broadcaster.publish(
                    session_topic(session.id),
                    PARTIAL_EVENT,
                    {"session_id": session.id, "speaker": speaker, "text": result.text, "through_sequence": through},
                )
            if state.partial_again:  # newer chunks are in: a run with nothing pending drafts them
                self.runs.request(session, speaker)

        state.partial_task = asyncio.create_task(run())
        state.partial_task.add_done_callback(log_task_failure)

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
        self._closed = True
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        for state in self._speakers.values():
            if state.timer is not None:
                state.timer.cancel()
            if state.partial_task is not None:
                state.partial_task.cancel()
        await self.runs.drain(within_s=10)  # a final flushed now may still use its speculation
        for state in self._speakers.values():
            if state.speculation is not None:
                state.speculation.task.cancel()
        for state in self._speakers.values():
            if state.upstream is not None:
                await state.upstream.close()
                state.upstream = None
        await self.usage.flush()
