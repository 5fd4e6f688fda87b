"""`interview-bridge tail SESSION_ID`: follow a live transcript through Realtime with realtime-py.

The same code follows the local hub (`url` = the bridge) and a Supabase project (`url` = SUPABASE_URL). It is also
the late-joiner recipe in code: subscribe first and buffer, fetch the transcript so far, print it, then apply the
buffered live events, skipping entries already printed (by id), so nothing is shown twice and nothing is missed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TextIO

import httpx
from realtime import AsyncRealtimeClient
from realtime.types import RealtimeSubscribeStates

from shared.broadcast.vocabulary import ENTRY_EVENT, PARTIAL_EVENT, STATUS_EVENT, session_topic
from shared.errors import Unauthorized

logger = logging.getLogger(__name__)

ENDED = frozenset({"ended", "abandoned"})


def format_clock(ms: object) -> str:
    """Milliseconds from the session start as `mm:ss` (`h:mm:ss` past an hour); `--:--` when unknown."""
    if not isinstance(ms, int | float) or isinstance(ms, bool) or ms < 0:
        return "--:--"
    seconds = int(ms // 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_entry(entry: dict[str, Any]) -> str:
    return f"[{format_clock(entry.get('start_ms'))}] {entry.get('speaker', '?')}: {entry.get('text', '')}"


def format_partial(partial: dict[str, Any]) -> str:
    return f"… {partial.get('speaker', '?')}: {partial.get('text', '')}"


class _Printer:
    """Prints entries once each (by id) and partials only while they are newer than the speaker's last entry."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seen: set[str] = set()
        self.final_through: dict[str, int] = {}
        self.last_partial: dict[str, str] = {}

    def entry(self, entry: dict[str, Any]) -> None:
        key = str(entry.get("id") or (entry.get("speaker"), entry.get("first_sequence")))
        if key in self.seen:
            return
        self.seen.add(key)
        speaker = str(entry.get("speaker"))
        last = entry.get("last_sequence")
        if isinstance(last, int):
            self.final_through[speaker] = max(last, self.final_through.get(speaker, -1))
        self.last_partial.pop(speaker, None)
        self._write(format_entry(entry))

    def partial(self, partial: dict[str, Any]) -> None:
        speaker = str(partial.get("speaker"))
        through = partial.get("through_sequence")
        if isinstance(through, int) and through <= self.final_through.get(speaker, -1):
            return  # already covered by a final entry
        text = str(partial.get("text") or "")
        if not text or self.last_partial.get(speaker) == text:
            return
        self.last_partial[speaker] = text
        self._write(format_partial(partial))

    def _write(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


async def fetch_transcript(url: str, session_id: str, token: str) -> list[dict[str, Any]] | None:
    """The entries so far from the bridge's `GET /sessions/{id}/transcript`; None when that route is not there."""
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(
                f"{url.rstrip('/')}/sessions/{session_id}/transcript",
                headers={"Authorization": f"Bearer {token}"},
            )
    except httpx.HTTPError as exc:
        logger.warning("could not fetch the transcript so far: %s", exc)
        return None
    if response.status_code != 200:
        logger.warning("could not fetch the transcript so far: HTTP %d", response.status_code)
        return None
    entries = response.json().get("entries")
    return entries if isinstance(entries, list) else None


async def tail(
    url: str,
    apikey: str,
    session_id: str,
    *,
    token: str | None = None,
    out: TextIO = sys.stdout,
    private: bool = False,
    backfill: bool = True,
) -> None:
    """Follow `session:{session_id}` until a `session_status` of ended/abandoned arrives.

    `url` is the base URL a Supabase client is created with (the bridge locally, SUPABASE_URL in production);
    `apikey` the key that server accepts; `token` the join's access_token (defaults to `apikey`). With
    `backfill`, the transcript so far is fetched from `{url}/sessions/{id}/transcript` first (skipped, with a
    warning, where that route does not exist, e.g. on Supabase). Raises `Unauthorized` when the join is refused.
    """
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    joined: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
        if joined.done():
            return
        if state == RealtimeSubscribeStates.SUBSCRIBED:
            joined.set_result(None)
        else:
            joined.set_result(f"{state.value}: {error}" if error else str(state.value))

    def on_broadcast(message: Any) -> None:
        payload = message.get("payload")
        events.put_nowait((str(message.get("event")), payload if isinstance(payload, dict) else {}))

    client = AsyncRealtimeClient(f"{url.rstrip('/')}/realtime/v1", token=apikey)
    try:
        if token:
            await client.set_auth(token)
        params: Any = {
            "config": {
                "broadcast": {"ack": False, "self": False},
                "presence": {"key": "", "enabled": False},
                "private": private,
            }
        }
        topic = session_topic(session_id)
        channel = client.channel(topic, params)
        channel.on_broadcast("*", on_broadcast)
        await channel.subscribe(on_state)
        problem = await joined
        if problem is not None:
            raise Unauthorized(f"could not follow {topic}: {problem}")

        printer = _Printer(out)
        if backfill:
            entries = await fetch_transcript(url, session_id, token or apikey)
            for entry in entries or []:
                if isinstance(entry, dict):
                    printer.entry(entry)
        while True:
            event, payload = await events.get()
            if event == ENTRY_EVENT:
                printer.entry(payload)
            elif event == PARTIAL_EVENT:
                printer.partial(payload)
            elif event == STATUS_EVENT and payload.get("status") in ENDED:
                printer._write(f"— session {payload.get('status')}")
                return
    finally:
        await client.close()
