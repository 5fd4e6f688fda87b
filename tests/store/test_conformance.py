"""The Store protocol's behaviour, run against every backend through the `store` fixture (tests/store/conftest.py)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import StoreConflict
from shared.models import (
    InsertOutcome,
    NewChunk,
    NewEntry,
    Session,
    SessionStatus,
    Tenant,
    UsageCount,
    utcnow,
)
from shared.store.base import FIRST_DELIVERY_AFTER_S, Store, StreamLeaseLost

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


async def make_tenant(store: Store, name: str = "acme") -> Tenant:
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=T0)
    await store.create_tenant(tenant, api_key_hash=hashlib.sha256(tenant.id.encode()).hexdigest())
    return tenant


async def make_session(store: Store, tenant: Tenant, *, at: datetime = T0, candidate: str | None = None) -> Session:
    session = Session(
        id=str(uuid.uuid4()),
        tenant_id=tenant.id,
        status=SessionStatus.ACTIVE,
        created_at=at,
        last_activity_at=at,
        candidate_id=candidate,
        speakers=("interviewer", "candidate"),
        metadata={"room": "blue", "n": 1},
    )
    await store.create_session(session)
    return session


def chunk(session: Session, seq: int, data: bytes = b"RIFFdata", speaker: str = "candidate") -> NewChunk:
    return NewChunk(
        session_id=session.id,
        speaker=speaker,
        sequence_number=seq,
        data=data,
        digest=hashlib.sha256(data).hexdigest(),
        mime_type="audio/wav",
        starts_stream=data.startswith(b"RIFF"),
        received_at=T0 + timedelta(seconds=seq),
    )


def entry(session: Session, first: int, text: str = "hello", speaker: str = "candidate") -> NewEntry:
    return NewEntry(
        session_id=session.id,
        tenant_id=session.tenant_id,
        speaker=speaker,
        first_sequence=first,
        last_sequence=first + 1,
        text=text,
        start_ms=first * 2000,
        end_ms=first * 2000 + 1500,
        language="en",
        confidence=0.9,
        engine="simulate",
    )


async def test_tenant_found_by_key_hash(store: Store) -> None:
    """A tenant is found by the hash of its API key and by id, and an unknown hash finds nothing."""
    tenant = await make_tenant(store)
    found = await store.tenant_by_key_hash(hashlib.sha256(tenant.id.encode()).hexdigest())
    assert found == tenant
    assert await store.get_tenant(tenant.id) == tenant
    assert await store.tenant_by_key_hash("0" * 64) is None


async def test_session_round_trip_and_tenant_scope(store: Store) -> None:
    """A session reads back whole for its tenant and is invisible to another tenant."""
    a, b = await make_tenant(store, "a"), await make_tenant(store, "b")
    session = await make_session(store, a, candidate="c-1")
    assert await store.get_session(session.id, a.id) == session
    assert await store.get_session(session.id, b.id) is None
    assert await store.get_session(session.id, None) == session


async def test_list_sessions_pages_newest_first(store: Store) -> None:
    """Listing is newest first, filtered by status and candidate, and pages with a (created_at, id) cursor."""
    tenant, other = await make_tenant(store), await make_tenant(store, "other")
    made = [await make_session(store, tenant, at=T0 + timedelta(minutes=i), candidate=f"c{i % 2}") for i in range(5)]
    await make_session(store, other)
    page1 = await store.list_sessions(tenant.id, limit=2)
    assert [s.id for s in page1] == [made[4].id, made[3].id]
    page2 = await store.list_sessions(tenant.id, limit=10, before=(page1[-1].created_at, page1[-1].id))
    assert [s.id for s in page2] == [made[2].id, made[1].id, made[0].id]
    only_c0 = await store.list_sessions(tenant.id, candidate_id="c0")
    assert {s.id for s in only_c0} == {made[0].id, made[2].id, made[4].id}
    await store.set_session_status(made[1].id, SessionStatus.ENDED, T0 + timedelta(hours=1))
    ended = await store.list_sessions(tenant.id, status=SessionStatus.ENDED)
    assert [s.id for s in ended] == [made[1].id]


async def test_session_status_changes_only_once(store: Store) -> None:
    """Ending an active session records ended_at; ending it again leaves the first end in place."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    ended = await store.set_session_status(session.id, SessionStatus.ENDED, T0 + timedelta(minutes=5))
    assert ended is not None and ended.status is SessionStatus.ENDED
    assert ended.ended_at == T0 + timedelta(minutes=5)
    again = await store.set_session_status(session.id, SessionStatus.ABANDONED, T0 + timedelta(minutes=9))
    assert again is not None and again.status is SessionStatus.ENDED
    assert again.ended_at == T0 + timedelta(minutes=5)
    assert await store.set_session_status(str(uuid.uuid4()), SessionStatus.ENDED, T0) is None


