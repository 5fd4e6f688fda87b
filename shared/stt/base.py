"""The Transcriber protocol: one call per utterance, 16 kHz mono float32 PCM in, text and quality signals out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from shared.errors import EngineUnavailable

Pcm = npt.NDArray[np.float32]
SAMPLE_RATE = 16_000


@dataclass(frozen=True, slots=True)
class Segment:
    """One decoded segment with the signals the hallucination filter needs (None where an engine lacks them)."""

    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    language: str | None = None
    confidence: float | None = None


class Transcriber(Protocol):
    """A speech-to-text engine. Implementations: `local` (faster-whisper), `openai`, `simulate`."""

    name: str
    partials_by_default: bool

    @property
    def ready(self) -> bool:
        """True once `transcribe` can answer (the local model is loaded; remote engines at once)."""

    async def start(self) -> None:
        """Begin loading (in the background for the local model); must not block the event loop."""

    async def wait_ready(self) -> None:
        """Return once `ready` is true; raises `EngineUnavailable` if loading failed."""

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Transcription:
        """Transcribe one utterance. Raises `EngineUnavailable` when the engine cannot answer now.

        `draft` asks for a quick decode (a partial line that the final will replace); engines may ignore it.
        """

    async def close(self) -> None: ...


class ReadyAtOnce:
    """For engines with nothing to load (remote APIs, the simulator): ready from construction."""

    @property
    def ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def wait_ready(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SettledItem:
    """An utterance a streaming engine finished: its text and where it lies on the speaker's clock (ms)."""

    text: str
    start_ms: int
    end_ms: int  # the end of the audio it consumed, the pause that ended it included
    speech_end_ms: int  # where the speech itself ended


class TranscriptStream(Protocol):
    """One live speaker's connection to a streaming engine, whose own VAD decides where utterances end."""

    origin_ms: int
    failure: EngineUnavailable | None

    @property
    def busy(self) -> bool:
        """Speech is open or an utterance waits for its text."""

    @property
    def has_settled(self) -> bool:
        """The first utterance not yet taken has its final text."""

    @property
    def settled_ms(self) -> int:
        """Audio (ms on this connection) that no utterance can still reach back into: safe to drop."""

    async def append(self, pcm: Pcm) -> None: ...

    async def finish(self, timeout_s: float) -> None:
        """End the open utterance and wait for every text; EngineUnavailable when it does not come."""

    def take_settled(self) -> list[SettledItem]: ...

    async def close(self) -> None: ...


@runtime_checkable
class StreamingTranscriber(Transcriber, Protocol):
    """An engine that takes a speaker's audio as it comes and cuts it into utterances itself (`openai-realtime`)."""

    async def open_stream(
        self,
        *,
        origin_ms: int,
        language: str | None,
        prompt: str | None,
        on_change: Callable[[], None],
        on_partial: Callable[[str], None],
    ) -> TranscriptStream: ...
