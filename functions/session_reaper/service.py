"""session_reaper as a plain service function: one pass over the sessions nobody ended.

An interview whose browser went away (a closed laptop, a crashed tab) never calls `end`. A pass closes every
active session idle longer than the idle timeout as `abandoned`, and every one older than the maximum duration as
`ended`, through the same `SessionCloser` as the `end` route: pending audio flushed into final entries first,
`session_status` last. One pass runs at a time across processes and machines on one database (a lease row in
the store; a second pass skips), and even without it each session is closed by exactly one caller, the one whose
atomic close wins.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from functions.session_end import SessionCloser
from shared.interview_machines import InterviewMachines, should_destroy
from shared.models import Session, SessionStatus, StuckChunk
from shared.store.base import FIRST_DELIVERY_AFTER_S
from shared.webhook.sender import WebhookSender

log = logging.getLogger("bridge.reaper")

PAGE = 100  # stale sessions read per store query
PASS_LEASE_S = 600.0  # a pass holds the reaper lease this long at most (released when it ends)
RETENTION_PAGES = 50  # sessions deleted per pass at most: PAGE x this; the next pass takes the rest
STUCK_PAGE = 1_000  # stuck chunks retried per pass at most; the next pass takes the rest


@dataclass(frozen=True, slots=True)
class ReaperConfig:
    idle_timeout_s: float = 900.0  # SESSION_IDLE_TIMEOUT
    max_duration_s: float = 14_400.0  # SESSION_MAX_DURATION
    chunk_max_attempts: int = 6  # CHUNK_MAX_ATTEMPTS: tries of stuck audio before it is marked failed
    stuck_after_s: float = 60.0  # a run takes a chunk in within a second; one a minute old is stuck
    retry_base_s: float = 30.0  # the n-th retry waits retry_base_s * 2**n: 30 s, 1, 2, 4, 8 minutes
    audio_retention_days: int | None = None  # AUDIO_RETENTION_DAYS: closed sessions' audio kept this long
    transcript_retention_days: int | None = None  # TRANSCRIPT_RETENTION_DAYS: closed sessions kept this long


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


async def reap(
    now: datetime,
    *,
    closer: SessionCloser,
    config: ReaperConfig,
    webhooks: WebhookSender | None = None,
    machines: InterviewMachines | None = None,
) -> ReapSummary:
    """One pass at `now` (read once, by the caller, when the pass starts); nothing when another pass, in this
    process or any other on the same database, holds the reaper lease."""
    owner = f"reaper-{uuid.uuid4()}"
    if not await closer.store.claim_reaper_pass(owner, now, now + timedelta(seconds=PASS_LEASE_S)):
        log.info("another reaper pass is running; this one skips")
        return ReapSummary()
    try:
        return await _pass(now, closer, config, webhooks, machines)
    finally:
        await closer.store.release_reaper_pass(owner)


async def _pass(
    now: datetime,
    closer: SessionCloser,
    config: ReaperConfig,
    webhooks: WebhookSender | None,
    machines: InterviewMachines | None,
) -> ReapSummary:
    summary = ReapSummary()
    closed = await close_stale_sessions(now, closer, config, summary)
    await retry_stuck_audio(now, closer, config, summary)
    await apply_retention(now, closer, config, summary)
    if machines is not None:
        summary.machines_destroyed += await destroy_finished_machines(now, closer, machines)
    if webhooks is not None:
        first_due = now + timedelta(seconds=FIRST_DELIVERY_AFTER_S)
        for session_id in closed:  # this pass closed and flushed them: their transcripts go now
            summary.webhooks_sent += await webhooks.deliver_due(now, session_id=session_id, due_by=first_due)
        summary.webhooks_sent += await webhooks.deliver_due(now)  # retries, and what a crashed closer left
    return summary


async def close_stale_sessions(
    now: datetime, closer: SessionCloser, config: ReaperConfig, summary: ReapSummary
) -> list[str]:
    """Abandon the idle sessions and end the over-long ones, each by exactly one pass; the ids this pass closed."""
    closed: list[str] = []
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
                closed.append(session.id)
                if status is SessionStatus.ABANDONED:
                    summary.abandoned += 1
                else:
                    summary.ended += 1
    return closed


async def retry_stuck_audio(now: datetime, closer: SessionCloser, config: ReaperConfig, summary: ReapSummary) -> None:
    """Run again the speakers whose audio processing left behind (an engine outage outlasting the live path's
    own retries, a crash): a chunk tried `chunk_max_attempts` times is marked failed, never dropped silently."""
    store, live = closer.store, closer.live
    stuck = await store.stuck_chunks(now - timedelta(seconds=config.stuck_after_s), now, STUCK_PAGE)
    by_speaker: dict[tuple[str, str], list[StuckChunk]] = {}
    for chunk in stuck:
        by_speaker.setdefault((chunk.session_id, chunk.speaker), []).append(chunk)
    for (session_id, speaker), chunks in by_speaker.items():
        session = await store.get_session(session_id, None)
        if session is None:  # deleted meanwhile
            continue
        exhausted = [c.sequence_number for c in chunks if c.attempts >= config.chunk_max_attempts]
        if exhausted:
            summary.failed += await store.fail_chunks(session_id, speaker, exhausted, now)
            log.warning("session %s speaker %s: chunks %s failed %d times; marked failed", session_id, speaker,
                        exhausted, config.chunk_max_attempts)  # fmt: skip
        trying = [c for c in chunks if c.attempts < config.chunk_max_attempts]
        try:
            await live.transcriber.wait_ready()  # the reaper's command starts no engine unless there is audio
            await live.pump(session, speaker, final=session.status is not SessionStatus.ACTIVE)
        except Exception:  # the attempt is counted below; the next pass tries again
            log.exception("retrying session %s speaker %s failed", session_id, speaker)
        if trying:
            tries = max(c.attempts for c in trying) + 1
            due = now + timedelta(seconds=config.retry_base_s * 2 ** (tries - 1))
            await store.record_chunk_attempt(session_id, speaker, [c.sequence_number for c in trying], due)
            summary.retried += len(trying)


async def destroy_finished_machines(now: datetime, closer: SessionCloser, machines: InterviewMachines) -> int:
    """Destroy the interview machines whose session is closed, unknown or records another machine; how many.
    A Fly error leaves the rest for the next pass."""
    destroyed = 0
    try:
        found = await machines.running()
    except Exception:
        log.exception("listing interview machines failed; the next pass tries again")
        return 0
    for item in found:
        session_id = item.machine.metadata.get("session_id")
        if session_id is None:  # not an interview machine
            continue
        session = await closer.store.get_session(session_id, item.machine.metadata.get("tenant_id"))
        if not should_destroy(item.machine, session, now):
            continue
        try:
            await machines.destroy(item)
        except Exception:
            log.exception("destroying machine %s of session %s failed", item.machine.id, session_id)
            continue
        destroyed += 1
    return destroyed


async def apply_retention(now: datetime, closer: SessionCloser, config: ReaperConfig, summary: ReapSummary) -> None:
    """Drop the audio of sessions closed longer ago than AUDIO_RETENTION_DAYS, and whole sessions closed longer
    ago than TRANSCRIPT_RETENTION_DAYS (unset: keep). `deleted` counts the sessions either step touched."""
    steps = [
        (config.audio_retention_days, closer.store.delete_closed_audio),
        (config.transcript_retention_days, closer.store.delete_closed_sessions),
    ]
    for days, delete in steps:
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        for _ in range(RETENTION_PAGES):
            deleted = await delete(cutoff, PAGE)
            summary.deleted += deleted
            if deleted < PAGE:
                break
