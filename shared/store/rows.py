"""Rows to domain records, for every store: a sqlite3.Row, an asyncpg.Record and a PostgREST JSON object all
read by column name; only how timestamps, JSON columns and bytes arrive differs, and that is normalised here."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from shared.models import (
    ChunkState,
    Session,
    SessionStatus,
    SpeakerStream,
    StoredChunk,
    Tenant,
    TranscriptEntry,
    WebhookDelivery,
)


def parse_timestamp(value: str | datetime) -> datetime:
    """A timestamp as a driver gives it: a datetime (asyncpg) or ISO 8601 text (SQLite, PostgREST's `...Z`)."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _optional_timestamp(value: str | datetime | None) -> datetime | None:
    return None if value is None else parse_timestamp(value)


def _json(value: Any, default: Any) -> Any:
    """A JSON column: text in SQLite, already decoded by asyncpg's codec and by PostgREST."""
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def tenant_from_row(row: Any) -> Tenant:
    return Tenant(
        id=row["id"],
        name=row["name"],
        created_at=parse_timestamp(row["created_at"]),
        webhook_url=_column(row, "webhook_url"),
        webhook_secret=_column(row, "webhook_secret"),
    )


def _column(row: Any, name: str) -> Any:
    """A column that a narrower SELECT leaves out (None then), from an asyncpg, sqlite3 or JSON row."""
    try:
        return row[name]
    except (KeyError, IndexError):
        return None


def delivery_from_row(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        tenant_id=row["tenant_id"],
        session_id=row["session_id"],
        event=row["event"],
        attempts=row["attempts"],
        url=row["url"],
        secret=row["secret"],
    )


def session_from_row(row: Any) -> Session:
    return Session(
        id=row["id"],
        tenant_id=row["tenant_id"],
        status=SessionStatus(row["status"]),
        created_at=parse_timestamp(row["created_at"]),
        last_activity_at=parse_timestamp(row["last_activity_at"]),
        candidate_id=row["candidate_id"],
        position_id=row["position_id"],
        speakers=tuple(_json(row["speakers"], [])),
        language=row["language"],
        metadata=_json(row["metadata"], {}),
        ended_at=_optional_timestamp(row["ended_at"]),
        machine_id=row["machine_id"],
    )


def chunk_from_row(row: Any, data: bytes | None) -> StoredChunk:
    """`data` is passed in decoded: bytes arrive as a blob, bytea or PostgREST's hex text."""
    return StoredChunk(
        session_id=row["session_id"],
        speaker=row["speaker"],
        sequence_number=row["sequence_number"],
        mime_type=row["mime_type"],
        starts_stream=bool(row["starts_stream"]),
        received_at=parse_timestamp(row["received_at"]),
        state=ChunkState(row["state"]),
        data=data,
    )


def stream_from_row(row: Any) -> SpeakerStream:
    return SpeakerStream(
        session_id=row["session_id"],
        speaker=row["speaker"],
        next_sequence=row["next_sequence"],
        buffer_sequence=row["buffer_sequence"],
        buffer_offset=row["buffer_offset"],
        buffer_start_ms=row["buffer_start_ms"],
        header_sequence=row["header_sequence"],
        gap_since=_optional_timestamp(row["gap_since"]),
        version=row["version"],
    )


def entry_from_row(row: Any) -> TranscriptEntry:
    confidence = row["confidence"]
    return TranscriptEntry(
        id=row["id"],
        session_id=row["session_id"],
        tenant_id=row["tenant_id"],
        speaker=row["speaker"],
        first_sequence=row["first_sequence"],
        last_sequence=row["last_sequence"],
        text=row["text"],
        start_ms=row["start_ms"],
        end_ms=row["end_ms"],
        language=row["language"],
        confidence=None if confidence is None else float(confidence),
        engine=row["engine"],
        created_at=parse_timestamp(row["created_at"]),
    )
