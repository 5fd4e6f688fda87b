"""The Store protocol: everything the bridge keeps, behind one small async interface.

Every implementation (SQLite, Postgres, Supabase) passes the same conformance suite in
`tests/store/test_conformance.py`. Reads and writes that a client can reach are scoped by tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Protocol

from shared.models import (
    EntryWrite,
    InsertOutcome,
    NewChunk,
    NewEntry,
    Session,
    SessionStatus,
    SpeakerStream,
    StoredChunk,
    StuckChunk,
    Tenant,
    TranscriptEntry,
    UsageCount,
    UsageDay,
    WebhookDelivery,
)

FIRST_DELIVERY_AFTER_S = 120.0  # the closer delivers right after its flush; anyone else waits this long first


class StreamLeaseLost(Exception):
    """Another worker took the speaker stream (the lease ran out); the caller must reload and start over."""


class Store(Protocol):
    """Persistence for tenants, sessions, audio chunks, speaker streams and transcript entries."""

    name: str

    async def start(self) -> None:
        """Open connections and apply pending migrations unless `AUTO_MIGRATE=off`."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the names of the ones applied now."""

    # tenants
    async def create_tenant(self, tenant: Tenant, api_key_hash: str) -> None: ...

    async def tenant_by_key_hash(self, api_key_hash: str) -> Tenant | None: ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def tenants_named(self, name: str) -> list[Tenant]:
        """Every tenant of that name (names are not unique), oldest first."""

    async def set_tenant_webhook(self, tenant_id: str, url: str | None, secret: str | None) -> bool:
        """Set (or with None clear) the webhook URL; a `secret` replaces the signing key, None keeps it.
        False when there is no such tenant."""

    async def claim_webhook_deliveries(
        self, due_by: datetime, lease_until: datetime, limit: int, *, session_id: str | None = None
    ) -> list[WebhookDelivery]:
        """Take deliveries not yet delivered nor given up, due by `due_by` (of one session if given), until
        `lease_until`: a concurrent caller does not get them meanwhile."""

    async def finish_webhook_delivery(
        self, delivery_id: str, *, delivered: bool, at: datetime, next_attempt_at: datetime | None, error: str | None
    ) -> None:
        """Record an attempt: delivered; or failed, to be tried at `next_attempt_at`, or given up when None."""

    # sessions
    async def create_session(self, session: Session) -> None: ...

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        """The session if it exists and belongs to `tenant_id` (None: internal callers only)."""

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        status: SessionStatus | None = None,
        candidate_id: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        """Newest first; `before` is the (created_at, id) of the last session of the previous page."""

    async def set_session_status(
        self, session_id: str, status: SessionStatus, at: datetime, *, only_if_active: bool = True
    ) -> Session | None:
        """Close (or reopen) a session; with `only_if_active` a closed session is left as it is.

        Returns the session as stored afterwards, or None when it does not exist.
        """

    async def close_session(self, session_id: str, status: SessionStatus, at: datetime) -> Session | None:
        """Move an active session to `status` (ended or abandoned) at `at`, in one atomic step that also puts
        its webhook delivery in the outbox when its tenant has a webhook, due FIRST_DELIVERY_AFTER_S later.

        Returns the closed session only to the call that closed it: None when it was already closed or does not
        exist, so that however many callers race, exactly one announces the end.
        """

    async def stale_sessions(self, idle_before: datetime, started_before: datetime, limit: int) -> list[Session]:
        """Active sessions with no activity since `idle_before` or created before `started_before`, the longest
        idle first (the reaper's candidates)."""

    async def delete_session(self, tenant_id: str, session_id: str) -> bool:
        """Erase the session, its audio, streams and entries; False when it is not this tenant's."""

    async def delete_closed_audio(self, closed_before: datetime, limit: int) -> int:
        """Drop the audio of up to `limit` sessions closed before `closed_before` (their chunk rows, entries and
        failed sequences stay); how many sessions lost audio."""

    async def delete_closed_sessions(self, closed_before: datetime, limit: int) -> int:
        """Delete up to `limit` sessions closed before `closed_before` with everything they hold; how many."""

    async def add_usage(
        self, tenant_id: str, day: date, *, audio_ms: int = 0, engine_ms: int = 0, engine_calls: int = 0
    ) -> None:
        """Add to a tenant's counters of one UTC day."""

    async def usage(self, tenant_id: str, first: date, last: date) -> list[UsageDay]:
        """The tenant's days from `first` to `last` (inclusive, UTC) with any usage, ascending; sessions and
        entries counted from their tables."""

    async def claim_reaper_pass(self, owner: str, now: datetime, until: datetime) -> bool:
        """Hold the one reaper lease until `until` if it is free (or expired at `now`, or `owner`'s already)."""

    async def release_reaper_pass(self, owner: str) -> None:
        """Give the lease back (only `owner`'s)."""

    async def sessions_with_pending_audio(self) -> list[tuple[str, str]]:
        """(session_id, speaker) pairs of sessions that still have pending chunks, for recovery."""

    # audio chunks
    async def stuck_chunks(self, received_before: datetime, due_at: datetime, limit: int) -> list[StuckChunk]:
        """Pending chunks processing left behind: not taken into their speaker's stream (at or past its
        next_sequence), or of a closed session; received before `received_before`, next attempt due by `due_at`;
        by session, speaker and sequence."""

    async def record_chunk_attempt(
        self, session_id: str, speaker: str, sequences: Sequence[int], next_attempt_at: datetime
    ) -> int:
        """Count one more failed try of those of `sequences` still stuck, due again at `next_attempt_at`."""

    async def fail_chunks(self, session_id: str, speaker: str, sequences: Sequence[int], at: datetime) -> int:
        """Give up on those of `sequences` still pending: no longer pending, listed as failed. Returns how many."""

    async def failed_sequences(self, session_id: str) -> dict[str, list[int]]:
        """Per speaker, the sequence numbers given up on, ascending (speakers without any are left out)."""

    async def insert_chunk(self, chunk: NewChunk) -> InsertOutcome:
        """Persist a chunk once: a replay with the same digest is a duplicate, other content a conflict.

        Also moves the session's `last_activity_at` to the chunk's `received_at`.
        """

    async def list_chunks(
        self,
        session_id: str,
        speaker: str,
        *,
        from_sequence: int = 0,
        pending_only: bool = False,
        with_data: bool = False,
    ) -> list[StoredChunk]:
        """Chunks of one speaker from `from_sequence` on, in sequence order."""

    async def get_chunk(self, session_id: str, speaker: str, sequence_number: int) -> StoredChunk | None:
        """One chunk with its bytes."""

    async def next_sequences(self, session_id: str) -> dict[str, int]:
        """Per speaker, one past the highest sequence number stored: where a reloaded page resumes."""

    # speaker streams (utterance assembly)
    async def claim_stream(
        self, session_id: str, speaker: str, owner: str, lease_seconds: float, now: datetime
    ) -> SpeakerStream | None:
        """Take the speaker's stream for `lease_seconds` (creating it at first use); None if another owner
        holds an unexpired lease."""

    async def save_stream(
        self,
        stream: SpeakerStream,
        owner: str,
        *,
        done_sequences: Sequence[int] = (),
        entry: NewEntry | None = None,
        usage: UsageCount | None = None,
    ) -> EntryWrite | None:
        """Atomically: store `entry` (idempotent), mark `done_sequences` done, write the stream state and add
        `usage` to its tenant's counters.

        Raises `StreamLeaseLost` when `owner` no longer holds the lease or the stream's version moved on;
        then nothing is written. Increments `stream.version` on success.
        """

    async def release_stream(self, session_id: str, speaker: str, owner: str) -> None: ...

    # transcript entries
    async def insert_entry(self, entry: NewEntry) -> EntryWrite:
        """Store an entry once per (session_id, speaker, first_sequence); a repeat returns the stored one."""

    async def list_entries(self, session_id: str) -> list[TranscriptEntry]:
        """Entries ordered by (start_ms, speaker, first_sequence)."""
