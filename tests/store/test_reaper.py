"""The session reaper on every store: idle sessions abandoned, over-long ones ended, audio flushed, one announcement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from functions.process_audio.live import LivePath
from functions.session_end import SessionCloser
from functions.session_reaper.service import ReaperConfig, ReapSummary, reap
from shared.broadcast.vocabulary import ENTRY_EVENT, STATUS_EVENT
from shared.models import Session, SessionStatus
from shared.store.base import Store
from shared.stt.base import Transcriber
from shared.stt.simulate import SimulatedTranscriber
from tests.helpers import FIXTURES, EngineOutage, load_pcm, wav_chunks
from tests.store.test_conformance import T0, chunk, make_session, make_tenant

CONFIG = ReaperConfig(idle_timeout_s=900, max_duration_s=4 * 3600)
SPEECH = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))


@dataclass
class RecordingBroadcaster:
    name: str = "recording"
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        self.events.append((topic, event, payload))

    async def close(self) -> None:
        return None

    def of(self, session: Session) -> list[str]:
        return [event for topic, event, _ in self.events if topic == f"session:{session.id}"]


CloserFactory = Callable[..., SessionCloser]


@pytest.fixture
async def closer_on(store: Store) -> AsyncIterator[CloserFactory]:
    """`closer_on(store, broadcaster, engine=None)`: a SessionCloser over a live path of its own. Each live path is
    closed after the test, before the store: a retry it scheduled must not run into a later test."""
    made: list[LivePath] = []

    def make(on: Store, broadcaster: RecordingBroadcaster, engine: Transcriber | None = None) -> SessionCloser:
        live = LivePath(on, engine or SimulatedTranscriber(), broadcaster)
        made.append(live)
        return SessionCloser(on, live, broadcaster)

    yield make
    for live in made:
        await live.close()


async def status_of(store: Store, session: Session) -> SessionStatus | None:
    stored = await store.get_session(session.id, session.tenant_id)
    return None if stored is None else stored.status


async def store_speech(store: Store, session: Session, at: datetime) -> None:
    """The speaker's chunks stored and acknowledged, none processed yet (the browser left right after sending)."""
    for seq, data in enumerate(SPEECH):
        await store.insert_chunk(replace(chunk(session, seq, data), received_at=at + timedelta(seconds=2 * seq)))


async def test_a_pass_abandons_the_idle_ends_the_overlong_and_leaves_the_rest(
    store: Store, closer_on: CloserFactory
) -> None:
    """Idle 20 minutes: abandoned with its audio in the transcript; 5 hours long: ended; fresh or closed: as they were."""
    tenant = await make_tenant(store)
    idle = await make_session(store, tenant, at=T0)
    await store_speech(store, idle, T0)
    overlong = await make_session(store, tenant, at=T0 - timedelta(hours=5))
    silence = replace(chunk(overlong, 0, b"", speaker="interviewer"), mime_type=None, starts_stream=False)
    await store.insert_chunk(replace(silence, received_at=T0 + timedelta(minutes=19)))
    fresh = await make_session(store, tenant, at=T0 + timedelta(minutes=15))
    broadcaster = RecordingBroadcaster()

    summary = await reap(T0 + timedelta(minutes=20), closer=closer_on(store, broadcaster), config=CONFIG)

    assert (summary.abandoned, summary.ended) == (1, 1)
    assert [await status_of(store, s) for s in (idle, overlong, fresh)] == [
        SessionStatus.ABANDONED,
        SessionStatus.ENDED,
        SessionStatus.ACTIVE,
    ]
    entries = await store.list_entries(idle.id)
    assert entries and "[simulated" in entries[0].text
    assert not await store.list_chunks(idle.id, "candidate", pending_only=True)
    assert broadcaster.of(idle)[-1] == STATUS_EVENT and ENTRY_EVENT in broadcaster.of(idle)
    assert broadcaster.of(idle).count(STATUS_EVENT) == 1
    assert broadcaster.of(overlong) == [STATUS_EVENT]
    assert broadcaster.of(fresh) == []


async def test_a_second_pass_finds_nothing_to_do(store: Store, closer_on: CloserFactory) -> None:
    """Sessions a pass closed are not closed or announced again by the next one."""
    tenant = await make_tenant(store)
    await make_session(store, tenant, at=T0)
    broadcaster = RecordingBroadcaster()
    closer = closer_on(store, broadcaster)
    first = await reap(T0 + timedelta(hours=1), closer=closer, config=CONFIG)
    second = await reap(T0 + timedelta(hours=2), closer=closer, config=CONFIG)
    assert first.abandoned == 1
    assert second.to_json() == dict.fromkeys(second.to_json(), 0)
    assert [event for _, event, _ in broadcaster.events] == [STATUS_EVENT]


async def test_two_passes_at_once_close_each_session_once(store: Store, closer_on: CloserFactory) -> None:
    """Two concurrent passes (each its own live path) abandon every idle session once between them, one event each."""
    tenant = await make_tenant(store)
    sessions = [await make_session(store, tenant, at=T0) for _ in range(6)]
    broadcaster = RecordingBroadcaster()
    now = T0 + timedelta(hours=1)
    first, second = await asyncio.gather(
        reap(now, closer=closer_on(store, broadcaster), config=CONFIG),
        reap(now, closer=closer_on(store, broadcaster), config=CONFIG),
    )
    assert first.abandoned + second.abandoned == len(sessions)
    for session in sessions:
        assert broadcaster.of(session) == [STATUS_EVENT]


