"""The local faster-whisper engine on real speech, on silence, and around loading and concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faster_whisper
import numpy as np
import pytest

from shared.errors import ConfigurationError, EngineUnavailable
from shared.stt.base import SAMPLE_RATE
from shared.stt.filters import clean_transcription
from shared.stt.local import LocalTranscriber
from shared.stt.wer import wer
from tests.stt.conftest import CLIP_NAMES, load_clip


@pytest.mark.parametrize("name", CLIP_NAMES)
async def test_real_speech_is_transcribed_accurately(local_transcriber: LocalTranscriber, name: str) -> None:
    """A real read-speech clip comes back as its reference text (WER at most 15%) with its quality signals."""
    clip = load_clip(name)
    result = clean_transcription(await local_transcriber.transcribe(clip.pcm))
    assert wer(clip.reference, result.text) <= 0.15, result.text
    assert result.language == "en"
    assert result.confidence is not None
    assert 0.3 < result.confidence <= 1.0
    assert result.segments
    for segment in result.segments:
        assert segment.avg_logprob is not None
        assert segment.no_speech_prob is not None
        assert segment.compression_ratio is not None


async def test_same_audio_gives_same_text(local_transcriber: LocalTranscriber) -> None:
    """Decoding is deterministic: the same utterance twice gives the same text."""
    clip = load_clip("testing_routine")
    first = await local_transcriber.transcribe(clip.pcm)
    second = await local_transcriber.transcribe(clip.pcm)
    assert first.text == second.text


async def test_prompt_with_committed_text_still_transcribes(local_transcriber: LocalTranscriber) -> None:
    """A long prompt (the tail of the committed transcript) is accepted and the utterance is still right."""
    clip = load_clip("i_tell_you")
    prompt = "The doctor came into the room and looked at the glass on the table. " * 10
    result = clean_transcription(await local_transcriber.transcribe(clip.pcm, prompt=prompt))
    assert wer(clip.reference, result.text) <= 0.15, result.text


async def test_digital_silence_yields_no_text_after_filter(local_transcriber: LocalTranscriber) -> None:
    """Three seconds of digital silence produce no transcript text once the hallucination filter has run."""
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    raw = await local_transcriber.transcribe(silence)
    cleaned = clean_transcription(raw)
    assert cleaned.text == ""
    assert cleaned.segments == ()


async def test_empty_audio_gives_empty_text(local_transcriber: LocalTranscriber) -> None:
    """Zero samples give an empty transcription without a decode."""
    result = await local_transcriber.transcribe(np.zeros(0, dtype=np.float32))
    assert result.text == ""


async def test_decoding_does_not_block_the_event_loop(local_transcriber: LocalTranscriber) -> None:
    """While an utterance is decoded, other coroutines keep running on the event loop."""
    clip = load_clip("i_tell_you")
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await local_transcriber.transcribe(clip.pcm)
    done.set()
    await task
    assert ticks >= 3


async def test_concurrent_calls_all_answer(local_transcriber: LocalTranscriber) -> None:
    """Several utterances submitted at once are all transcribed, each with its own text."""
    clips = [load_clip(name) for name in CLIP_NAMES]
    results = await asyncio.gather(*(local_transcriber.transcribe(clip.pcm) for clip in clips))
    for clip, result in zip(clips, results, strict=True):
        assert wer(clip.reference, result.text) <= 0.15, result.text


class FakeWhisperModel:
    """Stands in for faster_whisper.WhisperModel: records how many decodes run at the same time."""

    load_delay_s = 0.0
    fail_with: Exception | None = None
    decode_s = 0.05

    def __init__(self, path: str, **kwargs: Any) -> None:
        time.sleep(self.load_delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        self.kwargs = kwargs
        self.model = SimpleNamespace(is_multilingual=False)
        self.active = 0
        self.peak = 0
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def transcribe(self, audio: Any, **options: Any) -> tuple[Any, Any]:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.calls.append(options)
        time.sleep(self.decode_s)
        with self._lock:
            self.active -= 1
        segment = SimpleNamespace(
            start=0.0, end=1.0, text=" hello there ", avg_logprob=-0.2, no_speech_prob=0.01, compression_ratio=1.1
        )
        return iter([segment]), SimpleNamespace(language="en")


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> type[FakeWhisperModel]:
    """Replace faster-whisper's model class so loading and decoding can be observed without the real model."""

    class Fake(FakeWhisperModel):
        pass

    monkeypatch.setattr(faster_whisper, "WhisperModel", Fake)
    return Fake


