"""The one way a session ends, whoever ends it: the `end` route, the `transcribe` command, the session reaper.

Closing is one atomic store step that only one caller wins (`Store.close_session`): that caller alone announces
the end. Every caller then flushes the session's pending audio into final entries (a loser's flush finds
nothing left, or finishes what the winner's started), and the winner broadcasts `session_status` last, after
every entry of the session. No web framework here: the reaper must not import `bridge/`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from functions.process_audio.live import LivePath
from shared.broadcast.base import Broadcaster
from shared.broadcast.vocabulary import STATUS_EVENT, session_topic
from shared.errors import EngineUnavailable
from shared.models import Session, SessionStatus
from shared.session_cache import SessionCache
from shared.store.base import Store

log = logging.getLogger("bridge.lifecycle")


@dataclass(frozen=True, slots=True)
class Ending:
    session: Session  # as stored once the pending audio is flushed
    closed_now: bool  # this call closed it (and announced it); False when it was already closed


@dataclass(frozen=True, slots=True)
class SessionCloser:
    """What ending a session touches: the store, the live path that flushes, the broadcaster that announces."""

    store: Store
    live: LivePath
    broadcaster: Broadcaster
    sessions: SessionCache | None = None  # a per-chunk cache of active sessions, told at once

    async def end(self, session: Session, status: SessionStatus, now: datetime) -> Ending:
        """Close `session` as `status` (ended or abandoned) if it is still active, flush its pending audio into
        final entries, and announce the end once, as the topic's last event."""
        closed = await self.store.close_session(session.id, status, now)
        if self.sessions is not None:
            self.sessions.forget(session.id)
        current = closed or await self.store.get_session(session.id, None) or session
        if not self.live.transcriber.ready and await self._has_pending_audio(current):
            try:
                await self.live.transcriber.wait_ready()  # the reaper's command starts no engine otherwise
            except EngineUnavailable as exc:
                log.warning("cannot flush session %s now: %s; its audio stays pending", session.id, exc.detail)
        await self.live.flush_session(current)
        if closed is not None:
            await self.broadcaster.publish(
                session_topic(session.id), STATUS_EVENT, {"session_id": session.id, "status": closed.status.value}
            )
        return Ending(current, closed_now=closed is not None)

    async def _has_pending_audio(self, session: Session) -> bool:
        for speaker in await self.store.next_sequences(session.id):
            if await self.store.list_chunks(session.id, speaker, pending_only=True):
                return True
        return False
