"""Two app instances (two asyncpg pools) on one database: utterance assembly stays exact under races."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

from shared.models import InsertOutcome, NewChunk, NewEntry, Session, SessionStatus, Tenant, utcnow
from shared.store.base import StreamLeaseLost
from shared.store.postgres import PostgresStore

N_CHUNKS = 80
WORKERS_PER_INSTANCE = 4
T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


async def _two_instances(dsn: str) -> tuple[PostgresStore, PostgresStore]:
    first, second = PostgresStore(dsn, max_size=4), PostgresStore(dsn, max_size=4)
    await asyncio.gather(first.start(), second.start())  # both migrate at once: the advisory lock serialises them
    return first, second


async def _session(store: PostgresStore) -> Session:
    tenant = Tenant(id=str(uuid.uuid4()), name="acme", created_at=T0)
    await store.create_tenant(tenant, api_key_hash=uuid.uuid4().hex)
    session = Session(
        id=str(uuid.uuid4()), tenant_id=tenant.id, status=SessionStatus.ACTIVE, created_at=T0, last_activity_at=T0
    )
    await store.create_session(session)
    return session


def _chunk(session: Session, seq: int, data: bytes) -> NewChunk:
    return NewChunk(
        session_id=session.id,
        speaker="candidate",
        sequence_number=seq,
        data=data,
        digest=hashlib.sha256(data).hexdigest(),
        mime_type="audio/wav",
        starts_stream=False,
        received_at=T0,
    )


def _entry(session: Session, seq: int, text: str) -> NewEntry:
    return NewEntry(
        session_id=session.id,
        tenant_id=session.tenant_id,
        speaker="candidate",
        first_sequence=seq,
        last_sequence=seq,
        text=text,
        start_ms=seq * 2000,
        end_ms=seq * 2000 + 1900,
        language="en",
        confidence=0.5,
        engine="simulate",
    )


async def test_racing_instances_store_each_utterance_once(pg_dsn: str) -> None:
    """Eight workers on two pools stealing one speaker stream produce exactly one entry and one done-mark per chunk, one winning save per version."""
    first, second = await _two_instances(pg_dsn)
    try:
        session = await _session(first)
        for seq in range(N_CHUNKS):
            await first.insert_chunk(_chunk(session, seq, b"chunk%d" % seq))
        wins: list[tuple[int, int, bool]] = []
        losses = 0

        async def worker(store: PostgresStore, owner: str) -> None:
            nonlocal losses
            while True:
                # a zero lease: any other worker may take the stream at any moment, so saves race for real
                stream = await store.claim_stream(session.id, "candidate", owner, 0.0, utcnow())
                if stream is None:
                    await asyncio.sleep(0)
                    continue
                if stream.next_sequence >= N_CHUNKS:
                    return
                seq, version = stream.next_sequence, stream.version
                stream.next_sequence = seq + 1
                try:
                    written = await store.save_stream(
                        stream, owner, done_sequences=[seq], entry=_entry(session, seq, f"{owner} {seq}")
                    )
                except StreamLeaseLost:
                    losses += 1
                    continue
                assert written is not None
                wins.append((version, seq, written.created))

        await asyncio.gather(
            *(
                worker(store, f"{name}-{i}")
                for store, name in ((first, "a"), (second, "b"))
                for i in range(WORKERS_PER_INSTANCE)
            )
        )
        assert sorted(version for version, _, _ in wins) == list(range(N_CHUNKS))
        assert sorted(seq for _, seq, _ in wins) == list(range(N_CHUNKS))
        assert all(created for _, _, created in wins)
        print(f"{N_CHUNKS} saves won, {losses} lost to a racing worker")
        assert losses > 0, "the workers never collided: the race was not exercised"
        entries = await second.list_entries(session.id)
        assert [e.first_sequence for e in entries] == list(range(N_CHUNKS))
        assert await first.list_chunks(session.id, "candidate", pending_only=True) == []
        final = await second.claim_stream(session.id, "candidate", "reader", 30, utcnow())
        assert final is not None and final.version == N_CHUNKS and final.next_sequence == N_CHUNKS
    finally:
        await first.close()
        await second.close()


async def test_racing_inserts_of_one_entry_and_chunk_store_one(pg_dsn: str) -> None:
    """The same entry and the same chunk sent at once through two pools are stored once: one creator, the rest see the stored row."""
    first, second = await _two_instances(pg_dsn)
    try:
        session = await _session(first)
        for seq in range(20):
            results = await asyncio.gather(
                *(store.insert_entry(_entry(session, seq, f"{i}")) for i in range(5) for store in (first, second))
            )
            assert sum(r.created for r in results) == 1
            assert len({r.entry.id for r in results}) == 1 and len({r.entry.text for r in results}) == 1
            outcomes = await asyncio.gather(
                *(store.insert_chunk(_chunk(session, seq, b"same")) for _ in range(5) for store in (first, second))
            )
            assert sorted(outcomes).count(InsertOutcome.INSERTED) == 1
            assert set(outcomes) == {InsertOutcome.INSERTED, InsertOutcome.DUPLICATE}
        assert len(await first.list_entries(session.id)) == 20
        assert len(await second.list_chunks(session.id, "candidate")) == 20
    finally:
        await first.close()
        await second.close()
