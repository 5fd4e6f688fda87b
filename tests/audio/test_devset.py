"""bench.devset: the level, noise and stream building blocks of the microphone-like development set."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bench.devset import (
    SAMPLE_RATE,
    active_level_dbfs,
    add_noise_under,
    brown_noise,
    hum,
    make_stream,
    peak_dbfs,
    pink_noise,
    relevel,
    rms_dbfs,
    room_noise,
    white_noise,
)

GENERATORS = [white_noise, pink_noise, brown_noise, hum]


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """A loud, uneven test signal (a 220 Hz tone under a random envelope) standing in for a clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.repeat(rng.uniform(0.1, 0.9, t.size // 800 + 1), 800)[: t.size]
    return (envelope * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("target", [-1.0, -3.0, -30.0, -45.0, -55.0])
def test_relevel_hits_the_requested_peak(target: float) -> None:
    """relevel puts the absolute peak within 0.1 dB of the requested dBFS and keeps the waveform's shape."""
    clip = speech_like(1.0, seed=1)
    out = relevel(clip, target)
    assert out.dtype == np.float32
    assert abs(peak_dbfs(out) - target) < 0.1
    np.testing.assert_allclose(out / np.max(np.abs(out)), clip / np.max(np.abs(clip)), atol=1e-5)


def test_relevel_leaves_silence_silent() -> None:
    """Digital silence has no peak to move, so relevel returns it unchanged instead of dividing by zero."""
    assert not np.any(relevel(np.zeros(100, dtype=np.float32), -30.0))


@pytest.mark.parametrize("generate", GENERATORS, ids=lambda g: g.__name__)
@pytest.mark.parametrize("level", [-60.0, -45.0, -30.0, -15.0])
def test_noise_generators_hit_their_rms_and_repeat_by_seed(generate, level: float) -> None:
    """Each generator lands within 1 dB of the requested RMS, in [-1, 1], the same for a seed and new for another."""
    noise = generate(2.0, level, 7)
    assert noise.dtype == np.float32
    assert noise.size == 2 * SAMPLE_RATE
    assert abs(rms_dbfs(noise) - level) < 1.0
    assert np.max(np.abs(noise)) <= 1.0
    np.testing.assert_array_equal(noise, generate(2.0, level, 7))
    assert not np.array_equal(noise, generate(2.0, level, 8))


def test_noise_colours_differ_in_spectrum() -> None:
    """Brown noise is darker than pink, pink darker than white, and hum sits at 50 Hz and its harmonics."""

    def low_share(pcm: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(pcm)) ** 2
        freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
        return float(power[freqs < 500].sum() / power.sum())

    white, pink, brown = (g(2.0, -30.0, 3) for g in (white_noise, pink_noise, brown_noise))
    assert low_share(white) < low_share(pink) < low_share(brown)
    spectrum = np.abs(np.fft.rfft(hum(2.0, -30.0, 3)))
    assert np.fft.rfftfreq(2 * SAMPLE_RATE, 1 / SAMPLE_RATE)[np.argmax(spectrum)] == 50.0


def test_room_noise_hits_its_rms_and_repeats_by_seed() -> None:
    """room_noise has the requested length and RMS and is deterministic by seed."""
    noise = room_noise(12_345, -50.0, 4)
    assert noise.size == 12_345
    assert abs(rms_dbfs(noise) - (-50.0)) < 1.0
    np.testing.assert_array_equal(noise, room_noise(12_345, -50.0, 4))


def test_add_noise_under_sets_the_snr_against_active_speech() -> None:
    """The added noise sits snr_db below the speech's active level (pauses do not count), within 1 dB."""
    speech = np.concatenate([np.zeros(SAMPLE_RATE, dtype=np.float32), speech_like(2.0, seed=2)])
    noisy = add_noise_under(speech, 20.0, seed=5)
    added = noisy.astype(np.float64) - speech
    assert abs((active_level_dbfs(speech) - rms_dbfs(added)) - 20.0) < 1.0
    np.testing.assert_array_equal(noisy, add_noise_under(speech, 20.0, seed=5))


def test_make_stream_places_clips_after_pauses_of_the_given_lengths() -> None:
    """Clips sit exactly after their pauses, over one continuous room noise that runs under the clips too."""
    clips = [relevel(speech_like(s, seed=i), -20.0) for i, s in enumerate((0.5, 1.25, 0.3))]
    pauses = [0.3, 1.0, 2.5, 0.7]
    noise_db, seed = -60.0, 9
    stream = make_stream(clips, pauses, noise_db, seed)

    lengths = [round(p * SAMPLE_RATE) for p in pauses]
    assert stream.size == sum(lengths) + sum(c.size for c in clips)
    noise = room_noise(stream.size, noise_db, seed)
    position = 0
    for pause, clip in zip(lengths, clips, strict=False):
        np.testing.assert_array_equal(stream[position : position + pause], noise[position : position + pause])
        position += pause
        np.testing.assert_allclose(
            stream[position : position + clip.size], clip + noise[position : position + clip.size], atol=1e-6
        )
        position += clip.size
    np.testing.assert_array_equal(stream[position:], noise[position:])
    assert stream.size - position == lengths[-1]


def test_make_stream_needs_a_lead_in_and_a_tail() -> None:
    """make_stream takes one pause more than clips (lead-in, gaps, tail) and refuses anything else."""
    with pytest.raises(ValueError, match="pauses"):
        make_stream([np.zeros(10, dtype=np.float32)], [0.5], -60.0, 1)


def load_dev_set_script() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "make_dev_set.py"
    spec = importlib.util.spec_from_file_location("make_dev_set", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def test_dev_set_streams_differ_between_levels_only_in_gain() -> None:
    """Each dev-set stream is one recording turned down to every level, so a level's WER measures the level alone."""
    script = load_dev_set_script()
    clips = [
        script.Clip(f"clip{i}", relevel(speech_like(1.5 + i / 4, seed=i), -6.0 - 8 * i), f"word{i}", True)
        for i in range(4)
    ]
    rows = script.streams(clips)
    by_level: dict[str, list[np.ndarray]] = {}
    for row in rows:
        by_level.setdefault(row.level, []).append(np.asarray(row.pcm, dtype=np.float64))
    assert set(by_level) == {f"peak{p}" for p in script.SPEECH_PEAKS}
    loud = by_level["peak-3"]
    for level, streams in by_level.items():
        for quiet, reference in zip(streams, loud, strict=True):
            gain = np.max(np.abs(reference)) / np.max(np.abs(quiet))
            assert np.allclose(quiet * gain, reference, atol=1e-5 * gain), level
