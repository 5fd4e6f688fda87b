"""Speech detection at any level: speech is found however quiet, noise never however loud, incremental VAD matches."""

from __future__ import annotations

import numpy as np
import pytest

from bench import devset
from functions.process_audio.buffer import SpeakerBuffer
from shared.audio.levels import is_digital_silence, peak_dbfs, rms_dbfs
from shared.audio.vad import WINDOW, SpeechDetector, VadTrack, shared_detector
from shared.stt.base import SAMPLE_RATE
from tests.audio.support import decode_file, tone
from tests.helpers import FIXTURES, load_pcm

N = 2 * SAMPLE_RATE


def at_rms(signal: np.ndarray, dbfs: float) -> np.ndarray:
    return (signal * (10 ** (dbfs / 20) / np.sqrt(np.mean(signal**2)))).astype(np.float32)


def coloured_noise(exponent: float, seed: int = 0) -> np.ndarray:
    """White (0), pink (0.5) or brown (1) noise: white noise shaped by 1/f**exponent in amplitude."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(N))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spectrum / f**exponent, N)


def hum() -> np.ndarray:
    t = np.arange(N) / SAMPLE_RATE
    return np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 250 * t)


def test_rms_and_peak_dbfs_of_known_signals() -> None:
    """A half-scale sine is -9 dBFS RMS and -6 dBFS peak; silence and empty input sit at the -120 floor."""
    assert peak_dbfs(tone(1.0).astype(np.float32)) == pytest.approx(-6.02, abs=0.05)
    assert peak_dbfs(np.zeros(3, dtype=np.float32)) == -120.0
    assert rms_dbfs(tone(1.0).astype(np.float32)) == pytest.approx(-9.03, abs=0.05)
    assert rms_dbfs(np.zeros(100, dtype=np.float32)) == -120.0
    assert rms_dbfs(np.zeros(0, dtype=np.float32)) == -120.0


def at_peak(signal: np.ndarray, dbfs: float) -> np.ndarray:
    """`signal` scaled to a peak of `dbfs`, then rounded to 16 bits as a microphone's converter would."""
    scaled = signal * (10 ** (dbfs / 20) / np.max(np.abs(signal)))
    return (np.round(scaled * 32767) / 32767).astype(np.float32)


def detected(pcm: np.ndarray) -> list[tuple[int, int]]:
    """Speech regions as the live path finds them: 2 s chunks into one speaker buffer."""
    buffer = SpeakerBuffer(shared_detector())
    for i, start in enumerate(range(0, pcm.size, N)):
        buffer.append(i, pcm[start : start + N])
    return buffer.regions()


def test_digital_silence_is_only_samples_within_a_few_bits_of_zero() -> None:
    """Zeros, no samples and +-3 LSB of dither are digital silence; speech 80 dB down is not."""
    assert is_digital_silence(np.zeros(N, dtype=np.float32))
    assert is_digital_silence(np.zeros(0, dtype=np.float32))
    dither = np.random.default_rng(0).integers(-3, 4, N).astype(np.float32) / 32768
    assert is_digital_silence(dither)
    assert not is_digital_silence(at_peak(decode_file("phrase_16k_s16.wav"), -70.0))