async def test_a_session_with_recent_audio_is_not_idle(store: Store, closer_on: CloserFactory) -> None:
    """A session whose last chunk came 14 minutes ago stays active under a 15-minute idle timeout."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant, at=T0)
    await store_speech(store, session, T0 + timedelta(minutes=14) - timedelta(seconds=2 * len(SPEECH)))
    summary = await reap(T0 + timedelta(minutes=28), closer=closer_on(store, RecordingBroadcaster()), config=CONFIG)
    assert summary.abandoned == 0
    assert await status_of(store, session) is SessionStatus.ACTIVE


async def passes_until_quiet(store: Store, closer: SessionCloser, start: datetime, passes: int) -> list[ReapSummary]:
    """`passes` reaper passes an hour apart (every retry is due by then)."""
    return [await reap(start + timedelta(hours=n), closer=closer, config=CONFIG) for n in range(passes)]


async def test_an_outage_that_outlasts_every_retry_leaves_the_audio_failed_and_listed(
    store: Store, closer_on: CloserFactory
) -> None:
    """With the engine down for good, each stuck chunk is tried CHUNK_MAX_ATTEMPTS times, then listed as failed."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant, at=T0)
    await store_speech(store, session, T0)
    closer = closer_on(store, RecordingBroadcaster(), EngineOutage(failures=10_000))
    summaries = await passes_until_quiet(store, closer, T0 + timedelta(minutes=20), CONFIG.chunk_max_attempts + 2)
    assert summaries[0].abandoned == 1
    assert sum(s.failed for s in summaries) == len(SPEECH)
    assert await store.failed_sequences(session.id) == {"candidate": list(range(len(SPEECH)))}
    assert not await store.list_chunks(session.id, "candidate", pending_only=True)
    assert await store.list_entries(session.id) == []
    assert summaries[-1].retried == summaries[-1].failed == 0


async def test_an_outage_that_ends_in_time_yields_the_entries(store: Store, closer_on: CloserFactory) -> None:
    """The engine back after a few failed tries: the stuck audio becomes entries and nothing is marked failed."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant, at=T0)
    await store_speech(store, session, T0)
    closer = closer_on(store, RecordingBroadcaster(), EngineOutage(failures=3))
    summaries = await passes_until_quiet(store, closer, T0 + timedelta(minutes=20), 4)
    assert sum(s.retried for s in summaries) >= 1
    assert sum(s.failed for s in summaries) == 0
    assert await store.failed_sequences(session.id) == {}
    entries = await store.list_entries(session.id)
    assert entries and all(e.text.startswith("[simulated") for e in entries)
    assert not await store.list_chunks(session.id, "candidate", pending_only=True)


async def test_audio_of_an_active_speaker_is_not_retried_while_it_is_fresh(
    store: Store, closer_on: CloserFactory
) -> None:
    """Chunks that arrived under a minute ago are the live path's, not the reaper's: not tried, not counted."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant, at=T0)
    await store_speech(store, session, T0)
    engine = EngineOutage(failures=0)
    summary = await reap(
        T0 + timedelta(seconds=30), closer=closer_on(store, RecordingBroadcaster(), engine), config=CONFIG
    )
    assert (summary.retried, summary.failed, engine.calls) == (0, 0, 0)


async def test_retention_drops_old_audio_first_and_old_sessions_later(store: Store, closer_on: CloserFactory) -> None:
    """Audio of a session closed 8 days ago goes under a 7-day audio limit; the session goes under a 30-day
    limit only once it is 31 days old; unset limits keep everything."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant, at=T0)
    await store_speech(store, session, T0)
    closer = closer_on(store, RecordingBroadcaster())
    keep_all = await reap(T0 + timedelta(days=60), closer=closer, config=CONFIG)  # closes it, deletes nothing
    assert keep_all.abandoned == 1 and keep_all.deleted == 0
    closed_at = T0 + timedelta(days=60)
    limits = replace(CONFIG, audio_retention_days=7, transcript_retention_days=30)
    assert (await reap(closed_at + timedelta(days=6), closer=closer, config=limits)).deleted == 0
    assert (await reap(closed_at + timedelta(days=8), closer=closer, config=limits)).deleted == 1
    kept = await store.get_chunk(session.id, "candidate", 0)
    assert kept is not None and kept.data == b""
    assert await store.list_entries(session.id)
    assert (await reap(closed_at + timedelta(days=29), closer=closer, config=limits)).deleted == 0
    assert (await reap(closed_at + timedelta(days=31), closer=closer, config=limits)).deleted == 1
    assert await store.get_session(session.id, tenant.id) is None


async def test_a_pass_skips_while_another_holds_the_lease(store: Store, closer_on: CloserFactory) -> None:
    """While another process's pass holds the reaper lease, a pass does nothing; once it is given back, it runs."""
    tenant = await make_tenant(store)
    session = await make_session(store, tenant, at=T0)
    now = T0 + timedelta(hours=1)
    assert await store.claim_reaper_pass("another-machine", now, now + timedelta(minutes=10))
    closer = closer_on(store, RecordingBroadcaster())
    skipped = await reap(now, closer=closer, config=CONFIG)
    assert skipped.to_json() == dict.fromkeys(skipped.to_json(), 0)
    assert await status_of(store, session) is SessionStatus.ACTIVE
    await store.release_reaper_pass("another-machine")
    assert (await reap(now, closer=closer, config=CONFIG)).abandoned == 1
