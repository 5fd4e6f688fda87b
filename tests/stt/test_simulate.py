"""The simulated engine: deterministic, clearly marked text with the configured latency."""

from __future__ import annotations

import time

import numpy as np

from shared.stt.base import SAMPLE_RATE
from shared.stt.filters import clean_transcription
from shared.stt.simulate import SimulatedTranscriber


def noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)


async def test_same_audio_gives_same_marked_text() -> None:
    """The same two seconds of audio always give the same text, marked as simulated with its duration."""
    engine = SimulatedTranscriber()
    first = await engine.transcribe(noise(2.0, seed=1))
    second = await engine.transcribe(noise(2.0, seed=1))
    assert first.text == second.text
    assert first.text.startswith("[simulated 2.0 s] ")
    assert len(first.text.split()) == 3 + 4  # the marker plus two words per second


async def test_different_audio_gives_different_text() -> None:
    """Different audio of the same length gives different simulated words."""
    engine = SimulatedTranscriber()
    texts = {(await engine.transcribe(noise(3.0, seed=seed))).text for seed in range(5)}
    assert len(texts) > 1


async def test_simulated_text_survives_the_filter() -> None:
    """Simulated text is not mistaken for a hallucination, so demos show it."""
    result = clean_transcription(await SimulatedTranscriber().transcribe(noise(1.0, seed=2)))
    assert result.text.startswith("[simulated 1.0 s]")


async def test_silence_gives_no_text() -> None:
    """Digital silence gives empty text, as a real engine would after filtering."""
    result = await SimulatedTranscriber().transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert result.text == ""


async def test_latency_is_honoured() -> None:
    """A configured latency of 200 ms delays every answer by at least that long."""
    engine = SimulatedTranscriber(latency_ms=200)
    began = time.perf_counter()
    await engine.transcribe(noise(1.0, seed=3))
    elapsed = time.perf_counter() - began
    assert 0.19 <= elapsed < 5.0


async def test_identity_and_readiness() -> None:
    """The engine is named "simulate", is ready at once and has partials off by default."""
    engine = SimulatedTranscriber()
    await engine.start()
    await engine.wait_ready()
    assert engine.ready
    assert (engine.name, engine.partials_by_default) == ("simulate", False)
    await engine.close()
