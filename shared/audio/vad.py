"""Speech detection with Silero VAD, independent of how loud the microphone is.

No loudness threshold decides that audio holds no speech: quiet speakers (peaks of -45 dBFS and below) are
speakers. The caller brings each chunk to a common peak level first (`shared.audio.levels`), and only digital
silence skips the model. Silero (faster-whisper's bundled ONNX model, rebuilt at load as an equivalent graph
of MatMuls by `shared.audio.silero_graph`, one thread) costs ~0.7 ms per second of audio and rejects white, pink and brown noise and hum at any level; `VadTrack` keeps its recurrent state per
speaker stream so each chunk is analysed once instead of re-running the whole pending buffer
(measured in bench/audio_costs.py).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.stt.base import SAMPLE_RATE, Pcm

log = logging.getLogger(__name__)

WINDOW = 512  # Silero's window at 16 kHz: one probability per 32 ms
_CONTEXT = 64  # samples of the previous window the model sees in front of each window
_STATE_SHAPE = (1, 1, 128)
# After a second in which no window reached RESET_BELOW, the recurrent state starts afresh: measured on
# microphone-like streams, Silero's state after seconds of room noise lifted to a common level hid a following
# one-word answer ("yes" at 0.39), which a fresh state finds at 0.9. Speech in progress never resets it.
RESET_WINDOWS = 31  # ~1 s of 32 ms windows
RESET_BELOW = 0.35


@dataclass(slots=True)
class _State:
    """Silero's recurrent state plus the context samples: enough to continue a stream window by window; and where
    the stream stands in its current second (for the reset after a silent one)."""

    h: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(_STATE_SHAPE, dtype=np.float32))
    c: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(_STATE_SHAPE, dtype=np.float32))
    context: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(_CONTEXT, dtype=np.float32))
    windows: int = 0  # windows run since the stream began
    loudest: float = 0.0  # highest probability in the current second so far

    def spans(self, count: int) -> Iterator[tuple[int, int]]:
        """Split the next `count` windows into (start, length) runs that never cross a second boundary, so
        each run's probabilities can close a second (call `close_window_run` after each, in order)."""
        base, start = self.windows, 0  # read before the caller closes the first run
        while start < count:
            length = min(count - start, RESET_WINDOWS - (base + start) % RESET_WINDOWS)
            yield start, length
            start += length

    def close_window_run(self, probs: npt.NDArray[np.float32]) -> None:
        """Account for `probs` (windows just scored, not crossing a second boundary) and, when they complete a
        silent second, forget the recurrent state."""
        self.windows += probs.size
        self.loudest = max(self.loudest, float(probs.max())) if probs.size else self.loudest
        if self.windows % RESET_WINDOWS == 0:
            if self.loudest < RESET_BELOW:
                self.h = np.zeros(_STATE_SHAPE, dtype=np.float32)
                self.c = np.zeros(_STATE_SHAPE, dtype=np.float32)
            self.loudest = 0.0


