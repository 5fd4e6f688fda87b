"""The RLS policies on realtime.messages, proved on a real Postgres with stand-ins for Supabase's realtime/auth."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests import pg

MIGRATION = Path(__file__).resolve().parents[2] / "supabase" / "migrations" / "20260101000300_realtime_policies.sql"

# What a Supabase project has before our migrations: the roles, auth.jwt() reading the request's claims, and a
# realtime.messages table with realtime.topic() reading the topic Realtime sets while it authorises a join.
SUPABASE_REALTIME_STAND_IN = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
CREATE SCHEMA realtime;
CREATE TABLE realtime.messages (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    extension text NOT NULL,
    event text,
    payload jsonb,
    private boolean DEFAULT true
);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION realtime.topic() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('realtime.topic', true), '')::text
$$;
GRANT USAGE ON SCHEMA auth, realtime TO authenticated;
GRANT SELECT, INSERT ON realtime.messages TO authenticated;
GRANT USAGE ON SEQUENCE realtime.messages_id_seq TO authenticated;
"""


def claims(session_id: str, scope: str = "session", tenant_id: str = "T1") -> dict[str, str]:
    return {"role": "authenticated", "tenant_id": tenant_id, "session_id": session_id, "scope": scope}


@pytest.fixture(scope="module")
async def realtime_db(pg_server: pg.PgServer) -> AsyncIterator[str]:
    await pg.check_reachable(pg_server)
    dsn = await pg.create_database(pg_server, "ib_realtime")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SUPABASE_REALTIME_STAND_IN)
            await conn.execute(MIGRATION.read_text())
            await conn.execute(
                "INSERT INTO realtime.messages (topic, extension, event) VALUES ('session:s1', 'broadcast', 'x')"
            )
        finally:
            await conn.close()
        yield dsn
    finally:
        await pg.drop_database(pg_server, dsn)


async def can_receive(dsn: str, token_claims: dict[str, str], topic: str) -> bool:
    """What Realtime asks on a private join: can this user SELECT a broadcast row while the topic is set?"""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE authenticated")
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps(token_claims))
            await conn.execute("SELECT set_config('realtime.topic', $1, true)", topic)
            return bool(await conn.fetchval("SELECT count(*) FROM realtime.messages WHERE extension = 'broadcast'"))
    finally:
        await conn.close()


async def can_send(dsn: str, token_claims: dict[str, str], topic: str, event: str) -> bool:
    """What Realtime asks before accepting a client's push on a private channel: may this user INSERT it?"""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SET LOCAL ROLE authenticated")
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps(token_claims))
            await conn.execute("SELECT set_config('realtime.topic', $1, true)", topic)
            await conn.execute(
                "INSERT INTO realtime.messages (topic, extension, event) VALUES ($1, 'broadcast', $2)", topic, event
            )
            return True
        except asyncpg.InsufficientPrivilegeError:
            return False
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def test_plain_postgres_skips_the_file(pg_server: pg.PgServer) -> None:
    """On plain Postgres (no realtime schema) the migration runs without error and changes nothing."""
    await pg.check_reachable(pg_server)
    dsn = await pg.create_database(pg_server, "ib_plain")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(MIGRATION.read_text())
            assert await conn.fetchval("SELECT to_regclass('realtime.messages')") is None
        finally:
            await conn.close()
    finally:
        await pg.drop_database(pg_server, dsn)


async def test_token_receives_only_its_own_session_topic(realtime_db: str) -> None:
    """A session or viewer token may receive on session:<its session_id> and on no other topic."""
    assert await can_receive(realtime_db, claims("s1"), "session:s1")
    assert await can_receive(realtime_db, claims("s1", scope="viewer"), "session:s1")
    assert not await can_receive(realtime_db, claims("s2"), "session:s1")
    assert not await can_receive(realtime_db, claims("s1"), "session:s2")
    assert not await can_receive(realtime_db, {"role": "authenticated", "tenant_id": "T1"}, "session:s1")


async def test_only_session_tokens_send_and_never_reserved_events(realtime_db: str) -> None:
    """A session token may send its own events on its topic; viewers, other topics and bridge events are refused."""
    assert await can_send(realtime_db, claims("s1"), "session:s1", "cursor")
    assert not await can_send(realtime_db, claims("s1", scope="viewer"), "session:s1", "cursor")
    assert not await can_send(realtime_db, claims("s1"), "session:s2", "cursor")
    for event in ("transcript_entry", "transcript_partial", "session_status"):
        assert not await can_send(realtime_db, claims("s1"), "session:s1", event)
