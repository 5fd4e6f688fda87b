"""The `store` fixture: every conformance test runs once per backend; Postgres fixtures for the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared.store.base import Store
from shared.store.encrypted import AudioCipher, EncryptedStore
from shared.store.postgres import PostgresStore
from shared.store.sqlite import SQLiteStore
from shared.store.supabase import SupabaseStore
from tests import pg

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("sqlite-encrypted", id="sqlite-encrypted"),
    pytest.param("postgres", id="postgres"),
    pytest.param("supabase", id="supabase-rest"),
]

SERVICE_KEY = "service-role-key-for-tests"
PROJECT_URL = "https://project-ref.supabase.test"


@pytest.fixture
async def postgrest(pg_dsn: str) -> AsyncIterator[pg.PostgrestOnPostgres]:
    """PostgREST answered by SQL on a fresh, migrated schema of the real Postgres."""
    migrator = PostgresStore(pg_dsn)
    await migrator.start()
    await migrator.close()
    transport = pg.PostgrestOnPostgres(pg_dsn, SERVICE_KEY)
    try:
        yield transport
    finally:
        await transport.aclose()


@pytest.fixture
async def supabase_on_postgres(postgrest: pg.PostgrestOnPostgres) -> AsyncIterator[SupabaseStore]:
    """A Supabase store whose HTTP requests reach the PostgREST stand-in (not started)."""
    async with httpx.AsyncClient(transport=postgrest) as client:
        yield SupabaseStore(PROJECT_URL, SERVICE_KEY, http_client=client)


@pytest.fixture(params=BACKENDS)
def unstarted_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store of each kind on fresh storage, not yet started (sync, so it may pull in async fixtures)."""
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "bridge.sqlite3")
    if request.param == "sqlite-encrypted":  # what `create_store` makes when AUDIO_ENCRYPTION_KEY is set
        return EncryptedStore(SQLiteStore(tmp_path / "bridge.sqlite3"), AudioCipher(bytes(range(32))))
    if request.param == "postgres":
        return PostgresStore(request.getfixturevalue("pg_dsn"), max_size=4)
    if request.param == "supabase":
        backend: Store = request.getfixturevalue("supabase_on_postgres")
        return backend
    raise AssertionError(request.param)  # pragma: no cover - later backends register here


@pytest.fixture
async def store(unstarted_store: Store) -> AsyncIterator[Store]:
    """A fresh, migrated store of each kind."""
    await unstarted_store.start()
    try:
        yield unstarted_store
    finally:
        await unstarted_store.close()