@pytest.mark.parametrize("level", [-3.0, -30.0, -45.0, -55.0, -65.0])
def test_speech_is_found_at_any_level(level: float) -> None:
    """The phrase is found, covering most of its length, whether its peak sits at -3 or at -65 dBFS."""
    speech = at_peak(decode_file("phrase_16k_s16.wav"), level)
    padded = np.concatenate([np.zeros(N // 2, dtype=np.float32), speech, np.zeros(N, dtype=np.float32)])
    assert peak_dbfs(padded) == pytest.approx(level, abs=0.3)  # after rounding to 16 bits
    regions = detected(padded)
    assert regions
    assert sum(e - s for s, e in regions) > 1.5 * SAMPLE_RATE


@pytest.mark.parametrize(
    "signal",
    [
        pytest.param(coloured_noise(0.0), id="white"),
        pytest.param(coloured_noise(0.5), id="pink"),
        pytest.param(coloured_noise(1.0), id="brown"),
        pytest.param(hum(), id="hum"),
    ],
)
@pytest.mark.parametrize("level", [-60.0, -45.0, -30.0, -15.0, -6.0])
def test_noise_is_never_speech_at_any_level(signal: np.ndarray, level: float) -> None:
    """White, pink and brown noise and mains hum from -60 dBFS RMS to near full scale hold no speech."""
    noise = np.clip(at_rms(np.tile(signal, 3), level), -1.0, 1.0)
    assert detected(noise) == []


def test_detector_finds_speech_in_the_phrase() -> None:
    """Silero finds one or more regions covering most of the spoken phrase, inside its bounds."""
    pcm = decode_file("phrase_16k_s16.wav")
    detector = shared_detector()
    regions = detector.speech_regions(detector.probabilities(pcm), total_samples=pcm.size)
    assert regions
    assert regions[0][0] < 0.4 * SAMPLE_RATE
    assert regions[-1][1] > 1.8 * SAMPLE_RATE
    assert all(0 <= s < e <= pcm.size for s, e in regions)
    assert sum(e - s for s, e in regions) > 1.5 * SAMPLE_RATE


@pytest.mark.parametrize("name", ["silence_2s.wav", "pink_noise_2s.wav"])
def test_detector_finds_no_speech_in_silence_or_noise(name: str) -> None:
    """Silence and noise give no speech region."""
    pcm = decode_file(name)
    detector = shared_detector()
    assert detector.speech_regions(detector.probabilities(pcm)) == []


def test_probabilities_come_one_per_512_sample_window() -> None:
    """The last partial window is padded, so n samples give ceil(n / 512) probabilities in [0, 1]."""
    probs = shared_detector().probabilities(np.zeros(WINDOW * 3 + 1, dtype=np.float32))
    assert probs.shape == (4,) and probs.dtype == np.float32
    assert ((probs >= 0) & (probs <= 1)).all()


def test_a_second_detector_instance_loads_its_own_model_and_agrees() -> None:
    """Two detectors (one lazily loaded) give identical probabilities: the session holds no stream state."""
    pcm = decode_file("phrase_16k_s16.wav")
    assert np.array_equal(SpeechDetector().probabilities(pcm), shared_detector().probabilities(pcm))


def _two_phrases() -> np.ndarray:
    phrase = decode_file("phrase_16k_s16.wav")
    return np.concatenate([phrase, np.zeros(SAMPLE_RATE, dtype=np.float32), phrase, np.zeros(12_345, dtype=np.float32)])


def test_incremental_track_matches_a_whole_buffer_pass() -> None:
    """Feeding a VadTrack in uneven chunks gives the whole-buffer probabilities and regions."""
    audio = _two_phrases()
    detector = shared_detector()
    track = VadTrack(detector)
    for start in range(0, audio.size, 7_777):
        track.extend(audio[start : start + 7_777])
    whole = detector.probabilities(audio)
    assert track.samples == audio.size
    assert np.allclose(track.probabilities(), whole[: track.probabilities().size], atol=1e-5)
    assert whole.size - track.probabilities().size <= 1
    expected = detector.speech_regions(whole, total_samples=audio.size)
    got = track.regions()
    assert len(got) == len(expected) >= 2
    for (s1, e1), (s2, e2) in zip(got, expected, strict=True):
        assert abs(s1 - s2) <= 2 * WINDOW and abs(e1 - e2) <= 2 * WINDOW


def test_drop_shifts_regions_to_the_new_buffer_start() -> None:
    """After the consumer cuts the first phrase, the second phrase's region moves to the front."""
    audio = _two_phrases()
    track = VadTrack()
    track.extend(audio)
    before = track.regions()
    cut = decode_file("phrase_16k_s16.wav").size + SAMPLE_RATE // 2 + 123  # inside the pause, off-window
    track.drop(cut)
    after = track.regions()
    assert track.samples == audio.size - cut
    expected = [(s - cut, e - cut) for s, e in before if s >= cut]
    assert len(after) == len(expected) >= 1
    for got, want in zip(after, expected, strict=True):
        assert abs(got[0] - want[0]) <= WINDOW and abs(got[1] - want[1]) <= WINDOW
    fresh = VadTrack()
    fresh.extend(audio[cut:])
    assert len(fresh.regions()) == len(after)
    for got, want in zip(after, fresh.regions(), strict=True):
        assert abs(got[0] - want[0]) <= 2 * WINDOW and abs(got[1] - want[1]) <= 2 * WINDOW


def test_trailing_silence_grows_with_silent_audio_and_resets_on_speech() -> None:
    """trailing_silence_ms counts the analysed silence after the last speech window."""
    track = VadTrack()
    track.extend(decode_file("phrase_16k_s16.wav"))
    after_phrase = track.trailing_silence_ms()
    assert after_phrase < 400
    track.extend(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert track.trailing_silence_ms() == pytest.approx(after_phrase + 1000, abs=2 * 32)
    track.extend(decode_file("phrase_16k_s16.wav"))
    assert track.trailing_silence_ms() < 400


def test_a_track_of_only_silence_is_all_trailing_silence() -> None:
    """With no speech at all, the whole analysed buffer is trailing silence and there are no regions."""
    track = VadTrack()
    track.extend(np.zeros(SAMPLE_RATE + 100, dtype=np.float32))
    assert track.regions() == []
    assert track.trailing_silence_ms() == pytest.approx(31 * WINDOW * 1000 / SAMPLE_RATE)


def test_drop_rejects_a_negative_count_and_clamps_past_the_end() -> None:
    """Dropping more than the buffer empties it; a negative drop is a programming error."""
    track = VadTrack()
    track.extend(np.zeros(5_000, dtype=np.float32))
    track.drop(10_000)
    assert track.samples == 0 and track.regions() == []
    with pytest.raises(ValueError, match="non-negative"):
        track.drop(-1)


def test_a_short_word_alone_between_pauses_is_speech() -> None:
    """A one-syllable answer (about 0.2 s of speech between pauses, like "yes" or "up") is kept as a region."""
    speech = decode_file("phrase_16k_s16.wav")
    chunk = np.zeros(N, dtype=np.float32)
    chunk[10_000:13_500] = speech[6_400:9_900]
    track = VadTrack()
    track.extend(chunk)
    assert track.regions()
    assert track.regions(min_speech_ms=250) == []  # what the default used to drop


def test_a_one_word_answer_after_seconds_of_room_noise_is_speech() -> None:
    """ "Yes" right after 8 s of quiet room noise is found (its region starts within 0.6 s of the clip), because
    the detector's recurrent state starts afresh after a silent second instead of carrying the noise over."""
    words = load_pcm(FIXTURES / "speech" / "speechcommands_yes_no_go_stop.wav")
    noise = devset.room_noise(8 * SAMPLE_RATE, -60.0, seed=1)
    clip = devset.relevel(words, -10.0) + devset.room_noise(words.size, -60.0, seed=2)
    buffer = SpeakerBuffer(shared_detector())
    buffer.append(0, np.concatenate([noise, clip]).astype(np.float32))
    after_noise = [start - noise.size for start, end in buffer.regions() if end > noise.size]
    assert after_noise and after_noise[0] < 0.6 * SAMPLE_RATE
