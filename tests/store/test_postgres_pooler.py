"""The Postgres store behind a transaction-mode pooler (Debian's PgBouncer standing in for Supabase's, port 6543)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import StoreUnavailable
from shared.models import InsertOutcome, NewChunk, NewEntry, Session, SessionStatus, Tenant
from shared.store.postgres import PostgresStore, parse_dsn
from tests import pg

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def test_pooler_detected_from_port_or_flag() -> None:
    """Port 6543 or `?pgbouncer=true` turns the prepared-statement cache off; the flag leaves the DSN; an explicit argument wins."""
    assert PostgresStore("postgresql://u:p@db.example.test:6543/postgres").pgbouncer is True
    assert PostgresStore("postgresql://u:p@db.example.test:5432/postgres").pgbouncer is False
    assert PostgresStore("postgresql://u@/postgres?host=/run/postgresql").pgbouncer is False
    dsn, flag = parse_dsn("postgresql://u@h:5432/db?sslmode=require&pgbouncer=true", None)
    assert flag is True and dsn == "postgresql://u@h:5432/db?sslmode=require"
    assert PostgresStore("postgresql://u@h:6543/db", pgbouncer=False).pgbouncer is False
    assert PostgresStore("postgresql://u@h1:5432,h2:6543/db").pgbouncer is True


@pytest.fixture
async def fresh_database(pg_server: pg.PgServer) -> AsyncIterator[str]:
    """A fresh database (PgBouncer passes no search_path, so a schema of its own will not do)."""
    await pg.check_reachable(pg_server)
    dsn = await pg.create_database(pg_server, "ib_pooler")
    try:
        yield dsn
    finally:
        await pg.drop_database(pg_server, dsn)


async def _workload(store: PostgresStore, sessions: int = 12) -> None:
    """Concurrent sessions, each with chunks, a claimed and saved stream and an entry; asserts what is stored."""
    tenant = Tenant(id=str(uuid.uuid4()), name="pooled", created_at=T0)
    await store.create_tenant(tenant, api_key_hash=uuid.uuid4().hex)

    async def one(index: int) -> None:
        session = Session(
            id=str(uuid.uuid4()),
            tenant_id=tenant.id,
            status=SessionStatus.ACTIVE,
            created_at=T0,
            last_activity_at=T0,
            metadata={"i": index},
        )
        await store.create_session(session)
        for seq in range(3):
            data = b"RIFF%d-%d" % (index, seq)
            outcome = await store.insert_chunk(
                NewChunk(
                    session_id=session.id,
                    speaker="s",
                    sequence_number=seq,
                    data=data,
                    digest=hashlib.sha256(data).hexdigest(),
                    mime_type=None,
                    starts_stream=True,
                    received_at=T0 + timedelta(seconds=seq),
                )
            )
            assert outcome is InsertOutcome.INSERTED
        stream = await store.claim_stream(session.id, "s", f"w{index}", 30, T0)
        assert stream is not None
        stream.next_sequence = 3
        written = await store.save_stream(
            stream,
            f"w{index}",
            done_sequences=[0, 1, 2],
            entry=NewEntry(
                session_id=session.id,
                tenant_id=tenant.id,
                speaker="s",
                first_sequence=0,
                last_sequence=2,
                text=f"hello {index}",
                start_ms=0,
                end_ms=6000,
                language="en",
                confidence=None,
                engine="simulate",
            ),
        )
        assert written is not None and written.created
        assert [e.text for e in await store.list_entries(session.id)] == [f"hello {index}"]
        assert await store.list_chunks(session.id, "s", pending_only=True) == []
        expected = dataclasses.replace(session, last_activity_at=T0 + timedelta(seconds=2))
        assert await store.get_session(session.id, tenant.id) == expected

    await asyncio.gather(*(one(i) for i in range(sessions)))
    assert len(await store.list_sessions(tenant.id, limit=100)) == sessions


async def test_store_works_through_pgbouncer_transaction_mode(pg_server: pg.PgServer, fresh_database: str) -> None:
    """Through PgBouncer in transaction mode the store migrates and serves concurrent sessions without a prepared-statement error."""
    with pg.pgbouncer(pg_server, pool_size=2) as port:
        store = PostgresStore(pg.pooled_dsn(pg_server, fresh_database, port), pgbouncer=True, max_size=8)
        await store.start()
        try:
            assert await store.migrate() == []
            await _workload(store)
        finally:
            await store.close()


async def test_pooler_port_alone_makes_it_work(pg_server: pg.PgServer, fresh_database: str) -> None:
    """A pooler DSN flagged `?pgbouncer=true` (what port 6543 implies) needs no other setting to work through PgBouncer."""
    with pg.pgbouncer(pg_server, pool_size=2) as port:
        store = PostgresStore(pg.pooled_dsn(pg_server, fresh_database, port) + "?pgbouncer=true", max_size=8)
        assert store.pgbouncer
        await store.start()
        try:
            await _workload(store, sessions=6)
        finally:
            await store.close()


async def test_statement_cache_fails_behind_pgbouncer(pg_server: pg.PgServer, fresh_database: str) -> None:
    """Control: with the statement cache left on, the same workload through the pooler fails (as StoreUnavailable), so the tests above prove something."""
    direct = PostgresStore(fresh_database)
    await direct.start()
    await direct.close()
    with pg.pgbouncer(pg_server, pool_size=2) as port:
        store = PostgresStore(pg.pooled_dsn(pg_server, fresh_database, port), pgbouncer=False, max_size=8)
        await store.start()
        try:
            results = await asyncio.gather(*(_workload(store) for _ in range(3)), return_exceptions=True)
        finally:
            await store.close()
    failures = [r for r in results if isinstance(r, StoreUnavailable) and "prepared statement" in str(r)]
    assert failures, results