async def test_closing_a_session_answers_only_the_call_that_closed_it(store: Store) -> None:
    """The first close returns the closed session; a second close, racing or late, gets None and changes nothing."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    closes = [
        store.close_session(session.id, SessionStatus.ABANDONED, T0 + timedelta(minutes=20)),
        store.close_session(session.id, SessionStatus.ENDED, T0 + timedelta(minutes=21)),
    ]
    first, second = [await close for close in closes]
    assert first is not None and first.status is SessionStatus.ABANDONED
    assert first.ended_at == T0 + timedelta(minutes=20)
    assert second is None
    stored = await store.get_session(session.id, tenant.id)
    assert stored is not None and stored.status is SessionStatus.ABANDONED
    assert await store.close_session(str(uuid.uuid4()), SessionStatus.ENDED, T0) is None


async def test_stale_sessions_are_the_idle_and_the_overlong_active_ones(store: Store) -> None:
    """Idle past the cut-off or started before the other cut-off, and still active: those; fresh or closed: not."""
    tenant = await make_tenant(store)
    idle = await make_session(store, tenant, at=T0)
    overlong = await make_session(store, tenant, at=T0 - timedelta(hours=5))
    await store.insert_chunk(chunk(overlong, 0))  # active a moment ago, but started too long ago
    await make_session(store, tenant, at=T0 + timedelta(minutes=10))  # fresh
    closed = await make_session(store, tenant, at=T0)
    await store.close_session(closed.id, SessionStatus.ENDED, T0 + timedelta(minutes=1))
    await store.insert_chunk(replace(chunk(overlong, 1), received_at=T0 + timedelta(minutes=14)))
    stale = await store.stale_sessions(
        idle_before=T0 + timedelta(minutes=5), started_before=T0 - timedelta(hours=4), limit=10
    )
    assert [s.id for s in stale] == [idle.id, overlong.id]
    assert [s.id for s in await store.stale_sessions(T0 + timedelta(minutes=5), T0 - timedelta(hours=4), 1)] == [
        idle.id
    ]


async def test_stuck_chunks_are_the_old_pending_ones_no_run_took_in(store: Store) -> None:
    """Chunks past the stream's next_sequence, old enough and due: stuck; absorbed, fresh or not yet due: not."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    for seq in range(4):
        await store.insert_chunk(chunk(session, seq))  # received at T0 + seq seconds
    stream = await store.claim_stream(session.id, "candidate", "w", 30, T0)
    assert stream is not None
    stream.next_sequence = 1  # chunk 0 is in the open utterance: pending, but taken in
    await store.save_stream(stream, "w")
    now = T0 + timedelta(minutes=10)
    stuck = await store.stuck_chunks(received_before=T0 + timedelta(seconds=2.5), due_at=now, limit=10)
    assert [(c.sequence_number, c.attempts) for c in stuck] == [(1, 0), (2, 0)]
    assert await store.record_chunk_attempt(session.id, "candidate", [0, 1, 2], now + timedelta(minutes=1)) == 2
    assert await store.stuck_chunks(T0 + timedelta(seconds=2.5), now, 10) == []
    later = await store.stuck_chunks(T0 + timedelta(seconds=2.5), now + timedelta(minutes=1), 10)
    assert [(c.sequence_number, c.attempts) for c in later] == [(1, 1), (2, 1)]
    await store.close_session(session.id, SessionStatus.ABANDONED, now)  # nothing will finish chunk 0's utterance
    closed = await store.stuck_chunks(T0 + timedelta(seconds=2.5), now + timedelta(minutes=1), 10)
    assert [(c.sequence_number, c.attempts) for c in closed] == [(0, 0), (1, 1), (2, 1)]
    assert await store.record_chunk_attempt(session.id, "candidate", [0], now + timedelta(minutes=2)) == 1


