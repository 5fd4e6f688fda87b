"""Settings: read once from the environment, typed, with the documented defaults and `auto` rules."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from bridge.cli import _settings, build_parser
from bridge.services import token_secret
from shared.settings import Settings


def test_defaults_are_the_embedded_ones() -> None:
    """With nothing set, the bridge runs on SQLite in ./data with the local hub, 10 MB bodies and limits on."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.resolved_store() == "sqlite"
    assert settings.resolved_broadcaster() == "local"
    assert settings.data_dir == Path("data")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.max_body_bytes == 10_000_000
    assert settings.rate_limits == "on"
    assert settings.cors_origins == []


def test_environment_is_parsed_into_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables arrive typed: comma lists, numbers, and the `auto` store follows DATABASE_URL."""
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.max_body_bytes == 2048
    assert settings.resolved_store() == "postgres"
    assert settings.resolved_broadcaster() == "supabase"


def test_supabase_url_alone_selects_the_supabase_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without DATABASE_URL, a Supabase project URL makes `auto` pick the Supabase store."""
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    assert Settings(_env_file=None).resolved_store() == "supabase"  # type: ignore[call-arg]


def test_cli_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`serve --port --engine --data-dir` win over PORT, STT_ENGINE and DATA_DIR."""
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("STT_ENGINE", "openai")
    monkeypatch.setenv("DATA_DIR", "/nowhere")
    args = build_parser().parse_args(["serve", "--port", "9100", "--engine", "simulate", "--data-dir", str(tmp_path)])
    settings = _settings(args, port=args.port)
    assert settings.port == 9100
    assert settings.stt_engine == "simulate"
    assert settings.data_dir == tmp_path


@pytest.mark.parametrize(
    ("engine", "override", "slots"),
    [("simulate", None, 256), ("openai", None, 256), ("local", None, 16), ("simulate", 7, 7)],
)
def test_speaker_runs_at_once_are_sized_for_the_engine(
    tmp_path: Path, engine: str, override: int | None, slots: int
) -> None:
    """A remote engine's calls are network waits, so many speakers' runs go at once; the local model gets few."""
    from bridge.services import build_services

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, stt_engine=engine, openai_api_key="sk-test", live_concurrency=override
    )
    services = build_services(settings)
    assert services.live.config.workers == slots


def _secret_in(data_dir: str) -> str:
    return token_secret(Settings(_env_file=None, data_dir=Path(data_dir), session_token_secret=None))  # type: ignore[call-arg]


def test_processes_starting_together_share_one_generated_token_secret(tmp_path: Path) -> None:
    """Without SESSION_TOKEN_SECRET, processes that start at once on one data dir (two `reap` runs, `serve
    --workers`) all read the same whole secret: none sees it half-written, none keeps one of its own."""
    with ProcessPoolExecutor(max_workers=6) as pool:
        found = list(pool.map(_secret_in, [str(tmp_path / "data")] * 48))
    assert len(set(found)) == 1 and len(found[0]) >= 32
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["session_token_secret"]
