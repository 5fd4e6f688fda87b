"""What storing one 2 s WAV chunk costs the embedded store, apart from everything else: `python bench/store_cost.py`.

The bridge acknowledges a chunk once it is stored. This prints the CPU of `SQLiteStore.insert_chunk` per 64 KB
chunk (the checkpoint thread held off) and of copying the WAL into the database afterwards (which the checkpoint
thread does later), per chunk, on one core. Both are paid by the server process for every chunk, beside the HTTP
work that the bare app of `bench/load.py` does: they bound how close to the bare app a chunk's answer can come.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.models import NewChunk, Session, SessionStatus, Tenant
from shared.store.sqlite import SQLiteStore

CHUNK_BYTES = 64_044  # 2 s of 16 kHz mono 16-bit WAV with its header


async def one_round(folder: Path, chunks: int) -> tuple[float, float]:
    """(insert CPU us per chunk, checkpoint CPU+wait us per chunk) for `chunks` fresh chunks in a new database."""
    path = folder / f"{uuid.uuid4()}.sqlite3"
    store = SQLiteStore(path, checkpoint_every_s=3600)
    await store.start()
    now = datetime.now(UTC)
    tenant = Tenant(id=str(uuid.uuid4()), name="bench", created_at=now)
    await store.create_tenant(tenant, api_key_hash=hashlib.sha256(tenant.id.encode()).hexdigest())
    session = Session(
        id=str(uuid.uuid4()), tenant_id=tenant.id, status=SessionStatus.ACTIVE, created_at=now, last_activity_at=now
    )
    await store.create_session(session)
    batch = [
        NewChunk(
            session_id=session.id,
            speaker=("interviewer", "candidate")[seq % 2],
            sequence_number=seq // 2,
            data=(data := b"RIFF" + os.urandom(CHUNK_BYTES - 4)),
            digest=hashlib.sha256(data).hexdigest(),
            mime_type="audio/wav",
            starts_stream=True,
            received_at=now + timedelta(seconds=seq),
        )
        for seq in range(chunks)
    ]
    started = time.process_time()
    for chunk in batch:
        await store.insert_chunk(chunk)
    insert_us = (time.process_time() - started) / chunks * 1e6
    conn = sqlite3.connect(path)  # while the store is open: closing it would checkpoint on its own
    started = time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    checkpoint_us = (time.perf_counter() - started) / chunks * 1e6
    conn.close()
    await store.close()
    return insert_us, checkpoint_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2_000, help="chunks per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is printed (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rounds = [asyncio.run(one_round(Path(folder), args.chunks)) for _ in range(args.rounds)]
    insert = statistics.median(r[0] for r in rounds)
    checkpoint = statistics.median(r[1] for r in rounds)
    print(f"SQLite, {args.chunks} WAV chunks of {CHUNK_BYTES} B per round, median of {args.rounds} rounds:")
    print(f"  insert_chunk (commit included)   {insert:6.0f} us CPU per chunk")
    print(f"  WAL checkpoint into the database {checkpoint:6.0f} us per chunk")
    print(f"  together                         {insert + checkpoint:6.0f} us per chunk")


if __name__ == "__main__":
    main()
