"""Shared fixtures: isolated settings, the local model loaded once per test session, and app clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from bridge.app import create_app
from shared.settings import Settings
from shared.stt.base import Transcriber
from tests import pg

FIXTURES = Path(__file__).parent / "fixtures"

BRIDGE_ENV = (
    "DATA_DIR STORE DATABASE_URL SUPABASE_URL SUPABASE_SERVICE_ROLE_KEY SUPABASE_ANON_KEY SUPABASE_JWT_SECRET "
    "BROADCASTER OPENAI_API_KEY OPENAI_MODEL STT_ENGINE WHISPER_MODEL PARTIALS SERVICE_KEY SESSION_TOKEN_SECRET "
    "SESSION_TOKEN_TTL CORS_ORIGINS MAX_BODY_BYTES AUTO_MIGRATE SESSION_IDLE_TIMEOUT SESSION_MAX_DURATION "
    "SIMULATE_LATENCY_MS RATE_LIMITS AUDIO_ENCRYPTION_KEY AUDIO_ENCRYPTION_KEYS_OLD MAX_ACTIVE_SESSIONS BODY_TIMEOUT_S"
).split()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the documented defaults, whatever the machine's environment says."""
    for name in BRIDGE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for an embedded bridge in a fresh data dir; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "store": "sqlite",
            "broadcaster": "local",
            "stt_engine": "simulate",
            "service_key": "service-key-for-tests-0123456789abcdef",
            "session_token_secret": "session-secret-for-tests-0123456789abcdef",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture(scope="session")
def local_transcriber() -> Transcriber:
    """The bundled tiny.en model, loaded once for the whole test session."""
    from shared.stt.local import LocalTranscriber

    engine = LocalTranscriber()
    engine.load()
    return engine


class KeepOpen:
    """Wraps a shared transcriber so an app's shutdown does not close the session-wide model."""

    def __init__(self, inner: Transcriber) -> None:
        self._inner = inner
        self.name = inner.name
        self.partials_by_default = inner.partials_by_default

    @property
    def ready(self) -> bool:
        return self._inner.ready

    async def start(self) -> None:
        await self._inner.start()

    async def wait_ready(self) -> None:
        await self._inner.wait_ready()

    async def transcribe(
        self, pcm: Any, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Any:
        return await self._inner.transcribe(pcm, language=language, prompt=prompt, draft=draft)

    async def close(self) -> None:
        return None


@asynccontextmanager
async def running_app(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
def app_client(
    make_settings: Callable[..., Settings],
) -> Callable[..., Any]:
    """`async with app_client(**settings) as client:` a running bridge on embedded defaults."""

    def open_client(*, transcriber: Transcriber | None = None, **overrides: Any) -> Any:
        settings = make_settings(**overrides)
        engine = KeepOpen(transcriber) if transcriber is not None else None
        return running_app(create_app(settings, transcriber=engine))

    return open_client


# ---------------------------------------------------------------------------------------- Postgres
@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer]:
    """The test session's PostgreSQL: DATABASE_URL's, else an embedded one (never a skip)."""
    with pg.postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
async def pg_database(pg_server: pg.PgServer) -> AsyncIterator[str]:
    """One database for the store tests of this session (each test gets its own schema in it)."""
    await pg.check_reachable(pg_server)
    dsn = await pg.create_database(pg_server, "ib_store")
    try:
        yield dsn
    finally:
        await pg.drop_database(pg_server, dsn)


@pytest.fixture
async def pg_dsn(pg_database: str) -> AsyncIterator[str]:
    """A DSN whose connections work in a fresh, empty schema (dropped after the test)."""
    schema, dsn = await pg.create_schema(pg_database)
    try:
        yield dsn
    finally:
        await pg.drop_schema(pg_database, schema)
