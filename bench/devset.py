"""Building blocks for a development set that sounds like real microphones: levels, room noise, interview turns.

The shared development clips are loud, clean, single utterances; what browsers send is often 20-40 dB quieter,
has a room behind it and comes as continuous talk with pauses. These pure numpy functions re-level clips, make
repeatable noise and join clips into streams, so `scripts/make_dev_set.py` and the tests build the same audio
from the same seeds. All audio is float32 mono 16 kHz in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from shared.audio.levels import peak_dbfs, rms_dbfs  # one definition of a level, re-exported here
from shared.stt.base import SAMPLE_RATE, Pcm

__all__ = [
    "SAMPLE_RATE",
    "active_level_dbfs",
    "add_noise_under",
    "brown_noise",
    "hum",
    "make_stream",
    "peak_dbfs",
    "pink_noise",
    "relevel",
    "rms_dbfs",
    "room_noise",
    "stream_offsets",
    "white_noise",
]

LOWEST_HZ = 20.0  # pink and brown noise stop rising below this: no microphone passes sub-audible drift
ACTIVE_FRAME_S = 0.03
ACTIVE_RANGE_DB = 30.0  # frames this far below the loudest frame count as pauses, not speech

# Salts keep the generators' random streams apart, so pink and brown with one seed are not the same draw.
_WHITE, _PINK, _BROWN, _HUM = 1, 2, 3, 4


def _rng(seed: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, salt])


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _amplitude(dbfs: float) -> float:
    return 0.0 if not math.isfinite(dbfs) else 10.0 ** (dbfs / 20.0)


def _finish(signal: npt.NDArray[np.float64]) -> Pcm:
    """Clip to the valid range and hand back float32: every function here returns what a WAV can hold."""
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def _at_rms(signal: npt.NDArray[np.float64], dbfs: float) -> Pcm:
    """Scale to an exact RMS level (digital silence stays silent; -inf gives silence)."""
    current = float(np.sqrt(np.mean(np.square(signal)))) if signal.size else 0.0
    if current == 0.0:
        return _finish(np.zeros_like(signal))
    return _finish(signal * (_amplitude(dbfs) / current))


def relevel(pcm: npt.ArrayLike, peak_dbfs: float) -> Pcm:
    """Scale so the absolute peak sits at `peak_dbfs`: a quieter or louder microphone, same recording."""
    samples = np.asarray(pcm, dtype=np.float64).reshape(-1)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        return _finish(samples)
    return _finish(samples * (_amplitude(peak_dbfs) / peak))


def _colored(samples: int, exponent: float, seed: int, salt: int) -> npt.NDArray[np.float64]:
    """Gaussian noise whose power falls as 1/f**exponent above LOWEST_HZ (flat below it, no DC)."""
    if samples == 0:
        return np.zeros(0)
    rng = _rng(seed, salt)
    bins = samples // 2 + 1
    spectrum = rng.standard_normal(bins) + 1j * rng.standard_normal(bins)
    freqs = np.fft.rfftfreq(samples, 1.0 / SAMPLE_RATE)
    spectrum *= np.maximum(freqs, LOWEST_HZ) ** (-exponent / 2.0)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n=samples)


def white_noise(seconds: float, rms_dbfs: float, seed: int) -> Pcm:
    """Flat-spectrum noise: preamp hiss, the worst case for an energy gate since it fills every band."""
    return _at_rms(_rng(seed, _WHITE).standard_normal(_samples(seconds)), rms_dbfs)


def pink_noise(seconds: float, rms_dbfs: float, seed: int) -> Pcm:
    """1/f noise: fans, air conditioning, the broadband part of a room."""
    return _at_rms(_colored(_samples(seconds), 1.0, seed, _PINK), rms_dbfs)


def brown_noise(seconds: float, rms_dbfs: float, seed: int) -> Pcm:
    """1/f**2 noise: traffic and building rumble, mostly below 200 Hz."""
    return _at_rms(_colored(_samples(seconds), 2.0, seed, _BROWN), rms_dbfs)


# Mains hum: 50 Hz and its harmonics; the odd ones are strong in transformer and rectifier buzz.
HUM_HARMONICS = ((50.0, 1.0), (100.0, 0.4), (150.0, 0.6), (200.0, 0.15), (250.0, 0.3))


def hum(seconds: float, rms_dbfs: float, seed: int) -> Pcm:
    """50 Hz mains hum with a few harmonics (phases from the seed): a grounding fault on a USB microphone."""
    t = np.arange(_samples(seconds)) / SAMPLE_RATE
    phases = _rng(seed, _HUM).uniform(0.0, 2.0 * math.pi, len(HUM_HARMONICS))
    signal = np.zeros_like(t)
    for (freq, gain), phase in zip(HUM_HARMONICS, phases, strict=True):
        signal += gain * np.sin(2.0 * math.pi * freq * t + phase)
    return _at_rms(signal, rms_dbfs)


def room_noise(samples: int, rms_dbfs: float, seed: int) -> Pcm:
    """A quiet room: brown rumble with some pink hiss on top, `samples` long, at an exact RMS level."""
    mix = 0.8 * _unit(_colored(samples, 2.0, seed, _BROWN)) + 0.6 * _unit(_colored(samples, 1.0, seed, _PINK))
    return _at_rms(mix, rms_dbfs)


def _unit(signal: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rms = float(np.sqrt(np.mean(np.square(signal)))) if signal.size else 0.0
    return signal / rms if rms > 0 else signal


def active_level_dbfs(speech: npt.ArrayLike) -> float:
    """RMS over the speaking frames only (30 ms frames within 30 dB of the loudest), so SNR ignores pauses.

    Same idea as ITU-T P.56 active speech level, simplified: a clip with long silences is not "quieter".
    """
    samples = np.asarray(speech, dtype=np.float64).reshape(-1)
    frame = _samples(ACTIVE_FRAME_S)
    count = samples.size // frame
    if count == 0:
        return rms_dbfs(samples.astype(np.float32))
    power = np.mean(np.square(samples[: count * frame].reshape(count, frame)), axis=1)
    loudest = float(np.max(power))
    if loudest == 0.0:
        return -math.inf
    active = power[power >= loudest * 10.0 ** (-ACTIVE_RANGE_DB / 10.0)]
    return 10.0 * math.log10(float(np.mean(active)))


def add_noise_under(speech: npt.ArrayLike, snr_db: float, seed: int) -> Pcm:
    """Room noise `snr_db` below the speech's active level: a usable but imperfect microphone."""
    samples = np.asarray(speech, dtype=np.float64).reshape(-1)
    noise = room_noise(samples.size, active_level_dbfs(samples) - snr_db, seed)
    return _finish(samples + noise)


