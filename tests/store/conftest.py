"""The `store` fixture: every conformance test runs once per backend; Postgres fixtures for the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from shared.store.base import Store
from shared.store.postgres import PostgresStore
from shared.store.sqlite import SQLiteStore
from shared.store.supabase import SupabaseStore
from tests import pg

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres"),
    pytest.param("supabase", id="supabase-rest"),
]


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
