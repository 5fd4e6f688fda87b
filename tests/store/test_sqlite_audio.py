"""The embedded store under load: WAV audio kept apart from chunk rows, WAL checkpoints on a thread of their own,
a chunk stored in one statement."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType

import pytest

from shared.errors import StoreConflict
from shared.models import InsertOutcome, Session
from shared.store.sqlite import SQLiteStore
from tests.store.test_conformance import T0, chunk, make_session, make_tenant

AUDIO_MB = 12  # past the 4 MB at which a commit would checkpoint by default


@asynccontextmanager
async def store_with_audio(path: Path, checkpoint_every_s: float) -> AsyncIterator[SQLiteStore]:
    """A started store at `path` that has just taken AUDIO_MB of WAV chunks."""
    store = SQLiteStore(path, checkpoint_every_s=checkpoint_every_s)
    await store.start()
    try:
        session = await make_session(store, await make_tenant(store))
        for seq in range(AUDIO_MB * 16):
            await store.insert_chunk(chunk(session, seq, b"RIFF" + os.urandom(64 * 1024)))
        yield store
    finally:
        await store.close()


async def test_commits_leave_the_checkpoint_to_the_thread(tmp_path: Path) -> None:
    """With the checkpoint thread idle, 12 MB of chunks stay in the WAL: no commit stopped to copy it."""
    path = tmp_path / "bridge.sqlite3"
    async with store_with_audio(path, checkpoint_every_s=3600):
        assert path.stat().st_size < 1024 * 1024
        assert path.with_name(path.name + "-wal").stat().st_size > AUDIO_MB * 1024 * 1024


async def test_the_checkpoint_thread_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    """The thread copies what was written into the database file within a few of its ticks."""
    path = tmp_path / "bridge.sqlite3"
    async with store_with_audio(path, checkpoint_every_s=0.05):
        for _ in range(200):
            if path.stat().st_size > AUDIO_MB * 1024 * 1024:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > AUDIO_MB * 1024 * 1024


async def test_audio_stored_before_the_split_is_still_there_after_it(tmp_path: Path) -> None:
    """A database made by the first schema keeps every chunk's audio when its audio moves to a table of its own."""
    import sqlite3

    from shared.store.sqlite import _split_sql, sqlite_migrations

    path = tmp_path / "bridge.sqlite3"
    first_name, first_sql = sqlite_migrations()[0]
    conn = sqlite3.connect(path)
    for statement in _split_sql(first_sql):
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-11-01T00:00:00.000000Z')", (first_name,))
    conn.execute("INSERT INTO tenants (id, name, api_key_hash, created_at) VALUES ('t', 'acme', 'h', 'x')")
    conn.execute(
        "INSERT INTO sessions (id, tenant_id, status, speakers, metadata, created_at, last_activity_at)"
        " VALUES ('s', 't', 'active', '[]', '{}', '2026-11-01T00:00:00.000000Z', '2026-11-01T00:00:00.000000Z')"
    )
    conn.execute(
        "INSERT INTO audio_chunks (session_id, speaker, sequence_number, mime_type, bytes, digest, received_at)"
        " VALUES ('s', 'candidate', 0, 'audio/wav', ?, 'd', '2026-11-01T00:00:00.000000Z')",
        (b"RIFF-old-audio",),
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    await store.start()
    try:
        stored = await store.get_chunk("s", "candidate", 0)
        assert stored is not None and stored.data == b"RIFF-old-audio"
        [pending] = await store.list_chunks("s", "candidate", pending_only=True, with_data=True)
        assert pending.data == b"RIFF-old-audio"
    finally:
        await store.close()


@pytest.fixture
async def store_and_session(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, Session]]:
    """A started store with one tenant's active session, its activity at T0."""
    store = SQLiteStore(tmp_path / "bridge.sqlite3")
    await store.start()
    try:
        yield store, await make_session(store, await make_tenant(store))
    finally:
        await store.close()


async def test_a_chunk_is_stored_in_one_statement_and_a_replay_checked_only_when_refused(
    store_and_session: tuple[SQLiteStore, Session],
) -> None:
    """Each SQLite statement makes the event loop give up the GIL, so a new chunk is one statement and a replay two."""
    store, session = store_and_session
    calls: list[str] = []

    def count_calls_into_sqlite(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call" and getattr(arg, "__self__", None) is store.conn:
            calls.append(getattr(arg, "__name__", "?"))

    sys.setprofile(count_calls_into_sqlite)
    try:
        assert await store.insert_chunk(chunk(session, 3, b"RIFFone")) is InsertOutcome.INSERTED
        assert calls == ["execute"]
        calls.clear()
        assert await store.insert_chunk(chunk(session, 3, b"RIFFone")) is InsertOutcome.DUPLICATE
        assert await store.insert_chunk(chunk(session, 3, b"RIFFtwo")) is InsertOutcome.CONFLICT
        assert calls == ["execute"] * 4  # the refused insert and the digest's read, twice
    finally:
        sys.setprofile(None)
    stored = await store.get_chunk(session.id, "candidate", 3)
    assert stored is not None and stored.data == b"RIFFone"
    reread = await store.get_session(session.id, session.tenant_id)
    assert reread is not None and reread.last_activity_at == T0 + timedelta(seconds=3)


async def test_a_chunk_whose_audio_cannot_be_stored_leaves_nothing_behind(
    store_and_session: tuple[SQLiteStore, Session],
) -> None:
    """The chunk's row, its audio and the session's activity are one write: the audio refused, none of it is kept."""
    store, session = store_and_session
    store.conn.execute("PRAGMA foreign_keys=OFF")  # an orphan audio row in the way of the chunk's own
    store.conn.execute(
        "INSERT INTO audio_chunk_bytes (session_id, speaker, sequence_number, bytes) VALUES (?, 'candidate', 5, ?)",
        (session.id, b"in the way"),
    )
    store.conn.execute("PRAGMA foreign_keys=ON")
    with pytest.raises(StoreConflict):
        await store.insert_chunk(chunk(session, 5))
    assert await store.get_chunk(session.id, "candidate", 5) is None
    reread = await store.get_session(session.id, session.tenant_id)
    assert reread is not None and reread.last_activity_at == T0