def stream_offsets(clip_samples: Sequence[int], pauses: Sequence[float]) -> tuple[list[int], int]:
    """Where each clip starts in a stream (samples) and the stream's length: pause 0, clip 0, pause 1, ...

    `pauses` has one more entry than there are clips: the lead-in, the gaps, and the tail after the last clip.
    """
    if len(pauses) != len(clip_samples) + 1:
        raise ValueError(f"need len(clips) + 1 pauses (lead-in, gaps, tail), got {len(pauses)} for {len(clip_samples)}")
    if any(p < 0 for p in pauses):
        raise ValueError("pauses must not be negative")
    starts: list[int] = []
    position = _samples(pauses[0])
    for length, pause_after in zip(clip_samples, pauses[1:], strict=True):
        starts.append(position)
        position += length + _samples(pause_after)
    return starts, position


def make_stream(clips: list[Pcm], pauses: list[float], noise_rms_dbfs: float, seed: int) -> Pcm:
    """Clips joined by pauses (seconds) over one continuous room noise: the shape of an interview turn.

    The room does not stop when someone talks, so the same noise runs under the clips too; only the pauses
    hear it alone. `pauses` is the lead-in, the gaps and the tail (len(clips) + 1 entries).
    """
    starts, total = stream_offsets([clip.size for clip in clips], pauses)
    out = room_noise(total, noise_rms_dbfs, seed).astype(np.float64)
    for clip, start in zip(clips, starts, strict=True):
        out[start : start + clip.size] += np.asarray(clip, dtype=np.float64).reshape(-1)
    return _finish(out)