async def test_failed_chunks_leave_the_queue_and_stay_listed(store: Store) -> None:
    """A chunk given up on is no longer pending nor stuck, and is listed per speaker as failed; once only."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    for seq in range(3):
        await store.insert_chunk(chunk(session, seq))
    await store.insert_chunk(chunk(session, 0, speaker="interviewer"))
    assert await store.fail_chunks(session.id, "candidate", [0, 2], T0 + timedelta(hours=1)) == 2
    assert await store.fail_chunks(session.id, "candidate", [0, 2], T0 + timedelta(hours=2)) == 0
    assert await store.failed_sequences(session.id) == {"candidate": [0, 2]}
    pending = await store.list_chunks(session.id, "candidate", pending_only=True)
    assert [c.sequence_number for c in pending] == [1]
    stuck = await store.stuck_chunks(T0 + timedelta(hours=1), T0 + timedelta(hours=1), 10)
    assert [(c.speaker, c.sequence_number) for c in stuck] == [("candidate", 1), ("interviewer", 0)]


async def test_a_tenant_webhook_is_set_found_by_name_and_keeps_its_key(store: Store) -> None:
    """The URL and key are stored; a new URL without a key keeps the key; tenants are found by name."""
    tenant = await make_tenant(store, "globex")
    assert await store.set_tenant_webhook(tenant.id, "https://hooks.example/a", "key-1")
    assert await store.set_tenant_webhook(tenant.id, "https://hooks.example/b", None)
    [found] = await store.tenants_named("globex")
    assert (found.id, found.webhook_url, found.webhook_secret) == (tenant.id, "https://hooks.example/b", "key-1")
    assert await store.tenants_named("nobody") == []
    assert not await store.set_tenant_webhook(str(uuid.uuid4()), "https://hooks.example/c", None)


async def test_closing_a_session_puts_one_delivery_in_the_outbox(store: Store) -> None:
    """A tenant with a webhook gets one delivery per closed session, due later, taken by one caller at a time."""
    tenant = await make_tenant(store)
    await store.set_tenant_webhook(tenant.id, "https://hooks.example/in", "key")
    session = await make_session(store, tenant)
    closed_at = T0 + timedelta(minutes=30)
    await store.close_session(session.id, SessionStatus.ABANDONED, closed_at)
    await store.close_session(session.id, SessionStatus.ENDED, closed_at)  # lost the race: no second delivery
    lease = closed_at + timedelta(minutes=10)
    assert await store.claim_webhook_deliveries(closed_at, lease, 10) == []  # not due yet for everyone else
    due_for_closer = closed_at + timedelta(seconds=FIRST_DELIVERY_AFTER_S)
    [delivery] = await store.claim_webhook_deliveries(due_for_closer, lease, 10, session_id=session.id)
    assert (delivery.session_id, delivery.event, delivery.attempts) == (session.id, "session.abandoned", 0)
    assert (delivery.url, delivery.secret) == ("https://hooks.example/in", "key")
    assert await store.claim_webhook_deliveries(due_for_closer, lease, 10) == []  # leased
    retry_at = closed_at + timedelta(hours=1)
    await store.finish_webhook_delivery(
        delivery.id, delivered=False, at=closed_at, next_attempt_at=retry_at, error="503"
    )
    [again] = await store.claim_webhook_deliveries(retry_at, retry_at + timedelta(minutes=10), 10)
    assert (again.id, again.attempts) == (delivery.id, 1)
    await store.finish_webhook_delivery(again.id, delivered=True, at=retry_at, next_attempt_at=None, error=None)
    assert await store.claim_webhook_deliveries(retry_at + timedelta(days=9), retry_at + timedelta(days=10), 10) == []


async def test_no_webhook_no_delivery_and_a_given_up_delivery_is_not_taken(store: Store) -> None:
    """Without a webhook URL closing enqueues nothing; a delivery given up (no next attempt) is never taken again."""
    quiet = await make_tenant(store, "quiet")
    await store.close_session((await make_session(store, quiet)).id, SessionStatus.ENDED, T0)
    assert await store.claim_webhook_deliveries(T0 + timedelta(days=1), T0 + timedelta(days=2), 10) == []
    loud = await make_tenant(store, "loud")
    await store.set_tenant_webhook(loud.id, "https://hooks.example/in", "key")
    await store.close_session((await make_session(store, loud)).id, SessionStatus.ENDED, T0)
    [delivery] = await store.claim_webhook_deliveries(T0 + timedelta(days=1), T0 + timedelta(days=1), 10)
    await store.finish_webhook_delivery(delivery.id, delivered=False, at=T0, next_attempt_at=None, error="gone")
    assert await store.claim_webhook_deliveries(T0 + timedelta(days=30), T0 + timedelta(days=31), 10) == []


async def test_retention_drops_closed_audio_and_then_closed_sessions(store: Store) -> None:
    """Audio of sessions closed before the cut-off goes (rows, entries and failed chunks stay); later the whole
    session goes; active and recently closed sessions keep everything."""
    tenant = await make_tenant(store)
    old, recent, active = [await make_session(store, tenant) for _ in range(3)]
    for session in (old, recent, active):
        await store.insert_chunk(chunk(session, 0, b"RIFF" + b"\x01" * 64))
        await store.insert_chunk(chunk(session, 1, b"RIFF" + b"\x02" * 64))
        stream = await store.claim_stream(session.id, "candidate", "w", 30, T0)
        assert stream is not None
        stream.next_sequence = 1
        await store.save_stream(stream, "w", done_sequences=[0], entry=entry(session, 0))
    await store.fail_chunks(old.id, "candidate", [1], T0 + timedelta(days=1))
    await store.close_session(old.id, SessionStatus.ENDED, T0 + timedelta(days=1))
    await store.close_session(recent.id, SessionStatus.ENDED, T0 + timedelta(days=40))
    cutoff = T0 + timedelta(days=30)

    assert await store.delete_closed_audio(cutoff, 10) == 1
    assert await store.delete_closed_audio(cutoff, 10) == 0
    gone = await store.get_chunk(old.id, "candidate", 0)
    assert gone is not None and gone.data == b""
    assert [c.sequence_number for c in await store.list_chunks(old.id, "candidate")] == [0, 1]
    assert await store.failed_sequences(old.id) == {"candidate": [1]}
    assert [e.first_sequence for e in await store.list_entries(old.id)] == [0]
    for kept in (recent, active):
        found = await store.get_chunk(kept.id, "candidate", 0)
        assert found is not None and found.data == b"RIFF" + b"\x01" * 64

    assert await store.delete_closed_sessions(cutoff, 10) == 1
    assert await store.get_session(old.id, tenant.id) is None
    assert await store.list_entries(old.id) == []
    assert {s.id for s in await store.list_sessions(tenant.id)} == {recent.id, active.id}


async def test_usage_adds_up_per_tenant_and_day(store: Store) -> None:
    """Counters add up per UTC day; sessions and entries are counted by the day they were made; another tenant's
    usage and days outside the range are left out."""
    tenant, other = await make_tenant(store, "a"), await make_tenant(store, "b")
    day = T0.date()
    await store.add_usage(tenant.id, day, audio_ms=2_000, engine_ms=1_500, engine_calls=1)
    await store.add_usage(tenant.id, day, audio_ms=2_000, engine_ms=500, engine_calls=2)
    await store.add_usage(tenant.id, day + timedelta(days=1), audio_ms=1_000)
    await store.add_usage(other.id, day, audio_ms=99_000, engine_calls=9)
    session = await make_session(store, tenant, at=T0)
    await make_session(store, tenant, at=T0 + timedelta(days=2))
    await make_session(store, other, at=T0)
    await store.insert_entry(entry(session, 0))
    usage = await store.usage(tenant.id, day, day + timedelta(days=1))
    assert [(u.day, u.audio_ms, u.engine_ms, u.engine_calls, u.sessions) for u in usage] == [
        (day, 4_000, 2_000, 3, 1),
        (day + timedelta(days=1), 1_000, 0, 0, 0),
    ]
    entries_day = utcnow().date()  # entries count by when they were stored
    stored = await store.usage(tenant.id, entries_day, entries_day)
    assert sum(u.entries for u in stored) == 1
    assert await store.usage(tenant.id, day - timedelta(days=9), day - timedelta(days=1)) == []


async def test_the_reaper_lease_has_one_holder_at_a_time(store: Store) -> None:
    """A held lease refuses others until it expires or its holder gives it back; only the holder can."""
    until = T0 + timedelta(minutes=10)
    assert await store.claim_reaper_pass("a", T0, until)
    assert not await store.claim_reaper_pass("b", T0 + timedelta(minutes=1), until)
    assert await store.claim_reaper_pass("a", T0 + timedelta(minutes=1), until)
    await store.release_reaper_pass("b")  # not b's to give back
    assert not await store.claim_reaper_pass("c", T0 + timedelta(minutes=2), until)
    assert await store.claim_reaper_pass("b", T0 + timedelta(minutes=11), T0 + timedelta(minutes=21))
    await store.release_reaper_pass("b")
    assert await store.claim_reaper_pass("c", T0 + timedelta(minutes=12), T0 + timedelta(minutes=22))


async def test_usage_saved_with_a_stream_counts_once_and_not_when_the_lease_is_lost(store: Store) -> None:
    """Usage given with a stream's progress is added with it; a save refused for a lost lease adds nothing."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    await store.insert_chunk(chunk(session, 0))
    stream = await store.claim_stream(session.id, "candidate", "w1", 30, T0)
    assert stream is not None
    stream.next_sequence = 1
    usage = UsageCount(tenant.id, T0.date(), audio_ms=2_000, engine_ms=1_800, engine_calls=1)
    await store.save_stream(stream, "w1", done_sequences=[0], entry=entry(session, 0), usage=usage)
    stale = replace(stream, version=stream.version - 1)
    with pytest.raises(StreamLeaseLost):
        await store.save_stream(stale, "w1", usage=usage)
    [day] = await store.usage(tenant.id, T0.date(), T0.date())
    assert (day.audio_ms, day.engine_ms, day.engine_calls) == (2_000, 1_800, 1)


