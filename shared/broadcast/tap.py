"""A broadcaster in front of the real one that also hands each event to listeners in this process.

The streaming socket pushes a speaker's partials and entries back on the socket itself, whatever carries them to
viewers (the in-process hub or Supabase Realtime): it listens here, on the process whose live path made them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from shared.broadcast.base import Broadcaster

LISTENER_QUEUE = 1_000  # events a slow socket may fall behind by before the oldest are dropped


class BroadcastTap:
    """`Broadcaster` that forwards to `inner` and copies to this process's listeners of the topic."""

    def __init__(self, inner: Broadcaster) -> None:
        self.inner = inner
        self.name = inner.name
        self._listeners: dict[str, set[asyncio.Queue[tuple[str, dict[str, Any]]]]] = {}

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        for queue in self._listeners.get(topic, ()):
            if queue.full():  # a listener that stopped reading loses its oldest events, never the broadcast
                queue.get_nowait()
            queue.put_nowait((event, payload))
        await self.inner.publish(topic, event, payload)

    @contextlib.contextmanager
    def listen(self, topic: str) -> Iterator[asyncio.Queue[tuple[str, dict[str, Any]]]]:
        """(event, payload) of every broadcast on `topic` made in this process while the block runs."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(LISTENER_QUEUE)
        self._listeners.setdefault(topic, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(topic, set())
            listeners.discard(queue)
            if not listeners:
                self._listeners.pop(topic, None)