class SpeechDetector:
    """Silero VAD from faster-whisper's bundled ONNX file, loaded once on first use.

    Thread-safe: loading is locked, and the ONNX session is stateless (the recurrent state travels with
    each call), so one detector serves every stream. The session uses one thread, so concurrent calls
    scale with cores instead of fighting over them. CPU-bound: call it off the event loop.
    """

    def __init__(self, model_path: str | None = None) -> None:
        self._model_path = model_path
        self._session: Any = None
        self._graph = ""
        self._lock = threading.Lock()

    @property
    def graph(self) -> str:
        """Which Silero graph runs: "fast" (the MatMul rewrite, `shared.audio.silero_graph`), "stock" (the
        file as shipped, or an explicit `model_path`), or "" before the first use."""
        return self._graph

    def _load(self) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    import onnxruntime

                    opts = onnxruntime.SessionOptions()
                    opts.inter_op_num_threads = 1
                    opts.intra_op_num_threads = 1
                    opts.enable_cpu_mem_arena = False
                    opts.log_severity_level = 4
                    model, self._graph = self._model()
                    self._session = onnxruntime.InferenceSession(
                        model, providers=["CPUExecutionProvider"], sess_options=opts
                    )
        return self._session

    def _model(self) -> tuple[str | bytes, str]:
        """The model to load and its kind: the rewritten graph built from faster-whisper's bundled file (same
        outputs, ~3.5x cheaper), or the stock file when `model_path` is given or the rewrite does not apply."""
        if self._model_path:
            return self._model_path, "stock"
        from faster_whisper.utils import get_assets_path

        from shared.audio.silero_graph import UnexpectedSileroModel, fast_silero_model

        path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
        try:
            return fast_silero_model(path), "fast"
        except UnexpectedSileroModel as exc:
            log.warning("Silero rewrite not applied, running the stock model: %s", exc)
            return path, "stock"

    def warm_up(self) -> None:
        """Load the model now (at start-up) instead of on the first chunk."""
        self.probabilities(np.zeros(WINDOW, dtype=np.float32))

    def probabilities(self, pcm: Pcm) -> npt.NDArray[np.float32]:
        """Speech probability per 512-sample window from the start of `pcm`; the last window is zero-padded."""
        padded = np.pad(pcm.astype(np.float32, copy=False), (0, -pcm.size % WINDOW))
        return self._run(padded, _State())

    def _run(self, windows: Pcm, state: _State) -> npt.NDArray[np.float32]:
        """Run whole windows (len a multiple of WINDOW), continuing from `state` and updating it; one model call
        per second of audio at most, so the state can start afresh after a silent second."""
        out: list[npt.NDArray[np.float32]] = []
        for start, count in state.spans(windows.size // WINDOW):
            probs = self._run_batch(windows[start * WINDOW : (start + count) * WINDOW], state)
            state.close_window_run(probs)
            out.append(probs)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def _run_batch(self, windows: Pcm, state: _State) -> npt.NDArray[np.float32]:
        batch = windows.reshape(-1, WINDOW)
        context = np.concatenate([state.context[None, :], batch[:-1, -_CONTEXT:]])
        batch_in = np.ascontiguousarray(np.concatenate([context, batch], axis=1), dtype=np.float32)
        probs, h, c = self._load().run(None, {"input": batch_in, "h": state.h, "c": state.c})
        state.h, state.c = h, c
        state.context = batch[-1, -_CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)

    @staticmethod
    def speech_regions(
        probs: npt.NDArray[np.float32],
        *,
        threshold: float = 0.5,
        min_silence_ms: float = 100.0,
        min_speech_ms: float = 100.0,
        pad_ms: float = 30.0,
        total_samples: int | None = None,
    ) -> list[tuple[int, int]]:
        """Speech as (start, end) sample ranges. Hysteresis: speech starts at `threshold` and ends only after
        `min_silence_ms` below `threshold - 0.15`; shorter regions are dropped, the rest padded by `pad_ms`
        (overlaps merged) and clipped to `total_samples` (default: the windows' length)."""
        total = total_samples if total_samples is not None else probs.size * WINDOW
        off = max(threshold - 0.15, 0.01)
        min_silence = int(min_silence_ms * SAMPLE_RATE / 1000)
        raw: list[tuple[int, int]] = []
        start: int | None = None
        silent_since: int | None = None
        for i, p in enumerate(probs.tolist()):
            pos = i * WINDOW
            if start is None:
                if p >= threshold:
                    start, silent_since = pos, None
            elif p >= threshold:
                silent_since = None
            elif p < off:
                silent_since = pos if silent_since is None else silent_since
                if pos + WINDOW - silent_since >= min_silence:
                    raw.append((start, silent_since))
                    start = silent_since = None
        if start is not None:
            raw.append((start, silent_since if silent_since is not None else probs.size * WINDOW))
        return _pad_and_merge(raw, min_speech_ms, pad_ms, total)


def _pad_and_merge(
    raw: list[tuple[int, int]], min_speech_ms: float, pad_ms: float, total: int
) -> list[tuple[int, int]]:
    min_speech = int(min_speech_ms * SAMPLE_RATE / 1000)
    pad = int(pad_ms * SAMPLE_RATE / 1000)
    out: list[tuple[int, int]] = []
    for start, end in raw:
        if end - start < min_speech:
            continue
        lo, hi = max(0, start - pad), min(total, end + pad)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        elif hi > lo:
            out.append((lo, hi))
    return out


_shared_detector = SpeechDetector()


def shared_detector() -> SpeechDetector:
    """The process-wide detector (the model is loaded once, on first use)."""
    return _shared_detector


class VadTrack:
    """Per speaker stream: Silero probabilities for a growing buffer, computed once per new sample.

    `extend` runs the model on whole new windows only (continuing the recurrent state and context) and keeps
    the unaligned tail for next time; `drop` follows the consumer cutting the front of its buffer. Sample
    positions are relative to the consumer's buffer start. A pure cache: a new track extended with the
    pending audio gives the same regions to within a window or two. Not thread-safe; one task per track.
    """

    def __init__(self, detector: SpeechDetector | None = None) -> None:
        self._detector = detector or _shared_detector
        self._state = _State()
        self._probs = np.zeros(0, dtype=np.float32)
        self._tail = np.zeros(0, dtype=np.float32)
        self._win_base = 0  # absolute sample index where self._probs[0]'s window starts
        self._buf_start = 0  # absolute sample index of the consumer's buffer start
        self._buf_end = 0  # absolute sample index one past the last sample received

    @property
    def samples(self) -> int:
        """Samples in the consumer's buffer as this track knows it (after drops)."""
        return self._buf_end - self._buf_start

    @property
    def analysed_samples(self) -> int:
        """Samples of the buffer covered by whole windows (the tail under 512 samples waits)."""
        return self._win_base + self._probs.size * WINDOW - self._buf_start

    def extend(self, pcm_new: Pcm, *, silent: bool = False) -> None:
        """Append new audio and compute probabilities for the whole windows it completes.

        `silent` audio (digital silence) is scored as silence without running the model: the per-chunk cost of
        a muted microphone is then a few microseconds instead of a Silero pass.
        """
        self._buf_end += pcm_new.size
        joined = np.concatenate([self._tail, pcm_new.astype(np.float32, copy=False)])
        whole = joined.size - joined.size % WINDOW
        self._tail = joined[whole:].copy()
        if not whole:
            return
        if silent:
            scored = np.zeros(whole // WINDOW, dtype=np.float32)
            self._state.context = joined[whole - _CONTEXT : whole].copy()
            for start, count in self._state.spans(scored.size):  # the resets a model run over zeros would make
                self._state.close_window_run(scored[start : start + count])
        else:
            scored = self._detector._run(joined[:whole], self._state)
        self._probs = np.concatenate([self._probs, scored])

    def drop(self, samples: int) -> None:
        """The consumer removed `samples` from the front of its buffer; forget windows wholly before it."""
        if samples < 0:
            raise ValueError("drop() takes a non-negative sample count")
        self._buf_start = min(self._buf_start + samples, self._buf_end)
        gone = max(0, (self._buf_start - self._win_base) // WINDOW)
        gone = min(gone, self._probs.size)
        self._probs = self._probs[gone:]
        self._win_base += gone * WINDOW

    def probabilities(self) -> npt.NDArray[np.float32]:
        """Probabilities of the windows still (partly) in the buffer; the first may start before it."""
        return self._probs

    def regions(
        self,
        *,
        threshold: float = 0.5,
        min_silence_ms: float = 100.0,
        min_speech_ms: float = 100.0,
        pad_ms: float = 30.0,
    ) -> list[tuple[int, int]]:
        """Speech regions (start, end) in samples from the buffer start, as `SpeechDetector.speech_regions`."""
        shift = self._win_base - self._buf_start  # <= 0: the first window may begin before the buffer
        found = SpeechDetector.speech_regions(
            self._probs,
            threshold=threshold,
            min_silence_ms=min_silence_ms,
            min_speech_ms=min_speech_ms,
            pad_ms=pad_ms,
            total_samples=self.samples - shift,
        )
        return [(max(0, s + shift), e + shift) for s, e in found if e + shift > 0]

    def trailing_silence_ms(self, threshold: float = 0.5) -> float:
        """How long the analysed audio has been below `threshold` at its end (all of it if no speech)."""
        above = np.flatnonzero(self._probs >= threshold)
        analysed_end = self._win_base + self._probs.size * WINDOW
        last_speech_end = self._win_base + (int(above[-1]) + 1) * WINDOW if above.size else self._buf_start
        silent = analysed_end - max(last_speech_end, self._buf_start)
        return max(0, silent) * 1000.0 / SAMPLE_RATE
