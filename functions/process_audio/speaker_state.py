"""What this process remembers about one speaker stream between chunks: caches and timers, never the truth.

The truth (pending chunks, where assembly stands) is in the store; everything here can be dropped and is
rebuilt from it by whichever process takes the speaker's next chunk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from functions.process_audio.buffer import SpeakerBuffer
from shared.stt.base import Pcm, SettledItem, Transcription, TranscriptStream


@dataclass
class StreamHeader:
    """The container header (WebM, Ogg, MP4) that the speaker's continuation chunks decode with."""

    sequence: int
    kind: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Speculation:
    """A decode of a streamed speaker's open utterance, started before its pause was long enough to end it."""

    heard: Pcm  # the utterance's samples when the decode began
    length: int  # what was decoded: `heard`, then silence up to the tail the final would keep
    prompt: str | None
    language: str | None
    task: asyncio.Task[tuple[Transcription, int]]


@dataclass
class SpeakerState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one run at a time on this speaker in this process
    # audio
    header: StreamHeader | None = None
    decoded: dict[int, Pcm] = field(default_factory=dict)
    # assembly
    buffer: SpeakerBuffer | None = None  # the open utterance, valid while its version matches the store's
    context: str | None = None  # the speaker's recent final text, the engine's prompt
    # scheduling
    partial_text: str | None = None
    partial_task: asyncio.Task[None] | None = None
    partial_through: int = -1  # the last chunk a partial covered: at most one partial per chunk
    partial_started: float = 0.0  # monotonic time of the last draft: streamed speakers get one per 0.5 s
    partial_from: int = -1  # the chunk the utterance of the last draft began in
    partial_again: bool = False  # a chunk came in while a partial was in flight: one more after it
    timer: asyncio.TimerHandle | None = None  # the gap check
    retries: int = 0  # engine failures in a row, for the retry backoff
    last_used: float = 0.0
    streaming: bool = False  # its audio comes over the streaming socket: finals at the shorter pause
    speculation: Speculation | None = None  # the open utterance, decoded during its pause
    # a streaming engine's connection (openai-realtime), fed from `upstream_buffer`
    upstream: TranscriptStream | None = None
    upstream_buffer: SpeakerBuffer | None = None
    heard_through: int = -1  # the last chunk sent up the connection
    carry: SettledItem | None = None  # an utterance held to share one entry with the next (see realtime_assembly)
    upstream_retry_at: float = 0.0  # monotonic time before which a failed connection is not opened again
