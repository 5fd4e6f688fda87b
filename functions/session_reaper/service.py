"""session_reaper as a plain service function: one pass over the sessions nobody ended.

An interview whose browser went away (a closed laptop, a crashed tab) never calls `end`. A pass closes every
active session idle longer than the idle timeout as `abandoned`, and every one older than the maximum duration as
`ended`, through the same `SessionCloser` as the `end` route: pending audio flushed into final entries first,
`session_status` last. Passes may run at once (two processes, two machines on one database): each session is
closed by exactly one of them, the one whose atomic close wins; the others count nothing for it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from functions.session_end import SessionCloser
from shared.models import Session, SessionStatus

log = logging.getLogger("bridge.reaper")

PAGE = 100  # stale sessions read per store query


@dataclass(frozen=True, slots=True)
class ReaperConfig:
    idle_timeout_s: float = 900.0  # SESSION_IDLE_TIMEOUT
    max_duration_s: float = 14_400.0  # SESSION_MAX_DURATION


@dataclass(slots=True)
class ReapSummary:
    """What one pass did; the route's and the command's JSON."""

    abandoned: int = 0
    ended: int = 0
    retried: int = 0
    failed: int = 0
    deleted: int = 0
    machines_destroyed: int = 0
    webhooks_sent: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def closing_status(session: Session, idle_before: datetime) -> SessionStatus:
    """Nobody sent audio for the idle timeout: abandoned, even past the maximum duration; else it ran too long."""
    return SessionStatus.ABANDONED if session.last_activity_at < idle_before else SessionStatus.ENDED


async def reap(now: datetime, *, closer: SessionCloser, config: ReaperConfig) -> ReapSummary:
    """One pass at `now` (read once, by the caller, when the pass starts)."""
    summary = ReapSummary()
    idle_before = now - timedelta(seconds=config.idle_timeout_s)
    started_before = now - timedelta(seconds=config.max_duration_s)
    seen: set[str] = set()
    while True:
        stale = [s for s in await closer.store.stale_sessions(idle_before, started_before, PAGE) if s.id not in seen]
        if not stale:
            break
        for session in stale:
            seen.add(session.id)
            status = closing_status(session, idle_before)
            try:
                ending = await closer.end(session, status, now)
            except Exception:  # one session's failure must not keep the others open
                log.exception("the reaper could not close session %s", session.id)
                continue
            if ending.closed_now:
                if status is SessionStatus.ABANDONED:
                    summary.abandoned += 1
                else:
                    summary.ended += 1
    return summary
