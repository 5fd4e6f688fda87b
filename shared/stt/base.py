"""The Transcriber protocol: one call per utterance, 16 kHz mono float32 PCM in, text and quality signals out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

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
