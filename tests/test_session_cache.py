"""The per-chunk path's session reads: remembered briefly while active, forgotten at once when changed here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from shared.models import Session, SessionStatus
from shared.session_cache import SessionCache
from shared.store.sqlite import SQLiteStore
from tests.store.test_conformance import T0, make_session, make_tenant


@dataclass
class CountingReads:
    """The real store, with its session reads counted."""

    store: SQLiteStore
    reads: list[str] = field(default_factory=list)

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        self.reads.append(session_id)
        return await self.store.get_session(session_id, tenant_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "bridge.sqlite3")
    await opened.start()
    yield opened
    await opened.close()


@pytest.fixture
async def session(store: SQLiteStore) -> Session:
    return await make_session(store, await make_tenant(store))


async def test_an_active_session_is_read_from_the_store_once_per_moment(store: SQLiteStore, session: Session) -> None:
    """A hundred chunks of one session within the moment cost one store read."""
    counting = CountingReads(store)
    cache = SessionCache(counting, ttl_s=60)
    for _ in range(100):
        assert await cache.get_session(session.id, session.tenant_id) == session
    assert counting.reads == [session.id]


async def test_another_tenant_never_gets_a_cached_session(store: SQLiteStore, session: Session) -> None:
    """The tenant is part of the key: a cached session is not found under another tenant."""
    cache = SessionCache(store, ttl_s=60)
    assert await cache.get_session(session.id, session.tenant_id) == session
    assert await cache.get_session(session.id, "another-tenant") is None


async def test_an_end_here_is_seen_at_once_and_elsewhere_within_the_moment(
    store: SQLiteStore, session: Session
) -> None:
    """Forgetting shows this process's end to the next read; another process's end shows once the moment passes."""
    here, elsewhere = SessionCache(store, ttl_s=60), SessionCache(store, ttl_s=0.05)
    for cache in (here, elsewhere):
        await cache.get_session(session.id, session.tenant_id)
    await store.set_session_status(session.id, SessionStatus.ENDED, T0 + timedelta(minutes=5))
    here.forget(session.id)
    ended = await here.get_session(session.id, session.tenant_id)
    assert ended is not None and ended.status is SessionStatus.ENDED
    await asyncio.sleep(0.1)
    seen = await elsewhere.get_session(session.id, session.tenant_id)
    assert seen is not None and seen.status is SessionStatus.ENDED
