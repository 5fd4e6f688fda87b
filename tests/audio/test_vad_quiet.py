"""The energy gate's shortcut through the speech model."""

from __future__ import annotations

import numpy as np

from shared.audio.vad import VadTrack
from tests.helpers import FIXTURES, load_pcm


def test_quiet_audio_is_scored_silent_without_the_model() -> None:
    """Audio marked quiet gets zero speech probability (the model is not run), while the same audio unmarked is speech."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    marked, unmarked = VadTrack(), VadTrack()
    marked.extend(speech, quiet=True)
    unmarked.extend(speech)
    assert marked.regions() == []
    assert not np.any(marked.probabilities())
    assert unmarked.regions()


def test_positions_stay_aligned_across_quiet_chunks() -> None:
    """Speech after a quiet stretch is found at the same place as without the shortcut."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    silence = np.zeros(16000 + 123, dtype=np.float32)
    fast, slow = VadTrack(), VadTrack()
    fast.extend(silence, quiet=True)
    fast.extend(speech)
    slow.extend(silence)
    slow.extend(speech)
    (fast_start, _), *_ = fast.regions()
    (slow_start, _), *_ = slow.regions()
    assert abs(fast_start - slow_start) <= 2 * 512
