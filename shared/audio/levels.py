"""Signal level: how loud a microphone was set must not decide what is heard.

Real microphones sit anywhere from peaks near full scale to peaks of -55 dBFS (a far or badly set microphone).
Silero and Whisper are both less sure of very quiet input (Whisper's log-mel has a fixed floor), so the live
path brings audio to a common peak level before either sees it. The only thing judged by level alone is digital
silence: every sample within a few least significant bits of zero, where there is nothing to amplify.
"""

from __future__ import annotations

import numpy as np

from shared.stt.base import Pcm

SILENCE_LSB = 4  # samples within 4/32768 of zero (-78 dBFS): dither and rounding, never a voice
TARGET_PEAK_DBFS = -3.0
MAX_GAIN_DB = 60.0  # enough to lift a -60 dBFS peak to the target; more would only amplify converter noise
_FLOOR_DB = -120.0


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


def gain_to_peak(pcm: Pcm, target_dbfs: float = TARGET_PEAK_DBFS, max_gain_db: float = MAX_GAIN_DB) -> float:
    """The linear gain that brings the peak of `pcm` to `target_dbfs`, at most `max_gain_db`; 1.0 for digital
    silence. Never below 1.0 for audio that is already loud enough: loud input is left as it is."""
    if is_digital_silence(pcm):
        return 1.0
    needed_db = target_dbfs - peak_dbfs(pcm)
    return float(10 ** (min(max(needed_db, 0.0), max_gain_db) / 20))


def normalized(pcm: Pcm, gain: float | None = None) -> Pcm:
    """`pcm` scaled by `gain` (default: `gain_to_peak(pcm)`), as float32; the input itself is not modified."""
    factor = gain_to_peak(pcm) if gain is None else gain
    if factor == 1.0:
        return pcm.astype(np.float32, copy=False)
    scaled: Pcm = np.clip(pcm * np.float32(factor), -1.0, 1.0).astype(np.float32, copy=False)
    return scaled
