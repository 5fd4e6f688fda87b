"""The Broadcaster protocol: hand an event for a topic to everyone subscribed, without ever failing the caller.

Topics are given without the `realtime:` prefix the SDKs add (`session:{id}`). A broadcast is best effort after
the store write: an outage is logged and counted, never raised into the request that stored the entry.
"""

from __future__ import annotations

from typing import Any, Protocol


class Broadcaster(Protocol):
    name: str

    async def start(self) -> None: ...

    async def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """Queue or deliver one broadcast; returns quickly and never raises for a delivery failure."""

    async def close(self) -> None:
        """Flush what is queued (bounded wait), then release connections."""
