"""Assembly for a streaming engine (`openai-realtime`): the engine's own VAD, not our segmenter, ends utterances.

Each absorbed chunk's audio goes up the speaker's open connection as it comes; each utterance the engine
finishes becomes an entry at its place on the speaker's clock, and the chunks it covered are done. Audio the
engine can no longer reach back into (silence) is let go too. Until then the audio stays pending in the store,
so a dropped connection, a failed utterance or a restart opens a new connection and sends it all again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from functions.process_audio.assembly import Assembly, log_task_failure
from functions.process_audio.buffer import SpeakerBuffer
from functions.process_audio.segmenter import SAMPLES_PER_MS
from functions.process_audio.speaker_state import SpeakerState
from functions.transcript_bridge.service import deliver_entry
from shared.broadcast.vocabulary import PARTIAL_EVENT, session_topic
from shared.errors import EngineUnavailable
from shared.models import NewEntry, Session, SpeakerStream, TranscriptEntry, UsageCount
from shared.stt.base import Pcm, SettledItem, StreamingTranscriber, Transcription, TranscriptStream

log = logging.getLogger("bridge.live")

RunRequest = Callable[[Session, str], object]
MAX_RECONNECT_WAIT_S = 5.0  # a back-off up to this long is waited out in the run; a longer one is retried later


class RealtimeAssembly(Assembly):
    """Feeds each speaker's connection and turns what it settles into entries."""

    transcriber: StreamingTranscriber
    request_run: RunRequest  # set by the live path: a run for this speaker, when the engine has news

    def has_news(self, state: SpeakerState) -> bool:
        """The engine finished an utterance or failed since the last run."""
        upstream = state.upstream
        return upstream is not None and (upstream.failure is not None or upstream.has_settled)

    async def resume(self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer) -> None:
        """Before a run: a failed connection is dropped (its failure retried by the run), and audio pending in
        the store but on no connection (a restart, a retry) is sent up a new one."""
        upstream = state.upstream
        if upstream is not None and upstream.failure is not None:
            state.upstream = None
            state.upstream_retry_at = time.monotonic() + float(upstream.failure.retry_after or self.config.retry_base_s)
            await upstream.close()
            if buffer.total or upstream.busy:
                raise upstream.failure
            upstream = None  # an idle connection closed (OpenAI ends long sessions): the next audio opens one
        if buffer.total and (upstream is None or state.upstream_buffer is not buffer):
            await self._connect(session, stream, state, buffer)

    async def heard(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer, pcm: Pcm
    ) -> None:
        """A chunk's audio, just added to the buffer, goes up the speaker's connection."""
        state.heard_through = buffer.chunk_seqs[-1] if buffer.chunk_seqs else -1
        upstream = state.upstream
        if upstream is None or state.upstream_buffer is not buffer:
            await self._connect(session, stream, state, buffer)  # sends the whole buffer, this chunk included
            return
        await upstream.append(pcm)

    async def _connect(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer
    ) -> None:
        wait = state.upstream_retry_at - time.monotonic()
        if wait > MAX_RECONNECT_WAIT_S:  # a failed connection is not opened again on every chunk
            raise EngineUnavailable(
                f"OpenAI Realtime is tried again in {wait:.0f} s; the audio stays pending", retry_after=math.ceil(wait)
            )
        if wait > 0:  # a short back-off is waited out by this run (it holds the speaker, not a request)
            await asyncio.sleep(wait)
        state.carry = None  # a new connection is sent the carried item's audio again
        if state.upstream is not None:
            await state.upstream.close()
            state.upstream = None
        speaker = stream.speaker

        def on_change() -> None:
            if upstream_ref and self.has_news(state) and state.upstream is upstream_ref[0]:
                self.request_run(session, speaker)

        def on_partial(text: str) -> None:
            if not text or state.partial_text == text or not self.config.partials:
                return
            state.partial_text = text
            payload = {
                "session_id": session.id,
                "speaker": speaker,
                "text": text,
                "through_sequence": state.heard_through,
            }
            task = asyncio.get_running_loop().create_task(
                self.broadcaster.publish(session_topic(session.id), PARTIAL_EVENT, payload)
            )
            task.add_done_callback(log_task_failure)

        upstream_ref: list[TranscriptStream] = []
        upstream = await self.transcriber.open_stream(
            origin_ms=stream.buffer_start_ms,
            language=session.language,
            prompt=await self._context(session, speaker, state),
            on_change=on_change,
            on_partial=on_partial,
        )
        upstream_ref.append(upstream)
        state.upstream, state.upstream_buffer = upstream, buffer
        await upstream.append(buffer.pcm)

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
        """Store what the engine settled, let go of silence it cannot reach back into; at `final`, wait for the
        last utterance and close the connection."""
        done = list(extra_done or [])
        made: list[TranscriptEntry] = []
        upstream = state.upstream
        if upstream is not None and upstream.failure is None and final and buffer.total:
            with contextlib.suppress(EngineUnavailable):  # kept as the connection's failure, raised below
                await upstream.finish(self.config.engine_timeout_s)
        if upstream is not None and upstream.failure is not None:
            await self.resume(session, stream, state, buffer)  # raises the failure
        if upstream is not None:
            items: list[SettledItem] = []
            for taken in upstream.take_settled():
                item = _joined(state.carry, taken) if state.carry is not None else taken
                state.carry = None
                if self._ends_in_first_chunk(stream, buffer, item):
                    state.carry = item  # its chunk would start the next entry too (entries are unique per chunk)
                else:
                    items.append(item)
            if final and state.carry is not None:  # nothing follows it: an entry of its own
                items.append(state.carry)
                state.carry = None
            for item in items:
                entry = await self._settle(session, stream, state, buffer, item, done)
                usage = UsageCount(session.tenant_id, self.clock().date(), audio_ms, item.end_ms - item.start_ms, 1)
                audio_ms = 0
                write = await self.save(stream, state, buffer, done=done, entry=entry, usage=usage)
                done = []
                if write is not None:
                    await deliver_entry(write, self.broadcaster)
                    made.append(write.entry)
            quiet_to = buffer.total if final else self._position(stream, upstream.origin_ms + upstream.settled_ms)
            if state.carry is not None:
                quiet_to = min(quiet_to, self._position(stream, state.carry.start_ms))
            if quiet_to > 0 and not upstream.busy:
                await self._consume(stream, buffer, min(quiet_to, buffer.total), done)
        elif final and buffer.total:
            await self._consume(stream, buffer, buffer.total, done)
        if final and state.upstream is not None:
            await state.upstream.close()
            state.upstream = None
        rest = UsageCount(session.tenant_id, self.clock().date(), audio_ms, 0, 0) if audio_ms else None
        await self.save(stream, state, buffer, done=done, usage=rest)
        return made

    async def _settle(
        self,
        session: Session,
        stream: SpeakerStream,
        state: SpeakerState,
        buffer: SpeakerBuffer,
        item: SettledItem,
        done: list[int],
    ) -> NewEntry | None:
        """One finished utterance: its audio consumed, and its entry when the engine heard words."""
        start = max(0, min(self._position(stream, item.start_ms), buffer.total))
        end = min(max(start, self._position(stream, item.end_ms)), buffer.total)
        speech_end = min(max(start, self._position(stream, item.speech_end_ms)), end)
        entry: NewEntry | None = None
        self.engine_calls += 1
        if item.text and buffer.total:
            self._remember(state, item.text)
            entry = self._entry(
                session,
                stream.speaker,
                (buffer.sequence_at(start), buffer.sequence_at(max(start, speech_end - 1))),
                Transcription(text=item.text, language=session.language),
                start_ms=stream.buffer_start_ms + start // SAMPLES_PER_MS,
                end_ms=stream.buffer_start_ms + speech_end // SAMPLES_PER_MS,
            )
            state.partial_text = None
        if end > 0:
            await self._consume(stream, buffer, end, done)
        return entry

    def _ends_in_first_chunk(self, stream: SpeakerStream, buffer: SpeakerBuffer, item: SettledItem) -> bool:
        """The item ends inside the chunk it starts in, before the end of the buffer: the next item would start
        in that chunk too, and two entries cannot share a first chunk."""
        start = max(0, min(self._position(stream, item.start_ms), buffer.total))
        end = min(max(start, self._position(stream, item.end_ms)), buffer.total)
        return end < buffer.total and buffer.sequence_at(start) == buffer.sequence_at(end)

    @staticmethod
    def _position(stream: SpeakerStream, clock_ms: int) -> int:
        """A time on the speaker's clock as a sample index into the open buffer (negative: already consumed)."""
        return (clock_ms - stream.buffer_start_ms) * SAMPLES_PER_MS

    async def skip_gap(
        self, session: Session, stream: SpeakerStream, state: SpeakerState, buffer: SpeakerBuffer, next_present: int
    ) -> list[TranscriptEntry]:
        """The clock jumps past a gap: the connection's clock would no longer match, so the next audio opens a
        new one."""
        made = await super().skip_gap(session, stream, state, buffer, next_present)
        if state.upstream is not None:
            await state.upstream.close()
            state.upstream = None
        return made


def _joined(first: SettledItem, then: SettledItem) -> SettledItem:
    """Two utterances as one entry: the text of both, from the start of the first to the end of the second."""
    return SettledItem(f"{first.text} {then.text}".strip(), first.start_ms, then.end_ms, then.speech_end_ms)
