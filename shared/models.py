"""Domain records shared by every store, function and route. Plain dataclasses: cheap on the per-chunk path."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with a `Z`, the shape every JSON answer uses."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class SessionStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    ABANDONED = "abandoned"


class ChunkState(StrEnum):
    PENDING = "pending"
    DONE = "done"


class InsertOutcome(StrEnum):
    INSERTED = "inserted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    webhook_url: str | None = None  # where the transcript goes when a session ends
    webhook_secret: str | None = None  # the HMAC key that signs it


@dataclass(frozen=True, slots=True)
class UsageCount:
    """Usage to add with a stream's saved progress, in the same transaction (exactly once with it)."""

    tenant_id: str
    day: date
    audio_ms: int = 0
    engine_ms: int = 0
    engine_calls: int = 0


@dataclass(frozen=True, slots=True)
class UsageDay:
    """What one tenant used on one UTC day."""

    day: date
    audio_ms: int  # audio taken in (decoded)
    engine_ms: int  # audio sent to the engine (finals and partials)
    engine_calls: int
    sessions: int  # created that day
    entries: int  # stored that day

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "audio_seconds": round(self.audio_ms / 1000, 3),
            "engine_seconds": round(self.engine_ms / 1000, 3),
            "engine_calls": self.engine_calls,
            "sessions": self.sessions,
            "entries": self.entries,
        }


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One closed session's transcript to POST to its tenant's webhook, taken from the outbox for one attempt."""

    id: str  # the idempotency key the receiver sees
    tenant_id: str
    session_id: str
    event: str  # session.ended | session.abandoned
    attempts: int  # made before this one
    url: str | None
    secret: str | None


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tenant_id: str
    status: SessionStatus
    created_at: datetime
    last_activity_at: datetime
    candidate_id: str | None = None
    position_id: str | None = None
    speakers: tuple[str, ...] = ()
    language: str | None = "en"
    metadata: dict[str, Any] = field(default_factory=dict)
    ended_at: datetime | None = None
    machine_id: str | None = None

    @classmethod
    def new(cls, tenant_id: str, **fields: Any) -> Session:
        """A fresh active session with a new id, created and last active now."""
        now = utcnow()
        return cls(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            status=SessionStatus.ACTIVE,
            created_at=now,
            last_activity_at=now,
            **fields,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "candidate_id": self.candidate_id,
            "position_id": self.position_id,
            "status": self.status.value,
            "speakers": list(self.speakers),
            "language": self.language,
            "metadata": self.metadata,
            "created_at": iso(self.created_at),
            "last_activity_at": iso(self.last_activity_at),
            "ended_at": iso(self.ended_at),
            "machine_id": self.machine_id,
        }


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk as it arrives; `starts_stream` is true when it carries a container header (RIFF, EBML, OggS, ftyp)."""

    session_id: str
    speaker: str
    sequence_number: int
    data: bytes
    digest: str
    mime_type: str | None
    starts_stream: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StoredChunk:
    session_id: str
    speaker: str
    sequence_number: int
    mime_type: str | None
    starts_stream: bool
    received_at: datetime
    state: ChunkState
    data: bytes | None = None  # loaded only when asked for


@dataclass(frozen=True, slots=True)
class StuckChunk:
    """A pending chunk no run has taken in, long after it arrived: processing failed (the reaper retries it)."""

    session_id: str
    speaker: str
    sequence_number: int
    attempts: int  # failed tries so far


@dataclass(slots=True)
class SpeakerStream:
    """Where a speaker's utterance assembly stands; lives in the store so any process can take the next chunk.

    `next_sequence` is the next chunk to absorb; chunks in [`buffer_sequence`, `next_sequence`) that are still
    pending form the open utterance, which starts `buffer_offset` samples (16 kHz) into chunk `buffer_sequence`
    at `buffer_start_ms` (milliseconds after the session's `created_at`). `header_sequence` is the chunk whose
    container header decodes the continuation chunks after it. `gap_since` is when the wait for a missing chunk
    began.
    """

    session_id: str
    speaker: str
    next_sequence: int = 0
    buffer_sequence: int = 0
    buffer_offset: int = 0
    buffer_start_ms: int = 0
    header_sequence: int | None = None
    gap_since: datetime | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class NewEntry:
    session_id: str
    tenant_id: str
    speaker: str
    first_sequence: int
    last_sequence: int
    text: str
    start_ms: int | None
    end_ms: int | None
    language: str | None
    confidence: float | None
    engine: str


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    id: str
    session_id: str
    tenant_id: str
    speaker: str
    first_sequence: int
    last_sequence: int
    text: str
    start_ms: int | None
    end_ms: int | None
    language: str | None
    confidence: float | None
    engine: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "tenant_id": self.tenant_id,
            "speaker": self.speaker,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "text": self.text,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "language": self.language,
            "confidence": self.confidence,
            "engine": self.engine,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class EntryWrite:
    """The result of an idempotent entry insert: the stored entry and whether this call created it."""

    entry: TranscriptEntry
    created: bool
