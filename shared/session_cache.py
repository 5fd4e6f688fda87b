"""Active sessions remembered for a moment, so a chunk's request does not read its session from the store.

Every chunk names its session; at 1,000 chunks/s that read was a store round trip per request for an object that
only changes when the session ends. Only active sessions are kept, for `ttl_s`; ending or deleting a session in
this process forgets it at once. Another process's end is seen within `ttl_s`: a chunk in that moment is taken as
the session's last ones are (stored, processed, flushed by the next end or the reaper).
"""

from __future__ import annotations

import time
from typing import Protocol

from shared.models import Session, SessionStatus

MAX_SESSIONS = 20_000  # past this the cache starts over; it holds only what the last `ttl_s` used


class SessionSource(Protocol):
    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None: ...


class SessionCache:
    """A `SessionSource` in front of the store for the per-chunk path."""

    def __init__(self, store: SessionSource, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._sessions: dict[tuple[str, str | None], tuple[float, Session]] = {}

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        key = (session_id, tenant_id)
        now = time.monotonic()
        cached = self._sessions.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        session = await self.store.get_session(session_id, tenant_id)
        if session is None or session.status is not SessionStatus.ACTIVE:
            self._sessions.pop(key, None)
            return session
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions.clear()
        self._sessions[key] = (now + self.ttl_s, session)
        return session

    def forget(self, session_id: str) -> None:
        """The session changed here (ended, deleted): the next request reads it from the store."""
        for key in [key for key in self._sessions if key[0] == session_id]:
            del self._sessions[key]
