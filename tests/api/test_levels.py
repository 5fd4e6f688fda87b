"""Every speaker heard: speech gives its words at any microphone level, noise gives none, and the bridge is never
the reason for an error the bare model does not make (faster-whisper's own `transcribe()` on the same file)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import devset
from bridge.offline import ensure_tenant, transcribe_file
from bridge.services import Services
from shared.stt.base import Pcm, Transcriber
from shared.stt.wavio import wav_bytes
from shared.stt.wer import corpus_wer
from tests.helpers import FIXTURES, load_pcm, services

LEVELS = (-3.0, -30.0, -45.0, -55.0)
CLIPS = [
    *sorted((FIXTURES / "speech").glob("*.wav")),
    FIXTURES / "stt" / "i_tell_you.wav",
    FIXTURES / "stt" / "testing_routine.wav",
    FIXTURES / "live" / "two_sentences.flac",
]


def reference(path: Path) -> str:
    return path.with_suffix(".txt").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def bare_model() -> Iterator[Any]:
    """The reference users compare with: WhisperModel on the bundled model with faster-whisper's defaults."""
    from faster_whisper import WhisperModel

    from shared.stt.local import bundled_model_path

    model = WhisperModel(bundled_model_path(), device="cpu", compute_type="int8")
    yield model
    del model


def bare_text(model: Any, path: Path) -> str:
    segments, _ = model.transcribe(str(path), language="en")
    return " ".join(segment.text.strip() for segment in segments)


def write(pcm: Pcm, path: Path) -> Path:
    path.write_bytes(wav_bytes(pcm))
    return path


async def bridge_texts(live: Services, paths: list[Path], chunk_seconds: float) -> list[str]:
    tenant = await ensure_tenant(live)
    texts = []
    for path in paths:
        result = await transcribe_file(live, tenant, path, chunk_seconds)
        assert result.error is None
        texts.append(result.text)
    return texts


@pytest.mark.parametrize("level", LEVELS)
async def test_speech_is_transcribed_at_any_level_as_well_as_the_bare_model(
    level: float, tmp_path: Path, app_client: Any, local_transcriber: Transcriber, bare_model: Any
) -> None:
    """Real speech re-levelled to a peak of `level` dBFS: no file comes back empty, whole files score within
    1.05x of the bare model (plus one word of slack on this small set) and 2 s chunks within 1.10x of whole files."""
    paths = [write(devset.relevel(load_pcm(clip), level), tmp_path / f"{clip.stem}.wav") for clip in CLIPS]
    references = [reference(clip) for clip in CLIPS]
    words = sum(len(r.split()) for r in references)
    bare = corpus_wer(list(zip(references, [bare_text(bare_model, p) for p in paths], strict=True)))
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        whole_texts = await bridge_texts(services(client), paths, 0.0)
        chunk_texts = await bridge_texts(services(client), paths, 2.0)
    assert all(whole_texts) and all(chunk_texts), "no speaker vanishes"
    whole = corpus_wer(list(zip(references, whole_texts, strict=True)))
    chunks = corpus_wer(list(zip(references, chunk_texts, strict=True)))
    assert whole <= bare * 1.05 + 1 / words, (level, whole, bare)
    assert chunks <= whole * 1.10 + 1 / words, (level, chunks, whole)


async def test_a_continuous_stream_matches_the_bare_model(
    tmp_path: Path, app_client: Any, local_transcriber: Transcriber, bare_model: Any
) -> None:
    """Over two minutes of quiet (-45 dBFS peak) speech with 0.3-6 s pauses of room noise between turns: the bridge
    loses no turn, whole-file WER stays within 1.05x of the bare model and 2 s chunks within 1.10x of that."""
    order = [*CLIPS, *CLIPS]
    random.Random(7).shuffle(order)
    pauses = [round(random.Random(i).uniform(0.3, 6.0), 2) for i in range(len(order) + 1)]
    speech = devset.make_stream([load_pcm(clip) for clip in order], pauses, noise_rms_dbfs=-55.0, seed=7)
    stream = write(devset.relevel(speech, -45.0), tmp_path / "stream.wav")
    assert 100 <= len(speech) / 16_000 <= 180
    expected = " ".join(reference(clip) for clip in order)
    bare = corpus_wer([(expected, bare_text(bare_model, stream))])
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="off") as client:
        whole_text, *_ = await bridge_texts(services(client), [stream], 0.0)
        chunk_text, *_ = await bridge_texts(services(client), [stream], 2.0)
    whole = corpus_wer([(expected, whole_text)])
    chunks = corpus_wer([(expected, chunk_text)])
    slack = 1 / len(expected.split())
    assert whole <= bare * 1.05 + slack, (whole, bare)
    assert chunks <= whole * 1.10 + slack, (chunks, whole)


NOISES = {
    "white": devset.white_noise,
    "pink": devset.pink_noise,
    "brown": devset.brown_noise,
    "hum": devset.hum,
}


@pytest.mark.parametrize("kind", sorted(NOISES))
async def test_noise_and_silence_give_no_words_and_no_engine_call_at_any_level(
    kind: str, tmp_path: Path, app_client: Any, local_transcriber: Transcriber
) -> None:
    """White, pink and brown noise and mains hum from -60 dBFS RMS to near full scale, and digital silence, give
    no words and cost no engine call, whole or in 2 s chunks."""
    paths = [
        write(np.clip(NOISES[kind](6.0, rms, seed=3), -1.0, 1.0), tmp_path / f"{kind}_{-rms:g}.wav")
        for rms in (-60.0, -45.0, -30.0, -15.0, -6.0)
    ]
    paths.append(write(np.zeros(6 * 16_000, dtype=np.float32), tmp_path / "silence.wav"))
    async with app_client(transcriber=local_transcriber, stt_engine="local", partials="on") as client:
        live = services(client)
        texts = await bridge_texts(live, paths, 0.0) + await bridge_texts(live, paths, 2.0)
        assert live.live.engine_calls == 0
    assert texts == [""] * len(texts)