async def test_chunk_insert_is_idempotent(store: Store) -> None:
    """The same chunk twice is a duplicate, other bytes under the same sequence a conflict, and one row stays."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    assert await store.insert_chunk(chunk(session, 0, b"RIFFone")) is InsertOutcome.INSERTED
    assert await store.insert_chunk(chunk(session, 0, b"RIFFone")) is InsertOutcome.DUPLICATE
    assert await store.insert_chunk(chunk(session, 0, b"RIFFtwo")) is InsertOutcome.CONFLICT
    stored = await store.list_chunks(session.id, "candidate", with_data=True)
    assert [(c.sequence_number, c.data) for c in stored] == [(0, b"RIFFone")]


async def test_chunks_listed_in_sequence_order(store: Store) -> None:
    """Chunks come back ordered by sequence whatever the arrival order, with bytes only when asked."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    for seq in (2, 0, 3, 1):
        await store.insert_chunk(chunk(session, seq, b"RIFF%d" % seq))
    await store.insert_chunk(chunk(session, 0, b"RIFFi", speaker="interviewer"))
    listed = await store.list_chunks(session.id, "candidate", from_sequence=1)
    assert [c.sequence_number for c in listed] == [1, 2, 3]
    assert all(c.data is None for c in listed)
    one = await store.get_chunk(session.id, "candidate", 2)
    assert one is not None and one.data == b"RIFF2" and one.starts_stream
    assert await store.next_sequences(session.id) == {"candidate": 4, "interviewer": 1}


