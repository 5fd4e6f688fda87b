"""Signal level: how loud a microphone was set must not decide what is heard.

Real microphones sit anywhere from peaks near full scale to peaks of -55 dBFS (a far or badly set microphone).
Silero and Whisper are both less sure of very quiet input (Whisper's log-mel has a fixed floor), so the live
path brings audio to a common peak level before either sees it. The only thing judged by level alone is digital
silence: every sample within a few least significant bits of zero, where there is nothing to amplify.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.stt.base import Pcm

SILENCE_LSB = 4  # samples within 4/32768 of zero (-78 dBFS): dither and rounding, never a voice
TARGET_PEAK_DBFS = -3.0
MAX_GAIN_DB = 60.0  # enough to lift a -60 dBFS peak to the target; more would only amplify converter noise
_FLOOR_DB = -120.0
BLOCK = 8_000  # 0.5 s at 16 kHz: the step of the gain curve a detector sees
NOISE_FLOOR_RMS_DBFS = -45.0  # the floor every engine input gets (measured best of -40/-45/-60 in bench/wer.py)


def rms_dbfs(pcm: Pcm) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3); -120 for silence or no samples."""
    if pcm.size == 0:
        return _FLOOR_DB
    power = float(np.mean(np.square(pcm, dtype=np.float64)))
    return max(_FLOOR_DB, 10.0 * np.log10(power)) if power > 0 else _FLOOR_DB


def peak_dbfs(pcm: Pcm) -> float:
    """Absolute peak in dBFS; -120 for silence or no samples."""
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    return max(_FLOOR_DB, 20.0 * np.log10(peak)) if peak > 0 else _FLOOR_DB


def is_digital_silence(pcm: Pcm) -> bool:
    """True when every sample is within `SILENCE_LSB` 16-bit steps of zero (or there are none): no gain can
    make speech of it, so the speech model need not run."""
    return pcm.size == 0 or float(np.max(np.abs(pcm))) <= SILENCE_LSB / 32768.0


def _gains_for_peaks(peaks: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """The gain bringing each peak to the target: never below 1 (loud input is left as it is), at most
    `MAX_GAIN_DB`."""
    target = 10 ** (TARGET_PEAK_DBFS / 20)
    lowest = 10 ** ((TARGET_PEAK_DBFS - MAX_GAIN_DB) / 20)
    gains: npt.NDArray[np.float32] = np.clip(target / np.maximum(peaks, lowest), 1.0, None).astype(np.float32)
    return gains


def gain_to_peak(pcm: Pcm) -> float:
    """The linear gain that brings the peak of `pcm` to the target (see `_gains_for_peaks`); 1.0 for digital
    silence."""
    if is_digital_silence(pcm):
        return 1.0
    return float(_gains_for_peaks(np.array([np.max(np.abs(pcm))]))[0])


def normalized(pcm: Pcm) -> Pcm:
    """`pcm` at the common peak (`gain_to_peak`), as float32; the input itself is not modified."""
    factor = gain_to_peak(pcm)
    if factor == 1.0:
        return pcm.astype(np.float32, copy=False)
    scaled: Pcm = np.clip(pcm * np.float32(factor), -1.0, 1.0).astype(np.float32, copy=False)
    return scaled


def for_engine(pcm: Pcm) -> Pcm:
    """What the engine hears: `pcm` at the common peak over a fixed floor of white noise.

    Lifting a quiet microphone also lifts its own noise (converter and room), so without a floor the engine
    would still hear how loud the microphone was set: a clean loud recording has near-digital silence in its
    pauses, a lifted quiet one a noise floor 30-40 dB down. A fixed floor 42 dB under the peak masks that
    difference (and Whisper invents less in noisy pauses than in clean ones). Seeded by the length, so the
    same audio always gives the same input.
    """
    lifted = normalized(pcm)
    if lifted.size == 0:
        return lifted
    rng = np.random.default_rng(lifted.size)
    floor = rng.standard_normal(lifted.size).astype(np.float32) * np.float32(10 ** (NOISE_FLOOR_RMS_DBFS / 20))
    heard: Pcm = np.clip(lifted + floor, -1.0, 1.0).astype(np.float32, copy=False)
    return heard


def block_gains(pcm: Pcm, block: int = BLOCK) -> npt.NDArray[np.float32]:
    """One gain per `block` samples from the start of `pcm`, each bringing the loudest of that block and its two
    neighbours (1.5 s) to the target peak: a quiet word beside a loud one in the same recording is lifted too.
    Empty for digital silence (nothing to detect)."""
    if is_digital_silence(pcm):
        return np.zeros(0, dtype=np.float32)
    count = -(-pcm.size // block)
    padded = np.pad(np.abs(pcm), (0, count * block - pcm.size))
    peaks = padded.reshape(count, block).max(axis=1)
    around = np.maximum(peaks, np.maximum(np.r_[peaks[1:], 0.0], np.r_[0.0, peaks[:-1]]))
    return _gains_for_peaks(around)


def apply_block_gains(pcm: Pcm, gains: npt.NDArray[np.float32], offset: int = 0, block: int = BLOCK) -> Pcm:
    """`pcm` (which starts `offset` samples into the audio `gains` were computed on) scaled by the gain curve:
    block gains joined linearly between block centres, so no step in level looks like an onset."""
    if pcm.size == 0 or gains.size == 0:
        return pcm.astype(np.float32, copy=False)
    centres = (np.arange(gains.size) + 0.5) * block
    positions = np.arange(offset, offset + pcm.size, dtype=np.float64)
    curve = np.interp(positions, centres, gains).astype(np.float32)
    scaled: Pcm = np.clip(pcm * curve, -1.0, 1.0).astype(np.float32, copy=False)
    return scaled
