"""The realtime vocabulary every part of the bridge speaks: the session topic and the events the bridge emits.

Subscribers (supabase-js, realtime-py, `interview-bridge tail`) join `session:{id}`; the SDKs add the
`realtime:` prefix themselves. Only the bridge sends these events: a client's push of one is refused.
"""

from __future__ import annotations

from typing import Final

SESSION_TOPIC_PREFIX: Final = "session:"

ENTRY_EVENT: Final = "transcript_entry"  # a final line, stored before it is sent
PARTIAL_EVENT: Final = "transcript_partial"  # an open utterance's draft, replaced by its entry
STATUS_EVENT: Final = "session_status"  # the session ended or was abandoned; always the topic's last event

RESERVED_EVENTS: Final = frozenset({ENTRY_EVENT, PARTIAL_EVENT, STATUS_EVENT})


def session_topic(session_id: str) -> str:
    return f"{SESSION_TOPIC_PREFIX}{session_id}"


def session_id_of(topic: str) -> str | None:
    """The session a topic belongs to, or None for a topic that is not a session's."""
    if not topic.startswith(SESSION_TOPIC_PREFIX):
        return None
    return topic[len(SESSION_TOPIC_PREFIX) :]
