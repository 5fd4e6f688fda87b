"""transcript_bridge: validate a transcript entry, store it idempotently, broadcast it.

process_audio hands its finished utterances here too (`deliver_entry`), so every entry reaches subscribers
the same way, whoever produced it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from functions.transcript_bridge.models import TranscriptBridgeRequest
from functions.validation import check_declared_speaker
from shared.broadcast.base import Broadcaster
from shared.broadcast.vocabulary import ENTRY_EVENT, session_topic
from shared.errors import TenantMismatch
from shared.models import EntryWrite, NewEntry, Session, TranscriptEntry
from shared.store.base import Store

log = logging.getLogger("bridge.transcript")


async def deliver_entry(write: EntryWrite, broadcaster: Broadcaster) -> None:
    """Broadcast a newly stored entry once; a repeat write broadcasts nothing."""
    if not write.created:
        return
    await broadcaster.publish(session_topic(write.entry.session_id), ENTRY_EVENT, write.entry.to_json())


@dataclass(frozen=True, slots=True)
class TranscriptBridgeResult:
    status: str  # stored | duplicate
    entry: TranscriptEntry


async def transcript_bridge(
    request: TranscriptBridgeRequest,
    session: Session,
    *,
    store: Store,
    broadcaster: Broadcaster,
) -> TranscriptBridgeResult:
    """Store one entry for `session` (already authorised for this caller) and broadcast it if it is new."""
    if request.tenant_id is not None and request.tenant_id != session.tenant_id:
        raise TenantMismatch("tenant_id in the body is not the tenant of your credential; omit it or fix it")
    check_declared_speaker(session.speakers, request.speaker)
    write = await store.insert_entry(
        NewEntry(
            session_id=session.id,
            tenant_id=session.tenant_id,
            speaker=request.speaker,
            first_sequence=request.sequence_number,
            last_sequence=request.sequence_number,
            text=request.entry_text,
            start_ms=request.entry_start_ms,
            end_ms=request.entry_end_ms,
            language=request.entry_language or session.language,
            confidence=request.entry_confidence,
            engine="external",
        )
    )
    await deliver_entry(write, broadcaster)
    return TranscriptBridgeResult("stored" if write.created else "duplicate", write.entry)
