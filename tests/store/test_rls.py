"""Row-level security from supabase/migrations, proved on the real Postgres with a stand-in for Supabase's `auth`.

The database gets what a Supabase project has before our migrations run: the roles `anon`, `authenticated`
and `service_role`, and `auth.jwt()` reading `request.jwt.claims` (what PostgREST sets per request). Then the
Postgres store migrates it, fills two tenants, and each test acts as a signed-in user of tenant A.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

from shared.models import NewChunk, NewEntry, Session, SessionStatus, Tenant
from shared.store.postgres import PostgresStore
from tests import pg

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
TABLES = ("tenants", "sessions", "audio_chunks", "speaker_streams", "transcript_entries")
LIFECYCLE_TABLES = ("webhook_deliveries", "usage_days", "reaper_lease")  # the bridge's own: no user reads them

SUPABASE_STAND_IN = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN BYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- another test session made them meanwhile
END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
"""


@dataclass(frozen=True)
class Fixture:
    dsn: str
    sessions: dict[str, str]  # tenant id -> its session id


async def _fill(store: PostgresStore, tenant_id: str) -> str:
    await store.create_tenant(Tenant(id=tenant_id, name=f"tenant {tenant_id}", created_at=T0), f"hash-{tenant_id}")
    session = Session(
        id=f"session-{tenant_id}", tenant_id=tenant_id, status=SessionStatus.ACTIVE, created_at=T0, last_activity_at=T0
    )
    await store.create_session(session)
    data = f"RIFF {tenant_id}".encode()
    await store.insert_chunk(
        NewChunk(
            session_id=session.id,
            speaker="candidate",
            sequence_number=0,
            data=data,
            digest=hashlib.sha256(data).hexdigest(),
            mime_type="audio/wav",
            starts_stream=True,
            received_at=T0,
        )
    )
    stream = await store.claim_stream(session.id, "candidate", "worker", 30, T0)
    assert stream is not None
    await store.save_stream(
        stream,
        "worker",
        done_sequences=[0],
        entry=NewEntry(
            session_id=session.id,
            tenant_id=tenant_id,
            speaker="candidate",
            first_sequence=0,
            last_sequence=0,
            text=f"secret of {tenant_id}",
            start_ms=0,
            end_ms=1000,
            language="en",
            confidence=0.9,
            engine="simulate",
        ),
    )
    return session.id


@pytest.fixture(scope="module")
async def supabase_like(pg_server: pg.PgServer) -> AsyncIterator[Fixture]:
    """A database with Supabase's roles and auth.jwt() stand-in, migrated by the store, holding tenants A and B."""
    await pg.check_reachable(pg_server)
    dsn = await pg.create_database(pg_server, "ib_rls")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SUPABASE_STAND_IN)
        finally:
            await conn.close()
        store = PostgresStore(dsn)
        await store.start()
        try:
            sessions = {tenant: await _fill(store, tenant) for tenant in ("A", "B")}
        finally:
            await store.close()
        yield Fixture(dsn=dsn, sessions=sessions)
    finally:
        await pg.drop_database(pg_server, dsn)


async def _as(conn: asyncpg.Connection, role: str, claims: dict[str, object] | None) -> None:
    """Inside the current transaction, become `role` carrying `claims` as PostgREST does per request."""
    await conn.execute(f"SET LOCAL ROLE {role}")
    await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps(claims or {}))


async def _visible(conn: asyncpg.Connection, table: str) -> list[str]:
    """The session ids (tenant ids for `tenants`) of the rows of `table` this role can see."""
    column = "id" if table in ("tenants", "sessions") else "session_id"
    rows = await conn.fetch(f"SELECT {column} AS key FROM {table} ORDER BY 1")
    return [row["key"] for row in rows]


USER_A = {"sub": "user-a", "role": "authenticated", "app_metadata": {"tenant_id": "A"}}


async def test_rls_is_enabled_on_every_table(supabase_like: Fixture) -> None:
    """With Supabase's auth present the guarded file runs: every table has row-level security on."""
    conn = await asyncpg.connect(supabase_like.dsn)
    try:
        rows = await conn.fetch(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY($1::text[])",
            [*TABLES, *LIFECYCLE_TABLES],
        )
        applied = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
    finally:
        await conn.close()
    assert {r["relname"]: r["relrowsecurity"] for r in rows} == dict.fromkeys([*TABLES, *LIFECYCLE_TABLES], True)
    assert "20260101000200_supabase_rls.sql" in applied


async def test_user_reads_only_their_tenant_in_every_table(supabase_like: Fixture) -> None:
    """Tenant A's user sees A's row in each of the five tables and none of tenant B's."""
    conn = await asyncpg.connect(supabase_like.dsn)
    try:
        async with conn.transaction():
            await _as(conn, "authenticated", USER_A)
            seen = {table: await _visible(conn, table) for table in TABLES}
            texts = [r["text"] for r in await conn.fetch("SELECT text FROM transcript_entries")]
    finally:
        await conn.close()
    a_session = supabase_like.sessions["A"]
    assert seen == {
        "tenants": ["A"],
        "sessions": [a_session],
        "audio_chunks": [a_session],
        "speaker_streams": [a_session],
        "transcript_entries": [a_session],
    }
    assert texts == ["secret of A"]


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"role": "authenticated"}, id="no-tenant"),
        pytest.param({"role": "authenticated", "tenant_id": "B"}, id="top-level-claim"),
        pytest.param({"role": "authenticated", "user_metadata": {"tenant_id": "B"}}, id="user-metadata"),
        pytest.param({"role": "authenticated", "app_metadata": {"tenant_id": "C"}}, id="other-tenant"),
    ],
)
async def test_claims_without_app_metadata_tenant_read_nothing(
    supabase_like: Fixture, claims: dict[str, object]
) -> None:
    """A user whose tenant is not in app_metadata (or names a tenant with no rows) reads no row of any table."""
    conn = await asyncpg.connect(supabase_like.dsn)
    try:
        async with conn.transaction():
            await _as(conn, "authenticated", claims)
            seen = {table: await _visible(conn, table) for table in TABLES}
    finally:
        await conn.close()
    assert seen == {table: [] for table in TABLES}


