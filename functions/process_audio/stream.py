"""Streaming ingest as a plain service: one speaker's frames in, each stored as a chunk before it is acknowledged.

A socket carries 100-500 ms frames instead of 2 s chunks; each frame is one chunk with the next sequence number,
stored through the same `LivePath.accept` as a process-audio chunk, so the store, the live path, replays and
crashes behave the same. Raw PCM frames (`audio/pcm;rate=16000`, s16le mono) are stored as standalone WAV. The
first frame of a connection must carry the container header (WebM, Ogg, MP4): after a reconnect a continuation
cannot be decoded against a header the server may not have.

Back-pressure: a frame is at least 100 ms of audio (PCM frames are measured exactly), so the audio a client sent
is known from below. Once that runs more than AHEAD_LIMIT_S ahead of the wall clock, each acknowledgement waits
for the live path to process the frame: a client that sends faster than real time is slowed to the pace of the
live path, and nothing piles up without limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from functions.process_audio.live import ChunkResult, LivePath
from functions.validation import MAX_SEQUENCE
from shared.audio import webm
from shared.audio.formats import inspect_chunk
from shared.errors import InvalidAudio, InvalidRequest, PayloadTooLarge
from shared.models import Session
from shared.stt.wavio import wav_header

MIN_FRAME_S = 0.1  # the contract's shortest frame: a lower bound of the audio in a compressed frame
AHEAD_LIMIT_S = 5.0  # audio a client may send ahead of real time before its acks wait for the live path
MAX_FRAME_BYTES = 512_000  # 500 ms of 16 kHz PCM is 16 KB; Opus a few KB
CATCH_UP_WAIT_MS = 5_000  # the longest one withheld ack waits for the live path
STREAM_MIME_TYPES = ("audio/webm", "audio/ogg", "audio/mp4", "audio/pcm")


@dataclass(frozen=True, slots=True)
class StreamFormat:
    """What the socket's `mime_type` says the frames are."""

    mime_type: str  # the mime the frames are stored with
    pcm_rate: int | None = None  # raw PCM: samples per second; each frame becomes a WAV


def stream_format(mime_type: str | None) -> StreamFormat:
    """Parse the socket's `mime_type`; InvalidRequest for anything it cannot carry."""
    if not mime_type:
        raise InvalidRequest(f"mime_type is required: one of {', '.join(STREAM_MIME_TYPES)} (with parameters)")
    base, *params = [part.strip() for part in mime_type.split(";")]
    base = base.lower()
    if base not in STREAM_MIME_TYPES:
        raise InvalidRequest(f"mime_type {mime_type!r} cannot be streamed: use one of {', '.join(STREAM_MIME_TYPES)}")
    if base != "audio/pcm":
        return StreamFormat(mime_type)
    options = dict(param.lower().split("=", 1) for param in params if "=" in param)
    try:
        rate = int(options.get("rate", "16000"))
    except ValueError as exc:
        raise InvalidRequest("audio/pcm needs an integer rate, e.g. audio/pcm;rate=16000") from exc
    if not 8_000 <= rate <= 48_000:
        raise InvalidRequest("audio/pcm rate must be between 8000 and 48000")
    return StreamFormat("audio/wav", pcm_rate=rate)


@dataclass
class SpeakerStreamIngest:
    """One connection's frames for one speaker of one session."""

    live: LivePath
    session: Session
    speaker: str
    fmt: StreamFormat
    next_sequence: int
    closing: bool = False  # a socket opened within the grace after `end`: its frames are the last ones
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    frames: int = 0
    audio_s: float = 0.0  # audio received on this connection, counted from below
    carry: bytes = b""  # WebM: the end of the last frame that is not a whole element yet, joined to the next
    started: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    async def take(self, frame: bytes) -> tuple[ChunkResult, bool]:
        """Store one frame as the next chunk; (its result, whether its ack waited for the live path)."""
        data = self._chunk_bytes(frame)
        if self.frames == 0 and self.fmt.pcm_rate is None and not inspect_chunk(data, self.fmt.mime_type).starts_stream:
            raise InvalidAudio(
                "the first frame of a connection must carry the stream's header (WebM EBML, Ogg, MP4 ftyp): "
                "after a reconnect, send the header again before continuing"
            )
        if self.next_sequence > MAX_SEQUENCE:
            raise InvalidRequest("this speaker has used every sequence number")
        self.frames += 1
        self.audio_s += len(frame) / (2 * self.fmt.pcm_rate) if self.fmt.pcm_rate else MIN_FRAME_S
        throttled = self.audio_s - (self.clock() - self.started) > AHEAD_LIMIT_S
        result = await self.live.accept(
            self.session,
            self.speaker,
            self.next_sequence,
            data,
            self.fmt.mime_type,
            wait_ms=CATCH_UP_WAIT_MS if throttled else 0,
            closing=self.closing,
            streaming=True,
        )
        self.next_sequence += 1
        return result, throttled

    def _whole_elements(self, frame: bytes) -> bytes:
        """A WebM frame cut anywhere (a pipe, a socket's own framing) becomes a chunk of whole elements: a
        trailing partial element waits for the next frame. MediaRecorder's blobs, Ogg and MP4 pass as they are."""
        if not self.fmt.mime_type.lower().startswith("audio/webm"):
            return frame
        joined = self.carry + frame
        self.carry = webm.incomplete_tail(joined)
        return joined[: len(joined) - len(self.carry)]

    def _chunk_bytes(self, frame: bytes) -> bytes:
        if len(frame) > MAX_FRAME_BYTES:
            raise PayloadTooLarge(f"a frame holds at most {MAX_FRAME_BYTES} bytes (send 100-500 ms per frame)")
        if not frame:
            raise InvalidAudio("an empty frame: send 100-500 ms of audio per binary message")
        if self.fmt.pcm_rate is None:
            return self._whole_elements(frame)
        if len(frame) % 2:
            raise InvalidAudio("a PCM frame must hold whole 16-bit samples (an even number of bytes)")
        return wav_header(self.fmt.pcm_rate, len(frame)) + frame
