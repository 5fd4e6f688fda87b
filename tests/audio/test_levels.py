"""Levels: quiet audio is lifted to a common peak, loud audio is left alone, the engine hears a fixed floor."""

from __future__ import annotations

import numpy as np
import pytest

from shared.audio.levels import (
    MAX_GAIN_DB,
    NOISE_FLOOR_RMS_DBFS,
    apply_block_gains,
    block_gains,
    for_engine,
    gain_to_peak,
    normalized,
    peak_dbfs,
    rms_dbfs,
)
from tests.audio.support import decode_file


def speech_at(peak: float) -> np.ndarray:
    speech = decode_file("phrase_16k_s16.wav")
    return (speech * (10 ** (peak / 20) / np.max(np.abs(speech)))).astype(np.float32)


@pytest.mark.parametrize("level", [-30.0, -45.0, -55.0])
def test_quiet_speech_is_lifted_to_the_common_peak(level: float) -> None:
    """Speech peaking at -30, -45 or -55 dBFS comes out peaking at -3 dBFS."""
    assert peak_dbfs(normalized(speech_at(level))) == pytest.approx(-3.0, abs=0.01)


def test_loud_audio_is_never_turned_down_and_gain_is_capped() -> None:
    """Audio already above the target keeps its level; a -70 dBFS signal gets at most the 60 dB cap."""
    loud = speech_at(-1.0)
    assert gain_to_peak(loud) == 1.0
    assert np.array_equal(normalized(loud), loud)
    assert 20 * np.log10(gain_to_peak(speech_at(-70.0))) == pytest.approx(MAX_GAIN_DB)


def test_the_engine_hears_the_common_peak_over_a_fixed_floor_the_same_way_every_time() -> None:
    """for_engine lifts a -55 dBFS phrase to about -3 dBFS, fills its silence with the -45 dBFS floor, and gives
    the same samples for the same audio."""
    quiet = np.concatenate([speech_at(-55.0), np.zeros(16000, dtype=np.float32)])
    heard = for_engine(quiet)
    assert heard.shape == quiet.shape
    assert peak_dbfs(heard) == pytest.approx(-3.0, abs=0.5)
    assert rms_dbfs(heard[-16000:]) == pytest.approx(NOISE_FLOOR_RMS_DBFS, abs=0.5)
    assert np.array_equal(heard, for_engine(quiet))


def test_block_gains_follow_the_level_and_skip_digital_silence() -> None:
    """A loud second and a quiet second each reach the target; digital silence gets no curve at all."""
    loud, quiet = speech_at(-6.0)[:16000], speech_at(-50.0)[:16000]
    gains = block_gains(np.concatenate([loud, np.zeros(16000, dtype=np.float32), quiet]))
    assert gains[-1] > gains[0] * 10 ** (40 / 20)
    assert block_gains(np.zeros(32000, dtype=np.float32)).size == 0
    lifted = apply_block_gains(quiet, block_gains(quiet))
    assert peak_dbfs(lifted) == pytest.approx(-3.0, abs=1.0)
