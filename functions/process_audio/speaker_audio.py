"""A speaker's audio: the stream header continuation chunks need, and each chunk decoded to 16 kHz PCM.

MediaRecorder chunks after the first carry no container header: they decode with the header of the latest
chunk before them that began a stream. The request checks on arrival what it can (a continuation whose header
can never arrive is refused); decoding happens later, in the speaker's run, from the bytes the request kept
(`ArrivalCache`) or from the store.
"""

from __future__ import annotations

import numpy as np

from functions.process_audio.arrivals import ArrivalCache
from functions.process_audio.audio_thread import off_loop
from functions.process_audio.speaker_state import SpeakerState, StreamHeader
from shared.audio.decode import decode_chunk
from shared.audio.formats import ChunkFormat, inspect_chunk, stream_header
from shared.errors import InvalidAudio
from shared.models import StoredChunk
from shared.store.base import Store
from shared.stt.base import Pcm

CONTINUABLE = {"webm", "ogg", "mp4"}


def _latest_start(chunks: list[StoredChunk], before: int) -> int | None:
    """The sequence number of the latest chunk before `before` that began a stream (held its header)."""
    starts = [c.sequence_number for c in chunks if c.starts_stream and c.sequence_number < before]
    return starts[-1] if starts else None


class SpeakerAudio:
    def __init__(self, store: Store, arrivals: ArrivalCache) -> None:
        self.store = store
        self.arrivals = arrivals

    async def check_arrival(
        self, session_id: str, speaker: str, sequence: int, fmt: ChunkFormat, state: SpeakerState
    ) -> None:
        """Refuse (InvalidAudio) a continuation chunk whose header can never arrive: every earlier chunk is in
        and none began a WebM/Ogg/MP4 stream. One whose header may still come is fine."""
        if fmt.starts_stream:
            return
        header = state.header
        if header is not None and header.sequence < sequence:
            return
        chunks = await self.store.list_chunks(session_id, speaker)
        start = _latest_start(chunks, sequence)
        if start is not None:
            state.header = await self._load_header(session_id, speaker, start)
            return
        if sum(c.sequence_number < sequence for c in chunks) >= sequence:
            raise InvalidAudio(
                "this chunk has no container header and no earlier chunk of this speaker began a WebM, Ogg or "
                "MP4 stream; send the recorder's first chunk (with its header) first, or send WAV"
            )

    def arrived(
        self,
        session_id: str,
        speaker: str,
        sequence: int,
        data: bytes,
        mime_type: str | None,
        fmt: ChunkFormat,
        state: SpeakerState,
        *,
        keep_bytes: bool = True,
    ) -> None:
        """A stored chunk: a new stream's header replaces the old one, and the bytes wait for the run (unless
        no run is coming soon: the engine is not ready)."""
        if fmt.starts_stream and fmt.kind in CONTINUABLE:
            state.header = StreamHeader(sequence, fmt.kind or "webm", stream_header(data, fmt))
        if keep_bytes:
            self.arrivals.put(session_id, speaker, sequence, data, mime_type)

    async def pcm(
        self, session_id: str, speaker: str, sequence: int, state: SpeakerState, header_hint: int | None = None
    ) -> Pcm:
        """Chunk `sequence` as 16 kHz mono PCM (cached until `forget`); empty for a chunk without audio.
        `header_hint` is where the stored stream says the current header is (saves scanning the chunks)."""
        cached = state.decoded.get(sequence)
        if cached is not None:
            return cached
        arrived = self.arrivals.take(session_id, speaker, sequence)
        if arrived is not None:
            data, mime_type = arrived
        else:
            stored = await self.store.get_chunk(session_id, speaker, sequence)
            if stored is None or not stored.data:
                return np.zeros(0, dtype=np.float32)
            data, mime_type = stored.data, stored.mime_type
        fmt = inspect_chunk(data, mime_type)
        header: bytes | None = None
        if not fmt.starts_stream:
            found = state.header if state.header and state.header.sequence < sequence else None
            found = found or await self._find_header(session_id, speaker, sequence, header_hint)
            if found is None:
                raise InvalidAudio("continuation chunk without a stream header")
            header = found.data
            fmt = ChunkFormat(kind=found.kind, starts_stream=False, self_contained=False)  # type: ignore[arg-type]
        pcm = await self._decode(data, fmt, header)
        state.decoded[sequence] = pcm
        return pcm

    @staticmethod
    def forget(state: SpeakerState, sequences: list[int] | tuple[int, ...]) -> None:
        """Chunks that are done: their PCM is not needed again."""
        for sequence in sequences:
            state.decoded.pop(sequence, None)

    async def _find_header(
        self, session_id: str, speaker: str, before: int, hint: int | None = None
    ) -> StreamHeader | None:
        """The latest chunk before `before` that began a stream, as a header."""
        if hint is not None and hint < before:
            return await self._load_header(session_id, speaker, hint)
        start = _latest_start(await self.store.list_chunks(session_id, speaker), before)
        return None if start is None else await self._load_header(session_id, speaker, start)

    async def _load_header(self, session_id: str, speaker: str, sequence: int) -> StreamHeader | None:
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
        return StreamHeader(stored.sequence_number, fmt.kind or "webm", stream_header(stored.data, fmt))

    @staticmethod
    async def _decode(data: bytes, fmt: ChunkFormat, header: bytes | None) -> Pcm:
        if fmt.kind == "wav":  # a numpy parse, cheaper than a thread hop
            return decode_chunk(data, fmt, header)
        return await off_loop(decode_chunk, data, fmt, header)