async def test_chunk_insert_moves_last_activity(store: Store) -> None:
    """Storing a chunk moves the session's last_activity_at to the chunk's arrival time."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    await store.insert_chunk(chunk(session, 7))
    reread = await store.get_session(session.id, tenant.id)
    assert reread is not None and reread.last_activity_at == T0 + timedelta(seconds=7)


async def test_stream_lease_excludes_other_owners(store: Store) -> None:
    """A claimed stream cannot be claimed by another owner until released or its lease runs out."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    first = await store.claim_stream(session.id, "candidate", "w1", 30, T0)
    assert first is not None and first.next_sequence == 0
    assert await store.claim_stream(session.id, "candidate", "w2", 30, T0 + timedelta(seconds=1)) is None
    assert await store.claim_stream(session.id, "candidate", "w1", 30, T0 + timedelta(seconds=1)) is not None
    assert await store.claim_stream(session.id, "candidate", "w2", 30, T0 + timedelta(seconds=60)) is not None
    await store.release_stream(session.id, "candidate", "w2")
    assert await store.claim_stream(session.id, "candidate", "w3", 30, T0 + timedelta(seconds=61)) is not None


async def test_save_stream_is_atomic_and_fenced(store: Store) -> None:
    """Saving a stream writes state, marks chunks done and stores the entry together, and a stale writer fails."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    for seq in range(3):
        await store.insert_chunk(chunk(session, seq, b"RIFF%d" % seq))
    stream = await store.claim_stream(session.id, "candidate", "w1", 30, T0)
    assert stream is not None
    stream.next_sequence, stream.buffer_sequence, stream.buffer_offset, stream.buffer_start_ms = 3, 2, 800, 4050
    stream.header_sequence = 2
    written = await store.save_stream(stream, "w1", done_sequences=[0, 1], entry=entry(session, 0))
    assert written is not None and written.created and written.entry.text == "hello"
    pending = await store.list_chunks(session.id, "candidate", pending_only=True)
    assert [c.sequence_number for c in pending] == [2]
    await store.release_stream(session.id, "candidate", "w1")
    again = await store.claim_stream(session.id, "candidate", "w2", 30, T0 + timedelta(seconds=1))
    assert again is not None
    assert (again.next_sequence, again.buffer_sequence, again.buffer_offset, again.buffer_start_ms) == (3, 2, 800, 4050)
    assert again.header_sequence == 2
    with pytest.raises(StreamLeaseLost):
        await store.save_stream(stream, "w1", done_sequences=[2], entry=entry(session, 2))
    assert [c.sequence_number for c in await store.list_chunks(session.id, "candidate", pending_only=True)] == [2]
    assert [e.first_sequence for e in await store.list_entries(session.id)] == [0]


async def test_stale_version_is_refused(store: Store) -> None:
    """A save based on an old version of the stream is refused even by the lease holder."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    stream = await store.claim_stream(session.id, "candidate", "w1", 30, T0)
    assert stream is not None
    old_version = stream.version
    await store.save_stream(stream, "w1")
    assert stream.version == old_version + 1
    stream.version = old_version
    with pytest.raises(StreamLeaseLost):
        await store.save_stream(stream, "w1")


