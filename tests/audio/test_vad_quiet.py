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
    """A chunk of zeros gets no gain curve (no model run); a chunk of speech at -60 dBFS is lifted, not skipped."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    quiet = (speech * np.float32(10 ** (-60 / 20) / np.max(np.abs(speech)))).astype(np.float32)
    buffer = SpeakerBuffer(shared_detector())
    buffer.append(0, np.zeros(16000, dtype=np.float32))
    buffer.append(1, quiet)
    assert buffer.chunk_gains[0].size == 0
    assert buffer.chunk_gains[1].min() > 100.0
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
    assert np.array_equal(buffer.chunk_gains[0], fresh.chunk_gains[0])
    assert buffer.regions() == fresh.regions() != []


def test_a_quiet_word_beside_a_loud_one_in_the_same_chunk_is_found() -> None:
    """In one long chunk, a phrase 66 dB below another one seconds away is still detected: the gain follows the
    level through the chunk instead of being set once by its loudest moment."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    gap = np.zeros(3 * 16000, dtype=np.float32)
    chunk = np.concatenate([speech, gap, speech * np.float32(0.0005), gap])
    buffer = SpeakerBuffer(shared_detector())
    buffer.append(0, chunk)
    quiet_start = speech.size + gap.size
    assert any(s < quiet_start + speech.size and e > quiet_start for s, e in buffer.regions())


def test_a_buffer_rebuilt_from_a_chunk_offset_sees_the_same_gains() -> None:
    """The tail of a chunk appended with its offset is detected exactly as that part of the whole chunk was."""
    speech = load_pcm(FIXTURES / "audio" / "phrase_16k_s16.wav")
    chunk = np.concatenate([speech, np.zeros(16000, dtype=np.float32), speech * np.float32(0.01)])
    whole = SpeakerBuffer(shared_detector())
    whole.append(0, chunk)
    whole.consume(speech.size + 8000)
    rebuilt = SpeakerBuffer(shared_detector())
    rebuilt.append(0, chunk[speech.size + 8000 :], gains=whole.chunk_gains[0], offset=speech.size + 8000)
    assert rebuilt.regions() == whole.regions() != []