WRITES = [
    ("insert tenant", "INSERT INTO tenants (id, name, api_key_hash) VALUES ('A2', 'x', 'h-a2')"),
    ("insert session", "INSERT INTO sessions (id, tenant_id) VALUES ('s-new', 'A')"),
    (
        "insert chunk",
        "INSERT INTO audio_chunks (session_id, speaker, sequence_number, bytes, digest)"
        " VALUES ('session-A', 'candidate', 9, '\\x00', 'd')",
    ),
    (
        "insert entry",
        "INSERT INTO transcript_entries (tenant_id, session_id, speaker, first_sequence,"
        " last_sequence, text, engine) VALUES ('A', 'session-A', 'x', 9, 9, 't', 'e')",
    ),
    ("insert stream", "INSERT INTO speaker_streams (session_id, speaker) VALUES ('session-A', 'new')"),
    ("update own session", "UPDATE sessions SET status = 'ended' WHERE id = 'session-A'"),
    ("update other session", "UPDATE sessions SET status = 'ended' WHERE id = 'session-B'"),
    ("update entry", "UPDATE transcript_entries SET text = 'forged'"),
    ("update stream", "UPDATE speaker_streams SET version = 99"),
    ("update chunk", "UPDATE audio_chunks SET state = 'pending'"),
    ("update tenant", "UPDATE tenants SET name = 'forged'"),
    ("delete entries", "DELETE FROM transcript_entries"),
    ("delete sessions", "DELETE FROM sessions"),
    ("delete chunks", "DELETE FROM audio_chunks"),
    ("delete streams", "DELETE FROM speaker_streams"),
    ("delete tenants", "DELETE FROM tenants"),
    ("read key hashes", "SELECT api_key_hash FROM tenants"),
    ("claim a stream", "SELECT * FROM claim_speaker_stream('session-B', 'candidate', 'me', 30, now())"),
    ("save a stream", "SELECT save_speaker_stream('session-B', 'candidate', 'me', 0, 5, 0, 0, 0)"),
    ("insert via function", "SELECT insert_transcript_entry('{}'::jsonb)"),
    ("chunk via function", "SELECT insert_audio_chunk('session-A', 'c', 5, null, '\\x00', 'd', false, now())"),
    ("read webhook secrets", "SELECT webhook_secret FROM tenants"),
    ("read the webhook outbox", "SELECT * FROM webhook_deliveries"),
    ("read usage counters", "SELECT * FROM usage_days"),
    ("read the reaper lease", "SELECT * FROM reaper_lease"),
    ("close a session", "SELECT close_session('session-B', 'ended', now(), 'd1', now())"),
    ("claim webhooks", "SELECT * FROM claim_webhook_deliveries(now(), now(), 10, null)"),
    ("add usage", "SELECT add_usage('A', current_date, 1, 1, 1)"),
    ("take the reaper lease", "SELECT claim_reaper_pass('me', now(), now())"),
    ("fail chunks", "SELECT fail_chunks('session-B', 'candidate', '{0}', now())"),
    ("delete closed sessions", "SELECT delete_closed_sessions(now(), 10)"),
]


@pytest.mark.parametrize(("what", "sql"), WRITES, ids=[w[0] for w in WRITES])
async def test_user_cannot_write_or_call_the_bridge_functions(supabase_like: Fixture, what: str, sql: str) -> None:
    """Tenant A's user is refused every write (own tenant or not), the key hashes and the bridge's SQL functions."""
    conn = await asyncpg.connect(supabase_like.dsn)
    try:
        async with conn.transaction():
            await _as(conn, "authenticated", USER_A)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()


async def test_anon_reads_nothing(supabase_like: Fixture) -> None:
    """The anon key's role is refused every table outright."""
    conn = await asyncpg.connect(supabase_like.dsn)
    try:
        for table in TABLES:
            async with conn.transaction():
                await _as(conn, "anon", {"role": "anon"})
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT * FROM {table}")
    finally:
        await conn.close()


async def test_service_role_reads_and_writes_everything(supabase_like: Fixture) -> None:
    """The bridge's service role sees both tenants' rows and may call the atomic-step functions."""
    conn = await asyncpg.connect(supabase_like.dsn)
    transaction = conn.transaction()
    try:
        await transaction.start()
        await _as(conn, "service_role", {"role": "service_role"})
        seen = {table: len(await _visible(conn, table)) for table in TABLES}
        stream = await conn.fetchrow("SELECT * FROM claim_speaker_stream('session-B', 'interviewer', 'svc', 30, now())")
    finally:
        await transaction.rollback()  # leave the shared fixture as it was
        await conn.close()
    assert seen == dict.fromkeys(TABLES, 2)
    assert stream is not None and stream["lease_owner"] == "svc"


async def test_rls_file_is_skipped_on_plain_postgres(pg_dsn: str) -> None:
    """Without Supabase's auth.jwt() the RLS file is recorded but changes nothing, so plain Postgres migrates cleanly."""
    store = PostgresStore(pg_dsn)
    await store.start()
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])",
            list(TABLES),
        )
        applied = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
    finally:
        await conn.close()
    assert {r["relname"]: r["relrowsecurity"] for r in rows} == dict.fromkeys(TABLES, False)
    assert "20260101000200_supabase_rls.sql" in applied
