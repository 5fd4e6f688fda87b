"""A simulated engine for demos and load tests: deterministic, clearly marked text, configurable latency.

It never runs unless asked for (`STT_ENGINE=simulate`): the factory does not fall back to it.
"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np

from shared.stt.base import SAMPLE_RATE, Pcm, ReadyAtOnce, Segment, Transcription

__all__ = ["SimulatedTranscriber"]

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]
WORDS_PER_SECOND = 2.0
SILENCE_RMS = 1e-4


class SimulatedTranscriber(ReadyAtOnce):
    """Returns "[simulated N.N s] word word ..." with about two words per second of audio.

    The words are chosen from a hash of the samples, so the same audio always gives the same text;
    digital silence gives no text at all, like a real engine after the hallucination filter.
    """

    name = "simulate"
    partials_by_default = False

    def __init__(self, latency_ms: int = 0) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        self.latency_ms = latency_ms

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Transcription:
        """Wait `latency_ms`, then describe the audio deterministically (its duration and a word list)."""
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        samples = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
        duration = len(samples) / SAMPLE_RATE
        if len(samples) == 0 or float(np.sqrt(np.mean(np.square(samples)))) < SILENCE_RMS:
            return Transcription(text="", language=language or "en")
        digest = hashlib.sha256(samples.tobytes()).digest()
        count = max(1, round(duration * WORDS_PER_SECOND))
        words = [
            _WORDS[hashlib.sha256(digest + i.to_bytes(4, "little")).digest()[0] % len(_WORDS)] for i in range(count)
        ]
        text = f"[simulated {duration:.1f} s] " + " ".join(words)
        segment = Segment(
            start=0.0, end=duration, text=text, avg_logprob=-0.1, no_speech_prob=0.0, compression_ratio=1.0
        )
        return Transcription(text=text, segments=(segment,), language=language or "en", confidence=0.9)

    async def close(self) -> None:
        return None
