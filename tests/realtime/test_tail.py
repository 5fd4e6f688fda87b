"""`bridge.tail.tail`: following a session through realtime-py against the local hub on uvicorn."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from bridge.tail import format_clock, tail
from shared.errors import Unauthorized

from .conftest import Server


def entry(n: int, speaker: str, text: str, start_ms: int) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "session_id": "late",
        "speaker": speaker,
        "first_sequence": n,
        "last_sequence": n,
        "text": text,
        "start_ms": start_ms,
    }


async def wait_subscribed(server: Server, topic: str) -> None:
    for _ in range(500):
        if server.hub.subscriber_count(topic):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"nobody subscribed to {topic}")


def test_clock_format() -> None:
    """Entry times print as mm:ss, h:mm:ss past an hour, and --:-- when unknown."""
    assert [format_clock(v) for v in (0, 61_500, 3_725_000, None)] == ["00:00", "01:01", "1:02:05", "--:--"]


async def test_tail_prints_partials_and_finals_and_returns_on_end(server: Server) -> None:
    """tail prints partials as '… speaker: text', finals as '[mm:ss] speaker: text', and returns when the session ends."""
    out = io.StringIO()
    task = asyncio.create_task(tail(server.base_url, "tok-a", "a", out=out, backfill=False))
    await wait_subscribed(server, "session:a")
    hub = server.hub
    await hub.publish(
        "session:a", "transcript_partial", {"session_id": "a", "speaker": "alice", "text": "Hel", "through_sequence": 0}
    )
    await hub.publish(
        "session:a", "transcript_partial", {"session_id": "a", "speaker": "alice", "text": "Hel", "through_sequence": 0}
    )
    await hub.publish("session:a", "transcript_entry", entry(0, "alice", "Hello there.", 65_000) | {"session_id": "a"})
    await hub.publish(
        "session:a",
        "transcript_partial",
        {"session_id": "a", "speaker": "alice", "text": "stale", "through_sequence": 0},
    )
    await hub.publish("session:a", "session_status", {"session_id": "a", "status": "ended"})
    await asyncio.wait_for(task, 5)
    assert out.getvalue().splitlines() == ["… alice: Hel", "[01:05] alice: Hello there.", "— session ended"]


async def test_tail_late_joiner_gets_backlog_then_live_without_duplicates(server: Server) -> None:
    """A late tail prints the stored transcript first, then live entries, each entry exactly once."""
    server.transcripts["late"] = [entry(0, "alice", "First.", 1_000), entry(1, "bob", "Second.", 3_000)]
    out = io.StringIO()
    task = asyncio.create_task(tail(server.base_url, "tok-late", "late", out=out))
    await wait_subscribed(server, "session:late")
    await server.hub.publish("session:late", "transcript_entry", entry(1, "bob", "Second.", 3_000))  # already stored
    await server.hub.publish("session:late", "transcript_entry", entry(2, "alice", "Third.", 5_000))
    await server.hub.publish("session:late", "session_status", {"session_id": "late", "status": "abandoned"})
    await asyncio.wait_for(task, 5)
    assert out.getvalue().splitlines() == [
        "[00:01] alice: First.",
        "[00:03] bob: Second.",
        "[00:05] alice: Third.",
        "— session abandoned",
    ]


async def test_tail_with_a_token_for_another_session_is_refused(server: Server) -> None:
    """tail raises Unauthorized, naming the server's reason, when the join is refused."""
    with pytest.raises(Unauthorized, match="You do not have permissions"):
        await asyncio.wait_for(tail(server.base_url, "tok-b", "a", out=io.StringIO()), 5)
