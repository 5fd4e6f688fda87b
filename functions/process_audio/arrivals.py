"""Chunk bytes just acknowledged, kept until their speaker's run decodes them, within a byte budget.

The request stores a chunk and answers; the run that processes it a moment later would otherwise read the same
bytes back from the store. Past the budget (an engine outage, a long backlog) chunks are simply not kept: the
store has them, and the run reads them back. The oldest go first, so chunks another process took (two instances
on one store) do not stay for good. Memory stays bounded whatever the backlog.
"""

from __future__ import annotations

Key = tuple[str, str, int]  # (session id, speaker, sequence number)

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024


class ArrivalCache:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self._chunks: dict[Key, tuple[bytes, str | None]] = {}

    def put(self, session_id: str, speaker: str, sequence: int, data: bytes, mime_type: str | None) -> bool:
        """Keep a chunk, dropping the oldest kept ones to make room; False when it is larger than the budget."""
        key = (session_id, speaker, sequence)
        if key in self._chunks or len(data) > self.budget_bytes:
            return False
        while self.bytes + len(data) > self.budget_bytes:
            oldest = next(iter(self._chunks))
            self.bytes -= len(self._chunks.pop(oldest)[0])
        self._chunks[key] = (data, mime_type)
        self.bytes += len(data)
        return True

    def take(self, session_id: str, speaker: str, sequence: int) -> tuple[bytes, str | None] | None:
        """The chunk's bytes and MIME type, removed from the cache; None when they were not kept."""
        found = self._chunks.pop((session_id, speaker, sequence), None)
        if found is not None:
            self.bytes -= len(found[0])
        return found

    def forget(self, session_id: str, speaker: str | None = None) -> None:
        """Drop what is kept for a session (or one of its speakers): it was deleted, ended or evicted."""
        for key in [k for k in self._chunks if k[0] == session_id and (speaker is None or k[1] == speaker)]:
            self.bytes -= len(self._chunks.pop(key)[0])

    def __len__(self) -> int:
        return len(self._chunks)