async def test_entry_insert_is_idempotent(store: Store) -> None:
    """An entry is stored once per (session, speaker, first_sequence); a repeat returns the stored one."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    first = await store.insert_entry(entry(session, 4, "first"))
    repeat = await store.insert_entry(entry(session, 4, "second"))
    assert first.created and not repeat.created
    assert repeat.entry == first.entry and repeat.entry.text == "first"
    other_speaker = await store.insert_entry(entry(session, 4, "other", speaker="interviewer"))
    assert other_speaker.created


async def test_entries_sorted_by_time_speaker_sequence(store: Store) -> None:
    """Entries list by start_ms, then speaker, then first_sequence."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    await store.insert_entry(entry(session, 3, "late"))
    await store.insert_entry(entry(session, 1, "b-early", speaker="interviewer"))
    await store.insert_entry(entry(session, 1, "a-early", speaker="candidate"))
    texts = [e.text for e in await store.list_entries(session.id)]
    assert texts == ["a-early", "b-early", "late"]


async def test_delete_session_erases_everything(store: Store) -> None:
    """Deleting a session removes its audio and entries, and another tenant cannot delete it."""
    a, b = await make_tenant(store, "a"), await make_tenant(store, "b")
    session = await make_session(store, a)
    await store.insert_chunk(chunk(session, 0))
    await store.insert_entry(entry(session, 0))
    assert not await store.delete_session(b.id, session.id)
    assert await store.delete_session(a.id, session.id)
    assert await store.get_session(session.id, None) is None
    assert await store.list_chunks(session.id, "candidate") == []
    assert await store.list_entries(session.id) == []


async def test_pending_audio_is_found_for_recovery(store: Store) -> None:
    """Speakers with pending chunks are listed for recovery, and disappear once their chunks are done."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant)
    await store.insert_chunk(chunk(session, 0))
    await store.insert_chunk(chunk(session, 0, speaker="interviewer"))
    assert await store.sessions_with_pending_audio() == sorted([(session.id, "candidate"), (session.id, "interviewer")])
    stream = await store.claim_stream(session.id, "candidate", "w", 30, T0)
    assert stream is not None
    await store.save_stream(stream, "w", done_sequences=[0])
    assert await store.sessions_with_pending_audio() == [(session.id, "interviewer")]


async def test_migrate_twice_applies_nothing_new(store: Store) -> None:
    """Running migrations on a migrated store applies nothing."""
    assert await store.migrate() == []


async def test_duplicate_ids_are_a_conflict_and_change_nothing(store: Store) -> None:
    """Creating a tenant or session with an id already taken raises StoreConflict and keeps the first one."""
    tenant = await make_tenant(store)
    with pytest.raises(StoreConflict):
        await store.create_tenant(Tenant(id=tenant.id, name="again", created_at=T0), api_key_hash="f" * 64)
    assert await store.get_tenant(tenant.id) == tenant
    session = await make_session(store, tenant)
    with pytest.raises(StoreConflict):
        await store.create_session(replace(session, candidate_id="other"))
    assert await store.get_session(session.id, tenant.id) == session
