"""The digital-silence shortcut through the speech model, and the per-chunk level it sees."""

from __future__ import annotations

import numpy as np

from functions.process_audio.buffer import SpeakerBuffer
from shared.audio.vad import VadTrack, shared_detector
from tests.helpers import FIXTURES, load_pcm


def test_silent_audio_is_scored_silent_without_the_model() -> None:
    """Audio marked silent gets zero speech probability (the model is not run), while the same audio unmarked is speech."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    marked, unmarked = VadTrack(), VadTrack()
    marked.extend(speech, silent=True)
    unmarked.extend(speech)
    assert marked.regions() == []
    assert not np.any(marked.probabilities())
    assert unmarked.regions()


def test_positions_stay_aligned_across_silent_chunks() -> None:
    """Speech after a digitally silent stretch is found at the same place as without the shortcut."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    silence = np.zeros(16000 + 123, dtype=np.float32)
    fast, slow = VadTrack(), VadTrack()
    fast.extend(silence, silent=True)
    fast.extend(speech)
    slow.extend(silence)
    slow.extend(speech)
    (fast_start, _), *_ = fast.regions()
    (slow_start, _), *_ = slow.regions()
    assert abs(fast_start - slow_start) <= 2 * 512


def test_a_buffer_skips_the_model_only_for_digital_silence() -> None:
    """A chunk of zeros gets gain 0 (no model run); a chunk of speech at -60 dBFS is lifted, not skipped."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    quiet = (speech * np.float32(10 ** (-60 / 20) / np.max(np.abs(speech)))).astype(np.float32)
    buffer = SpeakerBuffer(shared_detector())
    buffer.append(0, np.zeros(16000, dtype=np.float32))
    buffer.append(1, quiet)
    assert buffer.chunk_gains[0] == 0.0
    assert buffer.chunk_gains[1] > 100.0
    assert buffer.regions()


def test_a_rebuilt_buffer_finds_the_same_speech_after_a_cut() -> None:
    """After the front is consumed, speech tracking restarts at each chunk's own gain and finds the same region."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    quiet = (speech * np.float32(0.003)).astype(np.float32)
    buffer = SpeakerBuffer(shared_detector())
    buffer.append(0, quiet)
    buffer.append(1, quiet)
    buffer.consume(quiet.size)
    fresh = SpeakerBuffer(shared_detector())
    fresh.append(1, quiet)
    assert buffer.chunk_gains == fresh.chunk_gains
    assert buffer.regions() == fresh.regions() != []
