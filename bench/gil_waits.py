"""Why the event loop's calls into the store are counted, not only timed: `python bench/gil_waits.py`.

At max pace the event loop shares the GIL with the audio thread, which always has Python work queued. Every call
that gives up the GIL (a SQLite statement, a socket read) must then wait to take it back, and while the other
thread computes that wait lasts up to the switch interval (5 ms). So a call that costs microseconds alone can
cost milliseconds under load, and the number of such calls per chunk decides chunks/s more than their CPU does.

Printed, each alone and beside a thread that runs Python without pause:
- SQLite: chunk-sized writes per second as six statements (BEGIN, a read, two inserts, an update, COMMIT: what
  `SQLiteStore.insert_chunk` did before migration 0004) and as the one INSERT into `chunk_arrivals` it is now,
  through the real store;
- Postgres (when `--database-url` answers): pooled asyncpg calls per second with asyncpg's default reset query on
  release and without it, as `PostgresStore` runs now.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from shared.models import NewChunk, Session, SessionStatus, Tenant
from shared.store.sqlite import SQLiteStore

AUDIO = os.urandom(6_000)  # about one 2 s WebM/Opus chunk
SEQUENCE = itertools.count()  # every write a new chunk, across figures


@contextmanager
def busy_thread(on: bool) -> Iterator[None]:
    """A thread that runs Python without ever giving up the GIL on its own, like audio work between its C calls."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=spin, daemon=True)
    if on:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if on:
            thread.join()


def per_second(action: Callable[[int], None], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        action(next(SEQUENCE))
        done += 1
    return done / (time.perf_counter() - started)


def open_store(path: Path) -> tuple[SQLiteStore, Session]:
    """A started store at `path` with one active session."""
    store = SQLiteStore(path, checkpoint_every_s=3600)
    now = datetime.now(UTC)
    tenant = Tenant(id=str(uuid.uuid4()), name="bench", created_at=now)
    session = Session(
        id=str(uuid.uuid4()), tenant_id=tenant.id, status=SessionStatus.ACTIVE, created_at=now, last_activity_at=now
    )

    async def prepare() -> None:
        await store.start()
        await store.create_tenant(tenant, api_key_hash=hashlib.sha256(tenant.id.encode()).hexdigest())
        await store.create_session(session)

    asyncio.run(prepare())
    return store, session


def six_statements(folder: Path) -> Callable[[int], None]:
    """The statements `insert_chunk` ran before migration 0004, on the same schema."""
    store, session = open_store(folder / "six.sqlite3")
    conn, digest = store.conn, hashlib.sha256(AUDIO).hexdigest()

    def write(seq: int) -> None:
        key = (session.id, "candidate", seq)
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "SELECT digest FROM audio_chunks WHERE session_id = ? AND speaker = ? AND sequence_number = ?", key
        ).fetchone()
        conn.execute(
            "INSERT INTO audio_chunks (session_id, speaker, sequence_number, mime_type, digest, starts_stream,"
            " received_at, state) VALUES (?, ?, ?, 'audio/webm', ?, 0, ?, 'pending')",
            (*key, digest, at),
        )
        conn.execute(
            "INSERT INTO audio_chunk_bytes (session_id, speaker, sequence_number, bytes) VALUES (?, ?, ?, ?)",
            (*key, AUDIO),
        )
        conn.execute(
            "UPDATE sessions SET last_activity_at = ? WHERE id = ? AND last_activity_at < ?", (at, session.id, at)
        )
        conn.execute("COMMIT")

    return write


def one_statement(folder: Path) -> Callable[[int], None]:
    """`SQLiteStore.insert_chunk` as it is: one INSERT into `chunk_arrivals`."""
    store, session = open_store(folder / "one.sqlite3")
    digest = hashlib.sha256(AUDIO).hexdigest()

    def write(seq: int) -> None:
        chunk = NewChunk(
            session_id=session.id,
            speaker="candidate",
            sequence_number=seq,
            data=AUDIO,
            digest=digest,
            mime_type="audio/webm",
            starts_stream=False,
            received_at=datetime.now(UTC),
        )
        coroutine = store.insert_chunk(chunk)
        try:
            coroutine.send(None)  # it never awaits: run it to its end without an event loop
        except StopIteration:
            return
        raise RuntimeError("insert_chunk awaited")

    return write


async def pool_calls_per_second(dsn: str, reset: bool, seconds: float) -> float:
    async def keep(conn: asyncpg.Connection) -> None:
        return None

    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4, **({} if reset else {"reset": keep}))
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(4)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure (default 2)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        writers = {
            "SQLite, six statements per chunk": six_statements(Path(folder)),
            "SQLite, one statement (insert_chunk)": one_statement(Path(folder)),
        }
        for busy in (False, True):
            for name, write in writers.items():
                with busy_thread(busy):
                    rate = per_second(write, args.seconds)
                print(f"{name:<40} {'beside a busy thread' if busy else 'alone':<22} {rate:>9,.0f} chunks/s")
    if not args.database_url:
        print("Postgres: skipped (no --database-url or DATABASE_URL)")
        return
    for reset in (True, False):
        rate = asyncio.run(pool_calls_per_second(args.database_url, reset, args.seconds))
        label = "default reset query on release" if reset else "no reset query (PostgresStore)"
        print(f"{'Postgres, ' + label:<63} {rate:>9,.0f} calls/s")


if __name__ == "__main__":
    main()