async def test_start_loads_in_background_and_ready_flips(fake_model: type[FakeWhisperModel]) -> None:
    """`start` returns at once and loading runs off the event loop; `wait_ready` returns when `ready` is true."""
    fake_model.load_delay_s = 0.3
    engine = LocalTranscriber()
    assert not engine.ready
    began = time.perf_counter()
    await engine.start()
    assert time.perf_counter() - began < 0.2
    assert not engine.ready
    with pytest.raises(EngineUnavailable) as excinfo:
        await engine.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32) * 0.1)
    assert "loading" in excinfo.value.detail
    assert excinfo.value.retry_after is not None
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await engine.wait_ready()
    done.set()
    await task
    assert ticks >= 3  # the loop kept running while the model loaded
    assert engine.ready
    assert engine.load_seconds is not None
    result = await engine.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32) * 0.1)
    assert result.text == "hello there"
    await engine.close()


async def test_decode_options_sent_to_faster_whisper(fake_model: type[FakeWhisperModel]) -> None:
    """Finals decode as faster-whisper's defaults but greedy (temperature fallback, timestamps), drafts at one
    temperature without timestamps; no VAD, English, prompt as initial_prompt."""
    engine = LocalTranscriber()
    engine.load()
    await engine.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32) * 0.1, language="de", prompt="  so far   so good ")
    options = engine._model.calls[-1]
    assert options["beam_size"] == 1
    assert options["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert "without_timestamps" not in options and "condition_on_previous_text" not in options  # the defaults
    assert options["vad_filter"] is False
    assert options["language"] == "en"  # an English-only model ignores other languages
    assert options["initial_prompt"] == "so far so good"
    assert engine._model.kwargs["compute_type"] == "int8"
    assert engine._model.kwargs["device"] == "cpu"
    assert engine._model.kwargs["local_files_only"] is True
    await engine.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32) * 0.1, draft=True)
    draft = engine._model.calls[-1]
    assert (draft["beam_size"], draft["temperature"], draft["without_timestamps"]) == (1, 0.0, True)
    await engine.close()


async def test_load_is_idempotent_across_threads(
    fake_model: type[FakeWhisperModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading from several threads at once builds the model exactly once."""
    created: list[object] = []

    class Counting(fake_model):  # type: ignore[valid-type,misc]
        def __init__(self, path: str, **kwargs: Any) -> None:
            created.append(self)
            super().__init__(path, **kwargs)

    monkeypatch.setattr(faster_whisper, "WhisperModel", Counting)
    Counting.load_delay_s = 0.05
    engine = LocalTranscriber()
    await asyncio.gather(*(asyncio.to_thread(engine.load) for _ in range(4)), engine.start())
    await engine.wait_ready()
    assert len(created) == 1
    await engine.close()


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_concurrency_is_bounded(fake_model: type[FakeWhisperModel], concurrency: int) -> None:
    """No more than `concurrency` decodes run at once, however many utterances are waiting."""
    fake_model.decode_s = 0.05
    engine = LocalTranscriber(concurrency=concurrency)
    engine.load()
    pcm = np.ones(SAMPLE_RATE, dtype=np.float32) * 0.1
    results = await asyncio.gather(*(engine.transcribe(pcm) for _ in range(6)))
    assert [r.text for r in results] == ["hello there"] * 6
    assert engine._model.peak == concurrency
    await engine.close()


async def test_failed_load_is_reported(fake_model: type[FakeWhisperModel]) -> None:
    """A model that cannot load makes `wait_ready` and `transcribe` raise EngineUnavailable naming the cause."""
    fake_model.fail_with = RuntimeError("unsupported model format")
    engine = LocalTranscriber()
    await engine.start()
    with pytest.raises(EngineUnavailable, match="unsupported model format"):
        await engine.wait_ready()
    assert not engine.ready
    with pytest.raises(EngineUnavailable, match="failed to load"):
        await engine.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32))
    await engine.close()


async def test_closed_engine_is_unavailable(fake_model: type[FakeWhisperModel]) -> None:
    """After `close`, the engine is not ready and refuses work with EngineUnavailable."""
    engine = LocalTranscriber()
    engine.load()
    await engine.close()
    assert not engine.ready
    with pytest.raises(EngineUnavailable, match="closed"):
        await engine.transcribe(np.ones(SAMPLE_RATE, dtype=np.float32))


def test_model_dir_without_model_is_a_configuration_error(tmp_path: Path) -> None:
    """WHISPER_MODEL pointing at a directory with no CTranslate2 model is refused at start-up, never downloaded."""
    with pytest.raises(ConfigurationError, match="CTranslate2"):
        LocalTranscriber(str(tmp_path))
    with pytest.raises(ConfigurationError, match="never downloaded"):
        LocalTranscriber("tiny.en")


def test_impossible_thread_settings_are_refused() -> None:
    """Zero threads or zero concurrency is a configuration error."""
    with pytest.raises(ConfigurationError, match="WHISPER_THREADS"):
        LocalTranscriber(cpu_threads=0)
    with pytest.raises(ConfigurationError, match="TRANSCRIBE_CONCURRENCY"):
        LocalTranscriber(concurrency=0)
